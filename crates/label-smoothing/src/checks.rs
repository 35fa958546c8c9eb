//! The input checks every loss of the crate shares, each failing with a [`LossError`] that names the argument,
//! the row or the class at fault.

use crate::config::{LabelSmoothingConfig, Reduction, Smoothing};
use crate::error::{LossError, Result};
use crate::types::GradOutput;

/// Logits of `len` values are `[N, K]` row-major; returns `N`.
pub(crate) fn check_logits(len: usize, k: usize) -> Result<usize> {
    if len.is_multiple_of(k) {
        Ok(len / k)
    } else {
        Err(LossError::Length {
            what: "logits",
            expected: format!("a multiple of K = {k} ([N, K] row-major)"),
            got: len,
        })
    }
}

/// Hard labels for `[n, k]` logits: one per row, each in `[0, K)` or the ignore index.
pub(crate) fn check_hard_targets(config: &LabelSmoothingConfig, labels: &[i64], n: usize, k: usize) -> Result<()> {
    check_len("labels", labels.len(), n, || {
        format!("{n} (one per row of [{n}, {k}] logits)")
    })?;
    check_labels(labels, k, config.ignore_index)
}

/// Soft targets (`len` values, `values` in any float type) for `[n, k]` logits: `[N, K]` like them, each row a
/// probability vector, and no adaptive smoothing.
pub(crate) fn check_soft_targets_of(
    config: &LabelSmoothingConfig,
    len: usize,
    values: impl Iterator<Item = f64>,
    n: usize,
    k: usize,
) -> Result<()> {
    if matches!(config.smoothing, Smoothing::Adaptive { .. }) {
        return Err(LossError::AdaptiveWithSoftTargets);
    }
    check_len("soft targets", len, n * k, || {
        format!("{} ([{n}, {k}] like the logits)", n * k)
    })?;
    check_soft_targets(values, k)
}

/// `got == want`, else a [`LossError::Length`] for `what` with the `expected` description.
pub(crate) fn check_len(what: &'static str, got: usize, want: usize, expected: impl FnOnce() -> String) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(LossError::Length {
            what,
            expected: expected(),
            got,
        })
    }
}

/// A per-row upstream gradient needs reduction `none` and one value per row.
pub(crate) fn check_grad_output(reduction: Reduction, grad_output: GradOutput<'_>, n: usize) -> Result<()> {
    if let GradOutput::PerRow(g) = grad_output {
        if reduction != Reduction::None {
            return Err(LossError::GradOutputShape {
                reduction: reduction.name(),
                got: g.len(),
            });
        }
        check_len("grad_output", g.len(), n, || format!("{n} (one per row)"))?;
    }
    Ok(())
}

/// `Ok` for a count of at least 1, else the typed error naming the option.
pub(crate) fn check_positive(name: &'static str, value: usize) -> Result<usize> {
    if value == 0 {
        Err(LossError::InvalidParameter {
            name,
            value: 0.0,
            expected: "[1, inf)",
        })
    } else {
        Ok(value)
    }
}

/// Every label is in `[0, K)` or the ignore index; the first that is not is reported with its row.
pub(crate) fn check_labels(labels: &[i64], k: usize, ignore_index: Option<i64>) -> Result<()> {
    match labels
        .iter()
        .enumerate()
        .find(|&(_, &y)| Some(y) != ignore_index && !(0..k as i64).contains(&y))
    {
        Some((row, &label)) => Err(LossError::LabelOutOfRange {
            row,
            label,
            k,
            ignore_index,
        }),
        None => Ok(()),
    }
}

/// Every soft-target row is a probability vector: entries finite and `>= 0`, sum within `1e-4` of 1.
pub(crate) fn check_soft_targets(t: impl Iterator<Item = f64>, k: usize) -> Result<()> {
    let mut sum = 0.0;
    for (idx, v) in t.enumerate() {
        let (row, class) = (idx / k, idx % k);
        if !(v.is_finite() && v >= 0.0) {
            return Err(LossError::SoftTargetEntry { row, class, value: v });
        }
        sum += v;
        if class == k - 1 {
            if (sum - 1.0).abs() > 1e-4 {
                return Err(LossError::SoftTargetSum { row, sum });
            }
            sum = 0.0;
        }
    }
    Ok(())
}
