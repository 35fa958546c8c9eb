//! What `lsmooth train` and `lsmooth compare` run: a loss from the flags or a setting string (`plain`,
//! `others:0.1`, `adaptive:0.2+mixup:0.2`, `distill:SETTING`, a preset), and the run configuration of it.

use crate::cli::{EmbeddedDataset, LossFlags, ModelChoice, OptimizerChoice, Preset, TrainFlags};
use crate::data::Source;
use crate::run::{LossSpec, ModelKind, Objective, OptimizerKind, TrainConfig};
use crate::CliError;
use label_smoothing::{LabelSmoothingConfig, Smoothing, Spread};

/// The epochs of a run when `--epochs` is not given.
pub const DEFAULT_EPOCHS: usize = 20;

/// The loss of a preset: the core crate's own presets.
pub fn preset(p: Preset) -> LossSpec {
    LossSpec::from(match p {
        Preset::FastReid => LabelSmoothingConfig::fast_reid(0.1, 0.2),
        Preset::FastReidAdaptive => LabelSmoothingConfig::fast_reid(-1.0, 0.2),
        Preset::Pytorch => LabelSmoothingConfig::pytorch(0.1),
    })
}

/// The loss given by the loss flags (a usage error naming the flag for a smoothing outside `[0, 1]`).
pub fn loss_spec(flags: &LossFlags) -> Result<LossSpec, CliError> {
    let (z_loss, softcap) = flags.loss.logit_options()?;
    let base = match flags.preset {
        Some(p) => preset(p),
        None => LossSpec {
            smoothing: flags.loss.smoothing(0.0)?,
            spread: flags.loss.spread,
            reduction: flags.loss.reduction,
            ignore_index: None,
            z_loss: 0.0,
            softcap: None,
        },
    };
    Ok(LossSpec {
        z_loss,
        softcap,
        ..base
    })
}

/// The regulariser given by the loss flags.
pub fn objective(flags: &LossFlags) -> Option<Objective> {
    if let Some(alpha) = flags.mixup {
        Some(Objective::Mixup { alpha })
    } else if let Some(alpha) = flags.cutmix {
        Some(Objective::Cutmix { alpha })
    } else if flags.ols {
        Some(Objective::Ols)
    } else if let Some(beta) = flags.confidence_penalty {
        Some(Objective::ConfidencePenalty { beta })
    } else if let Some(alpha) = flags.label_relaxation {
        Some(Objective::LabelRelaxation { alpha })
    } else {
        flags.distill_from.as_ref().map(|dir| Objective::Distill {
            teacher: dir.clone(),
            temperature: flags.temperature,
            beta: flags.beta,
        })
    }
}

/// A `lsmooth compare` setting: its loss, its regulariser, and for `distill:SETTING` the teacher setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// The loss.
    pub loss: LossSpec,
    /// The regulariser, if any (for distillation, filled in per seed).
    pub objective: Option<Objective>,
    /// The teacher setting of `distill:SETTING`.
    pub teacher: Option<String>,
    /// Distillation temperature (`lsmooth compare` fills it in for `distill:` settings).
    pub temperature: Option<f32>,
    /// Weight of the distillation term (filled in like `temperature`).
    pub beta: Option<f32>,
    /// The student's hidden widths, when they differ from the teacher's.
    pub student_hidden: Option<Vec<usize>>,
}

impl Setting {
    /// The setting of a loss alone: no regulariser, no teacher.
    pub fn of(loss: LossSpec) -> Self {
        Setting {
            loss,
            objective: None,
            teacher: None,
            temperature: None,
            beta: None,
            student_hidden: None,
        }
    }
}

