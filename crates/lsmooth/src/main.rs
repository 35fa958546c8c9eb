use clap::error::ErrorKind;
use std::io::Write;
use std::process::ExitCode;

/// Writes to stderr, ignoring failure: with stderr closed or full there is nowhere left to report to, and the exit
/// status still says what happened.
fn report(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn main() -> ExitCode {
    let cli = match lsmooth::cli::parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // A reader that stops early (`lsmooth --help | head`) is not an error.
            let _ = write!(std::io::stdout().lock(), "{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            report(&e.to_string());
            return ExitCode::from(2);
        }
        Err(e) => {
            report(&format!(
                "lsmooth: {}\n",
                lsmooth::cli::one_line(&e.render().to_string())
            ));
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match lsmooth::run(cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader closed the pipe (`lsmooth ... | head`): it has what it wanted; every output file was
        // already written whole before anything was printed.
        Err(lsmooth::CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            // One line whatever the error holds: control characters from a file or a library are escaped.
            let message = lsmooth::io::escape_controls(&e.to_string());
            report(&format!("lsmooth: error: {message}\n"));
            ExitCode::from(2)
        }
    }
}
