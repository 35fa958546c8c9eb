//! The statistics pass: per chunk a max pass and an accumulation pass, giving the chunk's [`RowStats`].

use super::io::{put_lanes, put_partial, RowIo};
use super::{Cap, RowStats, CHUNK};
use crate::element::Element;
use crate::simd::{exp_in_range, exp_nonpos, hmax, hmin, Isa, Kernel, Lanes, EXP_RANGE_LO, LANES};
use std::marker::PhantomData;

/// The end of the whole vectors of classes `[start, end)`: `end` less the `< LANES` tail. Checks
/// `start <= end <= len` once, which is what the unchecked lane accesses in `[start, body_end)` rely on.
#[inline(always)]
pub(crate) fn lane_body(start: usize, end: usize, len: usize) -> usize {
    assert!(start <= end && end <= len);
    end - (end - start) % LANES
}

/// [`slice_stats`]'s arguments, as a [`Kernel`] for [`Isa::outline`].
pub(crate) struct ChunkStats<'a, E, IO, const W: bool, const T: bool, const SHIFTED: bool, const STORE: bool> {
    io: &'a mut IO,
    start: usize,
    end: usize,
    w: &'a [f32],
    t: &'a [f32],
    cap: Option<Cap>,
    aux: &'a mut [f32],
    elem: PhantomData<fn() -> E>,
}

impl<E: Element, IO: RowIo<E>, const W: bool, const T: bool, const SHIFTED: bool, const STORE: bool> Kernel
    for ChunkStats<'_, E, IO, W, T, SHIFTED, STORE>
{
    type Output = RowStats;
    #[inline(always)]
    fn run<S: Isa>(self) -> RowStats {
        chunk_stats::<S, E, IO, W, T, SHIFTED, STORE>(self.io, self.start, self.end, self.w, self.t, self.cap, self.aux)
    }
}

/// Statistics of the classes `[start, end)` of a row (`end - start <= CHUNK`); `w` and `t` are the row's weights
/// and soft targets (indexed by class) when `W` / `T` are set.
///
/// `SHIFTED`: the `shifted` sums are needed (skipped when the loss does not use them, which also keeps `0 * -inf` out
/// of rows with masked classes). `STORE`: keep `exp(z - chunk max)` for the gradient pass ([`RowIo::store_exp`]).
/// With soft-capping (`cap`) the gradient pass needs the capped logit `cap * tanh(z / cap)` too (for the slope
/// `1 - tanh^2`): it goes to `aux` (the row's length, indexed by class) when that is not empty, else it is kept
/// instead of the exponential, which the gradient pass then computes again.
///
/// With `cap`, every statistic is of the capped logits. The max pass still runs on the logits as they are: the cap
/// is increasing, so it maps their max and min to the capped ones.
#[inline(always)]
pub(crate) fn chunk_stats<
    S: Isa,
    E: Element,
    IO: RowIo<E>,
    const W: bool,
    const T: bool,
    const SHIFTED: bool,
    const STORE: bool,
