//! mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) with label smoothing, in timm's semantics.
//!
//! A batch is mixed with a permutation of itself: `x = lambda * x + (1 - lambda) * x[perm]` (mixup) or a box of
//! `x[perm]` pasted into `x` (CutMix, `lambda` then recomputed from the clipped box's area). The target of row `i`
//! is `lambda * smooth(y_i) + (1 - lambda) * smooth(y_perm(i))`; [`mixed_loss`] takes the two labels and `lambda`
//! per row and never materialises an `[N, K]` target: the loss is linear in the target, so per row it needs only
//! `log sum exp z`, `sum z`, `z[a]` and `z[b]`.
//!
//! ```
//! use label_smoothing::mixup::{mixed_loss, mixup, MixedLabels};
//! use label_smoothing::{rng::SplitMix64, LabelSmoothingConfig};
//!
//! // A batch of 4 flat inputs of 3 features, mixed with alpha = 0.2.
//! let mut x = vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0];
//! let labels = [0i64, 1, 2, 1];
//! let mix = mixup(&mut x, 4, &labels, 0.2, &mut SplitMix64::new(7))?;
//! // ... the model turns x into logits [4, K]; here K = 3:
//! let logits = vec![2.0f32, 0.5, -1.0, 0.0, 1.0, 3.0, 0.3, 0.2, 0.1, -1.0, 2.0, 0.0];
//! let loss_fn = LabelSmoothingConfig::new().with_smoothing(0.1).init(3)?;
//! let mut grad = vec![0.0; logits.len()];
//! let loss = mixed_loss(&loss_fn, &logits, mix.labels(), Some(&mut grad))?;
//! assert!(loss.scalar().unwrap() > 0.0);
//! # Ok::<(), label_smoothing::LossError>(())
//! ```

use super::rowmath::{check_range, check_shape, reduce_rows, Softmax};
use crate::checks::check_labels;
use crate::config::{Reduction, Smoothing, Spread};
use crate::rng::SplitMix64;
use crate::{LabelSmoothingLoss, Loss, LossError, Result};

/// The two labels and the mixing weight of every row: the target is `lambda * smooth(a) + (1 - lambda) * smooth(b)`.
#[derive(Debug, Clone, Copy)]
pub struct MixedLabels<'a> {
    /// The row's own labels `[N]`.
    pub a: &'a [i64],
    /// The labels of the rows mixed in `[N]`.
    pub b: &'a [i64],
    /// The weight of `a`, in `[0, 1]`: `[N]`, or one value for the whole batch.
    pub lambda: &'a [f32],
}

