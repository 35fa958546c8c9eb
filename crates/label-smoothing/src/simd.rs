//! The one place that knows about SIMD.
//!
//! The kernels are written once, as plain Rust over fixed-width lane arrays (`[f32; LANES]`) with no
//! floating-point contraction, so LLVM vectorises them and every instruction set computes the same bits.
//! [`dispatch`] runs a closure inside a function compiled for the best instruction set the CPU has
//! (AVX-512, AVX2+FMA, or the portable baseline), chosen at run time; the closure and everything it inlines
//! is compiled for that set.

/// Width of the lane arrays used for reductions. Fixed (not chosen per CPU) so that reductions add in the same
/// order, and give the same bits, on every instruction set and for every thread count.
pub(crate) const LANES: usize = 16;

/// A lane array.
pub(crate) type Lanes = [f32; LANES];

/// A piece of work to compile once per instruction set. Implementations mark [`Kernel::run`]
/// `#[inline(always)]` so that it, and everything it inlines, is compiled into the feature-enabled wrappers below.
/// (A closure would not do: LLVM does not reliably inline a large closure body into its caller.)
pub(crate) trait Kernel {
    type Output;
    fn run<S: Isa>(self) -> Self::Output;
}

/// What the instruction set offers the kernels. The only difference in results is fused multiply-add: the
/// AVX-512 and AVX2 builds use it (and so compute the same bits as each other), the portable build does not.
/// [`Isa::partial`], [`Isa::store_partial`], [`Isa::hsum`], [`Isa::widen_f16`] and [`Isa::narrow_f16`] compute
/// the same values on every instruction set; only their instructions differ.
pub(crate) trait Isa: Copy {
    /// Whether `fma` is one rounding (a hardware FMA) or two.
    const FMA: bool;

    /// `a * b + c`: fused where the instruction set has FMA.
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        if Self::FMA {
            a.mul_add(b, c)
        } else {
            a * b + c
        }
    }

    /// The values of `v` (at most [`LANES`]) in lanes `0..v.len()`, and `fill` in the others.
    #[inline(always)]
    fn partial(v: &[f32], fill: f32) -> Lanes {
        let mut z = [fill; LANES];
        z[..v.len()].copy_from_slice(v);
        z
    }

    /// Writes lanes `0..d.len()` of `v` to `d` (at most [`LANES`]).
    #[inline(always)]
    fn store_partial(d: &mut [f32], v: Lanes) {
        let n = d.len();
        d.copy_from_slice(&v[..n]);
    }

    /// [`hsum`]: the same additions in the same order, so the same bits.
    #[inline(always)]
    fn hsum(v: Lanes) -> f64 {
        hsum(v)
    }

    /// Lane `l` holds `base[first + l * stride]` for `l < rows`, 0 the others (`rows <= LANES`): one class of
    /// `rows` consecutive rows of `stride` classes.
    #[inline(always)]
    fn gather(base: &[f32], first: usize, stride: usize, rows: usize) -> Lanes {
        let mut v = [0.0; LANES];
        for (l, x) in v.iter_mut().enumerate().take(rows) {
            *x = base[first + l * stride];
        }
        v
    }

    /// f16 bits to f32 (exact).
    #[inline(always)]
    fn widen_f16(h: [u16; LANES]) -> Lanes {
        h.map(|b| half::f16::from_bits(b).to_f32())
    }

    /// f32 to f16 bits, to nearest even (IEEE; NaN stays NaN).
    #[inline(always)]
    fn narrow_f16(v: Lanes) -> [u16; LANES] {
        v.map(|x| half::f16::from_f32(x).to_bits())
    }

    /// Runs `k` in a function of its own, compiled for this instruction set and never inlined: one copy of
    /// `k`'s code however many kernels call it. Everything else in a kernel is inlined into [`dispatch`]'s
    /// wrapper (a plain function would be compiled without the instruction set's features), so a helper called
    /// from several places, such as the chunk loops shared by the row and wide-row paths, would otherwise be
    /// compiled once per call site (docs/DESIGN.md, "Compiled in pieces").
    fn outline<K: Kernel>(k: K) -> K::Output;
}