>(
    io: &mut IO,
    start: usize,
    end: usize,
    w: &[f32],
    t: &[f32],
    cap: Option<Cap>,
    aux: &mut [f32],
) -> RowStats {
    // A local copy of the slices: see `RowIo::reborrow`.
    let io = &mut io.reborrow();
    let body_end = lane_body(start, end, io.len());

    // Max pass, which also finds the min: four independent max accumulators and two min ones (max and min are
    // exact, so the grouping cannot change the result).
    let mut mx: [Lanes; 4] = [[f32::NEG_INFINITY; LANES]; 4];
    let mut mn: [Lanes; 2] = [[f32::INFINITY; LANES]; 2];
    let mut c = start;
    while c + 4 * LANES <= body_end {
        for (a, acc) in mx.iter_mut().enumerate() {
            // SAFETY: c + (a + 1) * LANES <= c + 4 * LANES <= body_end <= len (checked by `lane_body`).
            let v = unsafe { io.load_lanes::<S>(c + a * LANES) };
            let lo = &mut mn[a % 2];
            for j in 0..LANES {
                acc[j] = if v[j] > acc[j] { v[j] } else { acc[j] };
                lo[j] = if v[j] < lo[j] { v[j] } else { lo[j] };
            }
        }
        c += 4 * LANES;
    }
    while c < body_end {
        // SAFETY: c + LANES <= body_end <= len (checked by `lane_body`).
        let v = unsafe { io.load_lanes::<S>(c) };
        for j in 0..LANES {
            mx[0][j] = if v[j] > mx[0][j] { v[j] } else { mx[0][j] };
            mn[0][j] = if v[j] < mn[0][j] { v[j] } else { mn[0][j] };
        }
        c += LANES;
    }
    // The tail (fewer than LANES classes) as one vector padded with -inf, read once for both passes.
    let rem = end - body_end;
    let tail = if rem > 0 {
        io.tail::<S>(body_end, rem, f32::NEG_INFINITY)
    } else {
        [f32::NEG_INFINITY; LANES]
    };
    for j in 0..LANES {
        mx[1][j] = if tail[j] > mx[1][j] { tail[j] } else { mx[1][j] };
        // The padding is not a logit: +inf (no effect) for the min.
        let v = if j < rem { tail[j] } else { f32::INFINITY };
        mn[1][j] = if v < mn[1][j] { v } else { mn[1][j] };
    }
    // Lane-wise first, then one tree each. NaN logits fail every comparison and are in neither accumulator (the
    // accumulation pass carries them into the sums), so the order of these exact operations cannot matter.
    for j in 0..LANES {
        let (a, b) = (mx[0][j], mx[1][j]);
        let ab = if b > a { b } else { a };
        let (c, d) = (mx[2][j], mx[3][j]);
        let cd = if d > c { d } else { c };
        mx[0][j] = if cd > ab { cd } else { ab };
        mn[0][j] = if mn[1][j] < mn[0][j] { mn[1][j] } else { mn[0][j] };
    }
    let (m, lo) = (hmax(mx[0]), hmin(mn[0]));
    let mut acc = Accumulators::default();
    let ahead = end - start;
    if let Some(cap) = cap {
        // Capped logits are never -inf (a -inf logit is capped to -cap), so no chunk is masked; NaN logits reach
        // the sums through the accumulation pass. Their spread is under 2 cap: within `exp`'s range unless the
        // cap is above 43 ([`Cap::in_range`]).
        let m = cap.apply::<S>(m);
        let body = (start..body_end, ahead);
        let capping = (cap, &mut *aux);
        match (STORE && !capping.1.is_empty(), cap.in_range) {
            (true, true) => {
                accumulate_body::<S, E, _, W, T, SHIFTED, STORE, true, true, true>(io, &mut acc, body, m, w, t, capping)
            }
            (true, false) => accumulate_body::<S, E, _, W, T, SHIFTED, STORE, false, true, true>(
                io, &mut acc, body, m, w, t, capping,
            ),
            (false, true) => accumulate_body::<S, E, _, W, T, SHIFTED, STORE, true, true, false>(
                io, &mut acc, body, m, w, t, capping,
            ),
            (false, false) => accumulate_body::<S, E, _, W, T, SHIFTED, STORE, false, true, false>(
                io, &mut acc, body, m, w, t, capping,
            ),
        }
        if rem > 0 {
            let (wp, tp) = padded_weights::<S, W, T>(body_end, rem, w, t);
            let (e, zc) = acc.add::<S, W, T, SHIFTED, true, false, true>(tail, m, rem, &wp, &tp, cap);
            if STORE && !aux.is_empty() {
                io.store_exp_tail::<S>(body_end, rem, e);
                put_partial::<S, f32>(&mut aux[body_end..end], zc);
            } else if STORE {
                io.store_exp_tail::<S>(body_end, rem, zc);
            }
        }
        return acc.stats::<S, W, T, SHIFTED>(m, end - start);
    }
    if m == f32::NEG_INFINITY {
        return all_masked_chunk::<E, _, W, T, STORE>(io, start, end, w, t);
    }

    // Every `z - m` of the body is at least `lo - m`: when that is within `exp`'s range (a spread under 87, the
    // common case; not with `-inf` logits), the exponentials need no select (2 of 13 instructions per vector).
    let none = Cap::NONE;
    let body = (start..body_end, ahead);
    if lo - m >= EXP_RANGE_LO {
        accumulate_body::<S, E, _, W, T, SHIFTED, STORE, true, false, false>(io, &mut acc, body, m, w, t, (none, aux));
    } else {
        accumulate_body::<S, E, _, W, T, SHIFTED, STORE, false, false, false>(io, &mut acc, body, m, w, t, (none, aux));
    }
    // The tail: its -inf padding adds nothing.
    if rem > 0 {
        let (wp, tp) = padded_weights::<S, W, T>(body_end, rem, w, t);
        let (e, _) = acc.add::<S, W, T, SHIFTED, true, false, false>(tail, m, rem, &wp, &tp, none);
        if STORE {
            io.store_exp_tail::<S>(body_end, rem, e);
        }
    }
    acc.stats::<S, W, T, SHIFTED>(m, end - start)
}

