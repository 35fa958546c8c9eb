//! Property tests: the fused kernel against the float64 reference over random shapes and options, the identities
//! between conventions, thread-count independence, and the numerical edge cases of SPEC.md ("Accuracy").

mod common;

use common::{assert_grad_close, assert_loss_close, Draw};
use label_smoothing::reference::{self, RefTargets};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Loss, Reduction, Smoothing, Spread, Targets};
use proptest::prelude::*;

fn spread() -> impl Strategy<Value = Spread> {
    prop_oneof![Just(Spread::Others), Just(Spread::Uniform)]
}

fn reduction() -> impl Strategy<Value = Reduction> {
    prop_oneof![
        Just(Reduction::None),
        Just(Reduction::Sum),
        Just(Reduction::Mean),
        Just(Reduction::MeanNonZero)
    ]
}

/// Shapes: mostly small, sometimes K = 2, sometimes K above 10,000 (with few rows, to keep the f64 reference fast).
fn shape() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        4 => (1usize..9, 2usize..40),
        1 => (1usize..6, Just(2usize)),
        1 => (1usize..4, 2040usize..2100),
        1 => (1usize..3, 10_001usize..16_500),
    ]
}

prop_compose! {
    fn draw()(
        (n, k) in shape(),
        spread in spread(),
        reduction in reduction(),
        smoothing in prop_oneof![
            Just(Smoothing::Fixed(0.0)),
            (0.0f32..=1.0).prop_map(Smoothing::Fixed),
            (0.0f32..=1.0).prop_map(|alpha| Smoothing::Adaptive { alpha }),
        ],
        weighted in any::<bool>(),
        soft in any::<bool>(),
        ignore in any::<bool>(),
        scale in prop_oneof![Just(1.0f64), Just(5.0), Just(30.0)],
        per_row in any::<bool>(),
        seed in any::<u64>(),
    ) -> Draw {
        let soft = soft && !matches!(smoothing, Smoothing::Adaptive { .. });
        let mut rng = common::Rng::new(seed ^ 0x5eed);
        let weights = weighted.then(|| (0..k).map(|_| (2.0 * rng.uniform()) as f32).collect());
        Draw {
            n, k, scale, soft, seed,
            per_row_grad: per_row && reduction == Reduction::None,
            config: LabelSmoothingConfig {
                spread, smoothing, reduction, weights,
                ignore_index: (ignore && !soft).then_some(-100),
                ..Default::default()
            },
        }
    }
}

