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

use crate::simd::{exp_in_range, exp_nonpos, hmax, hmin, Isa, Kernel, Lanes, EXP_RANGE_LO, LANES};
use half::slice::HalfFloatSliceExt;
use std::any::TypeId;
use std::marker::PhantomData;

/// Classes per chunk: 8 KiB of f32 logits, which stays in L1 between the max pass and the accumulation pass.
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
                row_stats::<S, f32, _, false, false, true, false>(&mut ReadOnly(self.0), &[], &[], &mut maxima)
            }
        }
        crate::simd::dispatch(Stats(z))
    }
}

pub(crate) mod sealed {
    use crate::loss::{Bufs, GradOutput, LabelSmoothingLoss, Loss, Targets};

    /// Seals [`Element`](super::Element), and holds the one compiled copy of the loss per element type.
    pub trait Sealed: Sized {
        /// [`LabelSmoothingLoss::run_generic`] for this type. The public calls are generic, and a generic function
        /// is compiled again in every crate that calls it (at the test profile's `opt-level`, each of the
        /// workspace's test crates paid minutes for its own copy of the kernels); these non-generic, never inlined
        /// instances are compiled once, here, and every caller links to them.
        fn run_loss(
            loss: &LabelSmoothingLoss,
            n: usize,
            targets: Targets<'_>,
            grad_output: GradOutput<'_>,
            out: Bufs<'_, Self>,
        ) -> crate::Result<Loss>;
    }

    macro_rules! instantiate {
        ($($t:ty),*) => {$(
            impl Sealed for $t {
                #[inline(never)]
                fn run_loss(
                    loss: &LabelSmoothingLoss,
                    n: usize,
                    targets: Targets<'_>,
                    grad_output: GradOutput<'_>,
                    out: Bufs<'_, Self>,
                ) -> crate::Result<Loss> {
                    loss.run_generic(n, targets, grad_output, out)
                }
            }
        )*};
    }
    instantiate!(f32, half::bf16, half::f16);
}

/// A logit type the kernel reads and writes: `f32`, or `bf16` / `f16` (from the `half` crate), which are
/// widened to f32 for every computation and whose gradient is written back in their own type.
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The name used in reports: `f32`, `bf16`, `f16`.
    const NAME: &'static str;
    /// Whether the kernel keeps `exp(z - chunk max)` in the gradient buffer between its passes. Only for f32: a
    /// 16-bit copy of a probability would cost the gradient its accuracy where `p` is close to `q`. bf16 and f16
    /// keep it in an f32 scratch row per parallel task instead (a row split across threads recomputes it, with
    /// the same bits).
    const STORES_EXP: bool;
    /// Widens to f32 (exact).
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (to nearest even).
    fn from_f32(v: f32) -> Self;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    const STORES_EXP: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for half::bf16 {
    const NAME: &'static str = "bf16";
    const STORES_EXP: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bf16 is the top half of an f32: widening is a shift.
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::bf16::from_bits(bf16_bits(v))
    }
}

/// f32 to bf16 bits, to nearest even, NaN kept NaN (quiet, with its sign and top payload bits): the same bits as
/// `half::bf16::from_f32` (tested on every rounding case), without its branches, so that lane loops vectorise.
#[inline(always)]
fn bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    // Adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when rounding to nearest even
    // rounds up; no overflow, since values that high are NaN.
    let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
    let nan = (x >> 16) | 0x0040;
    (if x & 0x7fff_ffff > 0x7f80_0000 { nan } else { rounded }) as u16
}

