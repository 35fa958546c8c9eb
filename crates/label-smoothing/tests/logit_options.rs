//! z-loss, logit soft-capping and the predicted class (SPEC.md, "z-loss", "Soft-capping", "Predictions") on
//! every path of the fused loss: against the float64 definition ([`label_smoothing::reference`], itself checked
//! against PyTorch in `golden.rs`) for every spread, smoothing, weighting, target kind and reduction, on the
//! few-classes shapes, single- and multi-chunk rows and rows split across threads; against central finite
//! differences; in place and in 16-bit; for any number of threads; and the typed errors of bad values.

mod common;

use common::{assert_grad_close, assert_loss_close, Draw, Rng};
use label_smoothing::reference::{loss_and_grad as reference, RefTargets};
use label_smoothing::{bf16, f16, GradOutput, LabelSmoothingConfig, LossError, Reduction, Smoothing, Spread, Targets};

/// Every option crossed with the new ones, on shapes that take each kernel path.
fn draws() -> Vec<Draw> {
    let mut rng = Rng::new(36);
    let mut out = Vec::new();
    for &(n, k) in &[(13, 3), (40, 12), (9, 100), (3, 2049), (2, 5000)] {
        for (z_loss, softcap) in [(1e-4f32, None), (0.05, None), (0.0, Some(4.0f32)), (0.02, Some(30.0))] {
            for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::MeanNonZero] {
                let soft = rng.uniform() < 0.3;
                let smoothing = match rng.below(3) {
                    0 => Smoothing::Fixed(0.0),
                    1 => Smoothing::Fixed(0.1),
                    _ if soft => Smoothing::Fixed(0.2),
                    _ => Smoothing::Adaptive { alpha: 0.3 },
                };
                let weights =
                    (rng.uniform() < 0.5).then(|| (0..k).map(|_| (0.2 + 1.5 * rng.uniform()) as f32).collect());
                let config = LabelSmoothingConfig {
                    spread: if rng.uniform() < 0.5 {
                        Spread::Others
                    } else {
                        Spread::Uniform
                    },
                    smoothing,
                    reduction,
                    ignore_index: (!soft).then_some(-100),
                    weights,
                    z_loss,
                    softcap,
                };
                out.push(Draw {
                    n,
                    k,
                    // Logits up to about 3 caps of 4: the cap bends them.
                    scale: 5.0,
                    config,
                    soft,
                    per_row_grad: reduction == Reduction::None && rng.uniform() < 0.5,
                    seed: rng.next_u64(),
                });
            }
        }
    }
    out
}

struct Run {
    loss: Vec<f32>,
    z_loss: Vec<f32>,
    grad: Vec<f32>,
}

fn run(d: &Draw) -> Run {
    let inp = d.inputs();
    let loss_fn = d.config.clone().init(d.k).unwrap();
    let targets = if d.soft {
        Targets::Soft(&inp.soft)
    } else {
        Targets::Labels(&inp.labels)
    };
    let go = match &inp.grad_output {
        Some(g) if d.per_row_grad => GradOutput::PerRow(g),
        _ => GradOutput::Scalar(0.75),
    };
    let mut grad = vec![0.0f32; d.n * d.k];
    let rep = loss_fn
        .report_and_grad(&inp.logits, targets, go, &mut grad, false)
        .unwrap();
    Run {
        loss: rep.loss.as_slice().to_vec(),
        z_loss: rep.z_loss.as_slice().to_vec(),
        grad,
    }
}

fn reference_of(d: &Draw, logits: &[f32]) -> label_smoothing::reference::RefOutput {
    let inp = d.inputs();
    let z: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    let soft: Vec<f64> = inp.soft.iter().map(|&x| x as f64).collect();
    let targets = if d.soft {
        RefTargets::Soft(&soft)
    } else {
        RefTargets::Labels(&inp.labels)
    };
    let go: Vec<f64> = match &inp.grad_output {
        Some(g) if d.per_row_grad => g.iter().map(|&x| x as f64).collect(),
        _ => vec![0.75],
    };
    reference(&d.config, d.k, &z, targets, Some(&go)).unwrap()
}

