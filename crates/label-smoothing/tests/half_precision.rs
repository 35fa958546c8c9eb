//! bf16 and f16 logits: computed in f32 from the exact widened values, so the loss is the f32 loss of the widened
//! logits, bit for bit, and the gradient is the f32 gradient rounded to the input's type (within one unit in the
//! last place of that type). Also across threads, and through the long-row split.

mod common;

use common::Rng;
use label_smoothing::{bf16, f16, Element, GradOutput, LabelSmoothingConfig, Reduction, Targets};

fn check<E: Element + PartialEq + std::fmt::Debug>(n: usize, k: usize, seed: u64, ulp: f32) {
    let mut rng = Rng::new(seed);
    let wide: Vec<f32> = (0..n * k).map(|_| (rng.normal() * 3.0) as f32).collect();
    let half: Vec<E> = wide.iter().map(|&x| E::from_f32(x)).collect();
    let widened: Vec<f32> = half.iter().map(|x| x.to_f32()).collect();
    let labels: Vec<i64> = (0..n).map(|_| rng.below(k) as i64).collect();
    for cfg in [
        LabelSmoothingConfig::new().with_smoothing(0.1),
        LabelSmoothingConfig::pytorch(0.2).with_reduction(Reduction::Sum),
        LabelSmoothingConfig::fast_reid(-1.0, 0.2),
    ] {
        let loss_fn = cfg.init(k).unwrap();
        let t = Targets::Labels(&labels);
        let mut g32 = vec![0.0f32; n * k];
        let l32 = loss_fn.loss_and_grad(&widened, t, GradOutput::ONE, &mut g32).unwrap();
        let mut gh = vec![E::from_f32(0.0); n * k];
        let lh = loss_fn.loss_and_grad(&half, t, GradOutput::ONE, &mut gh).unwrap();
        assert_eq!(l32, lh, "{} loss, n={n} k={k}", E::NAME);
        assert_eq!(loss_fn.loss(&half, t).unwrap(), l32, "{} forward-only loss", E::NAME);
        for (i, (&a, b)) in g32.iter().zip(&gh).enumerate() {
            let b = b.to_f32();
            let tol = ulp * a.abs().max(1e-4) + 1e-7;
            assert!((a - b).abs() <= tol, "{} grad[{i}]: f32 {a}, {} {b}", E::NAME, E::NAME);
        }
        let mut inplace = half.clone();
        let li = loss_fn
            .loss_and_grad_in_place(&mut inplace, t, GradOutput::ONE)
            .unwrap();
        assert_eq!(li, lh);
        assert_eq!(inplace, gh, "{}: in place equals buffer", E::NAME);
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let mut g1 = vec![E::from_f32(0.0); n * k];
        let l1 = one
            .install(|| loss_fn.loss_and_grad(&half, t, GradOutput::ONE, &mut g1))
            .unwrap();
        assert_eq!((l1, g1), (lh, gh), "{}: 1 thread equals the default pool", E::NAME);
    }
}

#[test]
fn bf16_logits() {
    // bf16 has 8 significant bits: half an ulp is 2^-8 relative.
    check::<bf16>(37, 11, 1, 2f32.powi(-8));
    check::<bf16>(3, 5000, 2, 2f32.powi(-8));
    check::<bf16>(1, 20_000, 3, 2f32.powi(-8));
}

#[test]
fn f16_logits() {
    check::<f16>(37, 11, 4, 2f32.powi(-11));
    check::<f16>(3, 5000, 5, 2f32.powi(-11));
    check::<f16>(1, 20_000, 6, 2f32.powi(-11));
}
