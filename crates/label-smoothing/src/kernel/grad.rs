//! The gradient pass: `coef * (Q p_c - w_c q_c)` from the kept (or recomputed) `exp(z - chunk max)`.

use super::io::{lanes_of, partial_of, RowIo};
use super::stats::{lane_body, padded_weights};
use super::{Cap, CHUNK};
use crate::element::Element;
use crate::simd::{exp_in_range, exp_nonpos, Isa, Kernel, Lanes, LANES};
use std::marker::PhantomData;

/// What the gradient pass writes, per class `c`: `coef * (q_scale * p_c - w_c * (t_scale * t_c + off))`, and then,
/// for a hard label, the label's entry `coef * (q_scale * p_y - w_y * on)`; with soft-capping, each times the
/// slope of the cap at that class, `1 - tanh^2(z_c / cap)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GradRow {
    pub max: f32,
    pub sum_exp: f64,
    pub coef: f32,
    pub q_scale: f32,
    pub t_scale: f32,
    pub off: f32,
    /// `(label, its logit, on-label target mass)` for hard labels.
    pub label: Option<(usize, f32, f32)>,
    /// The soft-capping of the logits, if any ([`Cap`]); `max` is then the capped max.
    pub cap: Option<Cap>,
}

impl GradRow {
    /// The factor that turns a stored `exp(z - chunk max)` into a probability.
    #[inline(always)]
    pub(crate) fn prob_factor(&self, chunk_max: f32) -> f32 {
        if chunk_max == self.max {
            (1.0 / self.sum_exp) as f32
        } else {
            ((chunk_max as f64 - self.max as f64).exp() / self.sum_exp) as f32
        }
    }
}

/// `exp(z - chunk max)` recomputed by the gradient pass where the statistics pass did not keep it: the value the
/// statistics pass computed (its two `exp` variants agree wherever both are used), and 0 in a chunk whose
/// logits are all `-inf` (what [`all_masked_chunk`] stores). So a gradient has the same bits whether or not the
/// exponentials were kept.
#[inline(always)]
pub(crate) fn recomputed_exp<S: Isa>(z: f32, chunk_max: f32) -> f32 {
    if chunk_max == f32::NEG_INFINITY {
        0.0
    } else {
        exp_nonpos::<S>(z - chunk_max)
    }
}

#[inline(always)]
pub(crate) fn grad_value<S: Isa, const W: bool, const T: bool>(g: &GradRow, p: f32, w: f32, t: f32) -> f32 {
    let q = if T { S::fma(g.t_scale, t, g.off) } else { g.off };
    let wq = if W { w * q } else { q };
    g.coef * S::fma(g.q_scale, p, -wq)
}

/// The gradient of classes `[start, end)` of a row, one chunk, for callers that split a row across threads:
/// [`grad_range`], out of line ([`Isa::outline`]) like [`slice_stats`].
#[inline(always)]
#[allow(clippy::too_many_arguments)] // grad_range's arguments
pub(crate) fn slice_grad<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool>(
    g: &GradRow,
    io: &mut IO,
    start: usize,
    end: usize,
    chunk_max: f32,
    w: &[f32],
    t: &[f32],
    aux: &[f32],
) {
    S::outline(GradRange::<E, IO, W, T, STORE> {
        g,
        io,
        start,
        end,
        chunk_max,
        w,
        t,
        aux,
        elem: PhantomData,
    })
}

/// [`slice_grad`]'s arguments, as a [`Kernel`] for [`Isa::outline`].
pub(crate) struct GradRange<'a, E, IO, const W: bool, const T: bool, const STORE: bool> {
    g: &'a GradRow,
    io: &'a mut IO,
    start: usize,
    end: usize,
    chunk_max: f32,
    w: &'a [f32],
    t: &'a [f32],
    aux: &'a [f32],
    elem: PhantomData<fn() -> E>,
}

