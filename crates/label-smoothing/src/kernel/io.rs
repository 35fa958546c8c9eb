//! Buffer access: where a row's logits come from and where its output goes ([`RowIo`]: read only, a second
//! buffer, in place, or with an f32 scratch row), lane loads and stores for every element type, and the three
//! buffer modes of a whole call ([`CallBuffers`]).

use crate::element::{as_type, as_type_mut, Element};
use crate::simd::{Isa, Lanes, LANES};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Where a row's logits come from and where its output goes: read only, into a second buffer, or in place.
/// Indices are class indices within the row. An implementation names its two slices ([`RowIo::logits`] and
/// [`RowIo::output`], the same buffer in place, empty when read only); every access below is written once on
/// top of them.
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
    /// The row's output: the gradient buffer (in place, the logits' buffer); empty when read only.
    fn output(&self) -> &[E];
    /// The row's output, to write; empty when read only.
    fn output_mut(&mut self) -> &mut [E];
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
    #[inline(always)]
    fn store(&mut self, c: usize, v: f32) {
        if Self::WRITES {
            self.output_mut()[c] = E::from_f32(v);
        }
    }
    /// Writes `LANES` outputs from `c` (no-op when read only).
    ///
    /// # Safety
    /// `c + LANES <= self.len()`.
    #[inline(always)]
    unsafe fn store_lanes<S: Isa>(&mut self, c: usize, v: Lanes) {
        if Self::WRITES {
            // SAFETY: the caller guarantees c + LANES <= len, and a writer's output has the logits' length
            // (`Separate::new`; in place it is the logits' buffer).
            unsafe { put_lanes::<S, E>(self.output_mut(), c, v) }
        }
    }
    /// Writes lanes `0..rem` of `v` to the outputs from `c` (no-op when read only).
    #[inline(always)]
    fn store_tail<S: Isa>(&mut self, c: usize, rem: usize, v: Lanes) {
        if Self::WRITES {
            put_partial::<S, E>(&mut self.output_mut()[c..c + rem], v)
        }
    }
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
    /// The kept `e_c` at `c`. By default the output's value there (only called when [`RowIo::KEEPS_EXP`]).
    #[inline(always)]
    fn load_exp(&self, c: usize) -> f32 {
        self.output()[c].to_f32()
    }
    /// The `LANES` kept values from `c`.
    ///
    /// # Safety
    /// `c + LANES <= self.len()`, and [`RowIo::KEEPS_EXP`].
    #[inline(always)]
    unsafe fn load_exp_lanes<S: Isa>(&self, c: usize) -> Lanes {
        // SAFETY: the caller guarantees c + LANES <= len, and a writer's output has the logits' length.
        unsafe { lanes_of::<S, E>(self.output(), c) }
    }
    /// The `rem <= LANES` kept values from `c` in lanes `0..rem`, `fill` in the others.
    #[inline(always)]
    fn load_exp_tail<S: Isa>(&self, c: usize, rem: usize, fill: f32) -> Lanes {
        partial_of::<S, E>(&self.output()[c..c + rem], fill)
    }
}

