//! The logit types: `f32`, `bf16` and `f16`, and same-type slice casts for the generic code's fast paths.

use std::any::TypeId;

mod sealed {
    /// Seals [`Element`](super::Element): the kernels are compiled for these three types only.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
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
pub(crate) fn bf16_bits(v: f32) -> u16 {
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
pub(crate) fn as_type_mut<E: Element, T: Element>(s: &mut [E]) -> Option<&mut [T]> {
    if TypeId::of::<E>() == TypeId::of::<T>() {
        // SAFETY: `E` and `T` are the same type (same type id), so this is the same slice under its own type.
        Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<T>(), s.len()) })
    } else {
        None
    }
}
