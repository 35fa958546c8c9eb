//! Row arithmetic shared by the related losses (mixup, distillation, penalties, online smoothing): the softmax of
//! a row, `softmax(scale * z)`, computed with the main kernel's SIMD `exp` (one max pass, one pass of
//! exponentials summed in f64 lanes, and, when the probabilities are wanted, one pass writing them), and a
//! row-parallel driver with per-thread scratch space.

use crate::checks::{check_len, check_logits};
use crate::config::Reduction;
use crate::driver::nonzero_rows;
use crate::simd::{dispatch, exp_nonpos, hmax, Isa, Kernel, Lanes, LANES};
use rayon::prelude::*;

/// The softmax statistics of `scale * z` for one row (`scale > 0`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Softmax {
    /// `max_c z_c`.
    pub max: f32,
    /// The scale applied to the logits (`1 / T`).
    pub scale: f32,
    /// `sum_c exp(scale * (z_c - max))`.
    pub sum_exp: f64,
}

impl Softmax {
    /// The statistics of `scale * z`.
    pub fn of(z: &[f32], scale: f32) -> Softmax {
        dispatch(Stats { z, scale })
    }

    /// `ln sum_c exp(scale * z_c)`: `-inf` for a row of `-inf`, `+inf`/NaN when the row holds them.
    pub fn lse(&self) -> f64 {
        if !self.max.is_finite() {
            return self.max as f64;
        }
        self.scale as f64 * self.max as f64 + self.sum_exp.ln()
    }

    /// Writes `softmax(scale * z)` into `out` (same length as `z`).
    pub fn probs_into(&self, z: &[f32], out: &mut [f32]) {
        debug_assert_eq!(z.len(), out.len());
        if !self.max.is_finite() {
            out.iter_mut().for_each(|o| *o = f32::NAN);
            return;
        }
        dispatch(Probs { s: *self, z, out })
    }
}

/// One max pass over lane arrays (four independent accumulators; max is exact, so grouping cannot matter).
#[inline(always)]
fn max_of(z: &[f32]) -> f32 {
    let body = z.len() - z.len() % LANES;
    let mut mx: [Lanes; 2] = [[f32::NEG_INFINITY; LANES]; 2];
    let mut c = 0;
    while c + 2 * LANES <= body {
        for (a, acc) in mx.iter_mut().enumerate() {
            let v = &z[c + a * LANES..c + (a + 1) * LANES];
            for j in 0..LANES {
                acc[j] = if v[j] > acc[j] { v[j] } else { acc[j] };
            }
        }
        c += 2 * LANES;
    }
    while c < body {
        let v = &z[c..c + LANES];
        for j in 0..LANES {
            mx[0][j] = if v[j] > mx[0][j] { v[j] } else { mx[0][j] };
        }
        c += LANES;
    }
    let mut m = hmax(mx[0]).max(hmax(mx[1]));
    for &v in &z[body..] {
        m = if v > m { v } else { m };
    }
    m
}

struct Stats<'a> {
    z: &'a [f32],
    scale: f32,
}

impl Kernel for Stats<'_> {
    type Output = Softmax;
    #[inline(always)]
    fn run<S: Isa>(self) -> Softmax {
        let z = self.z;
        let m = max_of(z);
        let mut out = Softmax {
            max: m,
            scale: self.scale,
            sum_exp: 0.0,
        };
        if !m.is_finite() {
            return out;
        }
        let body = z.len() - z.len() % LANES;
        let mut se: Lanes = [0.0; LANES];
        let mut c = 0;
        while c < body {
            let v = &z[c..c + LANES];
            for j in 0..LANES {
                se[j] += exp_nonpos::<S>((v[j] - m) * self.scale);
            }
            c += LANES;
        }
        out.sum_exp = S::hsum(se);
        for &v in &z[body..] {
            out.sum_exp += exp_nonpos::<S>((v - m) * self.scale) as f64;
        }
        out
    }
}

struct Probs<'a> {
    s: Softmax,
    z: &'a [f32],
    out: &'a mut [f32],
}

impl Kernel for Probs<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self) {
        let Probs { s, z, out } = self;
        let inv = (1.0 / s.sum_exp) as f32;
        let body = z.len() - z.len() % LANES;
        let mut c = 0;
        while c < body {
            let v = &z[c..c + LANES];
            let o = &mut out[c..c + LANES];
            for j in 0..LANES {
                o[j] = exp_nonpos::<S>((v[j] - s.max) * s.scale) * inv;
            }
            c += LANES;
        }
        for (o, &v) in out[body..].iter_mut().zip(&z[body..]) {
            *o = exp_nonpos::<S>((v - s.max) * s.scale) * inv;
        }
    }
}

