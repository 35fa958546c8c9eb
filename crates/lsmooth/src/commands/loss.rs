//! `lsmooth loss`: loss and gradient of `.npy` arrays.

use crate::cli::LossArgs;
use crate::io::arrays::{read_array, read_labels, read_matrix, read_vector, Matrix};
use crate::io::atomic::{self, Outputs};
use crate::io::npy;
use crate::io::values::Want;
use crate::CliError;
use label_smoothing::{
    GradOutput, LabelSmoothingLoss, Loss, LossError, LossReport, Reduction, Smoothing, Targets, TokenAccuracy,
};
use serde::Serialize;
use std::path::Path;

/// The JSON line printed on success.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The loss: a number, or one per row for reduction `none` (`"inf"` where it overflows float32).
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
    /// The z-loss term alone (reduced like the loss), when `--z-loss` is set; it is included in `loss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z_loss: Option<Loss>,
    /// The soft-cap, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub softcap: Option<f32>,
    /// With `--accuracy`: the token accuracy (0 when no row is counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// With `--accuracy`: the rows whose largest logit is their label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct: Option<usize>,
    /// With `--accuracy`: the rows counted (hard labels not ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted: Option<usize>,
    /// Where the gradient was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_out: Option<String>,
    /// Where the loss was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_out: Option<String>,
}

/// Hard labels or soft targets, as read.
enum TargetValues {
    Labels(Vec<i64>),
    Soft(Vec<f32>),
}

impl TargetValues {
    fn targets(&self) -> Targets<'_> {
        match self {
            TargetValues::Labels(y) => Targets::Labels(y),
            TargetValues::Soft(t) => Targets::Soft(t),
        }
    }
}

/// Refuses `--grad-out` and `--loss-out` naming one file, or a directory, before anything is read.
fn check_outputs(args: &LossArgs) -> Result<(), CliError> {
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
    Ok(())
}

/// The loss for the `k` classes of the `[n, k]` logits, with the class weights of `--weights`.
fn loss_fn(args: &LossArgs, n: usize, k: usize) -> Result<LabelSmoothingLoss, CliError> {
    let mut config = args.loss.config(0.0)?.with_ignore_index(args.ignore_index);
    if let Some(wp) = &args.weights {
        let w = read_vector(wp, k, "weights", "one per class of the logits")?;
        config = config.with_weights(Some(w));
    }
    if k < 2 {
        return Err(CliError::input(
            &args.logits,
            format!("needs at least 2 classes, found shape [{n}, {k}]"),
        ));
    }
    config.init(k).map_err(|e| match e {
        LossError::InvalidWeight { .. } => {
            CliError::input(args.weights.as_deref().unwrap_or(Path::new("")), e.to_string())
        }
        other => CliError::Loss(other),
    })
}

/// The targets of `--targets` or `--soft-targets` for `[n, k]` logits, and the file they came from.
fn read_targets(args: &LossArgs, n: usize, k: usize) -> Result<(TargetValues, &Path), CliError> {
    if let Some(tp) = &args.targets {
        return Ok((TargetValues::Labels(read_labels(tp, n, "the logits")?), tp));
    }
    let sp = args
        .soft_targets
        .as_ref()
        .expect("clap requires --targets or --soft-targets");
    let soft = read_matrix(sp, "soft targets", "[N, K]")?;
    if (soft.rows, soft.cols) != (n, k) {
        return Err(CliError::input(
            sp,
            format!(
                "expected shape [{n}, {k}] like the logits, found [{}, {}]",
                soft.rows, soft.cols
            ),
        ));
    }
    Ok((TargetValues::Soft(soft.values), sp))
}

/// The upstream gradient of `--grad-output`, as read.
enum Upstream {
    One,
    Scalar(f32),
    PerRow(Vec<f32>),
}

impl Upstream {
    fn grad_output(&self) -> GradOutput<'_> {
        match self {
            Upstream::One => GradOutput::ONE,
            Upstream::Scalar(g) => GradOutput::Scalar(*g),
            Upstream::PerRow(g) => GradOutput::PerRow(g),
        }
    }
}