impl Element for half::f16 {
    const NAME: &'static str = "f16";
    const STORES_EXP: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// Where a row's logits come from and where its output goes: read only, into a second buffer, or in place.
/// Indices are class indices within the row. The logits' side is the same for all three (the defaults below,
/// through [`RowIo::logits`]); so is the output's side when the output is the logits' buffer.
pub(crate) trait RowIo<E: Element> {
    /// Whether this holds an output (a gradient is wanted).
    const WRITES: bool;
    /// The same row and output, borrowed from this one.
    type Reborrow<'b>: RowIo<E>
    where
        Self: 'b;
    /// A fresh value holding the same slices, for a hot loop to work on. The loops reborrow first so that their
    /// slices are locals: through `&mut self`, whose address a caller may have passed to an out-of-line chunk
    /// kernel too ([`Isa::outline`]), LLVM could not tell that the loop's own stores leave the slices' pointers
    /// alone, and reloaded them in every iteration.
    fn reborrow(&mut self) -> Self::Reborrow<'_>;
    /// The row's logits (in place: the buffer, which the statistics and gradient passes overwrite).
    fn logits(&self) -> &[E];
    #[inline(always)]
    fn len(&self) -> usize {
        self.logits().len()
    }
    /// The logit (or, in place after the statistics pass stored it, the stored value) at `c`.
    #[inline(always)]
    fn load(&self, c: usize) -> f32 {
        self.logits()[c].to_f32()
    }
    /// The `LANES` logits from `c`.
    ///
    /// # Safety
    /// `c + LANES <= self.len()` (unchecked: the kernels' loops prove it once, before the loop).
    #[inline(always)]
    unsafe fn load_lanes<S: Isa>(&self, c: usize) -> Lanes {
        // SAFETY: the caller guarantees c + LANES <= len.
        unsafe { lanes_of::<S, E>(self.logits(), c) }
    }
    /// The `rem <= LANES` logits from `c` in lanes `0..rem`, `fill` in the others.
    #[inline(always)]
    fn tail<S: Isa>(&self, c: usize, rem: usize, fill: f32) -> Lanes {
        partial_of::<S, E>(&self.logits()[c..c + rem], fill)
    }
    /// Prefetches the logits at class `c`, which may lie past the row (the next row, or past the buffer).
    #[inline(always)]
    fn prefetch(&self, c: usize) {
        crate::simd::prefetch(self.logits().as_ptr().wrapping_add(c));
    }
    /// Writes the output at `c` (no-op when read only).
    fn store(&mut self, c: usize, v: f32);
    /// Writes `LANES` outputs from `c`.
    ///
    /// # Safety
    /// `c + LANES <= self.len()`.
    unsafe fn store_lanes<S: Isa>(&mut self, c: usize, v: Lanes);
    /// Writes lanes `0..rem` of `v` to the outputs from `c` (no-op when read only).
    fn store_tail<S: Isa>(&mut self, c: usize, rem: usize, v: Lanes);
    /// Whether the statistics pass keeps `e_c = exp(z_c - chunk max)` for the gradient pass (through the
    /// `*_exp` methods): in the output for f32 (the default), in a scratch row for [`WithScratch`]. Where it is
    /// not kept, the gradient pass recomputes it with the same instructions, so the gradient has the same bits
    /// either way.
    const KEEPS_EXP: bool = Self::WRITES && E::STORES_EXP;
    /// Keeps `e_c` at `c`. By default in the output.
    #[inline(always)]
    fn store_exp(&mut self, c: usize, v: f32) {
        self.store(c, v)
    }
    /// Keeps the `LANES` values `e_c` from `c`. By default in the output.
    ///
    /// # Safety
    /// `c + LANES <= self.len()`.
    #[inline(always)]
    unsafe fn store_exp_lanes<S: Isa>(&mut self, c: usize, v: Lanes) {
        // SAFETY: the caller guarantees c + LANES <= len.
        unsafe { self.store_lanes::<S>(c, v) }
    }
    /// Keeps lanes `0..rem` of `v` as the `e_c` from `c`. By default in the output.
    #[inline(always)]
    fn store_exp_tail<S: Isa>(&mut self, c: usize, rem: usize, v: Lanes) {
        self.store_tail::<S>(c, rem, v)
    }
    /// The kept `e_c` at `c`. By default the output's value there, which is the logits' buffer's unless
    /// overridden.
    #[inline(always)]
    fn load_exp(&self, c: usize) -> f32 {
        self.load(c)
    }
    /// The `LANES` kept values from `c`.
    ///
    /// # Safety
    /// `c + LANES <= self.len()`.
    #[inline(always)]
    unsafe fn load_exp_lanes<S: Isa>(&self, c: usize) -> Lanes {
        // SAFETY: the caller guarantees c + LANES <= len.
        unsafe { self.load_lanes::<S>(c) }
    }
    /// The `rem <= LANES` kept values from `c` in lanes `0..rem`, `fill` in the others.
    #[inline(always)]
    fn load_exp_tail<S: Isa>(&self, c: usize, rem: usize, fill: f32) -> Lanes {
        self.tail::<S>(c, rem, fill)
    }
}

/// `s` under its own type `T`, when `E` is `T` (for the f32 and f16 fast paths of the generic code).
#[inline(always)]
pub(crate) fn as_type<E: Element, T: Element>(s: &[E]) -> Option<&[T]> {
    if TypeId::of::<E>() == TypeId::of::<T>() {
        // SAFETY: `E` and `T` are the same type (same type id), so this is the same slice under its own type.
        Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<T>(), s.len()) })
    } else {
        None
    }
}

/// `s` under its own type `T`, mutably, when `E` is `T`.
#[inline(always)]
fn as_type_mut<E: Element, T: Element>(s: &mut [E]) -> Option<&mut [T]> {
    if TypeId::of::<E>() == TypeId::of::<T>() {
        // SAFETY: `E` and `T` are the same type (same type id), so this is the same slice under its own type.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<T>(), s.len()) })
    } else {
        None
    }
}

/// The values of `s` (at most `LANES`) in lanes `0..s.len()`, `fill` in the others: one masked load for f32.
#[inline(always)]
fn partial_of<S: Isa, E: Element>(s: &[E], fill: f32) -> Lanes {
    if let Some(f) = as_type::<E, f32>(s) {
        return S::partial(f, fill);
    }
    let mut z = [fill; LANES];
    for (j, &x) in s.iter().enumerate() {
        z[j] = x.to_f32();
    }
    z
}

