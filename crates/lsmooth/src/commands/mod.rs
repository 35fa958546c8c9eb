//! One module per subcommand.

pub mod bench;
pub mod loss;
pub mod targets;
