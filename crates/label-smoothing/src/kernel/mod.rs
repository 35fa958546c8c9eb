//! The fused row kernel: one statistics pass and one gradient pass per row.
//!
//! A row is cut into fixed chunks of [`CHUNK`] classes. For each chunk, a max pass and an accumulation pass run
//! while the chunk sits in L1, giving its [`RowStats`]; when a gradient is wanted, the accumulation pass also
//! keeps `e_c = exp(z_c - chunk max)` (in the output for f32 logits, in an f32 scratch row for bf16 and f16:
//! [`RowIo::KEEPS_EXP`]). Chunks combine left to right with [`RowStats::combine`]. The loss of the row follows from
//! the statistics in f64; the gradient pass then turns `e_c` into `coef * (Q p_c - w_c q_c)` with
//! `p_c = e_c * exp(chunk max - max) / sum` while the row is still in L2, so every element costs one `exp` (two
//! where `e_c` could not be kept: the gradient pass recomputes it, with the same bits).
//!
//! Nothing here depends on the number of threads: the chunk grid and the combine order are fixed.

use crate::simd::{Isa, Kernel};

mod argmax;
mod grad;
mod io;
mod stats;
#[cfg(test)]
mod tests;

pub(crate) use argmax::{argmax, combine_argmax};
pub(crate) use grad::{grad_row, label_grad, label_prob, slice_grad, GradRow};
pub(crate) use io::{CallBuffers, InPlace, ReadOnly, RowIo, Separate, WithScratch};
pub(crate) use stats::{row_stats, slice_stats};

/// Soft-capping of the logits, `cap * tanh(z / cap)` (SPEC.md, "Soft-capping"): the cap and its inverse.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cap {
    cap: f32,
    inv: f32,
    /// `2 cap` is within `exp`'s range: capped logits lie in `[-cap, cap]`, so every `zc - max` does too and the
    /// exponentials need no select.
    pub(crate) in_range: bool,
}

impl Cap {
    /// No cap: a placeholder for the kernels' uncapped instances, which never read it.
    pub(crate) const NONE: Cap = Cap {
        cap: f32::INFINITY,
        inv: 0.0,
        in_range: false,
    };

    /// The cap `cap > 0` (checked by the configuration).
    pub(crate) fn new(cap: f32) -> Cap {
        Cap {
            cap,
            inv: 1.0 / cap,
            in_range: -2.0 * cap >= crate::simd::EXP_RANGE_LO,
        }
    }

    /// The capped logit, as the kernels compute it ([`crate::simd::soft_cap`]).
    #[inline(always)]
    pub(crate) fn apply<S: Isa>(self, z: f32) -> f32 {
        crate::simd::soft_cap::<S>(z, self.cap, self.inv)
    }

    /// The chain-rule factor `d capped / dz = 1 - tanh^2(z / cap)` from the capped logit `zc`.
    #[inline(always)]
    pub(crate) fn slope<S: Isa>(self, zc: f32) -> f32 {
        let t = crate::simd::capped_t(zc, self.inv);
        S::fma(-t, t, 1.0)
    }

    /// The capped logit in f64 (for the loss's label term, which must not depend on the instruction set).
    pub(crate) fn apply_f64(self, z: f32) -> f64 {
        let c = self.cap as f64;
        c * (z as f64 / c).tanh()
    }
}

/// Classes per chunk: 8 KiB of f32 logits, which stays in L1 between the max pass and the accumulation pass.
pub const CHUNK: usize = 2048;