/// AVX-512 (`WithFma<true>`) or AVX2 (`WithFma<false>`, the default), with FMA and F16C. Only ever used inside
/// [`dispatch`]'s AVX-512 and AVX2 wrappers and the functions they call (and by tests after checking the CPU),
/// so its methods may use AVX2 and F16C instructions, and `WithFma<true>`'s AVX-512 too. The two compute the
/// same bits; the parameter only tells [`Isa::outline`] which instruction set to compile for.
#[derive(Clone, Copy)]
pub(crate) struct WithFma<const AVX512: bool = false>;
impl<const AVX512: bool> Isa for WithFma<AVX512> {
    const FMA: bool = true;

    #[inline(always)]
    fn outline<K: Kernel>(k: K) -> K::Output {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `WithFma<true>` runs only where AVX-512F, AVX2, FMA and F16C are available, `WithFma<false>`
        // only where AVX2, FMA and F16C are (see the type): all that the wrapper for each requires.
        unsafe {
            if AVX512 {
                run_avx512(k)
            } else {
                run_avx2(k)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        k.run::<Self>()
    }

    // The scalar loops of the defaults go through the stack, and a vector load of values just written one by one
    // waits for the stores (no store forwarding): on rows of 10 classes that was a third of the time.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn partial(v: &[f32], fill: f32) -> Lanes {
        use core::arch::x86_64::*;
        assert!(v.len() <= LANES);
        // SAFETY: `WithFma` runs only where AVX2 is available (see the type). `vmaskmovps` reads only the lanes
        // whose mask is set, lanes `0..v.len()` of `v`; masked-off lanes are not accessed and cannot fault, so
        // the second half's address may lie past `v` (formed with `wrapping_add`, never read there).
        unsafe {
            let (lo_mask, hi_mask) = masks(v.len());
            let p = v.as_ptr();
            let f = _mm256_set1_ps(fill);
            let lo = _mm256_blendv_ps(f, _mm256_maskload_ps(p, lo_mask), _mm256_castsi256_ps(lo_mask));
            let hi = _mm256_blendv_ps(
                f,
                _mm256_maskload_ps(p.wrapping_add(8), hi_mask),
                _mm256_castsi256_ps(hi_mask),
            );
            let mut out = [0.0f32; LANES];
            _mm256_storeu_ps(out.as_mut_ptr(), lo);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), hi);
            out
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn store_partial(d: &mut [f32], v: Lanes) {
        use core::arch::x86_64::*;
        assert!(d.len() <= LANES);
        // SAFETY: AVX2 as above; `vmaskmovps` writes only the lanes whose mask is set, lanes `0..d.len()`,
        // which are within `d`; `v` is read whole from the array.
        unsafe {
            let (lo_mask, hi_mask) = masks(d.len());
            let p = d.as_mut_ptr();
            _mm256_maskstore_ps(p, lo_mask, _mm256_loadu_ps(v.as_ptr()));
            _mm256_maskstore_ps(p.wrapping_add(8), hi_mask, _mm256_loadu_ps(v.as_ptr().add(8)));
        }
    }

    // The default's scalar conversions and additions, as four conversions and four vector additions: the same
    // tree (lane j with lane j + 8, then + 4, + 2, + 1), so the same bits.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn hsum(v: Lanes) -> f64 {
        use core::arch::x86_64::*;
        // SAFETY: AVX2 as above; the loads read the 16 lanes of the array.
        unsafe {
            let lo = _mm256_loadu_ps(v.as_ptr());
            let hi = _mm256_loadu_ps(v.as_ptr().add(8));
            // w[j] + w[j + 8] for j in 0..4 and 4..8.
            let a = _mm256_add_pd(
                _mm256_cvtps_pd(_mm256_castps256_ps128(lo)),
                _mm256_cvtps_pd(_mm256_castps256_ps128(hi)),
            );
            let b = _mm256_add_pd(
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(lo)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(hi)),
            );
            // + 4, + 2, + 1.
            let c = _mm256_add_pd(a, b);
            let d = _mm_add_pd(_mm256_castpd256_pd128(c), _mm256_extractf128_pd::<1>(c));
            _mm_cvtsd_f64(_mm_add_sd(d, _mm_unpackhi_pd(d, d)))
        }
    }

    // Two `vgatherdps`: the default's scalar loads go through the stack, and the vector loads of the lanes that
    // follow would wait for those stores (see `partial`).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn gather(base: &[f32], first: usize, stride: usize, rows: usize) -> Lanes {
        use core::arch::x86_64::*;
        assert!(rows <= LANES && stride <= (i32::MAX as usize) / LANES);
        assert!(rows == 0 || first + (rows - 1) * stride < base.len());
        // SAFETY: AVX2 as above. The gathers read only the lanes whose mask is set, `l < rows`, at
        // `first + l * stride`, which the asserts put inside `base`; masked-off lanes are not accessed and cannot
        // fault. The indices `l * stride < LANES * stride` fit in i32 (asserted). `p` is formed with
        // `wrapping_add` and dereferenced only at the in-bounds offsets.
        unsafe {
            let s = _mm256_set1_epi32(stride as i32);
            let idx_lo = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), s);
            let idx_hi = _mm256_add_epi32(idx_lo, _mm256_slli_epi32::<3>(s));
            let (lo_mask, hi_mask) = masks(rows);
            let p = base.as_ptr().wrapping_add(first);
            let zero = _mm256_setzero_ps();
            let lo = _mm256_mask_i32gather_ps::<4>(zero, p, idx_lo, _mm256_castsi256_ps(lo_mask));
            let hi = _mm256_mask_i32gather_ps::<4>(zero, p, idx_hi, _mm256_castsi256_ps(hi_mask));
            let mut out = [0.0f32; LANES];
            _mm256_storeu_ps(out.as_mut_ptr(), lo);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), hi);
            out
        }
    }

    // F16C's conversions are IEEE (exact widening, rounding to nearest even), as is `half`'s software fallback;
    // `half` itself uses the scalar form of the same instructions on a CPU with F16C, checking the CPU each time.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn widen_f16(h: [u16; LANES]) -> Lanes {
        use core::arch::x86_64::*;
        // SAFETY: `WithFma` runs only where F16C (and AVX) is available (see the type); the loads read the 16
        // values of the array, the stores write the 16 lanes of `out`.
        unsafe {
            let p = h.as_ptr().cast::<__m128i>();
            let mut out = [0.0f32; LANES];
            _mm256_storeu_ps(out.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(p)));
            _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_cvtph_ps(_mm_loadu_si128(p.add(1))));
            out
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn narrow_f16(v: Lanes) -> [u16; LANES] {
        use core::arch::x86_64::*;
        // SAFETY: as for `widen_f16`; the rounding immediate 0 is round-to-nearest-even.
        unsafe {
            let mut out = [0u16; LANES];
            let p = out.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(
                p,
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(v.as_ptr())),
            );
            _mm_storeu_si128(
                p.add(1),
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(v.as_ptr().add(8))),
            );
            out
        }
    }
}

