//! The `lsmooth` command-line tool, as a library so that its pieces can be tested and reused.
//!
//! - [`io`]: array files (`.npy`, `.npz`, safetensors, `torch.save`) and IDX reading, atomic writing;
//! - [`data`]: MNIST-format datasets, splits and label noise;
//! - [`run`](mod@run): training with candle and the label-smoothed loss (config, loop, checkpoint, metrics);
//! - [`commands`]: one module per subcommand;
//! - [`sweep`]: settings parsing and summary statistics of sweeps;
//! - [`analysis`]: the penultimate-layer projection;
//! - [`report`]: charts (SVG);
//! - [`cli`]: the argument definitions.
#![warn(missing_docs)]

pub mod analysis;
pub mod cli;
pub mod commands;
pub mod data;
pub mod error;
pub mod io;
pub mod progress;
pub mod report;
pub mod run;
pub mod sweep;

pub use error::CliError;

/// Runs a parsed command line, writing its report to `out`.
pub fn run(cli: cli::Cli, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    match cli.command {
        cli::Command::Loss(args) => commands::loss::run(&args, out),
        cli::Command::Targets(args) => commands::targets::run(&args, out),
        cli::Command::Bench(args) => commands::bench::run(&args, out),
        cli::Command::Calibrate(args) => commands::calibrate::run(&args, out),
        cli::Command::Train(args) => commands::train::run(&args, out),
        cli::Command::Compare(args) => commands::compare::run(&args, out),
        cli::Command::Project(args) => commands::project::run(&args, out),
        cli::Command::Completions(args) => commands::docs::completions(&args, out),
        cli::Command::Man(args) => commands::docs::man(&args, out),
    }
}
