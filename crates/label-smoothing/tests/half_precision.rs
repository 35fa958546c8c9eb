//! bf16 and f16 logits: computed in f32 from the exact widened values, so the loss is the f32 loss of the widened
//! logits, bit for bit, and the gradient is the f32 gradient of the widened logits rounded to the input's type,
//! bit for bit (whether the kernel kept `exp(z - chunk max)` in a scratch row or recomputed it). Also across
//! threads, through the long-row split, and with masked (`-inf`) classes.

mod common;

use common::Rng;
use label_smoothing::{bf16, f16, Element, GradOutput, LabelSmoothingConfig, Reduction, Targets};

/// Logits `N(0, 9)` rounded to `E`; with `masked`, the classes `[s, s + 2200)` with `s = min(2000, k/3)` of every
/// row are `-inf` (the whole second 2048-class chunk when `k >= 4200`) and no label falls there.
fn check<E: Element + PartialEq + std::fmt::Debug>(n: usize, k: usize, seed: u64, masked: bool) {
    let mut rng = Rng::new(seed);
    let s = (k / 3).min(2000);
    let hole = s..(s + 2200).min(k);
    let wide: Vec<f32> = (0..n * k)
        .map(|i| {
            let x = (rng.normal() * 3.0) as f32;
            if masked && hole.contains(&(i % k)) {
                f32::NEG_INFINITY
            } else {
                x
            }
        })
        .collect();
    let half: Vec<E> = wide.iter().map(|&x| E::from_f32(x)).collect();
    let widened: Vec<f32> = half.iter().map(|x| x.to_f32()).collect();
    let labels: Vec<i64> = (0..n)
        .map(|_| loop {
            let y = rng.below(k);
            if !(masked && hole.contains(&y)) {
                break y as i64;
            }
        })
        .collect();
    // With masked classes only the unsmoothed loss is finite (SPEC: with smoothing it is +inf, the gradient
    // finite); the gradients are compared either way.
    let configs = if masked {
        vec![
            LabelSmoothingConfig::new().with_smoothing(0.0),
            LabelSmoothingConfig::new().with_smoothing(0.1),
        ]
    } else {
        vec![
            LabelSmoothingConfig::new().with_smoothing(0.1),
            LabelSmoothingConfig::pytorch(0.2).with_reduction(Reduction::Sum),
            LabelSmoothingConfig::fast_reid(-1.0, 0.2),
        ]
    };
    for cfg in configs {
        let loss_fn = cfg.init(k).unwrap();
        let t = Targets::Labels(&labels);
        let mut g32 = vec![0.0f32; n * k];
        let l32 = loss_fn.loss_and_grad(&widened, t, GradOutput::ONE, &mut g32).unwrap();
        let mut gh = vec![E::from_f32(0.0); n * k];
        let lh = loss_fn.loss_and_grad(&half, t, GradOutput::ONE, &mut gh).unwrap();
        assert_eq!(l32, lh, "{} loss, n={n} k={k}", E::NAME);
        assert_eq!(loss_fn.loss(&half, t).unwrap(), l32, "{} forward-only loss", E::NAME);
        for (i, (&a, b)) in g32.iter().zip(&gh).enumerate() {
            assert!(a.is_finite(), "f32 grad[{i}] = {a}");
            assert_eq!(
                E::from_f32(a),
                *b,
                "{} grad[{i}]: f32 {a} rounds to {}, got {}",
                E::NAME,
                E::from_f32(a).to_f32(),
                b.to_f32()
            );
        }
        let mut inplace = half.clone();
        let li = loss_fn
            .loss_and_grad_in_place(&mut inplace, t, GradOutput::ONE)
            .unwrap();
        assert_eq!(li, lh);
        assert_eq!(inplace, gh, "{}: in place equals buffer", E::NAME);
        // One thread runs every row whole (with the scratch row for rows up to 2^18 classes); four split rows
        // with fewer rows than threads across them (recomputing the exponentials).
        for threads in [1, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut gt = vec![E::from_f32(0.0); n * k];
            let lt = pool
                .install(|| loss_fn.loss_and_grad(&half, t, GradOutput::ONE, &mut gt))
                .unwrap();
            assert_eq!(
                (&lt, &gt),
                (&lh, &gh),
                "{}: {threads} threads equal the default pool",
                E::NAME
            );
            let mut it = half.clone();
            let li = pool
                .install(|| loss_fn.loss_and_grad_in_place(&mut it, t, GradOutput::ONE))
                .unwrap();
            assert_eq!((&li, &it), (&lh, &gh), "{}: in place on {threads} threads", E::NAME);
        }
    }
}

#[test]
fn bf16_logits() {
    check::<bf16>(37, 11, 1, false);
    check::<bf16>(3, 5000, 2, false);
    check::<bf16>(1, 20_000, 3, false);
}

#[test]
fn f16_logits() {
    check::<f16>(37, 11, 4, false);
    check::<f16>(3, 5000, 5, false);
    check::<f16>(1, 20_000, 6, false);
}

#[test]
fn half_precision_with_masked_classes() {
    // A whole chunk of -inf classes in rows of 9000 (split across threads when there are fewer rows) and 300.
    check::<bf16>(1, 9000, 7, true);
    check::<bf16>(3, 9000, 8, true);
    check::<f16>(1, 9000, 9, true);
    check::<f16>(5, 300, 10, true);
}
