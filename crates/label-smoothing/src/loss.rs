//! [`LabelSmoothingLoss`]: a configuration validated for `K` classes (its calls and their checks are in `api.rs`).

use crate::config::LabelSmoothingConfig;

/// A validated label-smoothed cross-entropy for `K` classes; build it with [`LabelSmoothingConfig::init`].
///
/// Logits are `[N, K]` row-major, `f32` or (see [`Element`](crate::Element)) `bf16` / `f16`, always computed in f32 with f64
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
    pub(crate) config: LabelSmoothingConfig,
    pub(crate) k: usize,
    pub(crate) weight_total: f64,
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
}
