//! One module per subcommand.

pub mod loss;
pub mod targets;
