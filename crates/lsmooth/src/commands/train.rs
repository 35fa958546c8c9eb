//! `lsmooth train`: one training run.

use std::path::PathBuf;

use crate::cli::{EmbeddedDataset, LossFlags, ModelChoice, OptimizerChoice, Preset, TrainArgs, TrainFlags};
use crate::data::Source;
use crate::io::{atomic, npy};
use crate::train::{self, LossSpec, ModelKind, OptimizerKind, Regularizer, TrainConfig, Verbosity};
use crate::CliError;

/// The epochs of a run when `--epochs` is not given.
pub const DEFAULT_EPOCHS: usize = 20;

/// The loss of a preset.
pub fn preset(p: Preset) -> LossSpec {
    match p {
        Preset::FastReid => LossSpec {
            smoothing: 0.1,
            adaptive: None,
            spread: "others".into(),
            reduction: "mean-nonzero".into(),
        },
        Preset::FastReidAdaptive => LossSpec {
            smoothing: 0.0,
            adaptive: Some(0.2),
            spread: "others".into(),
            reduction: "mean-nonzero".into(),
        },
        Preset::Pytorch => LossSpec {
            smoothing: 0.1,
            adaptive: None,
            spread: "uniform".into(),
            reduction: "mean".into(),
        },
    }
}

/// The loss given by the loss flags.
pub fn loss_spec(flags: &LossFlags) -> LossSpec {
    match flags.preset {
        Some(p) => preset(p),
        None => LossSpec {
            smoothing: flags.smoothing.unwrap_or(0.0),
            adaptive: flags.adaptive,
            spread: flags.spread.name().into(),
            reduction: flags.reduction.name().into(),
        },
    }
}

