//! Command-line arguments.
//!
//! The doc comments of the arguments are their `--help` texts, written for a terminal: `[N, K]` is a shape and
//! `<loss>` a placeholder there, not a link or an HTML tag.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod parse;
mod values;

pub use parse::{one_line, parse};
pub use values::{finite_f32, finite_f64, positive_f32, usize_in};
use values::{margin, non_negative_f32, open_unit, parse_reduction, parse_spread};

use clap::{ArgGroup, Args, Parser, Subcommand};
use label_smoothing::{LabelSmoothingConfig, Reduction, Smoothing, Spread};
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
    /// Loss (and optionally gradient) of logits in an array file (.npy, .npz, .safetensors, .pt).
    Loss(LossArgs),
    /// Print the smoothed target distribution of one label.
    Targets(TargetsArgs),
    /// Time the fused kernel on seeded random logits, next to the machine's copy bandwidth.
    Bench(BenchArgs),
    /// Calibration metrics of saved logits or probabilities, temperature scaling, a reliability diagram.
    Calibrate(CalibrateArgs),
    /// Train a classifier (candle, CPU) with label smoothing and evaluate it every epoch.
    Train(TrainArgs),
    /// Train several settings over several seeds and write a report (table, curves, reliability diagrams).
    Compare(CompareArgs),
    /// Project penultimate-layer features of three classes onto the plane of their templates (Müller et al.).
    Project(ProjectArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    Man(ManArgs),
}

/// Arguments of `lsmooth completions`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  lsmooth completions bash > ~/.local/share/bash-completion/completions/lsmooth")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `lsmooth man`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  lsmooth man | man -l -\n  lsmooth man --out-dir share/man/man1")]
pub struct ManArgs {
    /// Write lsmooth.1 and one lsmooth-COMMAND.1 per command into this directory instead of printing lsmooth.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// The array files the commands read, for their `--help` (a macro, so that `concat!` can join it to a literal).
macro_rules! array_files {
    () => {
        "\nArray files: .npy; .npz (FILE.npz:NAME, or its only array); .safetensors \
(FILE.safetensors:NAME, or its only tensor); torch.save files (.pt, .pth: a saved tensor, or FILE.pt:KEY of a \
saved dict or state dict). The format is read from the file's first bytes. Floats of any width are computed in \
float32; labels may have any integer dtype."
    };
}

/// Arguments of `lsmooth project`.
#[derive(Debug, Args)]
#[command(
    after_help = concat!("The plane is spanned by the three classes' rows of the final-layer weight matrix (their \
templates); each example of those classes is drawn at its coordinates in it. Spread is the RMS distance of a \
class's examples to their centroid.\nExample:\n  lsmooth train --save-features --out runs/ls\n  \
lsmooth project --features runs/ls/test_features.npy --labels runs/ls/test_labels.npy \\\n      \
--weights runs/ls/head_weight.npy --classes 3,5,8 --plot projection.png", array_files!())
)]
pub struct ProjectArgs {
    /// Penultimate-layer activations, [N, D], float16, bfloat16, float32 or float64.
    #[arg(long, value_name = "F.npy")]
    pub features: PathBuf,
    /// Labels, [N], any integer dtype.
    #[arg(long, value_name = "Y.npy")]
    pub labels: PathBuf,
    /// The final layer's weight matrix, [K, D] (PyTorch's nn.Linear.weight layout), float16, bfloat16, float32 or float64.
    #[arg(long, value_name = "W.npy")]
    pub weights: PathBuf,
    /// The three classes.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',', required = true, value_parser = usize_in::<0, 100_000_000>)]
    pub classes: Vec<usize>,
    /// Write the scatter plot: SVG or PNG by the file's extension.
    #[arg(long, value_name = "OUT.svg|OUT.png")]
    pub plot: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `lsmooth calibrate`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["logits", "probs"])))]