impl Accumulators {
    /// The chunk's statistics from the accumulators (max `m`, `len` classes).
    #[inline(always)]
    fn stats<S: Isa, const W: bool, const T: bool, const SHIFTED: bool>(&self, m: f32, len: usize) -> RowStats {
        let acc = self;
        RowStats {
            max: m,
            sum_exp: S::hsum(acc.se),
            mass: if !SHIFTED {
                0.0
            } else if W {
                S::hsum(acc.ms)
            } else {
                len as f64
            },
            shifted: if SHIFTED { S::hsum(acc.sh) } else { 0.0 },
            target_mass: if T { S::hsum(acc.tm) } else { 0.0 },
            target_shifted: if T { S::hsum(acc.tsh) } else { 0.0 },
        }
    }
}

/// The accumulation pass over the whole vectors `body` of a chunk (max `m`), prefetching `ahead` classes on.
/// `IN_RANGE`: every `z - m` is known to be at least [`EXP_RANGE_LO`], so `exp` needs no select. `CAP`: the
/// logits are soft-capped by `cap` (and `m` is the capped max); with `STORE`, `AUX` keeps the capped logits in
/// `aux` beside the exponentials, else they are kept instead of them (see [`chunk_stats`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn accumulate_body<
    S: Isa,
    E: Element,
    IO: RowIo<E>,
    const W: bool,
    const T: bool,
    const SHIFTED: bool,
    const STORE: bool,
    const IN_RANGE: bool,
    const CAP: bool,
    const AUX: bool,
>(
    io: &mut IO,
    acc: &mut Accumulators,
    (body, ahead): (std::ops::Range<usize>, usize),
    m: f32,
    w: &[f32],
    t: &[f32],
    (cap, aux): (Cap, &mut [f32]),
) {
    let (start, body_end) = (body.start, body.end);
    assert!(!AUX || aux.len() == io.len());
    // Once per chunk: what the unchecked loads and stores below rely on (`lane_body` gives such a `body_end`).
    assert!(start <= body_end && body_end <= io.len() && (body_end - start).is_multiple_of(LANES));
    // While this chunk is in L1, bring the one after the next (chunks of the row, or the rows that follow) in
    // from memory, so that the max passes do not wait on it: one prefetch per 64-byte line. Two chunks ahead
    // rather than one: 20-25% faster on the loss alone from memory (docs/BENCHMARKS.md).
    let mut c = start;
    while c < body_end {
        io.prefetch(c + 2 * ahead);
        // SAFETY: c + LANES <= body_end <= len (c steps by LANES from start, and the assert above).
        let z = unsafe { io.load_lanes::<S>(c) };
        let (e, zc) =
            acc.add::<S, W, T, SHIFTED, false, IN_RANGE, CAP>(z, m, LANES, from::<W>(w, c), from::<T>(t, c), cap);
        if STORE {
            let kept = if CAP && !AUX { zc } else { e };
            // SAFETY: as for the load; `aux` has the row's length (asserted above).
            unsafe {
                io.store_exp_lanes::<S>(c, kept);
                if AUX {
                    put_lanes::<S, f32>(aux, c, zc);
                }
            }
        }
        c += LANES;
    }
}