/// Writes lanes `0..d.len()` of `v` to `d` (at most `LANES`): one masked store for f32.
#[inline(always)]
fn put_partial<S: Isa, E: Element>(d: &mut [E], v: Lanes) {
    if let Some(f) = as_type_mut::<E, f32>(d) {
        return S::store_partial(f, v);
    }
    for (j, x) in d.iter_mut().enumerate() {
        *x = E::from_f32(v[j]);
    }
}

/// # Safety
/// `c + LANES <= s.len()`.
#[inline(always)]
unsafe fn lanes_of<S: Isa, E: Element>(s: &[E], c: usize) -> Lanes {
    debug_assert!(c + LANES <= s.len());
    // SAFETY: the caller guarantees that the LANES elements from c are in bounds.
    let s = unsafe { s.get_unchecked(c..c + LANES) };
    if let Some(h) = as_type::<E, half::f16>(s) {
        // One vector conversion where the instruction set has it (half's `to_f32` checks the CPU per element).
        return S::widen_f16(h.reinterpret_cast().try_into().expect("LANES values"));
    }
    let mut v = [0.0; LANES];
    for j in 0..LANES {
        v[j] = s[j].to_f32();
    }
    v
}

/// # Safety
/// `c + LANES <= d.len()`.
#[inline(always)]
unsafe fn put_lanes<S: Isa, E: Element>(d: &mut [E], c: usize, v: Lanes) {
    debug_assert!(c + LANES <= d.len());
    // SAFETY: the caller guarantees that the LANES elements from c are in bounds.
    let d = unsafe { d.get_unchecked_mut(c..c + LANES) };
    if let Some(h) = as_type_mut::<E, half::f16>(d) {
        h.reinterpret_cast_mut().copy_from_slice(&S::narrow_f16(v));
        return;
    }
    for j in 0..LANES {
        d[j] = E::from_f32(v[j]);
    }
}

/// Logits only (the loss alone).
pub(crate) struct ReadOnly<'a, E>(pub &'a [E]);
/// Logits and a separate output buffer of the same length (checked by [`Separate::new`]; the unchecked lane
/// accesses rely on it).
pub(crate) struct Separate<'a, E>(&'a [E], &'a mut [E]);

impl<'a, E> Separate<'a, E> {
    /// Panics if the lengths differ (a bug in the caller: the public API checks lengths first).
    pub(crate) fn new(z: &'a [E], g: &'a mut [E]) -> Self {
        assert_eq!(z.len(), g.len(), "logits and gradient slices of different lengths");
        Separate(z, g)
    }
}
/// One buffer: logits in, gradient out.
pub(crate) struct InPlace<'a, E>(pub &'a mut [E]);

impl<E: Element> RowIo<E> for ReadOnly<'_, E> {
    const WRITES: bool = false;
    type Reborrow<'b>
        = ReadOnly<'b, E>
    where
        Self: 'b;
    #[inline(always)]
    fn reborrow(&mut self) -> ReadOnly<'_, E> {
        ReadOnly(self.0)
    }
    #[inline(always)]
    fn logits(&self) -> &[E] {
        self.0
    }
    #[inline(always)]
    fn store(&mut self, _: usize, _: f32) {}
    #[inline(always)]
    unsafe fn store_lanes<S: Isa>(&mut self, _: usize, _: Lanes) {}
    #[inline(always)]
    fn store_tail<S: Isa>(&mut self, _: usize, _: usize, _: Lanes) {}
}

impl<E: Element> RowIo<E> for Separate<'_, E> {
    const WRITES: bool = true;
    type Reborrow<'b>
        = Separate<'b, E>
    where
        Self: 'b;
    #[inline(always)]
    fn reborrow(&mut self) -> Separate<'_, E> {
        Separate(self.0, self.1)
    }
    #[inline(always)]
    fn logits(&self) -> &[E] {
        self.0
    }
    #[inline(always)]
    fn store(&mut self, c: usize, v: f32) {
        self.1[c] = E::from_f32(v);
    }
    #[inline(always)]
    unsafe fn store_lanes<S: Isa>(&mut self, c: usize, v: Lanes) {
        // SAFETY: the caller guarantees c + LANES <= len, and the output has the logits' length.
        unsafe { put_lanes::<S, E>(self.1, c, v) }
    }
    #[inline(always)]
    fn store_tail<S: Isa>(&mut self, c: usize, rem: usize, v: Lanes) {
        put_partial::<S, E>(&mut self.1[c..c + rem], v)
    }
    #[inline(always)]
    fn load_exp(&self, c: usize) -> f32 {
        self.1[c].to_f32()
    }
    #[inline(always)]
    unsafe fn load_exp_lanes<S: Isa>(&self, c: usize) -> Lanes {
        // SAFETY: the caller guarantees c + LANES <= len, and the output has the logits' length.
        unsafe { lanes_of::<S, E>(self.1, c) }
    }
    #[inline(always)]
    fn load_exp_tail<S: Isa>(&self, c: usize, rem: usize, fill: f32) -> Lanes {
        partial_of::<S, E>(&self.1[c..c + rem], fill)
    }
}

