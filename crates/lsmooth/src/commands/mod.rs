//! One module per subcommand.

pub mod bench;
pub mod calibrate;
pub mod compare;
pub mod docs;
pub mod loss;
pub mod project;
pub mod targets;
pub mod train;

use crate::io::atomic::Outputs;
use crate::CliError;

/// Prints with `print`, then renames the staged `outputs` into place, so that a command whose print fails leaves
/// every existing output as it was. The exception is a reader that closed the pipe (`lsmooth ... | head`): it
/// has what it wanted, so the outputs are committed and the command still ends quietly.
pub fn print_then_commit(outputs: Outputs, print: impl FnOnce() -> Result<(), CliError>) -> Result<(), CliError> {
    match print() {
        Ok(()) => Ok(outputs.commit()?),
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            outputs.commit()?;
            Err(CliError::Stdout(e))
        }
        // Dropped uncommitted, the outputs leave nothing behind.
        Err(e) => Err(e),
    }
}
