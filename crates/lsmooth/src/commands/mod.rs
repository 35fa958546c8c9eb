//! One module per subcommand.

pub mod bench;
pub mod calibrate;
pub mod compare;
pub mod docs;
pub mod loss;
pub mod project;
pub mod targets;
pub mod train;
