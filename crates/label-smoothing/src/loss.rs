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
    /// `sum_c u_c / weight_scale` in f64 (`K` without weights), in class order.
    pub(crate) weight_total: f64,
    /// The class weights divided by `weight_scale`, when that is not 1 (see [`weight_scaling`]).
    scaled_weights: Option<Vec<f32>>,
    /// The power of two the kernels' weights are divided by.
    weight_scale: f64,
}

/// Class weights far from 1 cannot go through the kernels' float32 products as they are: a weight near the
/// float32 maximum overflows `u_c (z_c - max)` and the lane sums of the weights, and a subnormal weight keeps only
/// a few significant bits of its products. Every quantity of the loss and its gradient is linear in the weights
/// (the mean's denominator aside, which is summed in f64 from the weights as given), so the kernels run on the
/// weights divided by a power of two `2^e` that puts the largest in `[1, 2)`, and the row losses and gradient
/// coefficients are multiplied back by `2^e` in f64: both exact. Weights whose largest lies in `[2^-32, 2^32)`
/// are used as they are (the products cannot overflow or lose bits there, so the scaling would change nothing);
/// this returns `None` for them.
fn weight_scaling(weights: &[f32]) -> Option<(Vec<f32>, f64)> {
    let max = weights.iter().fold(0.0f32, |m, &u| if u > m { u } else { m });
    if max == 0.0 || (max >= 2f32.powi(-32) && max < 2f32.powi(32)) {
        return None;
    }
    // floor(log2(max)), exact for normal and subnormal values.
    let e = (max as f64).log2().floor() as i32;
    let e = if 2f64.powi(e) > max as f64 { e - 1 } else { e };
    let inv = 2f64.powi(-e);
    Some((weights.iter().map(|&u| (u as f64 * inv) as f32).collect(), 2f64.powi(e)))
}

impl LabelSmoothingLoss {
    pub(crate) fn from_validated(config: LabelSmoothingConfig, k: usize) -> Self {
        let (scaled_weights, weight_scale) = match config.weights.as_deref().and_then(weight_scaling) {
            Some((w, scale)) => (Some(w), scale),
            None => (None, 1.0),
        };
        let weight_total = match scaled_weights.as_deref().or(config.weights.as_deref()) {
            Some(w) => w.iter().map(|&x| x as f64).sum(),
            None => k as f64,
        };
        Self {
            config,
            k,
            weight_total,
            scaled_weights,
            weight_scale,
        }
    }

    /// `sum_c u_c` of the kernels' weights ([`Self::kernel_weights`]) in f64 (`K` without weights), in class order.
    pub(crate) fn weight_total(&self) -> f64 {
        self.weight_total
    }

    /// The class weights the kernels use: the configured ones divided by [`Self::weight_scale`].
    pub(crate) fn kernel_weights(&self) -> Option<&[f32]> {
        self.scaled_weights.as_deref().or(self.config.weights.as_deref())
    }

    /// The power of two that row losses and gradient coefficients computed with [`Self::kernel_weights`] are
    /// multiplied by (1 for ordinary weights).
    pub(crate) fn weight_scale(&self) -> f64 {
        self.weight_scale
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