/// The upstream gradient of `--grad-output`: a scalar, or with reduction `none` one per row (`n`); 1 without
/// the flag.
fn read_grad_output(args: &LossArgs, n: usize) -> Result<Upstream, CliError> {
    let Some(gp) = &args.grad_output else {
        return Ok(Upstream::One);
    };
    let a = read_array(gp, Want::F32, "grad-output")?;
    let shape = a.shape.clone();
    let values = a.into_f32("grad-output")?;
    let per_row = args.loss.reduction == Reduction::None;
    if shape == [n] && per_row {
        return Ok(Upstream::PerRow(values));
    } else if shape.is_empty() || shape == [1] {
        return Ok(Upstream::Scalar(values[0]));
    }
    Err(CliError::input(
        gp,
        format!(
            "expected a scalar (shape [] or [1]){}, found shape {:?}",
            if per_row {
                format!(" or shape [{n}]")
            } else {
                String::new()
            },
            shape
        ),
    ))
}

/// The gradient (over the logits, in place, with `--grad-out`) and the loss; target errors name their file.
fn compute(
    args: &LossArgs,
    loss_fn: &LabelSmoothingLoss,
    logits: &mut [f32],
    (targets, target_path): (&TargetValues, &Path),
    upstream: &Upstream,
) -> Result<LossReport, CliError> {
    let grad_output = upstream.grad_output();
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
    let predictions = args.accuracy;
    if predictions && matches!(targets, TargetValues::Soft(_)) {
        return Err(CliError::Usage(
            "--accuracy needs hard labels (--targets), not --soft-targets".into(),
        ));
    }
    if args.grad_out.is_some() {
        loss_fn
            .report_and_grad_in_place(logits, targets.targets(), grad_output, predictions)
            .map_err(with_file)
    } else {
        loss_fn
            .report(logits, targets.targets(), predictions)
            .map_err(with_file)
    }
}

/// Stages `--grad-out` and `--loss-out` in temporary files, to be renamed together after the print, so that a
/// failure leaves every existing output as it was.
fn stage_outputs(args: &LossArgs, (n, k): (usize, usize), grad: &[f32], loss: &Loss) -> Result<Outputs, CliError> {
    let mut outputs = Outputs::new();
    if let Some(gp) = &args.grad_out {
        outputs.add_with(gp, &mut |w| npy::write_f32_to(w, &[n, k], grad))?;
    }
    if let Some(lp) = &args.loss_out {
        let bytes = match loss {
            Loss::Scalar(v) => npy::encode_f32(&[], &[*v]),
            Loss::PerRow(v) => npy::encode_f32(&[n], v),
        };
        outputs.add(lp, &bytes)?;
    }
    Ok(outputs)
}

/// Runs the command: reads, validates, computes, writes the outputs atomically, prints the JSON line.
pub fn run(args: &LossArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    check_outputs(args)?;
    let Matrix {
        rows: n,
        cols: k,
        values: mut logits,
    } = read_matrix(&args.logits, "logits", "[N, K]")?;
    let loss_fn = loss_fn(args, n, k)?;
    let (targets, target_path) = read_targets(args, n, k)?;
    let upstream = read_grad_output(args, n)?;
    let LossReport {
        loss, z_loss, accuracy, ..
    } = compute(args, &loss_fn, &mut logits, (&targets, target_path), &upstream)?;
    let outputs = stage_outputs(args, (n, k), &logits, &loss)?;

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
        z_loss: (loss_fn.config().z_loss != 0.0).then_some(z_loss),
        softcap: loss_fn.config().softcap,
        accuracy: accuracy.map(|a: TokenAccuracy| a.value()),
        correct: accuracy.map(|a| a.correct),
        counted: accuracy.map(|a| a.counted),
        grad_out: args.grad_out.as_ref().map(|p| p.display().to_string()),
        loss_out: args.loss_out.as_ref().map(|p| p.display().to_string()),
    };
    let line =
        serde_json::to_string(&report).map_err(|e| CliError::Runtime(format!("encoding the JSON output: {e}")))?;
    super::print_then_commit(outputs, || writeln!(out, "{line}").map_err(CliError::Stdout))
}