#[command(
    after_help = concat!("ECE bins are equal-width: confidence c falls in bin floor(c * bins), 1.0 in the last; adaptive \
ECE and the debiased L2 error use equal-mass bins. Smooth ECE is computed as relplot's smECE.\n\
Example:\n  lsmooth calibrate --logits test_logits.npy --labels test_labels.npy \\\n      \
--fit-temperature val_logits.npy val_labels.npy --bootstrap 1000 --plot reliability.svg", array_files!())
)]
pub struct CalibrateArgs {
    /// Logits, [N, K], float16, bfloat16, float32 or float64 (for example saved from PyTorch with torch.save).
    #[arg(long, value_name = "L.npy")]
    pub logits: Option<PathBuf>,
    /// Probabilities, [N, K], float16, bfloat16, float32 or float64, rows summing to 1.
    #[arg(long, value_name = "P.npy")]
    pub probs: Option<PathBuf>,
    /// Labels, [N], any integer dtype.
    #[arg(long, value_name = "Y.npy")]
    pub labels: PathBuf,
    /// Number of bins for ECE, MCE, adaptive and classwise ECE.
    #[arg(long, default_value_t = 15, value_parser = usize_in::<1, 100_000>)]
    pub bins: usize,
    /// Fit a temperature on held-out logits and labels, and report the metrics after scaling too.
    #[arg(long, num_args = 2, value_names = ["VAL_LOGITS.npy", "VAL_LABELS.npy"])]
    pub fit_temperature: Option<Vec<PathBuf>>,
    /// Fit vector scaling (a weight and a bias per class) on held-out logits and labels, and report the metrics
    /// after it too.
    #[arg(long, num_args = 2, value_names = ["VAL_LOGITS.npy", "VAL_LABELS.npy"])]
    pub fit_vector: Option<Vec<PathBuf>>,
    /// Bootstrap confidence intervals of accuracy, NLL, Brier, ECE, smooth ECE and the debiased L2 error from R
    /// resamples of the rows.
    #[arg(long, value_name = "R", value_parser = usize_in::<2, 1_000_000>)]
    pub bootstrap: Option<usize>,
    /// Seed of the bootstrap resampling.
    #[arg(long, value_name = "S", default_value_t = 0, requires = "bootstrap")]
    pub bootstrap_seed: u64,
    /// Coverage of the bootstrap intervals, in (0, 1).
    #[arg(long, value_name = "L", default_value_t = 0.95, requires = "bootstrap", value_parser = open_unit)]
    pub level: f64,
    /// Write a reliability diagram: SVG or PNG by the file's extension.
    #[arg(long, value_name = "OUT.svg|OUT.png")]
    pub plot: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A number strictly between 0 and 1.
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
With --linear NxDxK, counts 6*N*D*K floating-point operations per forward+backward (three products) and \
reports the peak resident memory of each schedule.\n\
Example:\n  lsmooth bench --shape 2048x32000 --threads 2 --json\n  lsmooth bench --linear 4096x1024x32000 --json"
)]
pub struct BenchArgs {
    /// Problem size, rows x classes.
    #[arg(
        long,
        value_name = "NxK",
        required_unless_present = "linear",
        conflicts_with = "linear"
    )]
    pub shape: Option<String>,
    /// Time the fused linear loss instead (hidden states [N, D], weight [K, D], f32, forward and backward),
    /// next to the unfused composition and the three products alone, in alternating rounds.
    #[arg(long, value_name = "NxDxK", conflicts_with_all = ["forward_only", "in_place"])]
    pub linear: Option<String>,
    /// With --linear: rows per block (default: chosen from K, see `LinearCrossEntropy::block_rows`).
    #[arg(long, value_name = "B", requires = "linear", value_parser = usize_in::<1, 100_000_000>)]
    pub block_rows: Option<usize>,
    /// With --linear: classes per block (default: all K up to two million classes, see
    /// `LinearCrossEntropy::block_classes`).
    #[arg(long, value_name = "C", requires = "linear", value_parser = usize_in::<1, 1_000_000_000>)]
    pub block_classes: Option<usize>,
    /// With --linear: also time the fused loss with the gradient filter at threshold T
    /// (`LinearCrossEntropy::with_gradient_filter`), in the same rounds.
    #[arg(long, value_name = "T", requires = "linear", value_parser = non_negative_f32)]
    pub filter: Option<f64>,
    /// With --linear: peaked logits, as a trained classifier's: each row of x is its label's row of W scaled so
    /// that its own logit is about M (0 to 1000), plus noise (default: x and W uniform, logits of standard
    /// deviation 1).
    #[arg(long, value_name = "M", requires = "linear", value_parser = margin)]
    pub peaked: Option<f64>,
    /// Threads (default: all cores).
    #[arg(long, value_name = "T", value_parser = usize_in::<1, 1024>)]
    pub threads: Option<usize>,
    /// Smoothing (default 0.1 here), spread and reduction.
    #[command(flatten)]
    pub loss: SmoothingFlags,
    /// Time the loss alone (evaluation).
    #[arg(long)]
    pub forward_only: bool,
    /// Write the gradient over the logits instead of into a second buffer.
    #[arg(long)]
    pub in_place: bool,
    /// Also time, in the same rounds, the loss without --z-loss and --softcap (otherwise the same), and report
    /// the ratio of the two: what the options cost.
    #[arg(long)]
    pub versus_plain: bool,
    /// Logit type.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DType,
    /// Timed rounds, each one call of the loss, one copy and one read, each after an untimed one (default:
    /// about a second of timed loss calls, 5 to 500).
    #[arg(long, value_name = "R", value_parser = usize_in::<1, 10_000_000>)]
    pub repeat: Option<usize>,
    /// Seed of the random logits and labels.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The loss flags of `lsmooth loss`, `lsmooth bench` and `lsmooth train`.