/// The masks of lanes `0..n` of a 16-lane vector, as its two 8-lane halves.
///
/// # Safety
/// AVX2 must be available.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn masks(n: usize) -> (core::arch::x86_64::__m256i, core::arch::x86_64::__m256i) {
    use core::arch::x86_64::*;
    // SAFETY: AVX2, by the caller.
    unsafe {
        let n = _mm256_set1_epi32(n as i32);
        (
            _mm256_cmpgt_epi32(n, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
            _mm256_cmpgt_epi32(n, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15)),
        )
    }
}

/// Any CPU.
#[derive(Clone, Copy)]
pub(crate) struct Portable;
impl Isa for Portable {
    const FMA: bool = false;

    #[inline(never)]
    fn outline<K: Kernel>(k: K) -> K::Output {
        k.run::<Self>()
    }
}

/// The lower end of the range on which [`exp_in_range`] is valid: `exp(-87.33)` is `1.2e-38`, the smallest normal
/// f32.
pub(crate) const EXP_RANGE_LO: f32 = -87.336_54;

/// `exp(x)` for the kernels' arguments `x = z - max <= 0`: [`exp_in_range`], and 0 below [`EXP_RANGE_LO`]
/// (including `-inf`); NaN stays NaN. Two more vector instructions (a compare and a mask) than
/// [`exp_in_range`], which the statistics pass uses instead when a chunk's spread shows that no argument can fall
/// below the range.
#[inline(always)]
pub(crate) fn exp_nonpos<S: Isa>(x: f32) -> f32 {
    // Below the range (and for -inf) `exp_in_range` gives garbage, which the select replaces with 0. NaN fails
    // `x < EXP_RANGE_LO` and stays NaN.
    let v = exp_in_range::<S>(x);
    if x < EXP_RANGE_LO {
        0.0
    } else {
        v
    }
}

