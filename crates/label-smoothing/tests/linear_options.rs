//! z-loss, soft-capping and the predicted classes on the fused linear loss, against the float64 composition
//! `x W^T + b` -> SPEC.md's loss and gradient with the options (`reference::loss_and_grad`) -> the products, on
//! blocks of rows and on blocks of classes.
//!
//! PyTorch expression of the composition (Liger-Kernel's `LigerFusedLinearCrossEntropyLoss` computes the same):
//! `z = F.linear(x, W, b)`, `zc = c * torch.tanh(z / c)`, `lse = zc.logsumexp(-1)`, the loss
//! `F.cross_entropy(zc, y, weight, ignore_index, reduction, label_smoothing)` plus `s * lse**2` reduced as
//! SPEC.md, "z-loss", says.

use label_smoothing::linear::{LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::reference::{self, RefTargets};
use label_smoothing::{GradOutput, LabelSmoothingConfig, LossReport, Reduction, Spread};

mod common;
use common::linear::{check_blocks, fused, problem, Problem};

fn lce(p: &Problem, config: &LabelSmoothingConfig, classes: Option<usize>) -> LinearCrossEntropy {
    let lce = LinearCrossEntropy::new(config.clone().init(p.k).unwrap(), p.d)
        .unwrap()
        .with_block_rows(16)
        .unwrap();
    match classes {
        Some(c) => lce.with_block_classes(c).unwrap(),
        None => lce,
    }
}

/// Every reduction and spread, fixed and adaptive smoothing, class weights with the ignore index (where the
/// weighted mean divides the z-loss by the rows, not the weights), on rows and on class blocks that keep or cut
/// chunks.
#[test]
fn options_match_the_f64_composition() {
    let p = problem(37, 23, 5000, 3, Some(-100));
    let weights: Vec<f32> = (0..p.k).map(|c| 0.25 + (c % 7) as f32 * 0.25).collect();
    for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::MeanNonZero] {
        let base = LabelSmoothingConfig::new()
            .with_reduction(reduction)
            .with_ignore_index(Some(-100));
        let configs = [
            base.clone().with_smoothing(0.1).with_z_loss(1e-3),
            base.clone()
                .with_smoothing(0.1)
                .with_spread(Spread::Uniform)
                .with_softcap(2.0),
            base.clone().with_adaptive(0.2).with_softcap(3.0).with_z_loss(0.01),
            base.clone()
                .with_smoothing(0.05)
                .with_weights(Some(weights.clone()))
                .with_z_loss(0.02)
                .with_softcap(2.5),
        ];
        for config in configs {
            for classes in [None, Some(2048), Some(700)] {
                check_blocks(&p, config.clone(), true, 16, classes, reduction == Reduction::None);
            }
        }
    }
}

fn report(lce: &LinearCrossEntropy, p: &Problem, backward: bool) -> LossReport {
    let inputs = LinearInputs {
        x: &p.x,
        weight: &p.w,
        bias: Some(&p.b),
    };
    if !backward {
        return lce.report(inputs, &p.labels, true).unwrap();
    }
    let mut gx = vec![0.0; p.n * p.d];
    let grads = LinearGrads {
        x: Some(&mut gx),
        ..Default::default()
    };
    lce.report_and_grad(inputs, &p.labels, GradOutput::ONE, grads, true)
        .unwrap()
}

/// The z-loss term alone, the predicted classes and the token accuracy, with and without the backward pass and
/// class blocks, against the reference's z-loss and the arg-max of the float64 logits.
#[test]
fn reports_the_z_loss_and_the_predicted_classes() {
    let p = problem(45, 19, 3000, 5, Some(-100));
    let weights: Vec<f32> = (0..p.k).map(|c| 0.5 + (c % 3) as f32 * 0.5).collect();
    let z64: Vec<f64> = (0..p.n * p.k)
        .map(|j| {
            let (i, c) = (j / p.k, j % p.k);
            let dot: f64 = (0..p.d)
                .map(|e| p.x[i * p.d + e] as f64 * p.w[c * p.d + e] as f64)
                .sum();
            dot + p.b[c] as f64
        })
        .collect();
    // The arg-max of the f64 logits, where the runner-up is clearly below (f32 products could swap a near tie).
    let argmax: Vec<Option<i64>> = z64
        .chunks_exact(p.k)
        .map(|row| {
            let mut order: Vec<usize> = (0..p.k).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            (row[order[0]] - row[order[1]] > 1e-3).then_some(order[0] as i64)
        })
        .collect();
    for reduction in [Reduction::None, Reduction::Mean, Reduction::MeanNonZero] {
        let config = LabelSmoothingConfig::pytorch(0.1)
            .with_reduction(reduction)
            .with_ignore_index(Some(-100))
            .with_weights(Some(weights.clone()))
            .with_z_loss(0.01)
            .with_softcap(4.0);
        let want = reference::loss_and_grad(&config, p.k, &z64, RefTargets::Labels(&p.labels), None).unwrap();
        for classes in [None, Some(1024)] {
            for backward in [false, true] {
                let name = format!("{reduction:?} classes {classes:?} backward {backward}");
                let got = report(&lce(&p, &config, classes), &p, backward);
                let z = got.z_loss.as_slice();
                assert_eq!(z.len(), want.z_loss.len(), "{name}");
                for (i, (&g, &w)) in z.iter().zip(&want.z_loss).enumerate() {
                    assert!(
                        (g as f64 - w).abs() <= 1e-5 * w.abs() + 1e-7,
                        "{name}: z[{i}] {g} vs {w}"
                    );
                }
                let predicted = got.predicted.as_deref().unwrap();
                let (mut correct, mut counted) = (0, 0);
                for (i, (&pred, &y)) in predicted.iter().zip(&p.labels).enumerate() {
                    if y == -100 {
                        assert_eq!(pred, -1, "{name}: ignored row {i}");
                        continue;
                    }
                    if let Some(a) = argmax[i] {
                        assert_eq!(pred, a, "{name}: row {i}");
                    }
                    counted += 1;
                    correct += usize::from(pred == y);
                }
                let accuracy = got.accuracy.unwrap();
                assert_eq!((accuracy.correct, accuracy.counted), (correct, counted), "{name}");
            }
        }
    }
}