impl<E: Element> RowIo<E> for InPlace<'_, E> {
    const WRITES: bool = true;
    type Reborrow<'b>
        = InPlace<'b, E>
    where
        Self: 'b;
    #[inline(always)]
    fn reborrow(&mut self) -> InPlace<'_, E> {
        InPlace(self.0)
    }
    #[inline(always)]
    fn logits(&self) -> &[E] {
        self.0
    }
    #[inline(always)]
    fn store(&mut self, c: usize, v: f32) {
        self.0[c] = E::from_f32(v);
    }
    #[inline(always)]
    unsafe fn store_lanes<S: Isa>(&mut self, c: usize, v: Lanes) {
        // SAFETY: the caller guarantees c + LANES <= len.
        unsafe { put_lanes::<S, E>(self.0, c, v) }
    }
    #[inline(always)]
    fn store_tail<S: Isa>(&mut self, c: usize, rem: usize, v: Lanes) {
        put_partial::<S, E>(&mut self.0[c..c + rem], v)
    }
}

/// A row's output with an f32 scratch row of the same length that keeps `e_c = exp(z_c - chunk max)` between
/// the passes, for bf16 and f16, whose own type cannot hold it (see [`Element::STORES_EXP`]): the gradient pass
/// then reads `e_c` instead of computing a second `exp` per class. Same bits as without (see
/// [`RowIo::KEEPS_EXP`]).
pub(crate) struct WithScratch<'s, IO>(IO, &'s mut [f32]);

impl<'s, IO> WithScratch<'s, IO> {
    /// Panics if the lengths differ (a bug in the caller, which sizes the scratch to the row).
    pub(crate) fn new<E: Element>(io: IO, scratch: &'s mut [f32]) -> Self
    where
        IO: RowIo<E>,
    {
        assert_eq!(io.len(), scratch.len(), "scratch row and logits of different lengths");
        WithScratch(io, scratch)
    }
}

impl<E: Element, IO: RowIo<E>> RowIo<E> for WithScratch<'_, IO> {
    const WRITES: bool = IO::WRITES;
    const KEEPS_EXP: bool = IO::WRITES;
    type Reborrow<'b>
        = WithScratch<'b, IO::Reborrow<'b>>
    where
        Self: 'b;
    #[inline(always)]
    fn reborrow(&mut self) -> Self::Reborrow<'_> {
        WithScratch(self.0.reborrow(), self.1)
    }
    #[inline(always)]
    fn logits(&self) -> &[E] {
        self.0.logits()
    }
    #[inline(always)]
    fn store(&mut self, c: usize, v: f32) {
        self.0.store(c, v)
    }
    #[inline(always)]
    unsafe fn store_lanes<S: Isa>(&mut self, c: usize, v: Lanes) {
        // SAFETY: the caller guarantees c + LANES <= len.
        unsafe { self.0.store_lanes::<S>(c, v) }
    }
    #[inline(always)]
    fn store_tail<S: Isa>(&mut self, c: usize, rem: usize, v: Lanes) {
        self.0.store_tail::<S>(c, rem, v)
    }
    #[inline(always)]
    fn store_exp(&mut self, c: usize, v: f32) {
        self.1[c] = v;
    }
    #[inline(always)]
    unsafe fn store_exp_lanes<S: Isa>(&mut self, c: usize, v: Lanes) {
        // SAFETY: the caller guarantees c + LANES <= len, and the scratch has the row's length (`new`).
        unsafe { put_lanes::<S, f32>(self.1, c, v) }
    }
    #[inline(always)]
    fn store_exp_tail<S: Isa>(&mut self, c: usize, rem: usize, v: Lanes) {
        put_partial::<S, f32>(&mut self.1[c..c + rem], v)
    }
    #[inline(always)]
    fn load_exp(&self, c: usize) -> f32 {
        self.1[c]
    }
    #[inline(always)]
    unsafe fn load_exp_lanes<S: Isa>(&self, c: usize) -> Lanes {
        // SAFETY: the caller guarantees c + LANES <= len, and the scratch has the row's length (`new`).
        unsafe { lanes_of::<S, f32>(self.1, c) }
    }
    #[inline(always)]
    fn load_exp_tail<S: Isa>(&self, c: usize, rem: usize, fill: f32) -> Lanes {
        partial_of::<S, f32>(&self.1[c..c + rem], fill)
    }
}