/// The values of `s` (at most `LANES`) in lanes `0..s.len()`, `fill` in the others: one masked load for f32.
#[inline(always)]
pub(crate) fn partial_of<S: Isa, E: Element>(s: &[E], fill: f32) -> Lanes {
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
pub(crate) fn put_partial<S: Isa, E: Element>(d: &mut [E], v: Lanes) {
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
pub(crate) unsafe fn lanes_of<S: Isa, E: Element>(s: &[E], c: usize) -> Lanes {
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
pub(crate) unsafe fn put_lanes<S: Isa, E: Element>(d: &mut [E], c: usize, v: Lanes) {
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
    fn output(&self) -> &[E] {
        &[]
    }
    #[inline(always)]
    fn output_mut(&mut self) -> &mut [E] {
        &mut []
    }
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
    fn output(&self) -> &[E] {
        self.1
    }
    #[inline(always)]
    fn output_mut(&mut self) -> &mut [E] {
        self.1
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
    fn output(&self) -> &[E] {
        self.0
    }
    #[inline(always)]
    fn output_mut(&mut self) -> &mut [E] {
        self.0
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
    fn output(&self) -> &[E] {
        self.0.output()
    }
    #[inline(always)]
    fn output_mut(&mut self) -> &mut [E] {
        self.0.output_mut()
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

/// Logits and where their gradient goes: the whole call, a parallel task's rows, or one long row.
pub enum CallBuffers<'a, E> {
    /// Logits only (the loss alone).
    Read(&'a [E]),
    /// Logits and a separate gradient buffer.
    Write(&'a [E], &'a mut [E]),
    /// One buffer: logits in, gradient out.
    InPlace(&'a mut [E]),
}

impl<'a, E: Element> CallBuffers<'a, E> {
    /// The logits.
    pub(crate) fn logits(&self) -> &[E] {
        match self {
            CallBuffers::Read(z) | CallBuffers::Write(z, _) => z,
            CallBuffers::InPlace(z) => z,
        }
    }

    /// The output (the gradient buffer, or the logits' own buffer in place); `None` for the loss alone.
    pub(crate) fn output_mut(&mut self) -> Option<&mut [E]> {
        match self {
            CallBuffers::Read(_) => None,
            CallBuffers::Write(_, g) => Some(g),
            CallBuffers::InPlace(z) => Some(z),
        }
    }

    /// Whether a gradient is written.
    pub(crate) fn writes(&self) -> bool {
        !matches!(self, CallBuffers::Read(_))
    }

    /// The same buffers, reborrowed.
    pub(crate) fn reborrow(&mut self) -> CallBuffers<'_, E> {
        match self {
            CallBuffers::Read(z) => CallBuffers::Read(z),
            CallBuffers::Write(z, g) => CallBuffers::Write(z, g),
            CallBuffers::InPlace(z) => CallBuffers::InPlace(z),
        }
    }

    /// Elements `range` of the buffers (a row, or a group of rows).
    pub(crate) fn range(&mut self, range: std::ops::Range<usize>) -> CallBuffers<'_, E> {
        match self {
            CallBuffers::Read(z) => CallBuffers::Read(&z[range]),
            CallBuffers::Write(z, g) => CallBuffers::Write(&z[range.clone()], &mut g[range]),
            CallBuffers::InPlace(z) => CallBuffers::InPlace(&mut z[range]),
        }
    }

    /// `f(index, part)` on rayon's pool for consecutive parts of `len` elements (the last may be shorter), with
    /// the results in part order.
    pub(crate) fn par_map_parts<R: Send>(
        &mut self,
        len: usize,
        f: impl Fn(usize, CallBuffers<'_, E>) -> R + Sync,
    ) -> Vec<R> {
        match self {
            CallBuffers::Read(z) => z
                .par_chunks(len)
                .enumerate()
                .map(|(i, zc)| f(i, CallBuffers::Read(zc)))
                .collect(),
            CallBuffers::Write(z, g) => z
                .par_chunks(len)
                .zip(g.par_chunks_mut(len))
                .enumerate()
                .map(|(i, (zc, gc))| f(i, CallBuffers::Write(zc, gc)))
                .collect(),
            CallBuffers::InPlace(z) => z
                .par_chunks_mut(len)
                .enumerate()
                .map(|(i, zc)| f(i, CallBuffers::InPlace(zc)))
                .collect(),
        }
    }

    /// `f(index, part, side)` on rayon's pool for consecutive parts of `len` elements, each with its part of
    /// `side` (`side_len` values per part).
    pub(crate) fn par_for_each_part_with<T: Send>(
        &mut self,
        len: usize,
        side: &mut [T],
        side_len: usize,
        f: impl Fn(usize, CallBuffers<'_, E>, &mut [T]) + Sync,
    ) {
        let side = side.par_chunks_mut(side_len);
        match self {
            CallBuffers::Read(z) => z
                .par_chunks(len)
                .zip(side)
                .enumerate()
                .for_each(|(i, (zc, sc))| f(i, CallBuffers::Read(zc), sc)),
            CallBuffers::Write(z, g) => z
                .par_chunks(len)
                .zip(g.par_chunks_mut(len))
                .zip(side)
                .enumerate()
                .for_each(|(i, ((zc, gc), sc))| f(i, CallBuffers::Write(zc, gc), sc)),
            CallBuffers::InPlace(z) => z
                .par_chunks_mut(len)
                .zip(side)
                .enumerate()
                .for_each(|(i, (zc, sc))| f(i, CallBuffers::InPlace(zc), sc)),
        }
    }

    /// The same buffers under their own type `T`, when `E` is `T`; `self` back otherwise.
    pub(crate) fn cast<T: Element>(self) -> Result<CallBuffers<'a, T>, Self> {
        if std::any::TypeId::of::<E>() != std::any::TypeId::of::<T>() {
            return Err(self);
        }
        Ok(match self {
            CallBuffers::Read(z) => CallBuffers::Read(as_type(z).expect("same type")),
            CallBuffers::Write(z, g) => {
                CallBuffers::Write(as_type(z).expect("same type"), as_type_mut(g).expect("same type"))
            }
            CallBuffers::InPlace(z) => CallBuffers::InPlace(as_type_mut(z).expect("same type")),
        })
    }
}