#[test]
fn every_option_with_z_loss_and_softcap_matches_the_float64_definition() {
    for d in draws() {
        let got = run(&d);
        let want = reference_of(&d, &d.inputs().logits);
        assert_loss_close(&format!("{d:?} loss"), &got.loss, &want.loss);
        assert_loss_close(&format!("{d:?} z-loss"), &got.z_loss, &want.z_loss);
        assert_grad_close(&format!("{d:?}"), &got.grad, &want.grad);
    }
}

#[test]
fn loss_alone_in_place_and_any_thread_count_give_the_same_bits() {
    for d in draws() {
        let base = run(&d);
        let inp = d.inputs();
        let loss_fn = d.config.clone().init(d.k).unwrap();
        let targets = if d.soft {
            Targets::Soft(&inp.soft)
        } else {
            Targets::Labels(&inp.labels)
        };
        let alone = loss_fn.loss(&inp.logits, targets).unwrap();
        assert_eq!(alone.as_slice(), &base.loss[..], "{d:?}: loss alone");
        let go = match &inp.grad_output {
            Some(g) if d.per_row_grad => GradOutput::PerRow(g),
            _ => GradOutput::Scalar(0.75),
        };
        let mut z = inp.logits.clone();
        let in_place = loss_fn.loss_and_grad_in_place(&mut z, targets, go).unwrap();
        assert_eq!(in_place.as_slice(), &base.loss[..], "{d:?}: in place");
        assert_eq!(z, base.grad, "{d:?}: in-place gradient");
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let other = pool.install(|| run(&d));
            assert_eq!(other.loss, base.loss, "{d:?}: {threads} threads");
            assert_eq!(other.grad, base.grad, "{d:?}: {threads} threads, gradient");
        }
    }
}

#[test]
fn a_row_split_across_threads_gives_the_bits_of_a_row_in_a_batch() {
    // One row of 9000 classes on 3 threads is split across them; the same row among 8 others is not.
    let k = 9000;
    let mut rng = Rng::new(5);
    let logits: Vec<f32> = (0..9 * k).map(|_| (rng.normal() * 6.0) as f32).collect();
    let labels: Vec<i64> = (0..9).map(|_| rng.below(k) as i64).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    for config in [
        LabelSmoothingConfig::pytorch(0.1).with_z_loss(1e-3).with_softcap(15.0),
        LabelSmoothingConfig::fast_reid(-1.0, 0.2).with_z_loss(1e-4),
        LabelSmoothingConfig::new()
            .with_softcap(3.0)
            .with_reduction(Reduction::Sum),
    ] {
        let loss_fn = config.init(k).unwrap();
        let mut batch_grad = vec![0.0f32; 9 * k];
        let batch = pool.install(|| {
            loss_fn
                .report_and_grad(
                    &logits,
                    Targets::Labels(&labels),
                    GradOutput::ONE,
                    &mut batch_grad,
                    true,
                )
                .unwrap()
        });
        let one_fn = loss_fn
            .config()
            .clone()
            .with_reduction(Reduction::None)
            .init(k)
            .unwrap();
        let all = one_fn.report(&logits, Targets::Labels(&labels), true).unwrap();
        for i in [0, 4, 8] {
            let row = &logits[i * k..(i + 1) * k];
            let mut grad = vec![0.0f32; k];
            let wide = pool.install(|| {
                one_fn
                    .report_and_grad(row, Targets::Labels(&labels[i..=i]), GradOutput::ONE, &mut grad, true)
                    .unwrap()
            });
            assert_eq!(wide.loss.as_slice()[0], all.loss.as_slice()[i], "row {i}");
            assert_eq!(wide.z_loss.as_slice()[0], all.z_loss.as_slice()[i], "row {i}: z-loss");
            assert_eq!(
                wide.predicted.as_ref().unwrap()[0],
                batch.predicted.as_ref().unwrap()[i]
            );
            // The batch's gradient is scaled by its reduction; with `none` and g = 1 the row's is not.
            let mut batch_row = vec![0.0f32; k];
            one_fn
                .loss_and_grad(row, Targets::Labels(&labels[i..=i]), GradOutput::ONE, &mut batch_row)
                .unwrap();
            let mut with_others = vec![0.0f32; 9 * k];
            let g: Vec<f32> = (0..9).map(|r| if r == i { 1.0 } else { 0.0 }).collect();
            one_fn
                .loss_and_grad(
                    &logits,
                    Targets::Labels(&labels),
                    GradOutput::PerRow(&g),
                    &mut with_others,
                )
                .unwrap();
            assert_eq!(grad, with_others[i * k..(i + 1) * k], "row {i}: gradient");
        }
    }
}

