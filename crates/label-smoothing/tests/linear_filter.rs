//! The fused linear loss's optional gradient filter: exact at threshold 0, within its documented error bound on
//! peaked logits, and refusing what it cannot filter.

use label_smoothing::linear::LinearCrossEntropy;
use label_smoothing::rng::SplitMix64 as Rng;
use label_smoothing::{GradOutput, LabelSmoothingConfig, LossError, Reduction, Spread};

mod common;
use common::linear::{assert_matches, expected, fused, problem, Problem};

/// A problem whose softmax is peaked, as a trained classifier's: each row is its label's weight row, scaled so
/// that its own logit is about `margin`, plus noise.
fn peaked(n: usize, d: usize, k: usize, margin: f64, seed: u64) -> Problem {
    let mut p = problem(n, d, k, seed, Some(-100));
    let mut rng = Rng::new(seed + 1000);
    for i in 0..n {
        if p.labels[i] < 0 {
            continue;
        }
        let y = p.labels[i] as usize;
        let wy = &p.w[y * d..(y + 1) * d];
        let norm2: f64 = wy.iter().map(|&v| v as f64 * v as f64).sum();
        for (xe, &we) in p.x[i * d..(i + 1) * d].iter_mut().zip(wy) {
            *xe = (margin * we as f64 / norm2 + 0.05 * rng.normal()) as f32;
        }
    }
    p.b.iter_mut().for_each(|b| *b = 0.0);
    p
}

#[test]
fn gradient_filter_at_zero_gives_the_exact_gradients() {
    // Threshold 0 skips only tiles that are exactly zero: the split itself must be exact, for both spreads,
    // with weights, the ignore index and every reduction.
    let p = problem(37, 19, 1100, 11, Some(-100));
    let weights: Vec<f32> = (0..1100).map(|c| 0.25 + (c % 7) as f32 * 0.25).collect();
    for spread in [Spread::Others, Spread::Uniform] {
        for reduction in [Reduction::None, Reduction::Mean, Reduction::MeanNonZero] {
            let base = LabelSmoothingConfig::new()
                .with_spread(spread)
                .with_reduction(reduction)
                .with_ignore_index(Some(-100));
            for config in [
                base.clone().with_smoothing(0.1),
                base.with_smoothing(0.2).with_weights(Some(weights.clone())),
            ] {
                let lce = LinearCrossEntropy::new(config.clone().init(p.k).unwrap(), p.d)
                    .unwrap()
                    .with_block_rows(16)
                    .unwrap()
                    .with_gradient_filter(0.0)
                    .unwrap();
                let want = expected(&p, &config, true, None);
                // Rows only, and blocks of 512 classes (the label and the rank-one part per class block).
                for lce in [lce.clone(), lce.with_block_classes(512).unwrap()] {
                    let got = fused(&lce, &p, true, GradOutput::ONE);
                    let name = format!("{config:?} filter 0, {} classes per block", lce.block_classes());
                    assert_matches(&name, &got, &want, &p);
                }
            }
        }
    }
}

#[test]
fn gradient_filter_errors_stay_within_the_documented_bound() {
    let (n, d, k) = (64, 32, 6000);
    let p = peaked(n, d, k, 30.0, 12);
    let sum = LabelSmoothingConfig::new()
        .with_smoothing(0.1)
        .with_reduction(Reduction::Sum);
    for (config, t) in [
        (LabelSmoothingConfig::pytorch(0.1), 1e-7f32),
        (LabelSmoothingConfig::pytorch(0.1), 1e-6),
        (sum, 1e-5),
    ] {
        let config = config.with_ignore_index(Some(-100));
        let exact = LinearCrossEntropy::new(config.clone().init(k).unwrap(), d)
            .unwrap()
            .with_block_rows(16)
            .unwrap();
        let a = fused(&exact, &p, true, GradOutput::ONE);
        // |d grad_x[i, e]| <= t sum_c |W[c, e]|; |d grad_W[c, e]| <= t sum_i |x[i, e]|; |d grad_b| <= t N; plus
        // f32 rounding of the exact result's size.
        let w_col: Vec<f64> = (0..d)
            .map(|e| (0..k).map(|c| p.w[c * d + e].abs() as f64).sum())
            .collect();
        let x_col: Vec<f64> = (0..d)
            .map(|e| (0..n).map(|i| p.x[i * d + e].abs() as f64).sum())
            .collect();
        let round = |v: f32| 1e-6 * (v.abs() as f64) + 1e-9;
        // Rows only, and with blocks of classes (2048, 2048, 1904).
        let filtered = exact.clone().with_gradient_filter(t).unwrap();
        for (what, lce) in [
            ("rows", filtered.clone()),
            ("classes", filtered.with_block_classes(2048).unwrap()),
        ] {
            let b = fused(&lce, &p, true, GradOutput::ONE);
            let t = t as f64;
            for (i, (&u, &v)) in a.loss.iter().zip(&b.loss).enumerate() {
                assert!((u - v).abs() <= 1e-6 * u.abs(), "{what} t = {t}: loss[{i}] {v} vs {u}");
            }
            let mut skipped = false;
            for (j, (&u, &v)) in a.gx.iter().zip(&b.gx).enumerate() {
                let bound = t * w_col[j % d] + round(u);
                assert!(
                    ((u - v) as f64).abs() <= bound,
                    "{what} t = {t}: grad_x[{j}] {v} vs exact {u}, bound {bound:e}"
                );
                skipped |= u != v;
            }
            for (j, (&u, &v)) in a.gw.iter().zip(&b.gw).enumerate() {
                let bound = t * x_col[j % d] + round(u);
                assert!(
                    ((u - v) as f64).abs() <= bound,
                    "{what} t = {t}: grad_W[{j}] {v} vs exact {u}, bound {bound:e}"
                );
            }
            for (j, (&u, &v)) in a.gb.iter().zip(&b.gb).enumerate() {
                let bound = t * n as f64 + round(u);
                assert!(
                    ((u - v) as f64).abs() <= bound,
                    "{what} t = {t}: grad_b[{j}] {v} vs exact {u}, bound {bound:e}"
                );
            }
            assert!(skipped, "{what} t = {t}: no tile was skipped on a peaked softmax");
        }
    }
}

#[test]
fn gradient_filter_refuses_what_it_cannot_filter() {
    let lce = |c: LabelSmoothingConfig| LinearCrossEntropy::new(c.init(5000).unwrap(), 4).unwrap();
    assert!(matches!(
        lce(LabelSmoothingConfig::pytorch(0.1)).with_gradient_filter(-1.0),
        Err(LossError::InvalidParameter { .. })
    ));
    assert!(lce(LabelSmoothingConfig::pytorch(0.1))
        .with_gradient_filter(f32::NAN)
        .is_err());
    let adaptive = lce(LabelSmoothingConfig::new().with_adaptive(0.2))
        .with_gradient_filter(1e-6)
        .unwrap_err();
    assert!(adaptive.to_string().contains("adaptive smoothing"), "{adaptive}");
}
