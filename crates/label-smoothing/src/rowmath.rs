//! Row arithmetic shared by the related losses (mixup, distillation, penalties, online smoothing): a plain f64
//! log-sum-exp and softmax per row. These losses are exact and parallel over rows, but not SIMD-fused like the
//! main kernel.

use rayon::prelude::*;

/// `log sum exp(z / t)` of a row, in f64 (`-inf` for a row of `-inf`).
pub(crate) fn lse(z: &[f32], t: f64) -> f64 {
    let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64 / t));
    if m == f64::NEG_INFINITY || !m.is_finite() {
        return m;
    }
    m + z.iter().map(|&v| (v as f64 / t - m).exp()).sum::<f64>().ln()
}

/// Runs `f(row, logits_row, grad_row)` over the rows in parallel and collects its per-row values. `grad` is
/// `None` or `[N, K]`.
pub(crate) fn rows<F>(logits: &[f32], k: usize, grad: Option<&mut [f32]>, f: F) -> Vec<f64>
where
    F: Fn(usize, &[f32], Option<&mut [f32]>) -> f64 + Sync,
{
    match grad {
        Some(g) => logits
            .par_chunks(k)
            .zip(g.par_chunks_mut(k))
            .enumerate()
            .map(|(i, (z, g))| f(i, z, Some(g)))
            .collect(),
        None => logits.par_chunks(k).enumerate().map(|(i, z)| f(i, z, None)).collect(),
    }
}

/// Checks `logits` is `[N, K]` and an optional gradient buffer matches; returns `N`.
pub(crate) fn check_shape(len: usize, k: usize, grad: Option<usize>) -> crate::Result<usize> {
    if k < 2 {
        return Err(crate::LossError::TooFewClasses { k });
    }
    if !len.is_multiple_of(k) {
        return Err(crate::LossError::Length {
            what: "logits",
            expected: format!("a multiple of K = {k}"),
            got: len,
        });
    }
    if let Some(g) = grad {
        if g != len {
            return Err(crate::LossError::Length {
                what: "grad",
                expected: len.to_string(),
                got: g,
            });
        }
    }
    Ok(len / k)
}

/// Checks a parameter lies in `[lo, hi]`.
pub(crate) fn check_range(name: &'static str, v: f64, lo: f64, hi: f64, expected: &'static str) -> crate::Result<()> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(crate::LossError::InvalidParameter {
            name,
            value: v,
            expected,
        })
    }
}
