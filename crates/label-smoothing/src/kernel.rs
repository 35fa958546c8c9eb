//! The fused row kernel: one statistics pass and one gradient pass per row.
//!
//! A row is cut into fixed chunks of [`CHUNK`] classes. For each chunk, a max pass and an accumulation pass run
//! while the chunk sits in L1, giving its [`RowStats`]; the chunks' statistics are combined left to right with
//! [`RowStats::combine`]. The loss of the row follows from the statistics in f64; the gradient pass then reads
//! the row again (from L1/L2) and writes `coef * (Q p_c - w_c q_c)`.
//!
//! Nothing here depends on the number of threads: the chunk grid and the combine order are fixed.

use crate::simd::{exp_f32, hmax, hsum, Kernel, Lanes, LANES};

/// Classes per chunk: 8 KiB of logits, which stays in L1 between the max pass and the accumulation pass.
pub(crate) const CHUNK: usize = 2048;

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
    /// combining a fixed partition in a fixed order is reproducible whatever ran each part.
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

    /// Statistics of an unweighted slice of logits with no soft target (`u = 1`, `v = 0`).
    pub fn of_slice(z: &[f32]) -> RowStats {
        struct Stats<'a>(&'a [f32]);
        impl Kernel for Stats<'_> {
            type Output = RowStats;
            #[inline(always)]
            fn run(self) -> RowStats {
                row_stats::<false, false, true>(self.0, &[], &[])
            }
        }
        crate::simd::dispatch(Stats(z))
    }
}

/// Statistics of one chunk (`z.len() <= CHUNK`); `w` and `t` have `z`'s length when `W` / `T` are set.
///
/// `W`: class weights present. `T`: soft targets present. `LIN`: the `shifted` sums are needed (they are skipped
/// when the loss does not use them, which also keeps `0 * -inf` out of rows with masked classes).
#[inline(always)]
fn chunk_stats<const W: bool, const T: bool, const LIN: bool>(z: &[f32], w: &[f32], t: &[f32]) -> RowStats {
    let n = z.len();
    let w = if W { &w[..n] } else { w };
    let t = if T { &t[..n] } else { t };
    let body = n - n % LANES;

    let mut mx: Lanes = [f32::NEG_INFINITY; LANES];
    for zc in z[..body].chunks_exact(LANES) {
        for j in 0..LANES {
            mx[j] = if zc[j] > mx[j] { zc[j] } else { mx[j] };
        }
    }
    let mut m = hmax(mx);
    for &v in &z[body..] {
        m = if v > m { v } else { m };
    }
    if m == f32::NEG_INFINITY {
        return all_masked_chunk::<W, T>(z, w, t);
    }

    let mut se: Lanes = [0.0; LANES];
    let mut ms: Lanes = [0.0; LANES];
    let mut sh: Lanes = [0.0; LANES];
    let mut tm: Lanes = [0.0; LANES];
    let mut tsh: Lanes = [0.0; LANES];
    let mut i = 0;
    while i < body {
        let zc = &z[i..i + LANES];
        for j in 0..LANES {
            let d = zc[j] - m;
            se[j] += exp_f32(d);
            if LIN {
                if W {
                    let u = w[i + j];
                    ms[j] += u;
                    sh[j] += if u == 0.0 { 0.0 } else { u * d };
                } else {
                    sh[j] += d;
                }
            }
            if T {
                let v = if W { w[i + j] * t[i + j] } else { t[i + j] };
                tm[j] += v;
                tsh[j] += if v == 0.0 { 0.0 } else { v * d };
            }
        }
        i += LANES;
    }
    let mut s = RowStats {
        max: m,
        sum_exp: hsum(se),
        mass: if W { hsum(ms) } else { body as f64 },
        shifted: if LIN { hsum(sh) } else { 0.0 },
        target_mass: if T { hsum(tm) } else { 0.0 },
        target_shifted: if T { hsum(tsh) } else { 0.0 },
    };
    for c in body..n {
        let d = z[c] - m;
        s.sum_exp += exp_f32(d) as f64;
        if LIN {
            let u = if W { w[c] } else { 1.0 };
            s.mass += if W { u as f64 } else { 1.0 };
            s.shifted += if u == 0.0 { 0.0 } else { (u * d) as f64 };
        }
        if T {
            let v = if W { w[c] * t[c] } else { t[c] };
            s.target_mass += v as f64;
            s.target_shifted += if v == 0.0 { 0.0 } else { (v * d) as f64 };
        }
    }
    if !LIN {
        s.mass = 0.0;
        s.shifted = 0.0;
    }
    s
}