/// Runs `f(row, logits_row, grad_row, scratch)` over the rows in parallel and collects its per-row values. `grad`
/// is `None` or `[N, K]`; `scratch` is a buffer of `scratch_len` floats owned by the running thread (its contents
/// are whatever the previous row left).
pub(crate) fn rows<F>(logits: &[f32], k: usize, grad: Option<&mut [f32]>, scratch_len: usize, f: F) -> Vec<f64>
where
    F: Fn(usize, &[f32], Option<&mut [f32]>, &mut [f32]) -> f64 + Sync,
{
    let init = || vec![0.0f32; scratch_len];
    match grad {
        Some(g) => logits
            .par_chunks(k)
            .zip(g.par_chunks_mut(k))
            .enumerate()
            .map_init(init, |s, (i, (z, g))| f(i, z, Some(g), s))
            .collect(),
        None => logits
            .par_chunks(k)
            .enumerate()
            .map_init(init, |s, (i, z)| f(i, z, None, s))
            .collect(),
    }
}

/// The per-row losses and the reduction's denominator (1 for `none` and `sum`, `N` for `mean`, the rows with a
/// non-zero loss for `mean-nonzero`) of a loss whose rows `row(i, z, grad_row, scratch, scale)` compute their
/// loss and, given a gradient row, write their gradient times `scale` there. One pass when the denominator is
/// known up front; for `mean-nonzero` the losses come first, then the gradient.
pub(crate) fn reduce_rows<F>(
    logits: &[f32],
    k: usize,
    grad: Option<&mut [f32]>,
    reduction: Reduction,
    scratch_len: usize,
    row: F,
) -> (Vec<f64>, f64)
where
    F: Fn(usize, &[f32], Option<&mut [f32]>, &mut [f32], f64) -> f64 + Sync,
{
    let known = match reduction {
        Reduction::None | Reduction::Sum => Some(1.0),
        Reduction::Mean => Some((logits.len() / k).max(1) as f64),
        Reduction::MeanNonZero => None,
    };
    match (grad, known) {
        (Some(g), Some(d)) => (
            rows(logits, k, Some(g), scratch_len, |i, z, g, s| row(i, z, g, s, 1.0 / d)),
            d,
        ),
        (g, known) => {
            let losses = rows(logits, k, None, scratch_len, |i, z, _, s| row(i, z, None, s, 1.0));
            let d = known.unwrap_or_else(|| nonzero_rows(&losses));
            if let Some(g) = g {
                rows(logits, k, Some(g), scratch_len, |i, z, g, s| row(i, z, g, s, 1.0 / d));
            }
            (losses, d)
        }
    }
}

/// Checks `logits` is `[N, K]` and an optional gradient buffer matches; returns `N`.
pub(crate) fn check_shape(len: usize, k: usize, grad: Option<usize>) -> crate::Result<usize> {
    if k < 2 {
        return Err(crate::LossError::TooFewClasses { k });
    }
    let n = check_logits(len, k)?;
    if let Some(g) = grad {
        check_len("grad", g, len, || format!("{len} ([{n}, {k}] like the logits)"))?;
    }
    Ok(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_f64() {
        let mut r = crate::rng::SplitMix64::new(3);
        for k in [2usize, 15, 16, 17, 33, 1000] {
            let z: Vec<f32> = (0..k).map(|_| r.uniform(-20.0, 20.0) as f32).collect();
            for t in [1.0f64, 0.5, 4.0] {
                let s = Softmax::of(&z, (1.0 / t) as f32);
                let m = z.iter().map(|&v| v as f64 / t).fold(f64::NEG_INFINITY, f64::max);
                let l = m + z.iter().map(|&v| (v as f64 / t - m).exp()).sum::<f64>().ln();
                assert!(
                    (s.lse() - l).abs() <= 1e-6 * l.abs().max(1.0),
                    "k {k} t {t}: {} vs {l}",
                    s.lse()
                );
                let mut p = vec![0.0; k];
                s.probs_into(&z, &mut p);
                for (c, &pc) in p.iter().enumerate() {
                    let want = (z[c] as f64 / t - l).exp();
                    assert!((pc as f64 - want).abs() <= 1e-6 * want + 1e-12, "k {k} t {t} c {c}");
                }
            }
        }
        let masked = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
        let s = Softmax::of(&masked, 1.0);
        assert_eq!(s.lse(), 0.0);
        let mut p = [1.0; 3];
        s.probs_into(&masked, &mut p);
        assert_eq!(p, [0.0, 1.0, 0.0]);
        assert_eq!(Softmax::of(&[f32::NEG_INFINITY; 2], 1.0).lse(), f64::NEG_INFINITY);
    }
}