/// `exp(x)` for `x` in `[EXP_RANGE_LO, 0]`, in 11 vector instructions per 8 or 16 values with FMA (8 of them
/// multiplies or FMAs): `n = round(x / ln 2)` by the magic-number trick, whose low bits also give the scale
/// `s = 2^n` with one shift; the reduction `r = x - n ln 2`; then `exp(x) = s + (r s) p(r)` with `p` the degree-4
/// minimax fit of `(e^r - 1) / r` on `[-ln2/2, ln2/2]` (coefficients from `scripts/fit_exp.py`).
///
/// Accuracy, against `f64::exp` (unit tests): with FMA, within 2.2 ulp of the correctly rounded result on
/// `[-10, 0]` and 5 ulp on `[-87.33, -10)`; without FMA (the portable build), 2.5 ulp on the whole range. The
/// difference is the reduction: with FMA it is one FMA with `ln 2` rounded to f32, whose error of `1.9e-9` puts
/// `|n| * 1.9e-9` into `r` (under 0.3 ulp of the result for `x >= -10`, up to 2.7 ulp at `x = -87`, where the
/// term is below `e^-10 = 4.5e-5` of the row's largest and its error cannot reach the loss or the gradient);
/// without FMA `n ln 2` must be exact, so it takes the two-step Cody-Waite split. The one-FMA reduction shortens
/// the dependency chain and made the statistics pass 12% faster (docs/BENCHMARKS.md). A degree-6 polynomial would
/// reach 1 ulp, but the kernels' sums need far less (SPEC: the loss to `1e-5`).
#[inline(always)]
pub(crate) fn exp_in_range<S: Isa>(x: f32) -> f32 {
    // 1.5 * 2^23 + 127: adding it rounds x / ln 2 to an integer n and leaves n + 127 in the low mantissa bits,
    // so shifting the bits left by 23 gives the f32 2^n (n in [-126, 0] for x in range).
    const MAGIC: f32 = 12_583_039.0;
    const C1: f32 = 0.999_999_7;
    const C2: f32 = 0.499_991_5;
    const C3: f32 = 0.166_676_36;
    const C4: f32 = 0.041_897_93;
    const C5: f32 = 0.008_290_315;
    let t = S::fma(x, std::f32::consts::LOG2_E, MAGIC);
    let s = f32::from_bits(t.to_bits() << 23);
    let n = t - MAGIC;
    let r = if S::FMA {
        S::fma(n, -std::f32::consts::LN_2, x)
    } else {
        // ln 2 = 0.693359375 - 2.12194440e-4 (Cody-Waite): n * 0.693359375 is exact for |n| <= 2^15.
        let r = S::fma(n, -0.693_359_4, x);
        S::fma(n, 2.121_944_4e-4, r)
    };
    let mut p = C5;
    p = S::fma(p, r, C4);
    p = S::fma(p, r, C3);
    p = S::fma(p, r, C2);
    p = S::fma(p, r, C1);
    S::fma(r * s, p, s)
}

