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
    /// Time the fused kernel on seeded random logits, next to the machine's copy bandwidth.
    Bench(BenchArgs),
    /// Calibration metrics of saved logits or probabilities, temperature scaling, a reliability diagram.
    Calibrate(CalibrateArgs),
}

/// Arguments of `lsmooth calibrate`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["logits", "probs"])))]
#[command(
    after_help = "ECE bins are equal-width: confidence c falls in bin floor(c * bins), 1.0 in the last.\n\
Example:\n  lsmooth calibrate --logits test_logits.npy --labels test_labels.npy \\\n      \
--fit-temperature val_logits.npy val_labels.npy --plot reliability.svg"
)]
pub struct CalibrateArgs {
    /// Logits, [N, K], float32 or float64 (for example saved from PyTorch with numpy.save).
    #[arg(long, value_name = "L.npy")]
    pub logits: Option<PathBuf>,
    /// Probabilities, [N, K], rows summing to 1.
    #[arg(long, value_name = "P.npy")]
    pub probs: Option<PathBuf>,
    /// Labels, [N], any integer dtype.
    #[arg(long, value_name = "Y.npy")]
    pub labels: PathBuf,
    /// Number of bins for ECE, MCE, adaptive and classwise ECE.
    #[arg(long, default_value_t = 15)]
    pub bins: usize,
    /// Fit a temperature on held-out logits and labels, and report the metrics after scaling too.
    #[arg(long, num_args = 2, value_names = ["VAL_LOGITS.npy", "VAL_LABELS.npy"])]
    pub fit_temperature: Option<Vec<PathBuf>>,
    /// Write a reliability diagram (SVG).
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Logit types for `lsmooth bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

/// Arguments of `lsmooth bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Counts 8*N*K bytes per call for f32 forward+backward (read logits, write gradient), \
4*N*K forward only, half that for bf16/f16; the copy moves the logits' bytes into another buffer (read + write).\n\
Example:\n  lsmooth bench --shape 2048x32000 --threads 2 --json"
)]
pub struct BenchArgs {
    /// Problem size, rows x classes.
    #[arg(long, value_name = "NxK")]
    pub shape: String,
    /// Threads (default: all cores).
    #[arg(long, value_name = "T")]
    pub threads: Option<usize>,
    /// others or uniform.
    #[arg(long, default_value = "others", value_parser = parse_spread)]
    pub spread: Spread,
    /// Fixed smoothing (default 0.1).
    #[arg(long, value_name = "EPS", conflicts_with = "adaptive")]
    pub smoothing: Option<f32>,
    /// Adaptive smoothing alpha * p(label).
    #[arg(long, value_name = "ALPHA")]
    pub adaptive: Option<f32>,
    /// Time the loss alone (evaluation).
    #[arg(long)]
    pub forward_only: bool,
    /// Write the gradient over the logits instead of into a second buffer.
    #[arg(long)]
    pub in_place: bool,
    /// Logit type.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DType,
    /// Timed calls per measurement (default: about one second's worth, 5 to 500).
    #[arg(long, value_name = "R")]
    pub repeat: Option<usize>,
    /// Seed of the random logits and labels.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
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
