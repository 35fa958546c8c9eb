//! `lsmooth targets`: the smoothed target row of one label.

use crate::cli::TargetsArgs;
use crate::CliError;
use label_smoothing::target_distribution;

/// Prints the target distribution as a JSON array, e.g. `[0.9, 0.02, 0.02, 0.02, 0.02, 0.02]`.
pub fn run(args: &TargetsArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    if args.classes < 2 {
        return Err(CliError::Usage(format!(
            "--classes must be at least 2, got {}",
            args.classes
        )));
    }
    if args.label >= args.classes {
        return Err(CliError::Usage(format!(
            "--label {} is out of range [0, {})",
            args.label, args.classes
        )));
    }
    if !(0.0..=1.0).contains(&args.smoothing) {
        return Err(CliError::Usage(format!(
            "--smoothing {} is outside [0, 1]",
            args.smoothing
        )));
    }
    let t = target_distribution(args.classes, args.label, args.smoothing, args.spread)?;
    writeln!(out, "{t:?}").map_err(CliError::Stdout)?;
    Ok(())
}