impl<E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool> Kernel
    for GradRange<'_, E, IO, W, T, STORE>
{
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self) {
        let (g, io, m) = (self.g, self.io, self.chunk_max);
        grad_range::<S, E, IO, W, T, STORE>(g, io, self.start, self.end, m, self.w, self.t, self.aux)
    }
}

/// The gradient of classes `[start, end)` of a row, in one chunk (max `chunk_max`). With `STORE` the statistics
/// pass kept `exp(z - chunk_max)` ([`RowIo::KEEPS_EXP`]); without, it is recomputed from the logits
/// ([`recomputed_exp`]). Either way `p = exp(z - chunk_max) * prob_factor(chunk_max)`. `aux`: the capped logits
/// the statistics pass kept with soft-capping, when not empty (see [`chunk_stats`](super::stats::chunk_stats)).
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the row, its buffers, the range and what the statistics pass kept
pub(crate) fn grad_range<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool>(
    g: &GradRow,
    io: &mut IO,
    start: usize,
    end: usize,
    chunk_max: f32,
    w: &[f32],
    t: &[f32],
    aux: &[f32],
) {
    // Local copies of the row's constants and slices: see `RowIo::reborrow`.
    let g = &{ *g };
    let io = &mut io.reborrow();
    if let Some(cap) = g.cap {
        let range = (start, end, chunk_max);
        return if STORE && !aux.is_empty() {
            capped_grad_range::<S, E, _, W, T, STORE, false, true>(g, io, range, w, t, (cap, aux))
        } else if cap.in_range {
            capped_grad_range::<S, E, _, W, T, STORE, true, false>(g, io, range, w, t, (cap, aux))
        } else {
            capped_grad_range::<S, E, _, W, T, STORE, false, false>(g, io, range, w, t, (cap, aux))
        };
    }
    let factor = g.prob_factor(chunk_max);
    if !STORE && chunk_max == f32::NEG_INFINITY {
        // `recomputed_exp`'s masked chunk, tested once here so that the loop below needs no select.
        return masked_grad_range::<S, E, _, W, T>(g, io, start, end, 0.0 * factor, w, t);
    }
    let body_end = lane_body(start, end, io.len());
    let prob = |x: f32| {
        if STORE {
            x * factor
        } else {
            exp_nonpos::<S>(x - chunk_max) * factor
        }
    };
    let mut c = start;
    while c < body_end {
        // SAFETY: c + LANES <= body_end <= len (checked by `lane_body`).
        let x = unsafe {
            if STORE {
                io.load_exp_lanes::<S>(c)
            } else {
                io.load_lanes::<S>(c)
            }
        };
        let mut out: Lanes = [0.0; LANES];
        for j in 0..LANES {
            let wc = if W { w[c + j] } else { 1.0 };
            let tc = if T { t[c + j] } else { 0.0 };
            out[j] = grad_value::<S, W, T>(g, prob(x[j]), wc, tc);
        }
        // SAFETY: as for the load.
        unsafe { io.store_lanes::<S>(c, out) };
        c += LANES;
    }
    // The tail as one padded vector (the padding's values are computed and dropped).
    let rem = end - body_end;
    if rem > 0 {
        // Without W, grad_value ignores the weight, so the zero padding of the weights is never read.
        let x = if STORE {
            io.load_exp_tail::<S>(body_end, rem, f32::NEG_INFINITY)
        } else {
            io.tail::<S>(body_end, rem, f32::NEG_INFINITY)
        };
        let (wp, tp) = padded_weights::<S, W, T>(body_end, rem, w, t);
        let mut out: Lanes = [0.0; LANES];
        for j in 0..LANES {
            out[j] = grad_value::<S, W, T>(g, prob(x[j]), wp[j], tp[j]);
        }
        io.store_tail::<S>(body_end, rem, out);
    }
}