/// Parses a `lsmooth compare` setting: a loss (`plain`, `others:EPS`, `uniform:EPS`, `adaptive:ALPHA`, a preset),
/// optionally `+` a regulariser (`mixup:A`, `cutmix:A`, `ols`, `confidence-penalty:B`, `label-relaxation:A`), or
/// `distill:SETTING`.
pub fn parse_full_setting(s: &str) -> Result<Setting, CliError> {
    if let Some(teacher) = s.strip_prefix("distill:") {
        return Ok(Setting {
            teacher: Some(teacher.to_string()),
            ..Setting::of(parse_setting("plain")?)
        });
    }
    let bad = |part: &str| CliError::Usage(format!("setting {s:?}: {part:?} is not a loss or a regulariser"));
    let number = |part: &str, v: &str| v.parse::<f64>().map_err(|_| bad(part));
    let mut loss = None;
    let mut objective = None;
    for part in s.split('+') {
        let reg = match part.split_once(':') {
            Some(("mixup", v)) => Some(Objective::Mixup {
                alpha: number(part, v)?,
            }),
            Some(("cutmix", v)) => Some(Objective::Cutmix {
                alpha: number(part, v)?,
            }),
            Some(("confidence-penalty", v)) => Some(Objective::ConfidencePenalty {
                beta: number(part, v)? as f32,
            }),
            Some(("label-relaxation", v)) => Some(Objective::LabelRelaxation {
                alpha: number(part, v)? as f32,
            }),
            None if part == "ols" => Some(Objective::Ols),
            _ => None,
        };
        match reg {
            Some(r) if objective.is_none() => objective = Some(r),
            Some(_) => return Err(CliError::Usage(format!("setting {s:?}: at most one regulariser"))),
            None if loss.is_none() => loss = Some(parse_setting(part)?),
            None => return Err(bad(part)),
        }
    }
    Ok(Setting {
        objective,
        ..Setting::of(match loss {
            Some(l) => l,
            None => parse_setting("plain")?,
        })
    })
}

/// Parses a loss setting: `plain`, `others:EPS`, `uniform:EPS`, `adaptive:ALPHA`, or a preset name.
pub fn parse_setting(s: &str) -> Result<LossSpec, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "setting {s:?}: expected plain, others:EPS, uniform:EPS, adaptive:ALPHA, fast-reid, fast-reid-adaptive \
             or pytorch"
        ))
    };
    let number = |v: &str| v.parse::<f32>().map_err(|_| bad());
    Ok(match s.split_once(':') {
        None => match s {
            "plain" => LossSpec::mean(Smoothing::Fixed(0.0), Spread::Others),
            "fast-reid" => preset(Preset::FastReid),
            "fast-reid-adaptive" => preset(Preset::FastReidAdaptive),
            "pytorch" => preset(Preset::Pytorch),
            _ => return Err(bad()),
        },
        Some(("others", v)) => LossSpec::mean(Smoothing::Fixed(number(v)?), Spread::Others),
        Some(("uniform", v)) => LossSpec::mean(Smoothing::Fixed(number(v)?), Spread::Uniform),
        Some(("adaptive", v)) => LossSpec::mean(Smoothing::Adaptive { alpha: number(v)? }, Spread::Others),
        Some(_) => return Err(bad()),
    })
}

/// The run configuration of the shared training flags, a loss and a seed.
pub fn config(flags: &TrainFlags, loss: LossSpec, objective: Option<Objective>, seed: u64) -> TrainConfig {
    TrainConfig {
        data: match (&flags.data, flags.dataset) {
            (Some(dir), _) => Source::Dir(dir.clone()),
            (None, EmbeddedDataset::Mnist) => Source::EmbeddedMnist,
            (None, EmbeddedDataset::Digits) => Source::Digits,
        },
        train_size: flags.train_size,
        label_noise: flags.label_noise,
        model: match flags.model {
            ModelChoice::Mlp => ModelKind::Mlp {
                hidden: flags.hidden.clone(),
            },
            ModelChoice::Cnn => ModelKind::Cnn,
        },
        optimizer: match flags.optimizer {
            OptimizerChoice::Adamw => OptimizerKind::AdamW,
            OptimizerChoice::Sgd => OptimizerKind::Sgd {
                momentum: flags.momentum,
            },
        },
        lr: flags.lr,
        weight_decay: flags.weight_decay,
        batch_size: flags.batch_size,
        epochs: flags.epochs.unwrap_or(DEFAULT_EPOCHS),
        seed,
        loss,
        objective,
    }
}