fn run_fused(d: &Draw, threads: usize) -> (Loss, Vec<f32>) {
    let inp = d.inputs();
    let loss_fn = d.config.clone().init(d.k).unwrap();
    let targets = if d.soft {
        Targets::Soft(&inp.soft)
    } else {
        Targets::Labels(&inp.labels)
    };
    let go = match &inp.grad_output {
        Some(g) => GradOutput::PerRow(g),
        None => GradOutput::ONE,
    };
    let mut grad = vec![0.0; d.n * d.k];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let loss = pool
        .install(|| loss_fn.loss_and_grad(&inp.logits, targets, go, &mut grad))
        .unwrap();
    (loss, grad)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn fused_equals_reference(d in draw()) {
        let inp = d.inputs();
        let (loss, grad) = run_fused(&d, 2);
        let z: Vec<f64> = inp.logits.iter().map(|&x| x as f64).collect();
        let soft: Vec<f64> = inp.soft.iter().map(|&x| x as f64).collect();
        let t = if d.soft { RefTargets::Soft(&soft) } else { RefTargets::Labels(&inp.labels) };
        let go: Option<Vec<f64>> = inp.grad_output.as_ref().map(|g| g.iter().map(|&x| x as f64).collect());
        let r = reference::loss_and_grad(&d.config, d.k, &z, t, go.as_deref()).unwrap();
        assert_loss_close(&format!("{d:?}"), loss.as_slice(), &r.loss);
        assert_grad_close(&format!("{d:?}"), &grad, &r.grad);
    }

    #[test]
    fn one_and_two_threads_give_identical_bits(d in draw()) {
        let (l1, g1) = run_fused(&d, 1);
        let (l2, g2) = run_fused(&d, 2);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(l1.as_slice()), bits(l2.as_slice()));
        prop_assert_eq!(bits(&g1), bits(&g2));
    }

    #[test]
    /// Class weights times a power of two far outside `[2^-32, 2^32)` (where the kernels rescale them; near the
    /// float32 extremes in the unit of these weights): the loss and gradient scale exactly with them, or not at
    /// all where the weights cancel (a weighted mean over hard labels). Exact where the unscaled value is a normal
    /// float32; within one subnormal step of the scaled value where either is subnormal.
    fn weights_times_a_power_of_two_scale_the_results_exactly(d in draw(), up in any::<bool>()) {
        prop_assume!(d.config.weights.is_some());
        let factor = if up { 2f64.powi(60) } else { 2f64.powi(-60) };
        let mut scaled = d.clone();
        scaled.config.weights = d.config.weights.as_ref().map(|w| w.iter().map(|&u| (u as f64 * factor) as f32).collect());
        let (loss, grad) = run_fused(&d, 2);
        let (loss_s, grad_s) = run_fused(&scaled, 2);
        let cancels = d.config.reduction == Reduction::Mean && !d.soft;
        let f = if cancels { 1.0 } else { factor };
        let check = |what: &str, base: &[f32], got: &[f32]| {
            for (i, (&b, &g)) in base.iter().zip(got).enumerate() {
                let want = b as f64 * f;
                // A zero may be an underflow, and is compared as a subnormal.
                let normal = |x: f64| x.abs() >= f32::MIN_POSITIVE as f64;
                let ok = if normal(b as f64) && normal(want) {
                    g as f64 == want || (g.is_nan() && b.is_nan())
                } else {
                    // One subnormal step of whichever side is subnormal (the base's scaled by the factor).
                    (g as f64 - want).abs() <= 1.5e-45 * f.max(1.0) + want.abs() * 1.2e-7
                };
                assert!(ok, "{d:?} x {factor:e}: {what}[{i}] = {g:e}, expected {b:e} x {f:e} = {want:e}");
            }
        };
        check("loss", loss.as_slice(), loss_s.as_slice());
        check("grad", &grad, &grad_s);
    }

    #[test]
    fn others_equals_uniform_with_rescaled_eps(d in draw(), eps in 0.0f32..0.5) {
        let k = d.k as f32;
        let mut a = d.clone();
        a.config.smoothing = Smoothing::Fixed(eps);
        a.config.spread = Spread::Others;
        let mut b = a.clone();
        b.config.spread = Spread::Uniform;
        b.config.smoothing = Smoothing::Fixed(eps * k / (k - 1.0));
        let (la, ga) = run_fused(&a, 2);
        let (lb, gb) = run_fused(&b, 2);
        let la64: Vec<f64> = la.as_slice().iter().map(|&x| x as f64).collect();
        let gb64: Vec<f64> = gb.iter().map(|&x| x as f64).collect();
        assert_loss_close("others vs uniform", lb.as_slice(), &la64);
        assert_grad_close("others vs uniform", &ga, &gb64);
    }

    #[test]
    fn eps_zero_is_plain_cross_entropy(n in 1usize..8, k in 2usize..300, spread in spread(), seed in any::<u64>()) {
        let d = Draw {
            n, k, scale: 3.0, soft: false, per_row_grad: false, seed,
            config: LabelSmoothingConfig::new().with_spread(spread).with_reduction(Reduction::None),
        };
        let inp = d.inputs();
        let (loss, _) = run_fused(&d, 2);
        // -log softmax(z)[y], computed here in f64.
        let want: Vec<f64> = (0..n).map(|i| {
            let z: Vec<f64> = inp.logits[i * k..(i + 1) * k].iter().map(|&x| x as f64).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            lse - z[inp.labels[i] as usize]
        }).collect();
        assert_loss_close("eps = 0", loss.as_slice(), &want);
    }

    #[test]
    fn huge_logits_stay_finite(n in 1usize..5, k in 2usize..3000, eps in 0.0f32..=1.0, spread in spread(), seed in any::<u64>()) {
        let mut rng = common::Rng::new(seed);
        let logits: Vec<f32> = (0..n * k).map(|_| (rng.uniform() * 2e4 - 1e4) as f32).collect();
        let labels: Vec<i64> = (0..n).map(|_| rng.below(k) as i64).collect();
        let loss_fn = LabelSmoothingConfig::new().with_smoothing(eps).with_spread(spread).init(k).unwrap();
        let mut grad = vec![0.0; n * k];
        let loss = loss_fn.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad).unwrap();
        prop_assert!(loss.scalar().unwrap().is_finite());
        prop_assert!(grad.iter().all(|g| g.is_finite()));
        let z: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
        let cfg = loss_fn.config().clone();
        let r = reference::loss_and_grad(&cfg, k, &z, RefTargets::Labels(&labels), None).unwrap();
        assert_loss_close("1e4 logits", loss.as_slice(), &r.loss);
        assert_grad_close("1e4 logits", &grad, &r.grad);
    }

    /// The statistics pass takes a select-free `exp` for a chunk (2048 classes) whose spread is under 87 and the
    /// guarded one otherwise; one row here mixes both kinds of chunk, with spreads on either side of the bound.
    #[test]
    fn chunks_of_narrow_and_wide_spread_in_one_row(
        n in 1usize..3,
        k in 2049usize..7000,
        widths in proptest::collection::vec(prop_oneof![Just(1.0f64), Just(43.0), Just(44.0), Just(120.0)], 4),
        eps in 0.0f32..0.5,
        spread in spread(),
        seed in any::<u64>(),
    ) {
        let mut rng = common::Rng::new(seed);
        // Chunk j of each row has logits in [off - 2 widths[j], off] with both ends present, so its spread is
        // exactly 2 widths[j]: 86 and 88 sit on either side of the bound, 2 and 240 far from it.
        let mut logits = vec![0f32; n * k];
        for i in 0..n {
            for c in 0..k {
                let wdt = widths[(c / 2048) % widths.len()];
                let off = ((c / 2048) as f64) * 3.0;
                let x = match c % 2048 {
                    0 => off,
                    1 => off - 2.0 * wdt,
                    _ => off - 2.0 * wdt * rng.uniform(),
                };
                logits[i * k + c] = x as f32;
            }
        }
        let labels: Vec<i64> = (0..n).map(|_| rng.below(k) as i64).collect();
        let loss_fn = LabelSmoothingConfig::new().with_smoothing(eps).with_spread(spread).init(k).unwrap();
        let mut grad = vec![0.0; n * k];
        let loss = loss_fn.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad).unwrap();
        let z: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
        let r = reference::loss_and_grad(loss_fn.config(), k, &z, RefTargets::Labels(&labels), None).unwrap();
        assert_loss_close("mixed spreads", loss.as_slice(), &r.loss);
        assert_grad_close("mixed spreads", &grad, &r.grad);
        let forward = loss_fn.loss(&logits, Targets::Labels(&labels)).unwrap();
        prop_assert_eq!(forward.as_slice(), loss.as_slice());
    }

    #[test]
    fn masked_classes_away_from_the_label(n in 1usize..5, k in 3usize..3000, seed in any::<u64>(), eps in 0.01f32..0.5) {
        let mut rng = common::Rng::new(seed);
        let mut logits: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
        let labels: Vec<i64> = (0..n).map(|_| rng.below(k) as i64).collect();
        for i in 0..n {
            for c in 0..k {
                if c as i64 != labels[i] && rng.uniform() < 0.3 {
                    logits[i * k + c] = f32::NEG_INFINITY;
                }
            }
        }
        // No smoothing: no target mass on a masked class, so loss and gradient are finite.
        let plain = LabelSmoothingConfig::new().init(k).unwrap();
        let mut grad = vec![0.0; n * k];
        let loss = plain.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad).unwrap();
        prop_assert!(loss.scalar().unwrap().is_finite());
        prop_assert!(grad.iter().all(|g| g.is_finite()));
        let z: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
        let r = reference::loss_and_grad(plain.config(), k, &z, RefTargets::Labels(&labels), None).unwrap();
        assert_loss_close("masked, eps 0", loss.as_slice(), &r.loss);
        assert_grad_close("masked, eps 0", &grad, &r.grad);

        // With smoothing the definition's loss is +inf (as in PyTorch) when a class is masked; the gradient
        // p - q stays finite.
        let smooth = LabelSmoothingConfig::new().with_smoothing(eps).init(k).unwrap();
        let loss = smooth.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad).unwrap();
        let any_masked = logits.iter().any(|x| x.is_infinite());
        if any_masked {
            prop_assert_eq!(loss.scalar().unwrap(), f32::INFINITY);
        }
        prop_assert!(grad.iter().all(|g| g.is_finite()));
        let r = reference::loss_and_grad(smooth.config(), k, &z, RefTargets::Labels(&labels), None).unwrap();
        assert_grad_close("masked, smoothed", &grad, &r.grad);
    }
}

#[test]
fn a_soft_row_fit_to_round_off_counts_as_zero_for_mean_nonzero() {
    // Row 0 puts all its target on a logit 35.5 above the other: lse - max rounds to 0 in f64, so the
    // definition's loss is exactly 0 and mean-nonzero divides by the 3 other rows (found by fused_equals_reference).
    let d = Draw {
        n: 4,
        k: 2,
        scale: 30.0,
        soft: true,
        per_row_grad: false,
        seed: 16834417802493534702,
        config: LabelSmoothingConfig::new()
            .with_smoothing(0.0)
            .with_reduction(Reduction::MeanNonZero),
    };
    let inp = d.inputs();
    let (loss, grad) = run_fused(&d, 2);
    let z: Vec<f64> = inp.logits.iter().map(|&x| x as f64).collect();
    let soft: Vec<f64> = inp.soft.iter().map(|&x| x as f64).collect();
    let r = reference::loss_and_grad(&d.config, d.k, &z, RefTargets::Soft(&soft), None).unwrap();
    assert_loss_close(&format!("{d:?}"), loss.as_slice(), &r.loss);
    assert_grad_close(&format!("{d:?}"), &grad, &r.grad);
}