/// The end of the whole vectors of classes `[start, end)`: `end` less the `< LANES` tail. Checks
/// `start <= end <= len` once, which is what the unchecked lane accesses in `[start, body_end)` rely on.
#[inline(always)]
fn lane_body(start: usize, end: usize, len: usize) -> usize {
    assert!(start <= end && end <= len);
    end - (end - start) % LANES
}

/// [`slice_stats`]'s arguments, as a [`Kernel`] for [`Isa::outline`].
struct ChunkStats<'a, E, IO, const W: bool, const T: bool, const LIN: bool, const STORE: bool> {
    io: &'a mut IO,
    start: usize,
    end: usize,
    w: &'a [f32],
    t: &'a [f32],
    elem: PhantomData<fn() -> E>,
}

impl<E: Element, IO: RowIo<E>, const W: bool, const T: bool, const LIN: bool, const STORE: bool> Kernel
    for ChunkStats<'_, E, IO, W, T, LIN, STORE>
{
    type Output = RowStats;
    #[inline(always)]
    fn run<S: Isa>(self) -> RowStats {
        chunk_stats::<S, E, IO, W, T, LIN, STORE>(self.io, self.start, self.end, self.w, self.t)
    }
}

/// Statistics of the classes `[start, end)` of a row (`end - start <= CHUNK`); `w` and `t` are the row's weights
/// and soft targets (indexed by class) when `W` / `T` are set.
///
/// `LIN`: the `shifted` sums are needed (skipped when the loss does not use them, which also keeps `0 * -inf` out
/// of rows with masked classes). `STORE`: write `exp(z - chunk max)` to the output.
#[inline(always)]
fn chunk_stats<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const LIN: bool, const STORE: bool>(
    io: &mut IO,
    start: usize,
    end: usize,
    w: &[f32],
    t: &[f32],
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
    if m == f32::NEG_INFINITY {
        return all_masked_chunk::<E, _, W, T, STORE>(io, start, end, w, t);
    }

    let mut acc = Accumulators::default();
    // Every `z - m` of the body is at least `lo - m`: when that is within `exp`'s range (a spread under 87, the
    // common case; not with `-inf` logits), the exponentials need no select (2 of 13 instructions per vector).
    if lo - m >= EXP_RANGE_LO {
        accumulate_body::<S, E, _, W, T, LIN, STORE, true>(io, &mut acc, start, body_end, end - start, m, w, t);
    } else {
        accumulate_body::<S, E, _, W, T, LIN, STORE, false>(io, &mut acc, start, body_end, end - start, m, w, t);
    }
    // The tail: its -inf padding adds nothing.
    if rem > 0 {
        let (wp, tp) = padded_weights::<S, W, T>(body_end, rem, w, t);
        let e = acc.add::<S, W, T, LIN, true, false>(tail, m, rem, &wp, &tp);
        if STORE {
            io.store_exp_tail::<S>(body_end, rem, e);
        }
    }
    RowStats {
        max: m,
        sum_exp: S::hsum(acc.se),
        mass: if !LIN {
            0.0
        } else if W {
            S::hsum(acc.ms)
        } else {
            (end - start) as f64
        },
        shifted: if LIN { S::hsum(acc.sh) } else { 0.0 },
        target_mass: if T { S::hsum(acc.tm) } else { 0.0 },
        target_shifted: if T { S::hsum(acc.tsh) } else { 0.0 },
    }
}

/// The accumulation pass over the whole vectors `[start, body_end)` of a chunk (max `m`); `ahead` is how far to
/// prefetch. `IN_RANGE`: every `z - m` is known to be at least [`EXP_RANGE_LO`], so `exp` needs no select.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate_body<
    S: Isa,
    E: Element,
    IO: RowIo<E>,
    const W: bool,
    const T: bool,
    const LIN: bool,
    const STORE: bool,
    const IN_RANGE: bool,
>(
    io: &mut IO,
    acc: &mut Accumulators,
    start: usize,
    body_end: usize,
    ahead: usize,
    m: f32,
    w: &[f32],
    t: &[f32],
) {
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
        let e = acc.add::<S, W, T, LIN, false, IN_RANGE>(z, m, LANES, from::<W>(w, c), from::<T>(t, c));
        if STORE {
            // SAFETY: as for the load.
            unsafe { io.store_exp_lanes::<S>(c, e) };
        }
        c += LANES;
    }
}

/// The weights or soft targets from class `c` on, when `ON` (an empty slice otherwise: there are none).
#[inline(always)]
fn from<const ON: bool>(v: &[f32], c: usize) -> &[f32] {
    if ON {
        &v[c..]
    } else {
        &[]
    }
}