#[test]
fn gradient_matches_central_differences_of_the_definition() {
    // The reference's loss in f64 (fixed smoothing: adaptive smoothing is held constant, which a finite
    // difference of the loss would not do), differentiated numerically, against the fused f32 gradient.
    let h = 1e-6;
    for d in draws()
        .into_iter()
        .filter(|d| d.k <= 100 && !matches!(d.config.smoothing, Smoothing::Adaptive { .. }))
    {
        let got = run(&d);
        let inp = d.inputs();
        let soft: Vec<f64> = inp.soft.iter().map(|&x| x as f64).collect();
        let targets = if d.soft {
            RefTargets::Soft(&soft)
        } else {
            RefTargets::Labels(&inp.labels)
        };
        let go: Vec<f64> = match &inp.grad_output {
            Some(g) if d.per_row_grad => g.iter().map(|&x| x as f64).collect(),
            _ => vec![0.75; d.n],
        };
        // The objective: sum_i g_i l_i for `none`, g * L otherwise.
        let objective = |z: &[f64]| -> f64 {
            let out = reference(&d.config, d.k, z, targets, None).unwrap();
            if d.config.reduction == Reduction::None {
                out.loss.iter().zip(&go).map(|(l, g)| l * g).sum()
            } else {
                out.loss[0] * go[0]
            }
        };
        let z0: Vec<f64> = inp.logits.iter().map(|&x| x as f64).collect();
        let mut rng = Rng::new(d.seed);
        for _ in 0..12 {
            let idx = rng.below(d.n * d.k);
            let (mut zp, mut zm) = (z0.clone(), z0.clone());
            zp[idx] += h;
            zm[idx] -= h;
            let fd = (objective(&zp) - objective(&zm)) / (2.0 * h);
            let err = (got.grad[idx] as f64 - fd).abs();
            assert!(
                err <= 2e-6 * fd.abs().max(1.0),
                "{d:?}: grad[{idx}] = {}, finite difference {fd}",
                got.grad[idx]
            );
        }
    }
}

#[test]
fn sixteen_bit_logits_match_the_definition_of_their_values() {
    for d in draws().into_iter().filter(|d| d.k != 5000) {
        let inp = d.inputs();
        let loss_fn = d.config.clone().init(d.k).unwrap();
        let targets = if d.soft {
            Targets::Soft(&inp.soft)
        } else {
            Targets::Labels(&inp.labels)
        };
        let go = match &inp.grad_output {
            Some(g) if d.per_row_grad => GradOutput::PerRow(g),
            _ => GradOutput::Scalar(0.75),
        };
        let b: Vec<bf16> = inp.logits.iter().map(|&x| bf16::from_f32(x)).collect();
        let h: Vec<f16> = inp.logits.iter().map(|&x| f16::from_f32(x)).collect();
        let mut gb = vec![bf16::ZERO; b.len()];
        let mut gh = vec![f16::ZERO; h.len()];
        let lb = loss_fn.loss_and_grad(&b, targets, go, &mut gb).unwrap();
        let lh = loss_fn.loss_and_grad(&h, targets, go, &mut gh).unwrap();
        for (name, loss, grad, values) in [
            (
                "bf16",
                lb,
                gb.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
            ),
            (
                "f16",
                lh,
                gh.iter().map(|v| v.to_f32()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            ),
        ] {
            let want = reference_of(&d, &values);
            assert_loss_close(&format!("{d:?} {name}"), loss.as_slice(), &want.loss);
            // The gradient is rounded to the 16-bit type: 2^-8 (bf16) or 2^-11 (f16) relative.
            let tol = if name == "bf16" { 1.0 / 256.0 } else { 1.0 / 2048.0 };
            for (i, (&g, &w)) in grad.iter().zip(&want.grad).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= tol * w.abs() + 1e-6,
                    "{d:?} {name}: grad[{i}] = {g}, expected {w}"
                );
            }
        }
    }
}