#[derive(Debug, Clone, Args)]
pub struct SmoothingFlags {
    /// Fixed smoothing eps in [0, 1] (default 0, plain cross-entropy; `lsmooth bench`: 0.1).
    #[arg(long, value_name = "EPS", conflicts_with = "adaptive", allow_negative_numbers = true, value_parser = finite_f32)]
    pub smoothing: Option<f32>,
    /// Adaptive smoothing alpha * p(label) (fast-reid's eps < 0), alpha in [0, 1].
    #[arg(long, value_name = "ALPHA", allow_negative_numbers = true, value_parser = finite_f32)]
    pub adaptive: Option<f32>,
    /// How the smoothing mass is spread: others (e/(K-1), fast-reid) or uniform (e/K, PyTorch).
    #[arg(long, default_value = "others", value_parser = parse_spread)]
    pub spread: Spread,
    /// none, sum, mean, or mean-nonzero (fast-reid).
    #[arg(long, default_value = "mean", value_parser = parse_reduction)]
    pub reduction: Reduction,
    /// z-loss scale S >= 0 (PaLM; Liger-Kernel's lse_square_scale): S * logsumexp(row)^2 is added to the loss of
    /// every row not ignored (0: off).
    #[arg(long = "z-loss", value_name = "S", default_value_t = 0.0, allow_negative_numbers = true, value_parser = finite_f32)]
    pub z_loss: f32,
    /// Soft-cap the logits at C > 0 (Gemma 2): the loss sees C * tanh(logit / C).
    #[arg(long, value_name = "C", allow_negative_numbers = true, value_parser = finite_f32)]
    pub softcap: Option<f32>,
}

impl SmoothingFlags {
    /// The smoothing of these flags: `--adaptive`, else `--smoothing`, else fixed `default_eps`; both in `[0, 1]`
    /// (a usage error naming the flag otherwise).
    pub fn smoothing(&self, default_eps: f32) -> Result<Smoothing, crate::CliError> {
        let s = match (self.smoothing, self.adaptive) {
            (_, Some(alpha)) => Smoothing::Adaptive { alpha },
            (Some(eps), None) => Smoothing::Fixed(eps),
            (None, None) => Smoothing::Fixed(default_eps),
        };
        // The core's check, in the words of the flags.
        s.validate().map_err(|_| {
            crate::CliError::Usage(match s {
                Smoothing::Fixed(eps) => format!(
                    "--smoothing {eps} is outside [0, 1]; for adaptive smoothing (fast-reid's eps < 0) use \
                     --adaptive ALPHA, e.g. --adaptive 0.2"
                ),
                Smoothing::Adaptive { alpha } => format!("--adaptive {alpha} is outside [0, 1]"),
            })
        })
    }

    /// `--z-loss` and `--softcap`, checked (a usage error naming the flag otherwise).
    pub fn logit_options(&self) -> Result<(f32, Option<f32>), crate::CliError> {
        if self.z_loss < 0.0 {
            return Err(crate::CliError::Usage(format!(
                "--z-loss {} is negative; the z-loss scale is a number >= 0 (0 turns it off), e.g. --z-loss 1e-4",
                self.z_loss
            )));
        }
        if let Some(c) = self.softcap.filter(|&c| c <= 0.0) {
            return Err(crate::CliError::Usage(format!(
                "--softcap {c} is not positive; the cap is a number > 0, e.g. --softcap 30"
            )));
        }
        Ok((self.z_loss, self.softcap))
    }

