//! `lsmooth completions` and `lsmooth man`: shell completion scripts (clap_complete) and manual pages
//! (clap_mangen), both generated from the same argument definitions as `--help`.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::io::atomic;
use crate::CliError;

/// Prints the completion script of `args.shell`.
pub fn completions(args: &CompletionsArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "lsmooth", &mut buf);
    out.write_all(&buf).map_err(CliError::Stdout)
}

/// Prints `lsmooth.1`, or with `--out-dir` writes it and one `lsmooth-COMMAND.1` per command there.
pub fn man(args: &ManArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let cmd = Cli::command();
    let page = |cmd: clap::Command| -> Result<Vec<u8>, CliError> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut buf)
            .map_err(|e| CliError::Runtime(format!("rendering the manual page: {e}")))?;
        Ok(buf)
    };
    let Some(dir) = &args.out_dir else {
        return out.write_all(&page(cmd)?).map_err(CliError::Stdout);
    };
    std::fs::create_dir_all(dir).map_err(|e| CliError::input(dir, e.to_string()))?;
    let mut outputs = atomic::Outputs::new();
    outputs.add(&dir.join("lsmooth.1"), &page(cmd.clone())?)?;
    for sub in cmd.get_subcommands() {
        // Each page is named and headed as `man` shows it: `lsmooth-loss(1)`.
        let name = format!("lsmooth-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("lsmooth {}", sub.get_name()));
        outputs.add(&dir.join(format!("{name}.1")), &page(sub)?)?;
    }
    outputs.commit()?;
    let written = 1 + cmd.get_subcommands().count();
    writeln!(out, "{written} manual pages written to {}", dir.display()).map_err(CliError::Stdout)
}
