use super::*;
use crate::element::bf16_bits;
use crate::simd::dispatch;
use crate::simd::{Lanes, LANES};

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
            cap: None,
        };
        let mut maxima = Vec::new();
        // Kept in the gradient buffer (f32's own path).
        let mut kept = vec![0.0f32; k];
        let mut io = Separate::new(self.z, &mut kept);
        let st = row_stats::<S, f32, _, false, false, true, true>(&mut io, &[], &[], None, &mut maxima, &mut []);
        grad_row::<S, f32, _, false, false, true>(&finish(&st), &mut io, &maxima, &[], &[], &[]);
        // Kept in a scratch row (bf16's and f16's path, here on f32 logits).
        let mut scratch_out = vec![0.0f32; k];
        let mut scratch = vec![f32::NAN; k];
        let mut io = WithScratch::new(Separate::new(self.z, &mut scratch_out), &mut scratch);
        let st = row_stats::<S, f32, _, false, false, true, true>(&mut io, &[], &[], None, &mut maxima, &mut []);
        grad_row::<S, f32, _, false, false, true>(&finish(&st), &mut io, &maxima, &[], &[], &[]);
        // Recomputed by the gradient pass.
        let mut recomputed = vec![0.0f32; k];
        let mut io = Separate::new(self.z, &mut recomputed);
        let st = row_stats::<S, f32, _, false, false, true, false>(&mut io, &[], &[], None, &mut maxima, &mut []);
        grad_row::<S, f32, _, false, false, false>(&finish(&st), &mut io, &maxima, &[], &[], &[]);
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
