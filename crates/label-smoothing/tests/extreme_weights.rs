//! Class weights at the float32 extremes (near `f32::MAX`, and subnormal) against the float64 definition
//! (`reference::loss_and_grad`): the fused loss must give what f64 gives wherever that fits in f32, on the
//! few-classes lanes, the row kernel and multi-chunk rows, for labels and soft targets.

use label_smoothing::reference::{self, RefTargets};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Reduction, Spread, Targets};

/// A small deterministic generator (the tests must not depend on a crate's stream).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Weights `lo .. hi` spread log-uniformly over the classes.
fn weights(k: usize, lo: f32, hi: f32, rng: &mut Lcg) -> Vec<f32> {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    (0..k).map(|_| (a + (b - a) * rng.next()).exp() as f32).collect()
}

/// The distance between neighbouring subnormal f32 values, `2^-149`.
const SUBNORMAL_STEP: f64 = 1.401298464324817e-45;

/// Compares the fused loss (loss and gradient) with the f64 definition for one configuration.
fn check(name: &str, cfg: LabelSmoothingConfig, n: usize, k: usize, soft: bool, rng: &mut Lcg) {
    let logits: Vec<f32> = (0..n * k).map(|_| (rng.next() * 16.0 - 8.0) as f32).collect();
    let labels: Vec<i64> = (0..n).map(|_| (rng.next() * k as f64) as i64).collect();
    let soft_t: Vec<f32> = (0..n)
        .flat_map(|_| {
            let r: Vec<f64> = (0..k).map(|_| rng.next()).collect();
            let s: f64 = r.iter().sum();
            r.into_iter().map(move |v| (v / s) as f32)
        })
        .collect();
    let soft_64: Vec<f64> = soft_t.iter().map(|&v| v as f64).collect();
    let (targets, ref_targets) = if soft {
        (Targets::Soft(&soft_t), RefTargets::Soft(&soft_64))
    } else {
        (Targets::Labels(&labels), RefTargets::Labels(&labels))
    };
    let logits_64: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let want = reference::loss_and_grad(&cfg, k, &logits_64, ref_targets, None).unwrap();
    let loss_fn = cfg.init(k).unwrap();
    let mut grad = vec![f32::NAN; n * k];
    let got = loss_fn
        .loss_and_grad(&logits, targets, GradOutput::ONE, &mut grad)
        .unwrap();
    let got = got.as_slice();
    assert_eq!(got.len(), want.loss.len(), "{name}");
    for (i, (&g, &w)) in got.iter().zip(&want.loss).enumerate() {
        assert!(
            w.is_finite() && (w as f32).is_finite(),
            "{name}: the case must fit in f32 ({w})"
        );
        // Relative, plus the spacing of f32's subnormals (a mean over soft targets with subnormal weights is one).
        let err = (g as f64 - w).abs();
        assert!(
            err <= 2e-6 * w.abs() + SUBNORMAL_STEP,
            "{name}: loss[{i}] = {g}, the f64 definition gives {w} (relative error {:e})",
            err / w.abs()
        );
    }
    let scale = want.grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0 && scale.is_finite(), "{name}: gradient scale {scale}");
    for (j, (&g, &w)) in grad.iter().zip(&want.grad).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= 1e-5 * scale + SUBNORMAL_STEP,
            "{name}: grad[{j}] = {g}, the f64 definition gives {w} ({:e} of the largest)",
            err / scale
        );
    }
}

/// `K` on each kernel path: the few-classes lanes (6), one chunk of the row kernel (300), several chunks (9000).
const KS: [usize; 3] = [6, 300, 9000];

#[test]
fn weights_near_the_float32_maximum_give_the_float64_mean() {
    let mut rng = Lcg(1);
    for k in KS {
        for (spread, eps) in [(Spread::Uniform, 0.1f32), (Spread::Others, 0.2)] {
            let cfg = |lo, hi, rng: &mut Lcg| {
                LabelSmoothingConfig::pytorch(eps)
                    .with_spread(spread)
                    .with_weights(Some(weights(k, lo, hi, rng)))
            };
            let labels = cfg(1e36, f32::MAX, &mut rng);
            check(&format!("K={k} {spread:?} mean, labels"), labels, 7, k, false, &mut rng);
            // The mean over soft targets divides by N, not by the weights: weights for which it fits in f32.
            let soft = cfg(1e35, 2e37, &mut rng);
            check(&format!("K={k} {spread:?} mean, soft"), soft, 5, k, true, &mut rng);
        }
        // Adaptive smoothing: `eps_i = alpha p_y`, the same linearity in the weights.
        let cfg = LabelSmoothingConfig::pytorch(0.0)
            .with_adaptive(0.2)
            .with_spread(Spread::Others)
            .with_weights(Some(weights(k, 1e37, 1e38, &mut rng)));
        check(&format!("K={k} adaptive mean"), cfg, 6, k, false, &mut rng);
    }
}

#[test]
fn large_weights_keep_per_row_losses_and_sums() {
    // Per-row losses up to about 16 * 2e36 fit in f32; the kernels' lane sums of `u (z - max)` did not.
    let mut rng = Lcg(2);
    for k in KS {
        let w = weights(k, 1e35, 2e36, &mut rng);
        for reduction in [Reduction::None, Reduction::Sum, Reduction::MeanNonZero] {
            let cfg = LabelSmoothingConfig::pytorch(0.1)
                .with_reduction(reduction)
                .with_weights(Some(w.clone()));
            check(&format!("K={k} {reduction:?}"), cfg, 4, k, false, &mut rng);
        }
    }
}

#[test]
fn subnormal_weights_give_the_float64_mean() {
    let mut rng = Lcg(3);
    for k in KS {
        // Every weight subnormal: the mean is a ratio of weighted sums, which the products of subnormals with
        // the logits (a few significant bits) moved by 3e-4.
        let w = weights(k, 1e-44, 1e-39, &mut rng);
        let cfg = LabelSmoothingConfig::pytorch(0.1).with_weights(Some(w));
        check(&format!("K={k} subnormal, labels"), cfg.clone(), 7, k, false, &mut rng);
        check(&format!("K={k} subnormal, soft"), cfg, 5, k, true, &mut rng);
    }
}

#[test]
fn ordinary_weights_keep_their_bits() {
    // Weights in [2^-32, 2^32) go through the kernels unscaled; weights scaled by a power of two give the same
    // mean to the bit (the scaling is exact), which is what the kernels' rescaling relies on.
    let mut rng = Lcg(4);
    let (n, k) = (9, 300);
    let logits: Vec<f32> = (0..n * k).map(|_| (rng.next() * 16.0 - 8.0) as f32).collect();
    let labels: Vec<i64> = (0..n).map(|_| (rng.next() * k as f64) as i64).collect();
    let w = weights(k, 0.5, 3.0, &mut rng);
    let run = |factor: f32| {
        let cfg = LabelSmoothingConfig::pytorch(0.1).with_weights(Some(w.iter().map(|&u| u * factor).collect()));
        let mut grad = vec![0.0f32; n * k];
        let loss = cfg
            .init(k)
            .unwrap()
            .loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad)
            .unwrap();
        (
            loss.scalar().unwrap().to_bits(),
            grad.iter().map(|g| g.to_bits()).collect::<Vec<_>>(),
        )
    };
    let base = run(1.0);
    assert_eq!(run(2f32.powi(60)), base, "weights times 2^60");
    assert_eq!(run(2f32.powi(-60)), base, "weights times 2^-60");
}