/// [`grad_range`] with soft-capped logits: `p = exp(zc - chunk_max) * prob_factor(chunk_max)` of the capped
/// logits `zc`, and each entry times the cap's slope [`Cap::slope`]. With `AUX` (and `STORE`) the statistics pass
/// kept the exponentials and the capped logits in `aux`, so nothing is computed again; without, it kept the
/// capped logits (`STORE`) or nothing, and they are capped again from the logits (the same bits) and the
/// exponentials computed again. Capped logits are finite, so no chunk is masked. `IN_RANGE`: [`Cap::in_range`],
/// so the exponentials of the body need no select (the tail's padding does).
#[inline(always)]
fn capped_grad_range<
    S: Isa,
    E: Element,
    IO: RowIo<E>,
    const W: bool,
    const T: bool,
    const STORE: bool,
    const IN_RANGE: bool,
    const AUX: bool,
>(
    g: &GradRow,
    io: &mut IO,
    (start, end, chunk_max): (usize, usize, f32),
    w: &[f32],
    t: &[f32],
    (cap, aux): (Cap, &[f32]),
) {
    let factor = g.prob_factor(chunk_max);
    let body_end = lane_body(start, end, io.len());
    assert!(!AUX || aux.len() == io.len());
    let capped = |x: f32| if STORE { x } else { cap.apply::<S>(x) };
    let exp = |zc: f32| {
        if IN_RANGE {
            exp_in_range::<S>(zc - chunk_max)
        } else {
            exp_nonpos::<S>(zc - chunk_max)
        }
    };
    let mut c = start;
    while c < body_end {
        // SAFETY: c + LANES <= body_end <= len (checked by `lane_body`), and `aux` has the row's length.
        let (x, zcs) = unsafe {
            if AUX {
                (io.load_exp_lanes::<S>(c), lanes_of::<S, f32>(aux, c))
            } else if STORE {
                (io.load_exp_lanes::<S>(c), [0.0; LANES])
            } else {
                (io.load_lanes::<S>(c), [0.0; LANES])
            }
        };
        let mut out: Lanes = [0.0; LANES];
        for j in 0..LANES {
            let wc = if W { w[c + j] } else { 1.0 };
            let tc = if T { t[c + j] } else { 0.0 };
            let (e, zc) = if AUX {
                (x[j], zcs[j])
            } else {
                let zc = capped(x[j]);
                (exp(zc), zc)
            };
            out[j] = grad_value::<S, W, T>(g, e * factor, wc, tc) * cap.slope::<S>(zc);
        }
        // SAFETY: as for the load.
        unsafe { io.store_lanes::<S>(c, out) };
        c += LANES;
    }
    let rem = end - body_end;
    if rem > 0 {
        // The padding's values are computed and dropped.
        let (x, zcs) = if AUX {
            (
                io.load_exp_tail::<S>(body_end, rem, 0.0),
                partial_of::<S, f32>(&aux[body_end..end], 0.0),
            )
        } else if STORE {
            (io.load_exp_tail::<S>(body_end, rem, 0.0), [0.0; LANES])
        } else {
            (io.tail::<S>(body_end, rem, 0.0), [0.0; LANES])
        };
        let (wp, tp) = padded_weights::<S, W, T>(body_end, rem, w, t);
        let mut out: Lanes = [0.0; LANES];
        for j in 0..LANES {
            let (e, zc) = if AUX {
                (x[j], zcs[j])
            } else {
                let zc = capped(x[j]);
                (exp_nonpos::<S>(zc - chunk_max), zc)
            };
            out[j] = grad_value::<S, W, T>(g, e * factor, wp[j], tp[j]) * cap.slope::<S>(zc);
        }
        io.store_tail::<S>(body_end, rem, out);
    }
}

