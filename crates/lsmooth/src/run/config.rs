//! What a run is: its data, model, optimiser, loss and regulariser (`run.json`).

use std::path::{Path, PathBuf};

use label_smoothing::{LabelSmoothingConfig, Reduction, Smoothing, Spread};
use serde::{Deserialize, Serialize};

use super::{io_err, ModelKind, OptimizerKind};
use crate::data::Source;
use crate::CliError;

/// Bins of the reported ECE.
pub const ECE_BINS: usize = 15;

/// The loss of a run, as on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "LossSpecFile")]
pub struct LossSpec {
    /// Fixed or adaptive smoothing.
    pub smoothing: Smoothing,
    /// `others` or `uniform`.
    pub spread: Spread,
    /// `sum`, `mean` or `mean-nonzero`.
    pub reduction: Reduction,
    /// Rows with this label are ignored (the PyTorch preset's `-100`; never a label of the data sets here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_index: Option<i64>,
    /// The z-loss scale (`--z-loss`; 0: off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub z_loss: f32,
    /// The soft-cap of the logits (`--softcap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softcap: Option<f32>,
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// [`LossSpec`] as `run.json` and `summary.json` hold it: `"smoothing": {"fixed": 0.1}` or `{"adaptive":
/// {"alpha": 0.2}}`, and also the earlier spelling `"smoothing": 0.1, "adaptive": 0.2 | null` (adaptive when
/// `adaptive` is a number), so that existing run directories load.
#[derive(Deserialize)]
struct LossSpecFile {
    smoothing: SmoothingFile,
    #[serde(default)]
    adaptive: Option<f32>,
    spread: Spread,
    reduction: Reduction,
    #[serde(default)]
    ignore_index: Option<i64>,
    #[serde(default)]
    z_loss: f32,
    #[serde(default)]
    softcap: Option<f32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SmoothingFile {
    Smoothing(Smoothing),
    Eps(f32),
}

impl From<LossSpecFile> for LossSpec {
    fn from(f: LossSpecFile) -> Self {
        let smoothing = match (f.smoothing, f.adaptive) {
            (SmoothingFile::Eps(_), Some(alpha)) => Smoothing::Adaptive { alpha },
            (SmoothingFile::Eps(eps), None) => Smoothing::Fixed(eps),
            (SmoothingFile::Smoothing(s), _) => s,
        };
        LossSpec {
            smoothing,
            spread: f.spread,
            reduction: f.reduction,
            ignore_index: f.ignore_index,
            z_loss: f.z_loss,
            softcap: f.softcap,
        }
    }
}

impl From<LabelSmoothingConfig> for LossSpec {
    /// The loss of a core configuration (its class weights are not part of a run's loss).
    fn from(c: LabelSmoothingConfig) -> Self {
        LossSpec {
            smoothing: c.smoothing,
            spread: c.spread,
            reduction: c.reduction,
            ignore_index: c.ignore_index,
            z_loss: c.z_loss,
            softcap: c.softcap,
        }
    }
}

impl LossSpec {
    /// A loss with the mean reduction and no ignore index.
    pub fn mean(smoothing: Smoothing, spread: Spread) -> Self {
        LossSpec {
            smoothing,
            spread,
            reduction: Reduction::Mean,
            ignore_index: None,
            z_loss: 0.0,
            softcap: None,
        }
    }

    /// The core configuration; `none` is refused (training needs a scalar).
    pub fn config(&self) -> Result<LabelSmoothingConfig, CliError> {
        if self.reduction == Reduction::None {
            return Err(CliError::Usage(
                "--reduction none gives a loss per row; training needs sum, mean or mean-nonzero".into(),
            ));
        }
        let mut c = LabelSmoothingConfig::new()
            .with_spread(self.spread)
            .with_reduction(self.reduction)
            .with_ignore_index(self.ignore_index)
            .with_z_loss(self.z_loss);
        c.smoothing = self.smoothing;
        c.softcap = self.softcap;
        Ok(c)
    }