#[test]
fn predictions_are_the_first_largest_logit_and_the_accuracy_counts_kept_rows() {
    let k = 37;
    let mut rng = Rng::new(11);
    let n = 300;
    // Small integers: ties are common.
    let mut logits: Vec<f32> = (0..n * k).map(|_| rng.below(5) as f32).collect();
    logits[5 * k + 3] = f32::NAN;
    logits[5 * k + 9] = f32::NAN;
    for c in 0..k {
        logits[7 * k + c] = f32::NEG_INFINITY;
    }
    let labels: Vec<i64> = (0..n)
        .map(|i| if i % 10 == 3 { -100 } else { rng.below(k) as i64 })
        .collect();
    // The definition: the first class of the largest value, a NaN counting as the largest (torch.argmax).
    let want: Vec<i64> = (0..n)
        .map(|i| {
            if labels[i] == -100 {
                return -1;
            }
            let row = &logits[i * k..(i + 1) * k];
            if let Some(c) = row.iter().position(|v| v.is_nan()) {
                return c as i64;
            }
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            row.iter().position(|&v| v == m).unwrap() as i64
        })
        .collect();
    let kept: Vec<usize> = (0..n).filter(|&i| labels[i] != -100).collect();
    let correct = kept.iter().filter(|&&i| want[i] == labels[i]).count();
    assert!(correct > 0 && correct < kept.len());
    for config in [
        LabelSmoothingConfig::pytorch(0.1),
        LabelSmoothingConfig::pytorch(0.0).with_softcap(2.0),
    ] {
        let loss_fn = config.init(k).unwrap();
        let out = loss_fn.report(&logits, Targets::Labels(&labels), true).unwrap();
        assert_eq!(out.predicted.as_deref(), Some(&want[..]));
        let acc = out.accuracy.unwrap();
        assert_eq!((acc.correct, acc.counted), (correct, kept.len()));
        let mut z = logits.clone();
        let in_place = loss_fn
            .report_and_grad_in_place(&mut z, Targets::Labels(&labels), GradOutput::ONE, true)
            .unwrap();
        assert_eq!(in_place.predicted, out.predicted);
        // Not asked for: not computed.
        assert_eq!(
            loss_fn
                .report(&logits, Targets::Labels(&labels), false)
                .unwrap()
                .predicted,
            None
        );
    }
    // Few classes (the row kernel takes the call) and bf16.
    let small: Vec<f32> = vec![0.5, 2.0, 2.0, -1.0, 7.0, 7.0, 1.0, 0.0];
    let loss_fn = LabelSmoothingConfig::new().init(4).unwrap();
    let out = loss_fn.report(&small, Targets::Labels(&[1, 0]), true).unwrap();
    assert_eq!(out.predicted.as_deref(), Some(&[1, 0][..]));
    let b: Vec<bf16> = small.iter().map(|&x| bf16::from_f32(x)).collect();
    assert_eq!(
        loss_fn
            .report(&b, Targets::Labels(&[1, 0]), true)
            .unwrap()
            .accuracy
            .unwrap()
            .correct,
        2
    );
}

#[test]
fn bad_z_loss_and_softcap_values_are_typed_errors_naming_them() {
    for bad in [-1e-4f32, f32::NAN, f32::INFINITY] {
        match LabelSmoothingConfig::new().with_z_loss(bad).init(5) {
            Err(LossError::InvalidParameter { name: "z_loss", .. }) => {}
            other => panic!("z_loss {bad}: {other:?}"),
        }
    }
    for bad in [0.0f32, -3.0, f32::NAN, f32::INFINITY] {
        match LabelSmoothingConfig::new().with_softcap(bad).init(5) {
            Err(e @ LossError::InvalidParameter { name: "softcap", .. }) => {
                assert!(e.to_string().contains("softcap"), "{e}");
            }
            other => panic!("softcap {bad}: {other:?}"),
        }
    }
    assert!(LabelSmoothingConfig::new().with_z_loss(0.0).init(5).is_ok());
}
