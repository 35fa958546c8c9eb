//! [`LabelSmoothingLoss`]: validation and the three calls, [`loss`](LabelSmoothingLoss::loss),
//! [`loss_and_grad`](LabelSmoothingLoss::loss_and_grad) and
//! [`loss_and_grad_in_place`](LabelSmoothingLoss::loss_and_grad_in_place).

use crate::config::{LabelSmoothingConfig, Reduction, Smoothing};
use crate::driver;
use crate::element::Element;
use crate::error::{LossError, Result};
use crate::kernel::CallBuffers;
use crate::types::{GradOutput, Loss, Targets};

/// A validated label-smoothed cross-entropy for `K` classes; build it with [`LabelSmoothingConfig::init`].
///
/// Logits are `[N, K]` row-major, `f32` or (see [`Element`]) `bf16` / `f16`, always computed in f32 with f64
/// accumulation of the row statistics; `N` is `logits.len() / K`. Rows run in parallel on rayon's pool (a row
/// with many classes is itself split across threads when there are fewer rows than threads), and the results
/// are bit-identical for any number of threads.
///
/// fast-reid's `cross_entropy_loss(pred, gt, eps, alpha)`, forward and backward:
/// ```
/// use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
/// let (logits, labels) = (vec![2.0f32, 0.5, -1.0, 0.0, 1.0, -0.5], vec![0i64]);
/// let mut grad = vec![0.0f32; logits.len()];
///
/// let loss_fn = LabelSmoothingConfig::fast_reid(0.1, 0.2).init(6)?;
/// let loss = loss_fn.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad)?;
///
/// assert!((loss.scalar().unwrap() - 0.8196174).abs() < 1e-5);
/// # Ok::<(), label_smoothing::LossError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LabelSmoothingLoss {
    config: LabelSmoothingConfig,
    k: usize,
    weight_total: f64,
}

impl LabelSmoothingLoss {
    pub(crate) fn from_validated(config: LabelSmoothingConfig, k: usize) -> Self {
        let weight_total = match &config.weights {
            Some(w) => w.iter().map(|&x| x as f64).sum(),
            None => k as f64,
        };
        Self {
            config,
            k,
            weight_total,
        }
    }

    /// `sum_c u_c` in f64 (`K` without weights), in class order.
    pub(crate) fn weight_total(&self) -> f64 {
        self.weight_total
    }

    /// The number of classes `K`.
    pub fn num_classes(&self) -> usize {
        self.k
    }

    /// The configuration this loss was built from.
    pub fn config(&self) -> &LabelSmoothingConfig {
        &self.config
    }

    /// The loss alone (evaluation): reads the logits once.
    ///
    /// `logits`: `[N, K]` row-major. `targets`: labels `[N]` or soft targets `[N, K]`.
    /// Returns a scalar, or `[N]` values for reduction `none`.
    pub fn loss<E: Element>(&self, logits: &[E], targets: Targets<'_>) -> Result<Loss> {
        let n = self.check(logits.len(), targets, GradOutput::ONE, None)?;
        self.run(n, targets, GradOutput::ONE, CallBuffers::Read(logits))
    }

    /// The loss and its gradient with respect to the logits, written into `grad` (`[N, K]`, fully overwritten,
    /// in the logits' type).
    ///
    /// `grad_output` is the upstream gradient ([`GradOutput::ONE`] when this loss is the objective).
    pub fn loss_and_grad<E: Element>(
        &self,
        logits: &[E],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        grad: &mut [E],
    ) -> Result<Loss> {
        let n = self.check(logits.len(), targets, grad_output, Some(grad.len()))?;
        self.run(n, targets, grad_output, CallBuffers::Write(logits, grad))
    }

    /// The loss, with the gradient written over the logits (no second `[N, K]` buffer).
    ///
    /// Everything is validated before the first write: on an error the logits are untouched.
    pub fn loss_and_grad_in_place<E: Element>(
        &self,
        logits: &mut [E],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
    ) -> Result<Loss> {
        let n = self.check(logits.len(), targets, grad_output, None)?;
        self.run(n, targets, grad_output, CallBuffers::InPlace(logits))
    }

    /// Checks logits of `logits_len` elements and `targets` against the configuration without computing
    /// anything; returns `N`. The same checks run inside every loss call; adapters whose tensors live on
    /// other devices use this to report a typed error before composing the loss themselves.
    pub fn validate(&self, logits_len: usize, targets: Targets<'_>) -> Result<usize> {
        self.check(logits_len, targets, GradOutput::ONE, None)
    }

    /// Validates every input against the configuration; returns `N`.
    fn check(
        &self,
        logits_len: usize,
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        grad_len: Option<usize>,
    ) -> Result<usize> {
        let (k, config) = (self.k, &self.config);
        let n = check_logits(logits_len, k)?;
        match targets {
            Targets::Labels(labels) => check_hard_targets(config, labels, n, k)?,
            Targets::Soft(t) => check_soft_targets_of(config, t.len(), t.iter().map(|&x| x as f64), n, k)?,
        }
        check_grad_output(self.config.reduction, grad_output, n)?;
        if let Some(len) = grad_len {
            check_len("grad", len, n * k, || format!("{} ([{n}, {k}] like the logits)", n * k))?;
        }
        Ok(n)
    }

    /// Computes a validated call through its element type's one compiled instance ([`driver::run`]).
    #[inline(always)]
    fn run<E: Element>(
        &self,
        n: usize,
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        out: CallBuffers<'_, E>,
    ) -> Result<Loss> {
        let call = driver::Call {
            n,
            targets,
            grad_output,
        };
        driver::run(self, call, out)
    }
}

impl LabelSmoothingConfig {
    /// Validates the configuration for `num_classes` classes and returns the loss.
    ///
    /// Errors: [`LossError::TooFewClasses`] for `K < 2`, [`LossError::InvalidSmoothing`] /
    /// [`LossError::InvalidAlpha`] outside `[0, 1]`, [`LossError::Length`] for weights of the wrong length,
    /// [`LossError::InvalidWeight`] for a negative or non-finite weight.
    pub fn init(self, num_classes: usize) -> Result<LabelSmoothingLoss> {
        self.check(num_classes)?;
        Ok(LabelSmoothingLoss::from_validated(self, num_classes))
    }
}

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