    /// A short name: `plain`, `others-0.1`, `uniform-0.1`, `adaptive-0.2`, followed by `-z1e-4` and `-cap30` for
    /// a z-loss and a soft-cap.
    pub fn describe(&self) -> String {
        let mut name = match self.smoothing {
            Smoothing::Adaptive { alpha } => format!("adaptive-{}", short(alpha)),
            Smoothing::Fixed(0.0) => "plain".into(),
            Smoothing::Fixed(e) => format!("{}-{}", self.spread, short(e)),
        };
        if self.z_loss != 0.0 {
            name += &format!("-z{}", short(self.z_loss));
        }
        if let Some(c) = self.softcap {
            name += &format!("-cap{}", short(c));
        }
        name
    }
}

/// A number in the fewest characters that read back to it: Rust's shortest round-trip digits, in exponent form
/// where that is shorter (`1e-30`, not 32 characters of zeros), for names of settings and run directories.
pub fn short<T: std::fmt::Display + std::fmt::LowerExp>(v: T) -> String {
    let (plain, exp) = (format!("{v}"), format!("{v:e}"));
    if exp.len() < plain.len() {
        exp
    } else {
        plain
    }
}

/// The training objective when it is more than the (smoothed) cross-entropy: a term added to it (mixup, CutMix,
/// OLS, the confidence penalty) or a loss that replaces it (label relaxation, distillation), from the core crate's
/// related losses. Stored under the key `objective` of `run.json` (read under `regularizer` too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Objective {
    /// mixup: inputs mixed with `lambda ~ Beta(alpha, alpha)`, targets mixed alike (smoothed by the loss).
    Mixup {
        /// Beta's parameter.
        alpha: f64,
    },
    /// CutMix: a box pasted from another image, `lambda` from its area.
    Cutmix {
        /// Beta's parameter.
        alpha: f64,
    },
    /// Online label smoothing (0.5 hard CE + 0.5 CE against the learnt soft labels).
    Ols,
    /// The confidence penalty `CE - beta * H(p)`.
    ConfidencePenalty {
        /// Weight of the entropy.
        beta: f32,
    },
    /// Label relaxation with parameter `alpha` (replaces the cross-entropy).
    LabelRelaxation {
        /// The accepted probability mass off the label.
        alpha: f32,
    },
    /// Knowledge distillation from a trained run's model.
    Distill {
        /// The teacher's run directory (`run.json`, `model.safetensors`).
        teacher: PathBuf,
        /// Softmax temperature.
        temperature: f32,
        /// Weight of the distillation term.
        beta: f32,
    },
}

impl Objective {
    /// A short name: `mixup-0.2`, `ols`, `distill`...
    pub fn describe(&self) -> String {
        match self {
            Objective::Mixup { alpha } => format!("mixup-{}", short(alpha)),
            Objective::Cutmix { alpha } => format!("cutmix-{}", short(alpha)),
            Objective::Ols => "ols".into(),
            Objective::ConfidencePenalty { beta } => format!("confidence-penalty-{}", short(beta)),
            Objective::LabelRelaxation { alpha } => format!("label-relaxation-{}", short(alpha)),
            Objective::Distill { temperature, beta, .. } => format!("distill-t{}-b{}", short(temperature), short(beta)),
        }
    }
}

/// What made a result, recorded next to it (`run.json`, `metrics.json`, `summary.json`, the report): results are
/// bit-reproducible on one machine for any number of threads, but candle's matrix products round differently
/// on another instruction set, which moves training results slightly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// This program's version.
    pub lsmooth: String,
    /// The CPU's widest vector instruction set, as the loss kernel dispatches on it (`avx512`, `avx2+fma`, ...).
    pub instruction_set: String,
}

impl Provenance {
    /// This process's.
    pub fn here() -> Self {
        Provenance {
            lsmooth: env!("CARGO_PKG_VERSION").to_string(),
            instruction_set: label_smoothing::instruction_set().to_string(),
        }
    }