/// The gradient of classes `[start, end)` in a chunk whose logits are all `-inf` (every probability `p`), when the
/// exponentials were not kept: what [`grad_range`] computes from the zeros [`all_masked_chunk`] keeps.
#[cold]
pub(crate) fn masked_grad_range<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool>(
    g: &GradRow,
    io: &mut IO,
    start: usize,
    end: usize,
    p: f32,
    w: &[f32],
    t: &[f32],
) {
    for c in start..end {
        let wc = if W { w[c] } else { 1.0 };
        let tc = if T { t[c] } else { 0.0 };
        io.store(c, grad_value::<S, W, T>(g, p, wc, tc));
    }
}

/// The label's gradient entry, from its probability and the cap's slope there, `(p_y, slope)` ([`label_prob`]).
#[inline(always)]
pub(crate) fn label_grad<S: Isa, const W: bool>(g: &GradRow, p_y: (f32, f32), w: &[f32]) -> Option<(usize, f32)> {
    // A `match`, not `Option::map` with a closure (see `grad_row`).
    match g.label {
        Some((y, _, on)) => {
            let wy = if W { w[y] } else { 1.0 };
            let v = g.coef * S::fma(g.q_scale, p_y.0, -(wy * on));
            Some((y, if g.cap.is_some() { v * p_y.1 } else { v }))
        }
        None => None,
    }
}

/// `p_y` as the gradient pass computes it, and the cap's slope at the label (1 without a cap): from what the
/// statistics pass kept when given (`exp(z_y - chunk max)`, or the capped logit; with `aux_zc`, the exponential
/// and the capped logit), else from `z_y` (the same bits).
#[inline(always)]
pub(crate) fn label_prob<S: Isa>(
    g: &GradRow,
    stored: Option<f32>,
    aux_zc: Option<f32>,
    chunk_max_of_label: f32,
) -> (f32, f32) {
    let zy = match (stored, g.label) {
        (Some(x), _) => x,
        (None, Some((_, zy, _))) => zy,
        (None, None) => return (0.0, 1.0),
    };
    let factor = g.prob_factor(chunk_max_of_label);
    match (g.cap, aux_zc) {
        (Some(cap), Some(zc)) => (zy * factor, cap.slope::<S>(zc)),
        (Some(cap), None) => {
            let zc = if stored.is_some() { zy } else { cap.apply::<S>(zy) };
            (exp_nonpos::<S>(zc - chunk_max_of_label) * factor, cap.slope::<S>(zc))
        }
        (None, _) => {
            let e = if stored.is_some() {
                zy
            } else {
                recomputed_exp::<S>(zy, chunk_max_of_label)
            };
            (e * factor, 1.0)
        }
    }
}

/// Writes the gradient of a whole row (after [`row_stats`] with the same `STORE` and `aux`), chunk maxima in
/// `maxima`.
#[inline(always)]
pub(crate) fn grad_row<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool>(
    g: &GradRow,
    io: &mut IO,
    maxima: &[f32],
    w: &[f32],
    t: &[f32],
    aux: &[f32],
) {
    let k = io.len();
    // No closures here: LLVM may leave a closure out of line, and then it is neither inlined nor compiled for
    // the dispatched instruction set (a call per row, 5% of a 16-class row's instructions).
    let one_chunk = k <= CHUNK;
    let p_y = match g.label {
        Some((y, _, _)) => {
            let stored = if STORE { Some(io.load_exp(y)) } else { None };
            let aux_zc = if STORE && !aux.is_empty() { Some(aux[y]) } else { None };
            let chunk_max = if one_chunk { g.max } else { maxima[y / CHUNK] };
            Some(label_prob::<S>(g, stored, aux_zc, chunk_max))
        }
        None => None,
    };
    let mut start = 0;
    let mut ci = 0;
    while start < k {
        let end = (start + CHUNK).min(k);
        let chunk_max = if one_chunk { g.max } else { maxima[ci] };
        grad_range::<S, E, IO, W, T, STORE>(g, io, start, end, chunk_max, w, t, aux);
        start = end;
        ci += 1;
    }
    if let Some(p) = p_y {
        if let Some((y, v)) = label_grad::<S, W>(g, p, w) {
            io.store(y, v);
        }
    }
}