    /// The core configuration of these flags (no weights, no ignore index), smoothing as [`Self::smoothing`].
    pub fn config(&self, default_eps: f32) -> Result<LabelSmoothingConfig, crate::CliError> {
        let (z_loss, softcap) = self.logit_options()?;
        let mut c = LabelSmoothingConfig::new()
            .with_spread(self.spread)
            .with_reduction(self.reduction)
            .with_z_loss(z_loss);
        c.softcap = softcap;
        c.smoothing = self.smoothing(default_eps)?;
        Ok(c)
    }
}

/// Arguments of `lsmooth loss`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["targets", "soft_targets"])))]
#[command(after_help = concat!("Prints one JSON line: {\"loss\": ..., \"n\": N, \"k\": K, ...}. \
Example:\n  lsmooth loss --logits logits.npy --targets labels.npy --smoothing 0.1 --grad-out grad.npy", array_files!()))]
pub struct LossArgs {
    /// Logits, [N, K], float16, bfloat16, float32 or float64 (computed in float32).
    #[arg(long, value_name = "L.npy")]
    pub logits: PathBuf,
    /// Hard labels, [N], any integer dtype.
    #[arg(long, value_name = "T.npy")]
    pub targets: Option<PathBuf>,
    /// Soft targets (probability rows), [N, K], float16, bfloat16, float32 or float64.
    #[arg(long, value_name = "S.npy")]
    pub soft_targets: Option<PathBuf>,
    /// Smoothing, spread and reduction.
    #[command(flatten)]
    pub loss: SmoothingFlags,
    /// Rows whose label equals this value are ignored.
    #[arg(long, value_name = "I", allow_negative_numbers = true)]
    pub ignore_index: Option<i64>,
    /// Class weights, [K], float16, bfloat16, float32 or float64.
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
    /// Also report the token accuracy: the share of the rows not ignored whose largest logit is their label
    /// (hard labels only; one more read of the logits).
    #[arg(long)]
    pub accuracy: bool,
}

/// Arguments of `lsmooth targets`.
#[derive(Debug, Args)]
#[command(after_help = "Example: lsmooth targets --classes 6 --smoothing 0.1\n  \
[0.9, 0.02, 0.02, 0.02, 0.02, 0.02]")]
pub struct TargetsArgs {
    /// Number of classes K (at least 2).
    #[arg(long, value_name = "K", value_parser = usize_in::<2, 10_000_000>)]
    pub classes: usize,
    /// Smoothing eps in [0, 1].
    #[arg(long, value_name = "EPS", allow_negative_numbers = true, value_parser = finite_f64)]
    pub smoothing: f64,
    /// others (e/(K-1) on every other class) or uniform (e/K on every class).
    #[arg(long, default_value = "others", value_parser = parse_spread)]
    pub spread: Spread,
    /// The label, in [0, K).
    #[arg(long, value_name = "Y", default_value_t = 0, value_parser = usize_in::<0, 10_000_000>)]
    pub label: usize,
}

/// Which embedded dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbeddedDataset {
    /// 10,000 real MNIST digits (28x28).
    Mnist,
    /// 1,797 UCI optical-recognition digits (8x8).
    Digits,
}

/// Network architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelChoice {
    /// Fully connected, widths from --hidden.
    Mlp,
    /// Two 3x3 convolutions with max-pooling, a 128-unit layer.
    Cnn,
}

/// Optimisers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerChoice {
    /// AdamW, betas (0.9, 0.999), decoupled weight decay.
    Adamw,
    /// SGD with momentum (--momentum).
    Sgd,
}

/// Loss presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// fast-reid's cross_entropy_loss with eps 0.1: spread others, mean over non-zero rows.
    FastReid,
    /// fast-reid's adaptive smoothing, alpha 0.2 (eps < 0): spread others, mean over non-zero rows.
    FastReidAdaptive,
    /// PyTorch's CrossEntropyLoss(label_smoothing=0.1): spread uniform, mean.
    Pytorch,
}