    /// One line for a report.
    pub fn describe(&self) -> String {
        format!("lsmooth {}, instruction set {}", self.lsmooth, self.instruction_set)
    }
}

/// `run.json`: the configuration, and what wrote it (not part of the configuration: a run resumes on any
/// machine).
#[derive(Debug, Serialize)]
pub struct RunFile<'a> {
    /// The configuration.
    #[serde(flatten)]
    pub config: &'a TrainConfig,
    /// What wrote the file.
    pub made_by: Provenance,
}

/// Everything that determines a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The data.
    pub data: Source,
    /// Keep only this many training examples.
    pub train_size: Option<usize>,
    /// Fraction of training labels flipped to another class.
    pub label_noise: f64,
    /// The network.
    pub model: ModelKind,
    /// The optimiser.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (decoupled for AdamW, L2 for SGD).
    pub weight_decay: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: usize,
    /// The seed of initialisation, label noise and batch order.
    pub seed: u64,
    /// The loss.
    pub loss: LossSpec,
    /// mixup, CutMix, online label smoothing, a penalty, relaxation or distillation, if any.
    #[serde(default, alias = "regularizer")]
    pub objective: Option<Objective>,
}

impl TrainConfig {
    /// A short name of the objective: the loss, and the regulariser if any.
    pub fn describe(&self) -> String {
        match &self.objective {
            // These replace the cross-entropy: the smoothing flags do not apply.
            Some(r @ (Objective::Ols | Objective::LabelRelaxation { .. })) => r.describe(),
            Some(r) => format!("{}+{}", self.loss.describe(), r.describe()),
            None => self.loss.describe(),
        }
    }
}

/// Reads the configuration of an existing run directory (`run.json`).
pub fn read_config(dir: &Path) -> Result<TrainConfig, CliError> {
    let path: PathBuf = dir.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run.json` as `lsmooth train --dataset digits --epochs 2 --adaptive 0.2 --confidence-penalty 0.1` wrote
    /// it before the loss held the core's `Smoothing` and before the objective had its own key.
    const EARLIER_RUN_JSON: &str = r#"{
      "data": "digits", "train_size": null, "label_noise": 0.0,
      "model": {"kind": "mlp", "hidden": [256, 256]}, "optimizer": {"kind": "adamw"},
      "lr": 0.001, "weight_decay": 0.0001, "batch_size": 128, "epochs": 2, "seed": 0,
      "loss": {"smoothing": 0.0, "adaptive": 0.2, "spread": "others", "reduction": "mean"},
      "regularizer": {"kind": "confidence-penalty", "beta": 0.1}
    }"#;

    #[test]
    fn earlier_run_json_loads_with_the_same_meaning() {
        let c: TrainConfig = serde_json::from_str(EARLIER_RUN_JSON).unwrap();
        assert_eq!(c.loss.smoothing, Smoothing::Adaptive { alpha: 0.2 });
        assert_eq!((c.loss.spread, c.loss.reduction), (Spread::Others, Reduction::Mean));
        assert_eq!(c.objective, Some(Objective::ConfidencePenalty { beta: 0.1 }));
        assert_eq!(c.describe(), "adaptive-0.2+confidence-penalty-0.1");

        let fixed = EARLIER_RUN_JSON.replace(
            r#""smoothing": 0.0, "adaptive": 0.2"#,
            r#""smoothing": 0.1, "adaptive": null"#,
        );
        let c: TrainConfig = serde_json::from_str(&fixed).unwrap();
        assert_eq!(c.loss.smoothing, Smoothing::Fixed(0.1));
    }

    #[test]
    fn run_json_round_trips() {
        let c: TrainConfig = serde_json::from_str(EARLIER_RUN_JSON).unwrap();
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""smoothing":{"adaptive":{"alpha":0.2}}"#), "{text}");
        assert!(text.contains(r#""objective":{"kind":"confidence-penalty""#), "{text}");
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).unwrap(), c);
    }
}