/// The weights (`W`) and soft targets (`T`) of the `rem < LANES` classes from `start`, each as one vector padded
/// with 0 (all 0 when off).
#[inline(always)]
fn padded_weights<S: Isa, const W: bool, const T: bool>(
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
struct Accumulators {
    se: Lanes,
    ms: Lanes,
    sh: Lanes,
    tm: Lanes,
    tsh: Lanes,
}

impl Accumulators {
    /// Adds one vector of logits `z` (chunk max `m`), whose weights and soft targets start at `w[0]` / `t[0]`;
    /// returns `exp(z - m)`. With `MASKED`, only the first `valid` lanes are classes (the rest hold `-inf`
    /// logits and zero weights and targets). `IN_RANGE`: every `z - m` is at least [`EXP_RANGE_LO`].
    #[inline(always)]
    fn add<S: Isa, const W: bool, const T: bool, const LIN: bool, const MASKED: bool, const IN_RANGE: bool>(
        &mut self,
        z: Lanes,
        m: f32,
        valid: usize,
        w: &[f32],
        t: &[f32],
    ) -> Lanes {
        let mut e: Lanes = [0.0; LANES];
        for j in 0..LANES {
            let d = z[j] - m;
            e[j] = if IN_RANGE {
                exp_in_range::<S>(d)
            } else {
                exp_nonpos::<S>(d)
            };
            self.se[j] += e[j];
            if LIN {
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
        e
    }
}

/// A chunk whose max pass found no logit above `-inf`: all `-inf` (no exponential mass, and `-inf` shifted sums
/// where mass sits on it), or `-inf` and NaN. NaN fails every comparison of the max pass, so it must be looked
/// for here: a NaN logit makes the row's loss and gradient NaN (SPEC: non-finite logits give a NaN loss, as in
/// PyTorch), which a NaN exponential sum does through the combine and `GradRow::prob_factor`.
#[cold]
fn all_masked_chunk<E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool>(
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
#[inline(always)]
pub(crate) fn row_stats<
    S: Isa,
    E: Element,
    IO: RowIo<E>,
    const W: bool,
    const T: bool,
    const LIN: bool,
    const STORE: bool,
>(
    io: &mut IO,
    w: &[f32],
    t: &[f32],
    maxima: &mut Vec<f32>,
) -> RowStats {
    let k = io.len();
    // A row of one chunk inlines the chunk kernel (a call would show on short rows); longer rows call the
    // out-of-line copy that rows split across threads use too, once per chunk of 2048 classes. With a second
    // inlined call site, every row kernel would compile the chunk kernel twice.
    if k <= CHUNK {
        return chunk_stats::<S, E, IO, W, T, LIN, STORE>(io, 0, k, w, t);
    }
    maxima.clear();
    let mut acc = RowStats::EMPTY;
    let mut start = 0;
    while start < k {
        let end = (start + CHUNK).min(k);
        let st = slice_stats::<S, E, IO, W, T, LIN, STORE>(io, start, end, w, t);
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
    const LIN: bool,
    const STORE: bool,
>(
    io: &mut IO,
    start: usize,
    end: usize,
    w: &[f32],
    t: &[f32],
) -> RowStats {
    S::outline(ChunkStats::<E, IO, W, T, LIN, STORE> {
        io,
        start,
        end,
        w,
        t,
        elem: PhantomData,
    })
}

/// What the gradient pass writes, per class `c`: `coef * (q_scale * p_c - w_c * (t_scale * t_c + off))`, and then,
/// for a hard label, the label's entry `coef * (q_scale * p_y - w_y * on)`.
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
fn recomputed_exp<S: Isa>(z: f32, chunk_max: f32) -> f32 {
    if chunk_max == f32::NEG_INFINITY {
        0.0
    } else {
        exp_nonpos::<S>(z - chunk_max)
    }
}

#[inline(always)]
fn grad_value<S: Isa, const W: bool, const T: bool>(g: &GradRow, p: f32, w: f32, t: f32) -> f32 {
    let q = if T { S::fma(g.t_scale, t, g.off) } else { g.off };
    let wq = if W { w * q } else { q };
    g.coef * S::fma(g.q_scale, p, -wq)
}

/// The gradient of classes `[start, end)` of a row, one chunk, for callers that split a row across threads:
/// [`grad_range`], out of line ([`Isa::outline`]) like [`slice_stats`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn slice_grad<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool>(
    g: &GradRow,
    io: &mut IO,
    start: usize,
    end: usize,
    chunk_max: f32,
    w: &[f32],
    t: &[f32],
) {
    S::outline(GradRange::<E, IO, W, T, STORE> {
        g,
        io,
        start,
        end,
        chunk_max,
        w,
        t,
        elem: PhantomData,
    })
}

/// [`slice_grad`]'s arguments, as a [`Kernel`] for [`Isa::outline`].
struct GradRange<'a, E, IO, const W: bool, const T: bool, const STORE: bool> {
    g: &'a GradRow,
    io: &'a mut IO,
    start: usize,
    end: usize,
    chunk_max: f32,
    w: &'a [f32],
    t: &'a [f32],
    elem: PhantomData<fn() -> E>,
}

impl<E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool> Kernel
    for GradRange<'_, E, IO, W, T, STORE>
{
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self) {
        grad_range::<S, E, IO, W, T, STORE>(self.g, self.io, self.start, self.end, self.chunk_max, self.w, self.t)
    }
}

/// The gradient of classes `[start, end)` of a row, in one chunk (max `chunk_max`). With `STORE` the statistics
/// pass kept `exp(z - chunk_max)` ([`RowIo::KEEPS_EXP`]); without, it is recomputed from the logits
/// ([`recomputed_exp`]). Either way `p = exp(z - chunk_max) * prob_factor(chunk_max)`.
#[inline(always)]
pub(crate) fn grad_range<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool>(
    g: &GradRow,
    io: &mut IO,
    start: usize,
    end: usize,
    chunk_max: f32,
    w: &[f32],
    t: &[f32],
) {
    // Local copies of the row's constants and slices: see `RowIo::reborrow`.
    let g = &{ *g };
    let io = &mut io.reborrow();
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

/// The gradient of classes `[start, end)` in a chunk whose logits are all `-inf` (every probability `p`), when the
/// exponentials were not kept: what [`grad_range`] computes from the zeros [`all_masked_chunk`] keeps.
#[cold]
#[allow(clippy::too_many_arguments)]
fn masked_grad_range<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool>(
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

/// The label's gradient entry, from its probability `p_y`.
#[inline(always)]
pub(crate) fn label_grad<S: Isa, const W: bool>(g: &GradRow, p_y: f32, w: &[f32]) -> Option<(usize, f32)> {
    // A `match`, not `Option::map` with a closure (see `grad_row`).
    match g.label {
        Some((y, _, on)) => {
            let wy = if W { w[y] } else { 1.0 };
            Some((y, g.coef * S::fma(g.q_scale, p_y, -(wy * on))))
        }
        None => None,
    }
}

/// `p_y` as the gradient pass computes it: from the kept `exp(z_y - chunk max)` when given, else from `z_y`
/// ([`recomputed_exp`]; the same bits).
#[inline(always)]
pub(crate) fn label_prob<S: Isa>(g: &GradRow, stored: Option<f32>, chunk_max_of_label: f32) -> f32 {
    let e = match (stored, g.label) {
        (Some(e), _) => e,
        (None, Some((_, zy, _))) => recomputed_exp::<S>(zy, chunk_max_of_label),
        (None, None) => return 0.0,
    };
    e * g.prob_factor(chunk_max_of_label)
}

/// Writes the gradient of a whole row (after [`row_stats`] with the same `STORE`), chunk maxima in `maxima`.
#[inline(always)]
pub(crate) fn grad_row<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const STORE: bool>(
    g: &GradRow,
    io: &mut IO,
    maxima: &[f32],
    w: &[f32],
    t: &[f32],
) {
    let k = io.len();
    // No closures here: LLVM may leave a closure out of line, and then it is neither inlined nor compiled for
    // the dispatched instruction set (a call per row, 5% of a 16-class row's instructions).
    let one_chunk = k <= CHUNK;
    let p_y = match g.label {
        Some((y, _, _)) => {
            let stored = if STORE { Some(io.load_exp(y)) } else { None };
            let chunk_max = if one_chunk { g.max } else { maxima[y / CHUNK] };
            Some(label_prob::<S>(g, stored, chunk_max))
        }
        None => None,
    };
    let mut start = 0;
    let mut ci = 0;
    while start < k {
        let end = (start + CHUNK).min(k);
        let chunk_max = if one_chunk { g.max } else { maxima[ci] };
        grad_range::<S, E, IO, W, T, STORE>(g, io, start, end, chunk_max, w, t);
        start = end;
        ci += 1;
    }
    if let Some(p) = p_y {
        if let Some((y, v)) = label_grad::<S, W>(g, p, w) {
            io.store(y, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::dispatch;

    /// Every high half, with the low halves that decide the rounding (ties, just above, just below, zero), and a
    /// stride through all the rest.
    fn rounding_cases() -> impl Iterator<Item = u32> {
        let lows = [0u32, 1, 0x3fff, 0x4000, 0x7fff, 0x8000, 0x8001, 0xbfff, 0xc000, 0xffff];
        (0..=0xffffu32)
            .flat_map(move |hi| lows.map(|lo| hi << 16 | lo))
            .chain((0..=u32::MAX).step_by(65_537))
    }

    #[test]
    fn bf16_rounding_matches_half_bit_for_bit() {
        for x in rounding_cases() {
            let v = f32::from_bits(x);
            assert_eq!(bf16_bits(v), half::bf16::from_f32(v).to_bits(), "f32 bits {x:#010x}");
        }
    }

    /// Every f16 widened, and the rounding cases narrowed, by the dispatched instruction set, 16 at a time.
    struct F16All;

    impl Kernel for F16All {
        type Output = (Vec<f32>, Vec<(u32, u16)>);
        #[inline(always)]
        fn run<S: Isa>(self) -> Self::Output {
            let bits: Vec<u16> = (0..=u16::MAX).collect();
            let wide = bits
                .chunks_exact(LANES)
                .flat_map(|c| S::widen_f16(c.try_into().unwrap()))
                .collect();
            let xs: Vec<u32> = rounding_cases().collect();
            let narrow = xs
                .chunks_exact(LANES)
                .flat_map(|c| {
                    let v: Lanes = std::array::from_fn(|j| f32::from_bits(c[j]));
                    let n = S::narrow_f16(v);
                    (0..LANES).map(move |j| (c[j], n[j]))
                })
                .collect();
            (wide, narrow)
        }
    }

    /// One row's f32 gradient with the exponentials kept between the passes (in the gradient buffer, and in a
    /// scratch row) and recomputed: `[kept, scratch, recomputed]`.
    struct KeptAndRecomputed<'a> {
        z: &'a [f32],
        y: usize,
    }

    impl Kernel for KeptAndRecomputed<'_> {
        type Output = [Vec<f32>; 3];
        #[inline(always)]
        fn run<S: Isa>(self) -> Self::Output {
            let k = self.z.len();
            let finish = |st: &RowStats| GradRow {
                max: st.max,
                sum_exp: st.sum_exp,
                coef: 0.5,
                q_scale: 1.0,
                t_scale: 0.0,
                off: 0.1 / (k - 1) as f32,
                label: Some((self.y, self.z[self.y], 0.9)),
            };
            let mut maxima = Vec::new();
            // Kept in the gradient buffer (f32's own path).
            let mut kept = vec![0.0f32; k];
            let mut io = Separate::new(self.z, &mut kept);
            let st = row_stats::<S, f32, _, false, false, true, true>(&mut io, &[], &[], &mut maxima);
            grad_row::<S, f32, _, false, false, true>(&finish(&st), &mut io, &maxima, &[], &[]);
            // Kept in a scratch row (bf16's and f16's path, here on f32 logits).
            let mut scratch_out = vec![0.0f32; k];
            let mut scratch = vec![f32::NAN; k];
            let mut io = WithScratch::new(Separate::new(self.z, &mut scratch_out), &mut scratch);
            let st = row_stats::<S, f32, _, false, false, true, true>(&mut io, &[], &[], &mut maxima);
            grad_row::<S, f32, _, false, false, true>(&finish(&st), &mut io, &maxima, &[], &[]);
            // Recomputed by the gradient pass.
            let mut recomputed = vec![0.0f32; k];
            let mut io = Separate::new(self.z, &mut recomputed);
            let st = row_stats::<S, f32, _, false, false, true, false>(&mut io, &[], &[], &mut maxima);
            grad_row::<S, f32, _, false, false, false>(&finish(&st), &mut io, &maxima, &[], &[]);
            [kept, scratch_out, recomputed]
        }
    }

    #[test]
    fn kept_and_recomputed_exponentials_give_the_same_gradient_bits() {
        // Rows of one chunk and of several (where a chunk's max differs from the row's), with a tail, with a
        // spread beyond exp's range, and with -inf logits filling a whole chunk ([2048, 4096)) or parts of two.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        for (k, spread, hole) in [
            (5, 8.0, 0..0),
            (300, 8.0, 0..0),
            (2048, 30.0, 0..0),
            (5003, 8.0, 0..0),
            (9000, 200.0, 0..0),
            (9000, 8.0, 2000..4200),
            (9000, 200.0, 3000..6200),
        ] {
            let z: Vec<f32> = (0..k)
                .map(|c| {
                    if hole.contains(&c) {
                        f32::NEG_INFINITY
                    } else {
                        spread * (next() - 0.5)
                    }
                })
                .collect();
            let y = (k * 7 / 10).min(k - 1);
            let [kept, scratch, recomputed] = dispatch(KeptAndRecomputed { z: &z, y });
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(kept.iter().all(|g| g.is_finite()), "k={k}: finite gradient");
            assert!(kept.iter().sum::<f32>().abs() < 1e-3, "k={k}: a gradient sums to ~0");
            assert_eq!(
                bits(&kept),
                bits(&scratch),
                "k={k}: kept in the output vs in a scratch row"
            );
            assert_eq!(bits(&kept), bits(&recomputed), "k={k}: kept vs recomputed");
        }
    }

    #[test]
    fn f16_lane_conversions_match_half_bit_for_bit() {
        let (wide, narrow) = dispatch(F16All);
        assert_eq!(wide.len(), 1 << 16);
        for (b, w) in wide.iter().enumerate() {
            let want = half::f16::from_bits(b as u16).to_f32();
            assert_eq!(w.to_bits(), want.to_bits(), "f16 bits {b:#06x}");
        }
        for (x, n) in narrow {
            let want = half::f16::from_f32(f32::from_bits(x)).to_bits();
            assert_eq!(n, want, "f32 bits {x:#010x}");
        }
    }
}