/// The weights or soft targets from class `c` on, when `ON` (an empty slice otherwise: there are none).
#[inline(always)]
pub(crate) fn from<const ON: bool>(v: &[f32], c: usize) -> &[f32] {
    if ON {
        &v[c..]
    } else {
        &[]
    }
}

/// The weights (`W`) and soft targets (`T`) of the `rem < LANES` classes from `start`, each as one vector padded
/// with 0 (all 0 when off).
#[inline(always)]
pub(crate) fn padded_weights<S: Isa, const W: bool, const T: bool>(
    start: usize,
    rem: usize,
    w: &[f32],
    t: &[f32],
) -> (Lanes, Lanes) {
    let wp = if W {
        S::partial(&w[start..start + rem], 0.0)
    } else {
        [0.0; LANES]
    };
    let tp = if T {
        S::partial(&t[start..start + rem], 0.0)
    } else {
        [0.0; LANES]
    };
    (wp, tp)
}

/// The per-lane sums of the accumulation pass (see [`RowStats`]).
#[derive(Default)]
pub(crate) struct Accumulators {
    se: Lanes,
    ms: Lanes,
    sh: Lanes,
    tm: Lanes,
    tsh: Lanes,
}

impl Accumulators {
    /// Adds one vector of logits `z` (chunk max `m`), whose weights and soft targets start at `w[0]` / `t[0]`;
    /// returns `exp(z - m)` and, with `CAP`, the capped logits (zeros without). With `MASKED`, only
    /// the first `valid` lanes are classes (the rest hold `-inf` logits and zero weights and targets). `IN_RANGE`:
    /// every `z - m` is at least [`EXP_RANGE_LO`]. `CAP`: `z` is soft-capped by `cap` first, and `m` is the capped max.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn add<
        S: Isa,
        const W: bool,
        const T: bool,
        const SHIFTED: bool,
        const MASKED: bool,
        const IN_RANGE: bool,
        const CAP: bool,
    >(
        &mut self,
        z: Lanes,
        m: f32,
        valid: usize,
        w: &[f32],
        t: &[f32],
        cap: Cap,
    ) -> (Lanes, Lanes) {
        let mut e: Lanes = [0.0; LANES];
        let mut zc: Lanes = [0.0; LANES];
        for j in 0..LANES {
            let d = if CAP {
                // The padding of a tail stays -inf (a capped -inf would be -cap, a class).
                zc[j] = if MASKED && j >= valid {
                    f32::NEG_INFINITY
                } else {
                    cap.apply::<S>(z[j])
                };
                zc[j] - m
            } else {
                z[j] - m
            };
            e[j] = if IN_RANGE {
                exp_in_range::<S>(d)
            } else {
                exp_nonpos::<S>(d)
            };
            self.se[j] += e[j];
            if SHIFTED {
                if W {
                    let u = w[j];
                    self.ms[j] += u;
                    self.sh[j] += if u == 0.0 { 0.0 } else { u * d };
                } else {
                    self.sh[j] += if MASKED && j >= valid { 0.0 } else { d };
                }
            }
            if T {
                let v = if W { w[j] * t[j] } else { t[j] };
                self.tm[j] += v;
                self.tsh[j] += if v == 0.0 { 0.0 } else { v * d };
            }
        }
        (e, zc)
    }
}