/// The label-smoothed cross-entropy against mixed targets, and optionally its gradient (written into `grad`,
/// `[N, K]`).
///
/// - `loss`: the configuration; its spread, fixed smoothing and reduction apply (`mean` and `mean-nonzero` divide by
///   `N`, resp. the rows with a non-zero loss). Adaptive smoothing and class weights are not defined for mixed
///   targets here and are errors; an ignore index is not applied (every label must be a class).
/// - `logits`: `[N, K]`; `labels`: see [`MixedLabels`].
pub fn mixed_loss(
    loss: &LabelSmoothingLoss,
    logits: &[f32],
    labels: MixedLabels<'_>,
    grad: Option<&mut [f32]>,
) -> Result<Loss> {
    let config = loss.config();
    let k = loss.num_classes();
    let eps = match config.smoothing {
        Smoothing::Fixed(e) => e as f64,
        Smoothing::Adaptive { .. } => {
            return Err(LossError::Unsupported {
                loss: "mixup",
                option: "adaptive smoothing",
            })
        }
    };
    if config.weights.is_some() {
        return Err(LossError::Unsupported {
            loss: "mixup",
            option: "class weights",
        });
    }
    let n = check_shape(logits.len(), k, grad.as_ref().map(|g| g.len()))?;
    for (what, v) in [("labels a", labels.a), ("labels b", labels.b)] {
        if v.len() != n {
            return Err(LossError::Length {
                what,
                expected: n.to_string(),
                got: v.len(),
            });
        }
        check_labels(v, k, None)?;
    }
    if labels.lambda.len() != n && labels.lambda.len() != 1 {
        return Err(LossError::Length {
            what: "lambda",
            expected: format!("1 or {n}"),
            got: labels.lambda.len(),
        });
    }
    for &l in labels.lambda {
        check_range("lambda", l as f64, 0.0, 1.0, "[0, 1]")?;
    }
    let kf = k as f64;
    // q = base everywhere, plus spike * lambda at a and spike * (1 - lambda) at b.
    let (base, spike) = match config.spread {
        Spread::Others => (eps / (kf - 1.0), 1.0 - eps - eps / (kf - 1.0)),
        Spread::Uniform => (eps / kf, 1.0 - eps),
    };
    let lam = |i: usize| labels.lambda[if labels.lambda.len() == 1 { 0 } else { i }] as f64;
    // The loss of row i, and with `g` its unscaled gradient `p - q` written there.
    let row = |i: usize, z: &[f32], g: Option<&mut [f32]>, scale: f64| -> f64 {
        let sm = Softmax::of(z, 1.0);
        let l = sm.lse();
        let (a, b) = (labels.a[i] as usize, labels.b[i] as usize);
        let lam = lam(i);
        let sum_z: f64 = if base != 0.0 {
            z.iter().map(|&v| v as f64).sum()
        } else {
            0.0
        };
        if let Some(g) = g {
            sm.probs_into(z, g);
            let (pa, pb) = (g[a] as f64, g[b] as f64);
            let (base32, scale32) = (base as f32, scale as f32);
            for gc in g.iter_mut() {
                *gc = (*gc - base32) * scale32;
            }
            // The two spikes, from the probabilities before the shift.
            let qa = base + spike * lam + if a == b { spike * (1.0 - lam) } else { 0.0 };
            g[a] = ((pa - qa) * scale) as f32;
            if b != a {
                g[b] = ((pb - base - spike * (1.0 - lam)) * scale) as f32;
            }
        }
        l - (base * sum_z + spike * (lam * z[a] as f64 + (1.0 - lam) * z[b] as f64))
    };
    let (losses, denominator) = reduce_rows(logits, k, grad, config.reduction, 0, |i, z, g, _, scale| {
        row(i, z, g, scale)
    });
    Ok(match config.reduction {
        Reduction::None => Loss::PerRow(losses.iter().map(|&l| l as f32).collect()),
        _ => Loss::Scalar((losses.iter().sum::<f64>() / denominator) as f32),
    })
}

/// How a batch was mixed: the permutation, `lambda`, and the labels for [`mixed_loss`].
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Row `i` was mixed with row `perm[i]`.
    pub perm: Vec<usize>,
    /// The weight of each row's own example (after CutMix's clipping, the share of its own pixels).
    pub lambda: f32,
    /// The rows' own labels.
    pub labels_a: Vec<i64>,
    /// The labels of the rows mixed in.
    pub labels_b: Vec<i64>,
}

impl Mix {
    /// The labels to pass to [`mixed_loss`].
    pub fn labels(&self) -> MixedLabels<'_> {
        MixedLabels {
            a: &self.labels_a,
            b: &self.labels_b,
            lambda: std::slice::from_ref(&self.lambda),
        }
    }
}

fn draw(n: usize, labels: &[i64], alpha: f64, rng: &mut SplitMix64) -> Result<(Vec<usize>, f64)> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(LossError::InvalidParameter {
            name: "alpha",
            value: alpha,
            expected: "(0, inf)",
        });
    }
    if labels.len() != n {
        return Err(LossError::Length {
            what: "labels",
            expected: n.to_string(),
            got: labels.len(),
        });
    }
    let lambda = rng.beta(alpha, alpha);
    let mut perm: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut perm);
    Ok((perm, lambda))
}

