//! From the command line to [`Cli`]: clap's parse, the checks it cannot express, and its messages on one line.

use super::Cli;

/// Parses the command line, and refuses what the parser alone cannot see: `train --resume DIR` with a flag that
/// would change the saved configuration (only `--epochs` can; `--quiet`, `--json` and `--save-features` only
/// change the output), since the run continues with the configuration in `DIR/run.json`.
pub fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    if let Some(("train", sub)) = matches.subcommand() {
        check_resume(&command, sub)?;
    }
    Cli::from_arg_matches(&matches)
}

fn check_resume(command: &clap::Command, sub: &clap::ArgMatches) -> Result<(), clap::Error> {
    use clap::parser::ValueSource;
    const KEPT: [&str; 5] = ["resume", "epochs", "quiet", "json", "save_features"];
    if sub.value_source("resume") != Some(ValueSource::CommandLine) {
        return Ok(());
    }
    let train = command.find_subcommand("train").expect("the train subcommand");
    // Arguments only: the ids of the flattened groups report a source too.
    let given = train.get_arguments().find(|a| {
        let id = a.get_id().as_str();
        !KEPT.contains(&id) && sub.value_source(id) == Some(ValueSource::CommandLine)
    });
    let Some(arg) = given else {
        return Ok(());
    };
    let flag = arg.get_long().unwrap_or(arg.get_id().as_str());
    Err(train.clone().error(
        clap::error::ErrorKind::ArgumentConflict,
        format!(
            "--resume continues a run with the configuration saved in its run.json; --{flag} cannot change it \
             (only --epochs can): drop --{flag}, or start a new run with --out"
        ),
    ))
}

/// Folds a multi-line argument-parser message into one line, dropping the usage and `--help` hints.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
