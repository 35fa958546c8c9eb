//! The portable path: SPEC.md's definition composed from candle ops, for devices without the fused kernel.
//!
//! It materialises the target distribution and the log-probabilities (`[N, K]` each), so it costs several passes
//! and that much memory; candle's autograd differentiates it. Computed in f32 whatever the logits' dtype.

use candle_core::{DType, Tensor, D};
use label_smoothing::{LabelSmoothingLoss, Reduction, Smoothing, Spread, Targets};

use crate::{labels_to_host, Result, TargetKind};

/// `[N, K]` f32 one-hot rows of `labels` (each in `[0, K)`), on `like`'s device.
pub(crate) fn one_hot(labels: &[i64], k: usize, like: &Tensor) -> Result<Tensor> {
    let idx: Vec<u32> = labels.iter().map(|&y| y as u32).collect();
    let idx = Tensor::from_vec(idx, (labels.len(), 1), like.device())?;
    Ok(Tensor::arange(0u32, k as u32, like.device())?
        .unsqueeze(0)?
        .broadcast_eq(&idx)?
        .to_dtype(DType::F32)?)
}

/// `log_softmax` over the last dimension, with the row maximum held constant (its gradient cancels exactly).
pub(crate) fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    Ok(shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?)
}

/// The loss of `logits` `[N, K]` against `targets` (labels `[N]` or soft targets `[N, K]`) as SPEC.md defines it,
/// in candle ops; validated by the core first, so that bad input is the core's typed error.
pub(crate) fn forward(
    loss: &LabelSmoothingLoss,
    logits: &Tensor,
    targets: &Tensor,
    kind: TargetKind,
) -> Result<Tensor> {
    let config = loss.config();
    let k = loss.num_classes();
    let dtype = logits.dtype();
    let mut x = logits.to_dtype(DType::F32)?;
    if let Some(cap) = config.softcap {
        // Soft-capping: `cap * tanh(z / cap)`, differentiated by autograd.
        x = ((x / cap as f64)?.tanh()? * cap as f64)?;
    }
    let log_p = log_softmax(&x)?;
    let (q, kept, denominator) = match kind {
        TargetKind::Labels => hard_targets(loss, &log_p, targets)?,
        TargetKind::Soft => soft_targets(loss, &log_p, targets)?,
    };
    let q = match &config.weights {
        Some(w) => q.broadcast_mul(&Tensor::from_slice(w, (1, k), logits.device())?)?,
        None => q,
    };
    // A term with no target mass contributes nothing, even where log p = -inf (a masked class).
    let terms = (&q * &log_p)?;
    let terms = q.ne(0.0)?.where_cond(&terms, &terms.zeros_like()?)?;
    let mut per_row = terms.sum(D::Minus1)?.neg()?;
    if let Some(kept) = &kept {
        per_row = (per_row * kept)?;
    }
    if config.z_loss == 0.0 {
        return Ok(reduce(per_row, config.reduction, denominator)?.to_dtype(dtype)?);
    }
    // z-loss: `s * lse^2` on the rows kept (the max held constant: its gradient cancels exactly).
    let m = x.max_keepdim(D::Minus1)?.detach();
    let lse = (x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?.squeeze(D::Minus1)?;
    let mut z = (lse.sqr()? * config.z_loss as f64)?;
    if let Some(kept) = &kept {
        z = (z * kept)?;
    }
    let total = match config.reduction {
        Reduction::Mean => {
            // SPEC.md: the z-loss's mean is over the rows kept, the cross-entropy's over their label weights.
            let rows = kept.as_ref().map_or(Ok(per_row.dims1()? as f64), |k| {
                k.sum_all()?.to_scalar::<f32>().map(|v| v as f64)
            })?;
            let z_mean = if denominator == 0.0 {
                (z.sum_all()? * 0.0)?
            } else {
                (z.sum_all()? / rows.max(1.0))?
            };
            (reduce(per_row, Reduction::Mean, denominator)? + z_mean)?
        }
        r => reduce((per_row + z)?, r, denominator)?,
    };
    Ok(total.to_dtype(dtype)?)
}

/// The smoothed targets `q` `[N, K]` of hard labels, the rows kept (1, or 0 where ignored) and the mean's
/// denominator (PyTorch's: the summed label weights of the rows not ignored).
fn hard_targets(loss: &LabelSmoothingLoss, log_p: &Tensor, targets: &Tensor) -> Result<(Tensor, Option<Tensor>, f64)> {
    let (config, k, device) = (loss.config(), loss.num_classes(), log_p.device());
    let (n, kf) = (log_p.dims2()?.0, k as f64);
    let labels = labels_to_host(targets)?;
    loss.validate(n * k, Targets::Labels(&labels))?;
    let ignored = |y: i64| Some(y) == config.ignore_index;
    let kept: Vec<f32> = labels.iter().map(|&y| if ignored(y) { 0.0 } else { 1.0 }).collect();
    let safe: Vec<i64> = labels.iter().map(|&y| if ignored(y) { 0 } else { y }).collect();
    let denominator: f64 = labels
        .iter()
        .filter(|&&y| !ignored(y))
        .map(|&y| config.weights.as_ref().map_or(1.0, |w| w[y as usize] as f64))
        .sum();
    let one_hot = one_hot(&safe, k, log_p)?;
    let safe = Tensor::from_vec(safe.iter().map(|&y| y as u32).collect::<Vec<u32>>(), (n, 1), device)?;
    // Per-row smoothing e: a constant, or alpha * p(label) held constant for the gradient.
    let e = match config.smoothing {
        Smoothing::Fixed(eps) => Tensor::full(eps, (n, 1), device)?,
        Smoothing::Adaptive { alpha } => (log_p.detach().gather(&safe, 1)?.exp()? * alpha as f64)?,
    };
    let (off, on) = match config.spread {
        Spread::Others => ((&e / (kf - 1.0))?, e.affine(-1.0, 1.0)?),
        Spread::Uniform => ((&e / kf)?, (e.affine(-1.0, 1.0)? + (&e / kf)?)?),
    };
    let q = one_hot.broadcast_mul(&(on - &off)?)?.broadcast_add(&off)?;
    Ok((q, Some(Tensor::from_vec(kept, n, device)?), denominator))
}

/// The smoothed targets `q` `[N, K]` of soft targets; every row is kept and the mean is over all `N`.
fn soft_targets(loss: &LabelSmoothingLoss, log_p: &Tensor, targets: &Tensor) -> Result<(Tensor, Option<Tensor>, f64)> {
    let (config, k) = (loss.config(), loss.num_classes());
    let (n, kf) = (log_p.dims2()?.0, k as f64);
    let soft = targets.to_dtype(DType::F32)?;
    let host = soft.flatten_all()?.to_vec1::<f32>()?;
    loss.validate(n * k, Targets::Soft(&host))?;
    let eps = match config.smoothing {
        Smoothing::Fixed(e) => e as f64,
        // validate() has rejected adaptive smoothing with soft targets.
        Smoothing::Adaptive { .. } => unreachable!("rejected by validate"),
    };
    let q = match config.spread {
        // (1-e) t + e (1-t)/(K-1)
        Spread::Others => soft.affine((1.0 - eps) - eps / (kf - 1.0), eps / (kf - 1.0))?,
        Spread::Uniform => soft.affine(1.0 - eps, eps / kf)?,
    };
    Ok((q, None, n as f64))
}

/// The per-row losses `[N]` reduced; `denominator` is the mean's.
fn reduce(per_row: Tensor, reduction: Reduction, denominator: f64) -> Result<Tensor> {
    Ok(match reduction {
        Reduction::None => per_row,
        Reduction::Sum => per_row.sum_all()?,
        // A mean over nothing is 0 (the numerator is 0 too).
        Reduction::Mean => (per_row.sum_all()? / denominator.max(f32::MIN_POSITIVE as f64))?,
        Reduction::MeanNonZero => {
            // fast-reid: divided by the number of rows with a non-zero loss (at least 1), a constant.
            let count = per_row
                .detach()
                .ne(0.0)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .maximum(1.0)?;
            per_row.sum_all()?.broadcast_div(&count)?
        }
    })
}