/// `tanh(x)` in f32 for every `x` (NaN stays NaN), within 7.5 ulp of the correctly rounded result (unit tests; at
/// most `4.2e-7` absolute, `tanh(+-inf)` included): the odd/even rational minimax fit `x P(x^2) / Q(x^2)` of
/// degrees 13 and 6 that Eigen and XNNPACK use, on `x` clamped to `[-7.99881, 7.99881]` (beyond which `tanh`
/// is 1 in f32 up to that error). Eleven FMAs, a multiply and one division per 8 or 16 values, and no
/// exponential: the soft-capped kernels compute one per logit.
#[inline(always)]
#[allow(clippy::excessive_precision)] // The fit's coefficients as published.
pub(crate) fn tanh<S: Isa>(x: f32) -> f32 {
    const CLAMP: f32 = 7.998_811_7;
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525_2e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    // NaN stays NaN.
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = A13;
    p = S::fma(p, x2, A11);
    p = S::fma(p, x2, A9);
    p = S::fma(p, x2, A7);
    p = S::fma(p, x2, A5);
    p = S::fma(p, x2, A3);
    p = S::fma(p, x2, A1);
    let mut q = B6;
    q = S::fma(q, x2, B4);
    q = S::fma(q, x2, B2);
    q = S::fma(q, x2, B0);
    (x * p) / q
}

/// Soft-capping of one logit, `cap * tanh(z / cap)`, as `(cap * t, t)` with `t = tanh(z * inv_cap)`
/// (`inv_cap = 1 / cap` rounded to f32). The kernels keep `cap * t` between their two passes and recover `t` as
/// `(cap * t) * inv_cap`, so every pass uses [`capped_t`] of the capped value, never `t` itself.
#[inline(always)]
pub(crate) fn soft_cap<S: Isa>(z: f32, cap: f32, inv_cap: f32) -> f32 {
    cap * tanh::<S>(z * inv_cap)
}

/// `t = tanh(z / cap)` recovered from a capped logit `zc = cap * t`: the one value of `t` every pass uses for
/// the chain-rule factor `1 - t^2`.
#[inline(always)]
pub(crate) fn capped_t(zc: f32, inv_cap: f32) -> f32 {
    zc * inv_cap
}

/// The instruction sets the kernels are compiled for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// AVX-512F with AVX2, FMA and F16C.
    Avx512,
    /// AVX2 with FMA and F16C (every CPU with AVX2 and FMA has F16C).
    Avx2,
    /// Anything else.
    Portable,
}

/// The best [`Level`] this CPU supports (`is_x86_feature_detected!` caches its answer).
#[inline(always)]
fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            return if has!("avx512f") { Level::Avx512 } else { Level::Avx2 };
        }
    }
    Level::Portable
}

/// Runs `k` compiled for the best instruction set this CPU supports. AVX-512 and AVX2+FMA give the same bits
/// (same lane width, same FMAs); the portable build, without FMA, can differ in the last bits.
#[inline(always)]
pub(crate) fn dispatch<K: Kernel>(k: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: `level` found AVX-512F, AVX2, FMA and F16C on this CPU, which is all `run_avx512` requires.
        Level::Avx512 => return unsafe { run_avx512(k) },
        // SAFETY: `level` found AVX2, FMA and F16C on this CPU, which is all `run_avx2` requires.
        Level::Avx2 => return unsafe { run_avx2(k) },
        Level::Portable => {}
    }
    // Out of line like `run_avx512` and `run_avx2`: a caller that dispatches several kernels gets one call for
    // each rather than their code inlined into itself.
    Portable::outline(k)
}

/// The name of the instruction set the kernels use on this CPU (for benchmark reports).
pub fn instruction_set() -> &'static str {
    match level() {
        Level::Avx512 => "avx512f",
        Level::Avx2 => "avx2+fma",
        Level::Portable => "portable",
    }
}

/// [`dispatch`]'s and [`Isa::outline`]'s function for AVX-512: `k` compiled with its features, never inlined
/// (each kernel type is one function, wherever it is called from).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[inline(never)]
unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run::<WithFma<true>>()
}

/// [`run_avx512`] for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline(never)]
unsafe fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run::<WithFma<false>>()
}

/// Asks the CPU to bring the cache line holding `p` into L1. A hint only: any address is allowed, including
/// one past the end of a buffer, and nothing is read into the program.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` never faults and has no architectural effect, whatever the address; SSE is part of
    // the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Horizontal max of a lane array (a pairwise tree, fixed order).