/// A chunk whose max pass found no logit above `-inf`: all `-inf` (no exponential mass, and `-inf` shifted sums
/// where mass sits on it), or `-inf` and NaN. NaN fails every comparison of the max pass, so it must be looked
/// for here: a NaN logit makes the row's loss and gradient NaN (SPEC: non-finite logits give a NaN loss, as in
/// PyTorch), which a NaN exponential sum does through the combine and `GradRow::prob_factor`.
#[cold]
pub(crate) fn all_masked_chunk<E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool>(
    io: &mut IO,
    start: usize,
    end: usize,
    w: &[f32],
    t: &[f32],
) -> RowStats {
    // Before the stores below, which overwrite the logits in place.
    let nan = (start..end).any(|c| io.load(c).is_nan());
    if STORE {
        for c in start..end {
            io.store_exp(c, 0.0);
        }
    }
    let mass: f64 = if W {
        w[start..end].iter().map(|&u| u as f64).sum()
    } else {
        (end - start) as f64
    };
    let target_mass: f64 = if T {
        (start..end)
            .map(|c| if W { (w[c] * t[c]) as f64 } else { t[c] as f64 })
            .sum()
    } else {
        0.0
    };
    if nan {
        return RowStats {
            max: f32::NEG_INFINITY,
            sum_exp: f64::NAN,
            mass,
            shifted: f64::NAN,
            target_mass,
            target_shifted: f64::NAN,
        };
    }
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

/// Statistics of a whole row: chunk by chunk, combined left to right. Each chunk's max is pushed to `maxima`
/// (cleared first) when the row has more than one chunk and a gradient is wanted: the gradient pass needs them.
/// `aux`: the row's capped logits with soft-capping, when not empty (see [`chunk_stats`]).
#[inline(always)]
pub(crate) fn row_stats<
    S: Isa,
    E: Element,
    IO: RowIo<E>,
    const W: bool,
    const T: bool,
    const SHIFTED: bool,
    const STORE: bool,
>(
    io: &mut IO,
    w: &[f32],
    t: &[f32],
    cap: Option<Cap>,
    maxima: &mut Vec<f32>,
    aux: &mut [f32],
) -> RowStats {
    let k = io.len();
    // A row of one chunk inlines the chunk kernel (a call would show on short rows); longer rows call the
    // out-of-line copy that rows split across threads use too, once per chunk of 2048 classes. With a second
    // inlined call site, every row kernel would compile the chunk kernel twice.
    if k <= CHUNK {
        return chunk_stats::<S, E, IO, W, T, SHIFTED, STORE>(io, 0, k, w, t, cap, aux);
    }
    maxima.clear();
    let mut acc = RowStats::EMPTY;
    let mut start = 0;
    while start < k {
        let end = (start + CHUNK).min(k);
        let st = slice_stats::<S, E, IO, W, T, SHIFTED, STORE>(io, start, end, w, t, cap, &mut *aux);
        if IO::WRITES {
            maxima.push(st.max);
        }
        acc = acc.combine(&st);
        start = end;
    }
    acc
}

/// Statistics of classes `[start, end)` of a row, one chunk, for callers that split a row across threads.
///
/// Out of line ([`Isa::outline`]): one copy per variant, called once per chunk. The row kernels inline
/// [`chunk_stats`] instead, whose cost per call would show on short rows.
#[inline(always)]
pub(crate) fn slice_stats<
    S: Isa,
    E: Element,
    IO: RowIo<E>,
    const W: bool,
    const T: bool,
    const SHIFTED: bool,
    const STORE: bool,
>(
    io: &mut IO,
    start: usize,
    end: usize,
    w: &[f32],
    t: &[f32],
    cap: Option<Cap>,
    aux: &mut [f32],
) -> RowStats {
    S::outline(ChunkStats::<E, IO, W, T, SHIFTED, STORE> {
        io,
        start,
        end,
        w,
        t,
        cap,
        aux,
        elem: PhantomData,
    })
}