/// Rows whose largest logit is repeated or NaN: the first of equal values (a NaN row: its first class), across
/// class blocks as within one (the fused kernel's rule, `torch.argmax`'s).
#[test]
fn predictions_take_the_first_largest_across_class_blocks() {
    let (n, d, k) = (3, 2, 2100);
    // x picks a column of W: row 0 reads W[:, 0], row 1 W[:, 1]; row 2's NaN makes every logit NaN.
    let x = vec![1.0f32, 0.0, 0.0, 1.0, f32::NAN, 0.0];
    let mut w = vec![0.0f32; k * d];
    w[5 * d] = 3.0; // row 0: classes 5 and 1500 tie at 3
    w[1500 * d] = 3.0;
    w[1800 * d + 1] = 9.0; // row 1: classes 1800 and 2000 tie at 9, a smaller value at 10
    w[2000 * d + 1] = 9.0;
    w[10 * d + 1] = 8.0;
    let labels = [1500i64, 1800, 0];
    let config = LabelSmoothingConfig::pytorch(0.1);
    for classes in [None, Some(1024), Some(700)] {
        let mut lce = LinearCrossEntropy::new(config.clone().init(k).unwrap(), d).unwrap();
        if let Some(c) = classes {
            lce = lce.with_block_classes(c).unwrap();
        }
        let inputs = LinearInputs {
            x: &x,
            weight: &w,
            bias: None,
        };
        let got = lce.report(inputs, &labels, true).unwrap();
        assert_eq!(got.predicted.as_deref(), Some(&[5, 1800, 0][..]), "classes {classes:?}");
        let accuracy = got.accuracy.unwrap();
        assert_eq!((accuracy.correct, accuracy.counted), (2, 3), "classes {classes:?}");
        assert_eq!(n, labels.len());
    }
}

/// With the gradient filter, the options keep the filter's bound: only entries of at most the threshold are left
/// out (here checked against the exact gradients, as `linear_filter.rs` does without the options).
#[test]
fn gradient_filter_with_the_options_stays_within_its_bound() {
    let p = problem(48, 16, 4200, 9, Some(-100));
    let config = LabelSmoothingConfig::pytorch(0.1)
        .with_ignore_index(Some(-100))
        .with_z_loss(1e-3)
        .with_softcap(8.0);
    let t = 1e-6f32;
    for classes in [None, Some(2048)] {
        let exact = lce(&p, &config, classes);
        let a = fused(&exact, &p, true, GradOutput::ONE);
        let b = fused(
            &exact.clone().with_gradient_filter(t).unwrap(),
            &p,
            true,
            GradOutput::ONE,
        );
        assert_eq!(a.loss, b.loss, "the loss is exact");
        let w_col: Vec<f64> = (0..p.d)
            .map(|e| (0..p.k).map(|c| p.w[c * p.d + e].abs() as f64).sum())
            .collect();
        let x_col: Vec<f64> = (0..p.d)
            .map(|e| (0..p.n).map(|i| p.x[i * p.d + e].abs() as f64).sum())
            .collect();
        let round = |v: f32| 1e-6 * (v.abs() as f64) + 1e-9;
        for (j, (&u, &v)) in a.gx.iter().zip(&b.gx).enumerate() {
            let bound = t as f64 * w_col[j % p.d] + round(u);
            assert!(
                ((u - v) as f64).abs() <= bound,
                "grad_x[{j}] {v} vs {u}, bound {bound:e}"
            );
        }
        for (j, (&u, &v)) in a.gw.iter().zip(&b.gw).enumerate() {
            let bound = t as f64 * x_col[j % p.d] + round(u);
            assert!(
                ((u - v) as f64).abs() <= bound,
                "grad_W[{j}] {v} vs {u}, bound {bound:e}"
            );
        }
        for (j, (&u, &v)) in a.gb.iter().zip(&b.gb).enumerate() {
            let bound = t as f64 * p.n as f64 + round(u);
            assert!(
                ((u - v) as f64).abs() <= bound,
                "grad_b[{j}] {v} vs {u}, bound {bound:e}"
            );
        }
    }
}