fn mix_of(perm: Vec<usize>, lambda: f64, labels: &[i64]) -> Mix {
    Mix {
        labels_b: perm.iter().map(|&j| labels[j]).collect(),
        labels_a: labels.to_vec(),
        perm,
        lambda: lambda as f32,
    }
}

/// mixup in place: `lambda ~ Beta(alpha, alpha)` and a random permutation drawn from `rng`, then every row
/// `x_i = lambda * x_i + (1 - lambda) * x_perm(i)`.
///
/// `batch` is `[N, D]` row-major (any `D`: flat features, or `[C, H, W]` images flattened); `labels` `[N]`.
pub fn mixup(batch: &mut [f32], n: usize, labels: &[i64], alpha: f64, rng: &mut SplitMix64) -> Result<Mix> {
    let (perm, lambda) = draw(n, labels, alpha, rng)?;
    if n > 0 {
        if !batch.len().is_multiple_of(n) {
            return Err(LossError::Length {
                what: "batch",
                expected: format!("a multiple of N = {n}"),
                got: batch.len(),
            });
        }
        let d = batch.len() / n;
        let original = batch.to_vec();
        for (i, row) in batch.chunks_exact_mut(d).enumerate() {
            let other = &original[perm[i] * d..(perm[i] + 1) * d];
            for (x, &o) in row.iter_mut().zip(other) {
                *x = (lambda * *x as f64 + (1.0 - lambda) * o as f64) as f32;
            }
        }
    }
    Ok(mix_of(perm, lambda, labels))
}

/// A CutMix box: rows `y0..y1`, columns `x0..x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutBox {
    /// First row.
    pub y0: usize,
    /// One past the last row.
    pub y1: usize,
    /// First column.
    pub x0: usize,
    /// One past the last column.
    pub x1: usize,
}

/// CutMix in place on images `[N, C, H, W]`: `lambda ~ Beta(alpha, alpha)`, a box of side ratio
/// `sqrt(1 - lambda)` centred uniformly at random (timm's `rand_bbox`), clipped to the image, the same box pasted
/// from `x_perm(i)` into every `x_i`; `lambda` becomes `1 - box area / (H * W)`.
pub fn cutmix(
    batch: &mut [f32],
    shape: [usize; 4],
    labels: &[i64],
    alpha: f64,
    rng: &mut SplitMix64,
) -> Result<(Mix, CutBox)> {
    let [n, c, h, w] = shape;
    if batch.len() != n * c * h * w {
        return Err(LossError::Length {
            what: "batch",
            expected: format!("N*C*H*W = {}", n * c * h * w),
            got: batch.len(),
        });
    }
    let (perm, lambda) = draw(n, labels, alpha, rng)?;
    let ratio = (1.0 - lambda).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as i64, (w as f64 * ratio) as i64);
    let cy = rng.below(h.max(1) as u64) as i64;
    let cx = rng.below(w.max(1) as u64) as i64;
    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
    let b = CutBox {
        y0: clip(cy - cut_h / 2, h),
        y1: clip(cy + cut_h / 2, h),
        x0: clip(cx - cut_w / 2, w),
        x1: clip(cx + cut_w / 2, w),
    };
    let area = (b.y1 - b.y0) * (b.x1 - b.x0);
    let lambda = if h * w == 0 {
        1.0
    } else {
        1.0 - area as f64 / (h * w) as f64
    };
    if area > 0 {
        let original = batch.to_vec();
        let img = c * h * w;
        for (i, &j) in perm.iter().enumerate() {
            for ch in 0..c {
                for y in b.y0..b.y1 {
                    let row = ch * h * w + y * w;
                    let (dst, src) = (i * img + row, j * img + row);
                    batch[dst + b.x0..dst + b.x1].copy_from_slice(&original[src + b.x0..src + b.x1]);
                }
            }
        }
    }
    Ok((mix_of(perm, lambda, labels), b))
}