/// Softmax statistics of a slice of one row of logits, relative to the slice's maximum.
///
/// With `m` the max, `d_c = z_c - m`, `u_c` the class weight (1 without weights) and `v_c = u_c t_c` the weighted
/// soft target (0 for hard labels):
///
/// | field | value |
/// |---|---|
/// | `max` | `m = max_c z_c` |
/// | `sum_exp` | `sum_c exp(d_c)` |
/// | `mass` | `sum_c u_c` |
/// | `shifted` | `sum_c u_c d_c` (terms with `u_c = 0` count 0) |
/// | `target_mass` | `sum_c v_c` |
/// | `target_shifted` | `sum_c v_c d_c` (terms with `v_c = 0` count 0) |
///
/// Statistics of disjoint slices of a row combine exactly into those of their union ([`RowStats::combine`]), so a
/// row can be split across threads or across devices (a class-sharded loss) and merged deterministically.
/// `log-sum-exp = max + ln(sum_exp)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    /// The maximum logit (`-inf` for an empty slice).
    pub max: f32,
    /// `sum exp(z - max)`.
    pub sum_exp: f64,
    /// `sum u`.
    pub mass: f64,
    /// `sum u (z - max)`.
    pub shifted: f64,
    /// `sum v`.
    pub target_mass: f64,
    /// `sum v (z - max)`.
    pub target_shifted: f64,
}

impl RowStats {
    /// The statistics of an empty slice, the identity of [`combine`](Self::combine).
    pub const EMPTY: RowStats = RowStats {
        max: f32::NEG_INFINITY,
        sum_exp: 0.0,
        mass: 0.0,
        shifted: 0.0,
        target_mass: 0.0,
        target_shifted: 0.0,
    };

    /// `ln sum_c exp(z_c)` of the slice.
    pub fn log_sum_exp(&self) -> f64 {
        self.max as f64 + self.sum_exp.ln()
    }

    /// Statistics of the union of two disjoint slices. Deterministic: the same inputs give the same bits, so
    /// combining a fixed partition in a fixed order is reproducible whatever computed each part.
    ///
    /// ```
    /// use label_smoothing::RowStats;
    /// let row = [1.0f32, -2.0, 0.5, 3.0, 0.0];
    /// let whole = RowStats::of_slice(&row);
    /// let parts = RowStats::of_slice(&row[..2]).combine(&RowStats::of_slice(&row[2..]));
    /// assert!((whole.log_sum_exp() - parts.log_sum_exp()).abs() < 1e-6);
    /// assert!((whole.shifted - parts.shifted).abs() < 1e-5);
    /// ```
    pub fn combine(&self, other: &RowStats) -> RowStats {
        let m = if other.max > self.max { other.max } else { self.max };
        let part = |s: &RowStats| {
            if s.max == m {
                (s.sum_exp, s.shifted, s.target_shifted)
            } else {
                // m > s.max; m - s.max may be +inf when the slice is entirely -inf.
                let gap = m as f64 - s.max as f64;
                let e = if s.sum_exp == 0.0 {
                    0.0
                } else {
                    s.sum_exp * (-gap).exp()
                };
                let sh = if s.mass == 0.0 {
                    s.shifted
                } else {
                    s.shifted - s.mass * gap
                };
                let tsh = if s.target_mass == 0.0 {
                    s.target_shifted
                } else {
                    s.target_shifted - s.target_mass * gap
                };
                (e, sh, tsh)
            }
        };
        let (e1, s1, t1) = part(self);
        let (e2, s2, t2) = part(other);
        RowStats {
            max: m,
            sum_exp: e1 + e2,
            mass: self.mass + other.mass,
            shifted: s1 + s2,
            target_mass: self.target_mass + other.target_mass,
            target_shifted: t1 + t2,
        }
    }

    /// Statistics of an unweighted slice of logits with no soft target (`u = 1`, `v = 0`), computed by the same
    /// kernel (and so with the same chunking) as the loss.
    pub fn of_slice(z: &[f32]) -> RowStats {
        struct Stats<'a>(&'a [f32]);
        impl Kernel for Stats<'_> {
            type Output = RowStats;
            #[inline(always)]
            fn run<S: Isa>(self) -> RowStats {
                let mut maxima = Vec::new();
                row_stats::<S, f32, _, false, false, true, false>(
                    &mut ReadOnly(self.0),
                    &[],
                    &[],
                    None,
                    &mut maxima,
                    &mut [],
                )
            }
        }
        crate::simd::dispatch(Stats(z))
    }
}
