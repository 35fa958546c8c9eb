//! One module per subcommand.

pub mod bench;
pub mod calibrate;
pub mod loss;
pub mod targets;