/// Data, model and optimiser flags shared by `lsmooth train` and `lsmooth compare`.
#[derive(Debug, Clone, Args)]
pub struct TrainFlags {
    /// A directory of MNIST-format IDX files (train-images-idx3-ubyte etc., plain or .gz), e.g. MNIST or
    /// Fashion-MNIST. Default: the embedded data.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Which embedded dataset, without --data.
    #[arg(long, value_enum, default_value = "mnist", conflicts_with = "data")]
    pub dataset: EmbeddedDataset,
    /// Flip this fraction of the training labels to other classes (seeded).
    #[arg(long, value_name = "P", default_value_t = 0.0, allow_negative_numbers = true, value_parser = finite_f64)]
    pub label_noise: f64,
    /// Use only the first N training examples.
    #[arg(long, value_name = "N", value_parser = usize_in::<0, 1_000_000_000>)]
    pub train_size: Option<usize>,
    /// Network.
    #[arg(long, value_enum, default_value = "mlp")]
    pub model: ModelChoice,
    /// Hidden widths of the MLP, comma-separated.
    #[arg(long, value_name = "W,W,...", default_value = "256,256", value_delimiter = ',', value_parser = usize_in::<1, 65_536>)]
    pub hidden: Vec<usize>,
    /// Optimiser.
    #[arg(long, value_enum, default_value = "adamw")]
    pub optimizer: OptimizerChoice,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = finite_f64)]
    pub lr: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true, value_parser = finite_f64)]
    pub weight_decay: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true, value_parser = finite_f64)]
    pub momentum: f64,
    /// Examples per step.
    #[arg(long, default_value_t = 128, value_parser = usize_in::<1, 1_000_000>)]
    pub batch_size: usize,
    /// Epochs (default 20; with --resume, extends the run to this many).
    #[arg(long, value_parser = usize_in::<0, 1_000_000>)]
    pub epochs: Option<usize>,
}

/// Loss flags of `lsmooth train`, as in `lsmooth loss`.
#[derive(Debug, Clone, Args)]
pub struct LossFlags {
    /// Smoothing, spread and reduction (training needs sum, mean or mean-nonzero).
    #[command(flatten)]
    pub loss: SmoothingFlags,
    /// A named configuration, the core crate's presets (overrides --spread and --reduction).
    #[arg(long, value_enum, conflicts_with_all = ["smoothing", "adaptive"])]
    pub preset: Option<Preset>,
    /// mixup with lambda ~ Beta(A, A); the mixed targets are smoothed by the loss flags.
    #[arg(long, value_name = "A", group = "regularizer", value_parser = finite_f64)]
    pub mixup: Option<f64>,
    /// CutMix with lambda ~ Beta(A, A).
    #[arg(long, value_name = "A", group = "regularizer", value_parser = finite_f64)]
    pub cutmix: Option<f64>,
    /// Online label smoothing (Zhang et al. 2021): 0.5 CE + 0.5 CE against learnt soft labels.
    #[arg(long, group = "regularizer")]
    pub ols: bool,
    /// The confidence penalty CE - B * H(p) (Pereyra et al. 2017).
    #[arg(long, value_name = "B", group = "regularizer", value_parser = finite_f32)]
    pub confidence_penalty: Option<f32>,
    /// Label relaxation with parameter A (Lienen and Hüllermeier 2021), instead of the cross-entropy.
    #[arg(long, value_name = "A", group = "regularizer", value_parser = finite_f32)]
    pub label_relaxation: Option<f32>,
    /// Distil from the model of a finished run in RUN_DIR (its run.json and model.safetensors).
    #[arg(long, value_name = "RUN_DIR", group = "regularizer")]
    pub distill_from: Option<PathBuf>,
    /// Distillation temperature T.
    #[arg(long, default_value_t = 4.0, value_parser = positive_f32)]
    pub temperature: f32,
    /// Weight of the distillation term.
    #[arg(long, default_value_t = 0.5, value_parser = finite_f32)]
    pub beta: f32,
}