/// The regulariser given by the loss flags.
pub fn regularizer(flags: &LossFlags) -> Option<Regularizer> {
    if let Some(alpha) = flags.mixup {
        Some(Regularizer::Mixup { alpha })
    } else if let Some(alpha) = flags.cutmix {
        Some(Regularizer::Cutmix { alpha })
    } else if flags.ols {
        Some(Regularizer::Ols)
    } else if let Some(beta) = flags.confidence_penalty {
        Some(Regularizer::ConfidencePenalty { beta })
    } else if let Some(alpha) = flags.label_relaxation {
        Some(Regularizer::LabelRelaxation { alpha })
    } else {
        flags.distill_from.as_ref().map(|dir| Regularizer::Distill {
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
    pub regularizer: Option<Regularizer>,
    /// The teacher setting of `distill:SETTING`.
    pub teacher: Option<String>,
    /// Distillation temperature (`lsmooth compare` fills it in for `distill:` settings).
    pub temperature: Option<f32>,
    /// Weight of the distillation term (filled in like `temperature`).
    pub beta: Option<f32>,
    /// The student's hidden widths, when they differ from the teacher's.
    pub student_hidden: Option<Vec<usize>>,
}

/// Parses a `lsmooth compare` setting: a loss (`plain`, `others:EPS`, `uniform:EPS`, `adaptive:ALPHA`, a preset),
/// optionally `+` a regulariser (`mixup:A`, `cutmix:A`, `ols`, `confidence-penalty:B`, `label-relaxation:A`), or
/// `distill:SETTING`.
pub fn parse_full_setting(s: &str) -> Result<Setting, CliError> {
    if let Some(teacher) = s.strip_prefix("distill:") {
        return Ok(Setting {
            loss: parse_setting("plain")?,
            regularizer: None,
            teacher: Some(teacher.to_string()),
            temperature: None,
            beta: None,
            student_hidden: None,
        });
    }
    let bad = |part: &str| CliError::Usage(format!("setting {s:?}: {part:?} is not a loss or a regulariser"));
    let number = |part: &str, v: &str| v.parse::<f64>().map_err(|_| bad(part));
    let mut loss = None;
    let mut regularizer = None;
    for part in s.split('+') {
        let reg = match part.split_once(':') {
            Some(("mixup", v)) => Some(Regularizer::Mixup {
                alpha: number(part, v)?,
            }),
            Some(("cutmix", v)) => Some(Regularizer::Cutmix {
                alpha: number(part, v)?,
            }),
            Some(("confidence-penalty", v)) => Some(Regularizer::ConfidencePenalty {
                beta: number(part, v)? as f32,
            }),
            Some(("label-relaxation", v)) => Some(Regularizer::LabelRelaxation {
                alpha: number(part, v)? as f32,
            }),
            None if part == "ols" => Some(Regularizer::Ols),
            _ => None,
        };
        match reg {
            Some(r) if regularizer.is_none() => regularizer = Some(r),
            Some(_) => return Err(CliError::Usage(format!("setting {s:?}: at most one regulariser"))),
            None if loss.is_none() => loss = Some(parse_setting(part)?),
            None => return Err(bad(part)),
        }
    }
    Ok(Setting {
        loss: match loss {
            Some(l) => l,
            None => parse_setting("plain")?,
        },
        regularizer,
        teacher: None,
        temperature: None,
        beta: None,
        student_hidden: None,
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
    let base = |spread: &str, smoothing: f32, adaptive: Option<f32>| LossSpec {
        smoothing,
        adaptive,
        spread: spread.into(),
        reduction: "mean".into(),
    };
    Ok(match s.split_once(':') {
        None => match s {
            "plain" => base("others", 0.0, None),
            "fast-reid" => preset(Preset::FastReid),
            "fast-reid-adaptive" => preset(Preset::FastReidAdaptive),
            "pytorch" => preset(Preset::Pytorch),
            _ => return Err(bad()),
        },
        Some(("others", v)) => base("others", number(v)?, None),
        Some(("uniform", v)) => base("uniform", number(v)?, None),
        Some(("adaptive", v)) => base("others", 0.0, Some(number(v)?)),
        Some(_) => return Err(bad()),
    })
}

/// The run configuration of the shared training flags, a loss and a seed.
pub fn config(flags: &TrainFlags, loss: LossSpec, regularizer: Option<Regularizer>, seed: u64) -> TrainConfig {
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
        regularizer,
    }
}

/// Runs the command.
pub fn run(args: &TrainArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let verbosity = if args.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Epochs
    };
    let (config, dir, resume) = match &args.resume {
        Some(dir) => {
            let mut config = train::read_config(dir)?;
            if let Some(e) = args.flags.epochs {
                config.epochs = e;
            }
            (config, dir.clone(), true)
        }
        None => {
            let config = config(&args.flags, loss_spec(&args.loss), regularizer(&args.loss), args.seed);
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{}-seed{}", config.describe(), args.seed)));
            (config, dir, false)
        }
    };
    let outcome = train::train(&config, &dir, resume, verbosity, out)?;
    if args.save_features {
        save_features(&outcome, &dir)?;
    }
    let m = &outcome.metrics;
    writeln!(
        out,
        "{}: test accuracy {:.2}%, NLL {:.4}, ECE {:.4} ({:.4} at T = {:.3}), Brier {:.4}, train-test gap {:.2} points; \
         written to {}",
        config.describe(),
        100.0 * m.test_accuracy,
        m.test_nll,
        m.test_ece,
        m.test_ece_scaled,
        m.temperature,
        m.test_brier,
        100.0 * m.train_test_gap,
        dir.display()
    )
    .map_err(|e| CliError::Train(format!("writing the report: {e}")))
}

fn write_labels(path: &std::path::Path, labels: &[u32]) -> Result<(), CliError> {
    let bytes = npy::encode(
        &format!(
            "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
            labels.len()
        ),
        |o| {
            labels
                .iter()
                .for_each(|&y| o.extend_from_slice(&(y as i64).to_le_bytes()))
        },
    );
    atomic::write(path, &bytes)?;
    Ok(())
}

/// Writes the test split's penultimate activations, logits and labels, the validation logits and labels, and the
/// head's weight matrix as `.npy` files.
fn save_features(outcome: &train::Outcome, dir: &std::path::Path) -> Result<(), CliError> {
    let data = &outcome.dataset;
    let (pixels, k) = (data.rows * data.cols, data.classes);
    let (features, d) = train::features_of(&outcome.model, &data.test, pixels)?;
    npy::write_f32(&dir.join("test_features.npy"), &[data.test.len(), d], &features)?;
    let logits = train::logits_of(&outcome.model, &data.test, pixels)?;
    npy::write_f32(&dir.join("test_logits.npy"), &[data.test.len(), k], &logits)?;
    write_labels(&dir.join("test_labels.npy"), &data.test.labels)?;
    let logits = train::logits_of(&outcome.model, &data.validation, pixels)?;
    npy::write_f32(&dir.join("validation_logits.npy"), &[data.validation.len(), k], &logits)?;
    write_labels(&dir.join("validation_labels.npy"), &data.validation.labels)?;
    let w = outcome
        .model
        .head_weight_values()
        .map_err(|e| CliError::Train(e.to_string()))?;
    npy::write_f32(&dir.join("head_weight.npy"), &[k, d], &w)?;
    Ok(())
}
