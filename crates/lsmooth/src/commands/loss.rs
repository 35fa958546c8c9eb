//! `lsmooth loss`: loss and gradient of `.npy` arrays.

use crate::cli::LossArgs;
use crate::io::atomic::{self, Outputs};
use crate::io::npy::{self, Array};
use crate::CliError;
use label_smoothing::{GradOutput, Loss, LossError, Reduction, Smoothing, Targets};
use serde::Serialize;
use std::path::Path;

/// The JSON line printed on success.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The loss: a number, or one per row for reduction `none` (`null` where not finite).
    pub loss: Loss,
    /// Rows.
    pub n: usize,
    /// Classes.
    pub k: usize,
    /// `others` or `uniform`.
    pub spread: &'static str,
    /// The reduction's name.
    pub reduction: &'static str,
    /// Fixed smoothing, when used.
    pub smoothing: Option<f32>,
    /// Adaptive alpha, when used.
    pub adaptive: Option<f32>,
    /// Where the gradient was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_out: Option<String>,
    /// Where the loss was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_out: Option<String>,
}

fn read_2d(path: &Path, what: &str) -> Result<(usize, usize, Vec<f32>), CliError> {
    let a = npy::read(path)?;
    let shape = a.expect_ndim(2, &format!("{what} of shape [N, K]"))?.to_vec();
    Ok((shape[0], shape[1], a.to_f32(what)?))
}

fn read_1d(path: &Path, what: &str) -> Result<Array, CliError> {
    let a = npy::read(path)?;
    a.expect_ndim(1, what)?;
    Ok(a)
}

/// Runs the command: reads, validates, computes, writes the outputs atomically, prints the JSON line.
pub fn run(args: &LossArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    if let (Some(g), Some(l)) = (&args.grad_out, &args.loss_out) {
        if atomic::same_file(g, l) {
            return Err(CliError::Usage(format!(
                "--grad-out and --loss-out are the same file ({})",
                crate::io::show_path(g)
            )));
        }
    }
    for p in [&args.grad_out, &args.loss_out].into_iter().flatten() {
        if p.is_dir() {
            return Err(CliError::Usage(format!(
                "{}: is a directory, not an output file",
                crate::io::show_path(p)
            )));
        }
    }
    let (n, k, mut logits) = read_2d(&args.logits, "logits")?;

    let mut config = args.loss.config(0.0)?.with_ignore_index(args.ignore_index);
    if let Some(wp) = &args.weights {
        let a = read_1d(wp, &format!("weights of shape [{k}] (one per class)"))?;
        let w = a.to_f32("weights")?;
        if w.len() != k {
            return Err(CliError::input(
                wp,
                format!("expected {k} weights (K of the logits), found shape {:?}", a.shape),
            ));
        }
        config = config.with_weights(Some(w));
    }
    if k < 2 {
        return Err(CliError::input(
            &args.logits,
            format!("needs at least 2 classes, found shape [{n}, {k}]"),
        ));
    }
    let loss_fn = config.init(k).map_err(|e| match e {
        LossError::InvalidWeight { .. } => {
            CliError::input(args.weights.as_deref().unwrap_or(Path::new("")), e.to_string())
        }
        other => CliError::Loss(other),
    })?;

    // Targets.
    let labels: Vec<i64>;
    let soft: Vec<f32>;
    let (targets, target_path) = if let Some(tp) = &args.targets {
        let a = read_1d(tp, &format!("labels of shape [{n}]"))?;
        labels = a.to_i64("labels")?;
        if labels.len() != n {
            return Err(CliError::input(
                tp,
                format!("expected {n} labels (N of the logits), found shape {:?}", a.shape),
            ));
        }
        (Targets::Labels(&labels), tp)
    } else {
        let sp = args
            .soft_targets
            .as_ref()
            .expect("clap requires --targets or --soft-targets");
        let (sn, sk, s) = read_2d(sp, "soft targets")?;
        if (sn, sk) != (n, k) {
            return Err(CliError::input(
                sp,
                format!("expected shape [{n}, {k}] like the logits, found [{sn}, {sk}]"),
            ));
        }
        soft = s;
        (Targets::Soft(&soft), sp)
    };

    // Upstream gradient.
    let go_values: Vec<f32>;
    let grad_output = match &args.grad_output {
        None => GradOutput::ONE,
        Some(gp) => {
            let a = npy::read(gp)?;
            go_values = a.to_f32("grad-output")?;
            if a.shape == [n] && args.loss.reduction == Reduction::None {
                GradOutput::PerRow(&go_values)
            } else if a.shape.is_empty() || a.shape == [1] {
                GradOutput::Scalar(go_values[0])
            } else {
                return Err(CliError::input(
                    gp,
                    format!(
                        "expected a scalar (shape [] or [1]){}, found shape {:?}",
                        if args.loss.reduction == Reduction::None {
                            format!(" or shape [{n}]")
                        } else {
                            String::new()
                        },
                        a.shape
                    ),
                ));
            }
        }
    };

    let with_file = |e: LossError| -> CliError {
        match e {
            LossError::LabelOutOfRange { .. } | LossError::SoftTargetEntry { .. } | LossError::SoftTargetSum { .. } => {
                CliError::input(target_path, e.to_string())
            }
            LossError::AdaptiveWithSoftTargets => {
                CliError::Usage("--adaptive needs hard labels (--targets), not --soft-targets".into())
            }
            other => CliError::Loss(other),
        }
    };
    let loss = if args.grad_out.is_some() {
        loss_fn
            .loss_and_grad_in_place(&mut logits, targets, grad_output)
            .map_err(with_file)?
    } else {
        loss_fn.loss(&logits, targets).map_err(with_file)?
    };

    // Outputs: all written to temporary files first, then renamed together; a failure leaves every existing
    // output as it was.
    let mut outputs = Outputs::new();
    if let Some(gp) = &args.grad_out {
        outputs.add(gp, &npy::encode_f32(&[n, k], &logits))?;
    }
    if let Some(lp) = &args.loss_out {
        let bytes = match &loss {
            Loss::Scalar(v) => npy::encode_f32(&[], &[*v]),
            Loss::PerRow(v) => npy::encode_f32(&[n], v),
        };
        outputs.add(lp, &bytes)?;
    }
    outputs.commit()?;

    let (smoothing, adaptive) = match loss_fn.config().smoothing {
        Smoothing::Fixed(e) => (Some(e), None),
        Smoothing::Adaptive { alpha } => (None, Some(alpha)),
    };
    let report = Report {
        loss,
        n,
        k,
        spread: args.loss.spread.name(),
        reduction: args.loss.reduction.name(),
        smoothing,
        adaptive,
        grad_out: args.grad_out.as_ref().map(|p| p.display().to_string()),
        loss_out: args.loss_out.as_ref().map(|p| p.display().to_string()),
    };
    let line =
        serde_json::to_string(&report).map_err(|e| CliError::Runtime(format!("encoding the JSON output: {e}")))?;
    writeln!(out, "{line}").map_err(CliError::Stdout)?;
    Ok(())
}