/// Arguments of `lsmooth train`.
#[derive(Debug, Args)]
#[command(
    after_help = "Writes OUT/metrics.json, epochs.csv, model.safetensors (and run.json and, after every epoch, \
checkpoint.safetensors for --resume, with a copy of its state in state.json).\nExample:\n  lsmooth train --preset fast-reid --epochs 10 --out runs/fast-reid"
)]
pub struct TrainArgs {
    /// Data, model and optimiser.
    #[command(flatten)]
    pub flags: TrainFlags,
    /// The loss.
    #[command(flatten)]
    pub loss: LossFlags,
    /// Seed of initialisation, label noise and batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (default runs/<loss>-seed<seed>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the interrupted run in DIR with its saved configuration (only --epochs may change it; a flag
    /// that would change the configuration is refused).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// No per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
    /// Print the final metrics as one JSON object (the contents of OUT/metrics.json) instead of the summary
    /// line; no per-epoch lines.
    #[arg(long)]
    pub json: bool,
    /// Also write the test split's penultimate activations, labels and the head's weights as .npy (for
    /// `lsmooth project` and `lsmooth calibrate`: test_features.npy, test_labels.npy, head_weight.npy,
    /// test_logits.npy, and validation_logits.npy / validation_labels.npy).
    #[arg(long)]
    pub save_features: bool,
}

/// Arguments of `lsmooth compare`.
#[derive(Debug, Args)]
#[command(
    after_help = "Settings: plain, others:EPS, uniform:EPS, adaptive:ALPHA, fast-reid (others 0.1, \
mean-nonzero), fast-reid-adaptive (alpha 0.2, mean-nonzero), pytorch (uniform 0.1), optionally followed by \
+mixup:A, +cutmix:A, +ols, +confidence-penalty:B, +label-relaxation:A (alone, they mean plain+...), or \
distill:SETTING (a plain student distilled, with --temperature and --beta, from the same seed's run of an \
earlier SETTING; --student-hidden makes the students smaller).\n\
Writes OUT/summary.json, report.md, report.html (self-contained) and one run directory per setting and seed.\n\
Example:\n  lsmooth compare --settings plain,others:0.1,adaptive:0.2 --seeds 0,1,2 --label-noise 0.2\n  \
lsmooth compare --grid others:0,0.01,0.02,0.05,0.1,0.2 --grid uniform:0,0.01,0.02,0.05,0.1,0.2"
)]
pub struct CompareArgs {
    /// Data, model and optimiser (as in `lsmooth train`).
    #[command(flatten)]
    pub flags: TrainFlags,
    /// The settings to compare, comma-separated [default: plain,others:0.1,adaptive:0.2,uniform:0.1, or none
    /// with --grid].
    #[arg(long, value_delimiter = ',')]
    pub settings: Option<Vec<String>>,
    /// A strength sweep, KIND:V1,V2,... with KIND others, uniform or adaptive (repeatable): one setting per
    /// strength, after --settings; the report charts the metrics against the strength and names the strengths
    /// with the lowest validation NLL and ECE.
    #[arg(long, value_name = "KIND:V1,V2,...", action = clap::ArgAction::Append)]
    pub grid: Vec<String>,
    /// Seeds, comma-separated: each setting is trained once per seed.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    pub seeds: Vec<u64>,
    /// Output directory.
    #[arg(long, value_name = "DIR", default_value = "runs/compare")]
    pub out: PathBuf,
    /// Distillation temperatures of distill: settings, comma-separated. With more than one, each distill:S
    /// setting runs once per temperature, named distill:S@T<temperature>.
    #[arg(long, value_delimiter = ',', default_value = "4", value_parser = positive_f32)]
    pub temperature: Vec<f32>,
    /// Weight of the distillation term of distill: settings.
    #[arg(long, default_value_t = 0.5, value_parser = finite_f32)]
    pub beta: f32,
    /// Hidden widths of the distilled students' MLP (default: --hidden, the teachers' widths).
    #[arg(long, value_name = "W,W,...", value_delimiter = ',', value_parser = usize_in::<1, 65_536>)]
    pub student_hidden: Option<Vec<usize>>,
    /// The three classes of the penultimate-layer projection plots.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',', default_value = "3,5,8", value_parser = usize_in::<0, 100_000_000>)]
    pub project_classes: Vec<usize>,
    /// No line per finished run.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as one JSON object (the contents of OUT/summary.json) instead of the table; no line per
    /// finished run.
    #[arg(long)]
    pub json: bool,
}
