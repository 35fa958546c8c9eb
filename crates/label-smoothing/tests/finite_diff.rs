//! The fused gradient against central finite differences of the loss, computed in f64 by the test itself
//! (the target rows come from SPEC.md's table, not from the crate). For every option: both spreads, fixed and
//! adaptive smoothing (held constant, so the targets are frozen at the current logits), weights, an ignore
//! index, soft targets, every reduction, and a per-row upstream gradient.

mod common;

use common::{objective_f64, target_rows, Draw, Rng};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Reduction, Smoothing, Spread, Targets};

fn softmax_row(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn check(draw: &Draw) {
    let (n, k) = (draw.n, draw.k);
    let inp = draw.inputs();
    let cfg = &draw.config;
    let loss_fn = cfg.clone().init(k).unwrap();
    let targets = if draw.soft {
        Targets::Soft(&inp.soft)
    } else {
        Targets::Labels(&inp.labels)
    };
    let grad_output = match &inp.grad_output {
        Some(g) => GradOutput::PerRow(g),
        None => GradOutput::Scalar(0.75),
    };
    let mut grad = vec![0.0f32; n * k];
    let loss = loss_fn
        .loss_and_grad(&inp.logits, targets, grad_output, &mut grad)
        .unwrap();

    // Frozen quantities: per-row smoothing, targets, upstream gradient, denominator.
    let z: Vec<f64> = inp.logits.iter().map(|&x| x as f64).collect();
    let e: Vec<f64> = (0..n)
        .map(|i| match cfg.smoothing {
            Smoothing::Fixed(e) => e as f64,
            Smoothing::Adaptive { alpha } => {
                let y = inp.labels[i];
                if Some(y) == cfg.ignore_index {
                    0.0
                } else {
                    alpha as f64 * softmax_row(&z[i * k..(i + 1) * k])[y as usize]
                }
            }
        })
        .collect();
    let soft64: Vec<f64> = inp.soft.iter().map(|&x| x as f64).collect();
    let q = if draw.soft {
        target_rows(cfg.spread, k, None, Some(&soft64), &e, None)
    } else {
        target_rows(cfg.spread, k, Some(&inp.labels), None, &e, cfg.ignore_index)
    };
    let w: Vec<f64> = match &cfg.weights {
        Some(w) => w.iter().map(|&x| x as f64).collect(),
        None => vec![1.0; k],
    };
    let g: Vec<f64> = match &inp.grad_output {
        Some(g) => g.iter().map(|&x| x as f64).collect(),
        None => vec![0.75; n],
    };
    let kept: Vec<usize> = (0..n)
        .filter(|&i| draw.soft || Some(inp.labels[i]) != cfg.ignore_index)
        .collect();
    let per_row = |i: usize| objective_f64(&z[i * k..(i + 1) * k], k, &q[i * k..(i + 1) * k], &w, &[1.0], 1.0);
    let d = match cfg.reduction {
        Reduction::None | Reduction::Sum => 1.0,
        Reduction::Mean if draw.soft => n as f64,
        Reduction::Mean => kept.iter().map(|&i| w[inp.labels[i] as usize]).sum(),
        Reduction::MeanNonZero => kept.iter().filter(|&&i| per_row(i) != 0.0).count().max(1) as f64,
    };
    let d = if d == 0.0 { f64::INFINITY } else { d };

    // The loss value too, from the same independent computation (upstream gradient 1).
    let want_loss: Vec<f64> = match cfg.reduction {
        Reduction::None => (0..n).map(per_row).collect(),
        _ => vec![(0..n).map(per_row).sum::<f64>() / if d.is_finite() { d } else { 1.0 }],
    };
    common::assert_loss_close(&format!("{draw:?}"), loss.as_slice(), &want_loss);

    let h = 1e-5;
    let mut zp = z.clone();
    for idx in 0..n * k {
        let orig = zp[idx];
        zp[idx] = orig + h;
        let up = objective_f64(&zp, k, &q, &w, &g, d);
        zp[idx] = orig - h;
        let down = objective_f64(&zp, k, &q, &w, &g, d);
        zp[idx] = orig;
        let fd = (up - down) / (2.0 * h);
        let err = (grad[idx] as f64 - fd).abs();
        assert!(
            err <= 2e-6,
            "{draw:?}: grad[{idx}] = {}, finite difference {fd} (error {err:e})",
            grad[idx]
        );
    }
}

#[test]
fn gradient_matches_central_differences_for_every_option() {
    let mut rng = Rng::new(7);
    let mut count = 0;
    for spread in [Spread::Others, Spread::Uniform] {
        for smoothing in [
            Smoothing::Fixed(0.0),
            Smoothing::Fixed(0.15),
            Smoothing::Adaptive { alpha: 0.3 },
        ] {
            for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::MeanNonZero] {
                for weighted in [false, true] {
                    for soft in [false, true] {
                        if soft && matches!(smoothing, Smoothing::Adaptive { .. }) {
                            continue;
                        }
                        let k = 2 + rng.below(9);
                        let weights = weighted.then(|| (0..k).map(|_| (0.2 + 1.5 * rng.uniform()) as f32).collect());
                        let config = LabelSmoothingConfig {
                            spread,
                            smoothing,
                            reduction,
                            ignore_index: (!soft && rng.uniform() < 0.7).then_some(-100),
                            weights,
                            ..Default::default()
                        };
                        let draw = Draw {
                            n: 1 + rng.below(5),
                            k,
                            scale: 2.0,
                            config,
                            soft,
                            per_row_grad: reduction == Reduction::None && rng.uniform() < 0.5,
                            seed: rng.next_u64(),
                        };
                        check(&draw);
                        count += 1;
                    }
                }
            }
        }
    }
    assert_eq!(count, 80);
}
