//! Command-line arguments.

use clap::{ArgGroup, Args, Parser, Subcommand};
use label_smoothing::{Reduction, Spread};
use std::path::PathBuf;

/// Label-smoothed cross-entropy: targets, losses and gradients.
///
/// Every command exits with status 2 and a one-line message on bad input.
#[derive(Debug, Parser)]
#[command(name = "lsmooth", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Loss (and optionally gradient) of logits in a .npy file.
    Loss(LossArgs),
    /// Print the smoothed target distribution of one label.
    Targets(TargetsArgs),
}

fn parse_spread(s: &str) -> Result<Spread, String> {
    s.parse()
}

fn parse_reduction(s: &str) -> Result<Reduction, String> {
    s.parse()
}

/// Arguments of `lsmooth loss`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["targets", "soft_targets"])))]
#[command(after_help = "Prints one JSON line: {\"loss\": ..., \"n\": N, \"k\": K, ...}. \
Example:\n  lsmooth loss --logits logits.npy --targets labels.npy --smoothing 0.1 --grad-out grad.npy")]
pub struct LossArgs {
    /// Logits, [N, K], float32 or float64 (computed in float32).
    #[arg(long, value_name = "L.npy")]
    pub logits: PathBuf,
    /// Hard labels, [N], any integer dtype.
    #[arg(long, value_name = "T.npy")]
    pub targets: Option<PathBuf>,
    /// Soft targets (probability rows), [N, K], float32 or float64.
    #[arg(long, value_name = "S.npy")]
    pub soft_targets: Option<PathBuf>,
    /// Fixed smoothing eps in [0, 1] (default 0).
    #[arg(long, value_name = "EPS", conflicts_with = "adaptive", allow_negative_numbers = true)]
    pub smoothing: Option<f32>,
    /// Adaptive smoothing alpha * p(label) (fast-reid's eps < 0), alpha in [0, 1].
    #[arg(long, value_name = "ALPHA", allow_negative_numbers = true)]
    pub adaptive: Option<f32>,
    /// How the smoothing mass is spread: others (e/(K-1), fast-reid) or uniform (e/K, PyTorch).
    #[arg(long, default_value = "others", value_parser = parse_spread)]
    pub spread: Spread,
    /// none, sum, mean, or mean-nonzero (fast-reid).
    #[arg(long, default_value = "mean", value_parser = parse_reduction)]
    pub reduction: Reduction,
    /// Rows whose label equals this value are ignored.
    #[arg(long, value_name = "I", allow_negative_numbers = true)]
    pub ignore_index: Option<i64>,
    /// Class weights, [K], float32 or float64.
    #[arg(long, value_name = "W.npy")]
    pub weights: Option<PathBuf>,
    /// Upstream gradient: a scalar array, or [N] with --reduction none.
    #[arg(long, value_name = "G.npy")]
    pub grad_output: Option<PathBuf>,
    /// Write the gradient dLoss/dlogits here, [N, K] float32.
    #[arg(long, value_name = "GRAD.npy")]
    pub grad_out: Option<PathBuf>,
    /// Write the loss here: shape [] or [N] (reduction none), float32.
    #[arg(long, value_name = "LOSS.npy")]
    pub loss_out: Option<PathBuf>,
}

/// Arguments of `lsmooth targets`.
#[derive(Debug, Args)]
#[command(after_help = "Example (the seed's): lsmooth targets --classes 6 --smoothing 0.1\n  \
[0.9, 0.02, 0.02, 0.02, 0.02, 0.02]")]
pub struct TargetsArgs {
    /// Number of classes K (at least 2).
    #[arg(long, value_name = "K")]
    pub classes: usize,
    /// Smoothing eps in [0, 1].
    #[arg(long, value_name = "EPS", allow_negative_numbers = true)]
    pub smoothing: f64,
    /// others (e/(K-1) on every other class) or uniform (e/K on every class).
    #[arg(long, default_value = "others", value_parser = parse_spread)]
    pub spread: Spread,
    /// The label, in [0, K).
    #[arg(long, value_name = "Y", default_value_t = 0)]
    pub label: usize,
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