/// A chunk whose logits are all `-inf`: no exponential mass, and `-inf` shifted sums where mass sits on it.
#[cold]
fn all_masked_chunk<const W: bool, const T: bool>(z: &[f32], w: &[f32], t: &[f32]) -> RowStats {
    let mass: f64 = if W {
        w.iter().map(|&u| u as f64).sum()
    } else {
        z.len() as f64
    };
    let target_mass: f64 = if T {
        (0..z.len())
            .map(|c| if W { (w[c] * t[c]) as f64 } else { t[c] as f64 })
            .sum()
    } else {
        0.0
    };
    let inf_if = |x: f64| if x > 0.0 { f64::NEG_INFINITY } else { 0.0 };
    RowStats {
        max: f32::NEG_INFINITY,
        sum_exp: 0.0,
        mass,
        shifted: inf_if(mass),
        target_mass,
        target_shifted: inf_if(target_mass),
    }
}

/// Statistics of a whole row: chunk by chunk, combined left to right.
#[inline(always)]
pub(crate) fn row_stats<const W: bool, const T: bool, const LIN: bool>(z: &[f32], w: &[f32], t: &[f32]) -> RowStats {
    let k = z.len();
    if k <= CHUNK {
        return chunk_stats::<W, T, LIN>(z, w, t);
    }
    let mut acc = RowStats::EMPTY;
    let mut start = 0;
    while start < k {
        let end = (start + CHUNK).min(k);
        let ws = if W { &w[start..end] } else { w };
        let ts = if T { &t[start..end] } else { t };
        acc = acc.combine(&chunk_stats::<W, T, LIN>(&z[start..end], ws, ts));
        start = end;
    }
    acc
}

/// What the gradient pass writes, per class `c`: `coef * (q_scale * p_c - w_c * (t_scale * t_c + off))`, with
/// `p_c = exp(z_c - max) * inv_sum`, and then, for a hard label, the label's entry
/// `coef * (q_scale * p_y - w_y * on)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GradRow {
    pub max: f32,
    pub inv_sum: f32,
    pub coef: f32,
    pub q_scale: f32,
    pub t_scale: f32,
    pub off: f32,
    /// `(label, logit of the label, on-label target mass)` for hard labels.
    pub label: Option<(usize, f32, f32)>,
}

#[inline(always)]
fn grad_elem<const W: bool, const T: bool>(g: &GradRow, z: f32, w: f32, t: f32) -> f32 {
    let p = exp_f32(z - g.max) * g.inv_sum;
    let q = if T { g.t_scale * t + g.off } else { g.off };
    let wq = if W { w * q } else { q };
    g.coef * (g.q_scale * p - wq)
}

#[inline(always)]
fn fix_label<const W: bool>(g: &GradRow, w: &[f32], out: &mut [f32]) {
    if let Some((y, zy, on)) = g.label {
        let p = exp_f32(zy - g.max) * g.inv_sum;
        let wy = if W { w[y] } else { 1.0 };
        out[y] = g.coef * (g.q_scale * p - wy * on);
    }
}

/// Writes the gradient of one row into `out` (`out.len() == z.len()`).
#[inline(always)]
pub(crate) fn grad_row<const W: bool, const T: bool>(g: &GradRow, z: &[f32], w: &[f32], t: &[f32], out: &mut [f32]) {
    let k = z.len();
    let out = &mut out[..k];
    let w = if W { &w[..k] } else { w };
    let t = if T { &t[..k] } else { t };
    for c in 0..k {
        let wc = if W { w[c] } else { 1.0 };
        let tc = if T { t[c] } else { 0.0 };
        out[c] = grad_elem::<W, T>(g, z[c], wc, tc);
    }
    fix_label::<W>(g, w, out);
}

/// Overwrites one row of logits with its gradient.
#[inline(always)]
pub(crate) fn grad_row_in_place<const W: bool, const T: bool>(g: &GradRow, zg: &mut [f32], w: &[f32], t: &[f32]) {
    let k = zg.len();
    let w = if W { &w[..k] } else { w };
    let t = if T { &t[..k] } else { t };
    for c in 0..k {
        let wc = if W { w[c] } else { 1.0 };
        let tc = if T { t[c] } else { 0.0 };
        zg[c] = grad_elem::<W, T>(g, zg[c], wc, tc);
    }
    fix_label::<W>(g, w, zg);
}