#[inline(always)]
pub(crate) fn hmax(v: Lanes) -> f32 {
    tree(v, |a, b| if b > a { b } else { a })
}

/// Horizontal min of a lane array (a pairwise tree, fixed order).
#[inline(always)]
pub(crate) fn hmin(v: Lanes) -> f32 {
    tree(v, |a, b| if b < a { b } else { a })
}

/// Reduces a lane array by a pairwise tree: lane `j` with lane `j + width`, for width 8, 4, 2, 1.
#[inline(always)]
fn tree(v: Lanes, pick: impl Fn(f32, f32) -> f32) -> f32 {
    let mut w = v;
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            w[j] = pick(w[j], w[j + width]);
        }
        width /= 2;
    }
    w[0]
}

/// Horizontal sum of a lane array in f64: a pairwise tree in a fixed order (four dependent additions rather than
/// fifteen, which matters for short rows, and the same bits on every instruction set).
#[inline(always)]
pub(crate) fn hsum(v: Lanes) -> f64 {
    let mut w = [0.0f64; LANES];
    for j in 0..LANES {
        w[j] = v[j] as f64;
    }
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            w[j] += w[j + width];
        }
        width /= 2;
    }
    w[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulp_err(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.to_bits() + 1) - w) as f64;
        (got as f64 - want).abs() / ulp
    }

    struct ExpAll<'a>(&'a [f32]);

    impl Kernel for ExpAll<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<S: Isa>(self) -> Vec<f32> {
            self.0.iter().map(|&x| exp_nonpos::<S>(x)).collect()
        }
    }

    /// Worst ulp error of `exp_nonpos` on `n + 1` points evenly spread over `[lo, hi]`.
    fn worst_ulp(fma: bool, lo: f64, hi: f64, n: usize) -> f64 {
        let mut worst = 0.0f64;
        for i in 0..=n {
            let x = (lo + (hi - lo) * (i as f64 / n as f64)) as f32;
            let got = if fma {
                exp_nonpos::<WithFma>(x)
            } else {
                exp_nonpos::<Portable>(x)
            };
            worst = worst.max(ulp_err(got, (x as f64).exp()));
        }
        worst
    }

    #[test]
    fn exp_nonpos_matches_f64_within_its_documented_ulp() {
        // With FMA: 2.2 ulp where the terms that matter live, 5 ulp below (see `exp_in_range`).
        let near = worst_ulp(true, -10.0, 0.0, 400_000);
        assert!(near <= 2.2, "fma, [-10, 0]: worst error {near} ulp");
        let far = worst_ulp(true, -87.3, -10.0, 400_000);
        assert!(far <= 5.0, "fma, [-87.3, -10]: worst error {far} ulp");
        let portable = worst_ulp(false, -87.3, 0.0, 400_000);
        assert!(portable <= 2.5, "portable, [-87.3, 0]: worst error {portable} ulp");
        for fma in [false, true] {
            let f = |x: f32| {
                if fma {
                    exp_nonpos::<WithFma>(x)
                } else {
                    exp_nonpos::<Portable>(x)
                }
            };
            assert_eq!(f(0.0), 1.0);
            assert_eq!(f(f32::NEG_INFINITY), 0.0);
            assert_eq!(f(-1e4), 0.0);
            assert!(f(f32::NAN).is_nan());
            assert!(f(EXP_RANGE_LO) > 0.0);
            // In range, the select changes nothing.
            for x in [EXP_RANGE_LO, -50.5, -1.25, 0.0] {
                let g = if fma {
                    exp_in_range::<WithFma>(x)
                } else {
                    exp_in_range::<Portable>(x)
                };
                assert_eq!(f(x).to_bits(), g.to_bits(), "x = {x}");
            }
        }
    }

    #[test]
    fn tanh_matches_f64_within_7_5_ulp() {
        for fma in [false, true] {
            let f = |x: f32| if fma { tanh::<WithFma>(x) } else { tanh::<Portable>(x) };
            let mut worst = 0.0f64;
            for i in 0..=400_000 {
                // Dense near 0 (where the polynomial and the exponential form meet), up to |x| = 20.
                let u = i as f64 / 400_000.0;
                for x in [u * u * 20.0, -(u * u * 20.0), u * 0.5 - 0.25] {
                    let (x, got) = (x as f32, f(x as f32));
                    let want = (x as f64).tanh();
                    assert!(got == 0.0 || (got > 0.0) == (want > 0.0), "tanh({x}) = {got}");
                    worst = worst.max(ulp_err(got.abs(), want.abs()));
                }
            }
            assert!(worst <= 7.5, "fma {fma}: worst error {worst} ulp");
            assert!((f(f32::INFINITY) - 1.0).abs() <= 4.2e-7 && f(f32::INFINITY) <= 1.0);
            assert!((f(f32::NEG_INFINITY) + 1.0).abs() <= 4.2e-7);
            assert!((f(1e30) - 1.0).abs() <= 4.2e-7);
            assert_eq!(f(0.0), 0.0);
            assert!(f(f32::NAN).is_nan());
            assert!((f(1e-30) - 1e-30).abs() <= 1e-36);
        }
    }

    /// `partial`, `store_partial` and `hsum` of the dispatched instruction set, for every length 0..=LANES.
    struct Partials<'a>(&'a [f32]);

    impl Kernel for Partials<'_> {
        type Output = Vec<(Lanes, Lanes, f64)>;
        #[inline(always)]
        fn run<S: Isa>(self) -> Self::Output {
            (0..=LANES)
                .map(|n| {
                    let loaded = S::partial(&self.0[..n], f32::NEG_INFINITY);
                    let mut stored = [7.5f32; LANES];
                    S::store_partial(&mut stored[..n], self.0[n..n + LANES].try_into().unwrap());
                    (loaded, stored, S::hsum(self.0[n..n + LANES].try_into().unwrap()))
                })
                .collect()
        }
    }

    #[test]
    fn masked_loads_stores_and_hsum_match_the_scalar_definitions() {
        // Magnitudes from 2^-30 to 2^30: more than f64's 53 bits apart, so their f64 sum depends on the order of
        // the additions and a different tree would show (checked: a left-to-right sum fails).
        let v: Vec<f32> = (0..2 * LANES)
            .map(|i| (i as f32 * 0.731).sin() * 2f32.powi((i as i32 * 7) % 61 - 30))
            .collect();
        let got = dispatch(Partials(&v));
        for (n, (loaded, stored, sum)) in got.into_iter().enumerate() {
            for j in 0..LANES {
                let want = if j < n { v[j] } else { f32::NEG_INFINITY };
                assert_eq!(loaded[j].to_bits(), want.to_bits(), "partial, n = {n}, lane {j}");
                let want = if j < n { v[n + j] } else { 7.5 };
                assert_eq!(stored[j].to_bits(), want.to_bits(), "store_partial, n = {n}, lane {j}");
            }
            // The scalar definition: the pairwise tree of `hsum`, written out.
            let w: Vec<f64> = v[n..n + LANES].iter().map(|&x| x as f64).collect();
            let w8: Vec<f64> = (0..8).map(|j| w[j] + w[j + 8]).collect();
            let w4: Vec<f64> = (0..4).map(|j| w8[j] + w8[j + 4]).collect();
            let want = (w4[0] + w4[2]) + (w4[1] + w4[3]);
            assert_eq!(sum.to_bits(), want.to_bits(), "hsum of lanes {n}..{}", n + LANES);
        }
    }

    #[test]
    fn dispatch_gives_the_scalar_bits_of_its_instruction_set() {
        let xs: Vec<f32> = (0..4099).map(|i| -80.0 + i as f32 * 0.0195).collect();
        let dispatched: Vec<f32> = dispatch(ExpAll(&xs));
        let scalar: Vec<f32> = if instruction_set() == "portable" {
            ExpAll(&xs).run::<Portable>()
        } else {
            ExpAll(&xs).run::<WithFma>()
        };
        assert_eq!(scalar, dispatched);
        assert_eq!(hmax([3.0; LANES]), 3.0);
        let mut v = [2.0; LANES];
        v[11] = -1.5;
        assert_eq!((hmin(v), hmax(v)), (-1.5, 2.0));
    }
}
