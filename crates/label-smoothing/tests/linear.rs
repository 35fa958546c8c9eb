//! The fused linear loss against the float64 composition `x W^T + b` -> SPEC.md's loss and gradient
//! (`reference::loss_and_grad`) -> `grad_x = G W`, `grad_W = G^T x`, `grad_b = sum_rows G`, all in f64; and its
//! bits for any number of threads.
//!
//! PyTorch expression of the composition: `F.cross_entropy(F.linear(x, W, b), y, weight, ignore_index,
//! reduction, label_smoothing)` with `x`, `W`, `b` requiring gradients (for the spread `uniform`).

use label_smoothing::linear::{self, LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::reference::{self, RefTargets};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Loss, LossError, Reduction, Spread};

mod common;
use common::linear::{check_blocks, fused, problem, Problem};

fn check(p: &Problem, config: LabelSmoothingConfig, bias: bool, block: usize, per_row_go: bool) {
    check_blocks(p, config, bias, block, None, per_row_go)
}

#[test]
fn matches_the_f64_composition_for_the_whole_family() {
    // K over several class blocks with a partial last one, D over a partial hidden block, N over partial row blocks.
    let p = problem(37, 131, 1100, 1, None);
    let pi = problem(37, 131, 1100, 2, Some(-100));
    let weights: Vec<f32> = (0..1100).map(|c| 0.25 + (c % 7) as f32 * 0.25).collect();
    for spread in [Spread::Others, Spread::Uniform] {
        for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::MeanNonZero] {
            let base = LabelSmoothingConfig::new()
                .with_spread(spread)
                .with_reduction(reduction);
            check(&p, base.clone().with_smoothing(0.1), true, 16, false);
            check(&p, base.clone().with_adaptive(0.2), false, 37, false);
            check(
                &pi,
                base.clone().with_smoothing(0.2).with_ignore_index(Some(-100)),
                true,
                10,
                false,
            );
            check(
                &pi,
                base.clone()
                    .with_smoothing(0.05)
                    .with_ignore_index(Some(-100))
                    .with_weights(Some(weights.clone())),
                true,
                64,
                false,
            );
            if reduction == Reduction::None {
                check(&p, base.clone().with_smoothing(0.1), true, 16, true);
            }
        }
    }
    check(&p, LabelSmoothingConfig::fast_reid(-1.0, 0.2), true, 8, false);
}

#[test]
fn class_blocks_match_the_f64_composition() {
    // Blocks of whole chunks with a partial last one (2 * 2048 of 5000), and blocks that cut chunks (700).
    let p = problem(21, 19, 5000, 7, Some(-100));
    let weights: Vec<f32> = (0..5000).map(|c| 0.25 + (c % 5) as f32 * 0.25).collect();
    for classes in [4096, 2048, 700] {
        for reduction in [Reduction::None, Reduction::Mean, Reduction::MeanNonZero] {
            let base = LabelSmoothingConfig::new()
                .with_reduction(reduction)
                .with_ignore_index(Some(-100));
            check_blocks(
                &p,
                base.clone().with_smoothing(0.1).with_spread(Spread::Uniform),
                true,
                8,
                Some(classes),
                false,
            );
            check_blocks(
                &p,
                base.clone().with_adaptive(0.2).with_ignore_index(Some(-100)),
                false,
                21,
                Some(classes),
                reduction == Reduction::None,
            );
            check_blocks(
                &p,
                base.with_smoothing(0.05)
                    .with_ignore_index(Some(-100))
                    .with_weights(Some(weights.clone())),
                true,
                5,
                Some(classes),
                false,
            );
        }
    }
}

#[test]
fn class_blocks_agree_with_one_block_and_the_loss_alone() {
    let p = problem(40, 16, 3 * 2048 + 5, 8, None);
    let config = LabelSmoothingConfig::pytorch(0.1).with_reduction(Reduction::None);
    let lce = LinearCrossEntropy::new(config.init(p.k).unwrap(), p.d)
        .unwrap()
        .with_block_rows(16)
        .unwrap();
    let blocked_lce = lce.clone().with_block_classes(2048).unwrap();
    let whole = fused(&lce, &p, true, GradOutput::ONE);
    let blocked = fused(&blocked_lce, &p, true, GradOutput::ONE);
    let diff = whole
        .loss
        .iter()
        .zip(&blocked.loss)
        .map(|(a, b)| (a - b).abs() / b.abs())
        .fold(0.0f32, f32::max);
    assert!(diff <= 1e-6, "largest relative per-row difference {diff}");
    // The loss alone runs the first pass only: the same values.
    let inputs = LinearInputs {
        x: &p.x,
        weight: &p.w,
        bias: Some(&p.b),
    };
    let alone = blocked_lce.loss(inputs, &p.labels).unwrap();
    assert_eq!(alone.as_slice(), &blocked.loss[..]);
}

#[test]
fn default_blocks_and_the_unfused_baseline_agree() {
    let p = problem(70, 40, 3000, 3, None);
    let config = LabelSmoothingConfig::pytorch(0.1);
    let lce = LinearCrossEntropy::new(config.clone().init(p.k).unwrap(), p.d).unwrap();
    assert_eq!(lce.block_rows(p.n), p.n, "a small problem is one block");
    check(&p, config, true, lce.block_rows(p.n), false);

    let got = fused(&lce, &p, true, GradOutput::ONE);
    let (mut gx, mut gw, mut gb) = (vec![0.0; p.n * p.d], vec![0.0; p.k * p.d], vec![0.0; p.k]);
    let inputs = LinearInputs {
        x: &p.x,
        weight: &p.w,
        bias: Some(&p.b),
    };
    let grads = LinearGrads {
        x: Some(&mut gx),
        weight: Some(&mut gw),
        bias: Some(&mut gb),
    };
    let loss = linear::unfused(&lce, inputs, &p.labels, GradOutput::ONE, grads).unwrap();
    // One block of all rows is the unfused schedule: the same products on the same values.
    assert_eq!(loss.as_slice(), &got.loss[..]);
    assert_eq!(gx, got.gx);
    assert_eq!(gw, got.gw);
    assert_eq!(gb, got.gb);
}

#[test]
fn block_rows_follow_the_budget() {
    let lce = |k| LinearCrossEntropy::new(LabelSmoothingConfig::new().init(k).unwrap(), 8).unwrap();
    assert_eq!(lce(32_000).block_rows(1 << 20), 1040);
    assert_eq!(lce(128_000).block_rows(1 << 20), 256);
    assert_eq!(lce(10_000_000).block_rows(1 << 20), 16);
    // Two million classes fit 16 rows in the budget; beyond, the classes are blocked.
    assert_eq!(lce(2_097_152).block_classes(), 2_097_152);
    assert_eq!(lce(10_000_000).block_classes(), 2_097_152);
    assert_eq!(lce(128_000).block_classes(), 128_000);
    assert_eq!(lce(128_000).with_block_classes(4096).unwrap().block_rows(1 << 20), 8192);
    assert!(lce(10).with_block_classes(0).is_err());
    assert_eq!(lce(8192).block_rows(100), 100);
    assert_eq!(lce(8192).with_block_rows(7).unwrap().block_rows(100), 7);
}

#[test]
fn bits_do_not_depend_on_the_number_of_threads() {
    let p = problem(50, 140, 2100, 4, Some(-100));
    let config = LabelSmoothingConfig::new()
        .with_adaptive(0.2)
        .with_ignore_index(Some(-100));
    let lce = LinearCrossEntropy::new(config.init(p.k).unwrap(), p.d)
        .unwrap()
        .with_block_rows(16)
        .unwrap();
    let blocked = lce.clone().with_block_classes(1024).unwrap();
    let filtered = LinearCrossEntropy::new(
        LabelSmoothingConfig::pytorch(0.1)
            .with_ignore_index(Some(-100))
            .init(p.k)
            .unwrap(),
        p.d,
    )
    .unwrap()
    .with_block_rows(16)
    .unwrap()
    .with_gradient_filter(1e-6)
    .unwrap();
    let run = |lce: &LinearCrossEntropy, threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| fused(lce, &p, true, GradOutput::ONE))
    };
    for (lce, threads) in [
        (&lce, 2),
        (&lce, 3),
        (&lce, 5),
        (&blocked, 2),
        (&blocked, 3),
        (&filtered, 3),
    ] {
        let one = run(lce, 1);
        let other = run(lce, threads);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one.loss), bits(&other.loss), "{threads} threads: loss");
        assert_eq!(bits(&one.gx), bits(&other.gx), "{threads} threads: grad x");
        assert_eq!(bits(&one.gw), bits(&other.gw), "{threads} threads: grad W");
        assert_eq!(bits(&one.gb), bits(&other.gb), "{threads} threads: grad b");
    }
}

#[test]
fn loss_alone_equals_the_loss_with_gradients() {
    let p = problem(33, 20, 700, 5, None);
    for reduction in [Reduction::None, Reduction::Mean, Reduction::MeanNonZero] {
        let lce = LinearCrossEntropy::new(
            LabelSmoothingConfig::new()
                .with_smoothing(0.1)
                .with_reduction(reduction)
                .init(p.k)
                .unwrap(),
            p.d,
        )
        .unwrap()
        .with_block_rows(10)
        .unwrap();
        let inputs = LinearInputs {
            x: &p.x,
            weight: &p.w,
            bias: None,
        };
        let alone = lce.loss(inputs, &p.labels).unwrap();
        assert_eq!(
            alone.as_slice(),
            &fused(&lce, &p, false, GradOutput::ONE).loss[..],
            "{reduction:?}"
        );
    }
}

#[test]
fn bad_input_is_a_typed_error_before_any_write() {
    let p = problem(4, 3, 5, 6, None);
    let lce = LinearCrossEntropy::new(LabelSmoothingConfig::new().init(5).unwrap(), 3).unwrap();
    let ok = LinearInputs {
        x: &p.x,
        weight: &p.w,
        bias: None,
    };
    let mut gx = vec![7.0f32; 12];
    let err = |inputs: LinearInputs<'_>, labels: &[i64], gx: &mut [f32]| {
        lce.loss_and_grad(
            inputs,
            labels,
            GradOutput::ONE,
            LinearGrads {
                x: Some(gx),
                ..Default::default()
            },
        )
        .unwrap_err()
    };
    match err(LinearInputs { x: &p.x[..11], ..ok }, &p.labels, &mut gx) {
        LossError::Length { what: "x", got: 11, .. } => {}
        e => panic!("{e}"),
    }
    match err(
        LinearInputs {
            weight: &p.w[..14],
            ..ok
        },
        &p.labels,
        &mut gx,
    ) {
        LossError::Length {
            what: "weight",
            got: 14,
            ..
        } => {}
        e => panic!("{e}"),
    }
    match err(
        LinearInputs {
            bias: Some(&p.b[..4]),
            ..ok
        },
        &p.labels,
        &mut gx,
    ) {
        LossError::Length {
            what: "bias", got: 4, ..
        } => {}
        e => panic!("{e}"),
    }
    match err(ok, &[0, 1, 5, 2], &mut gx) {
        LossError::LabelOutOfRange {
            row: 2, label: 5, k: 5, ..
        } => {}
        e => panic!("{e}"),
    }
    match err(ok, &p.labels, &mut gx[..11]) {
        LossError::Length {
            what: "grad x",
            got: 11,
            ..
        } => {}
        e => panic!("{e}"),
    }
    assert!(gx.iter().all(|&v| v == 7.0), "nothing written on an error");
    let per_row = lce.loss_and_grad(ok, &p.labels, GradOutput::PerRow(&[1.0; 4]), LinearGrads::default());
    assert!(matches!(per_row, Err(LossError::GradOutputShape { .. })));
    assert!(LinearCrossEntropy::new(LabelSmoothingConfig::new().init(5).unwrap(), 0).is_err());
    assert!(lce.clone().with_block_rows(0).is_err());
}

#[test]
fn empty_batches_give_zero_gradients() {
    let lce = LinearCrossEntropy::new(LabelSmoothingConfig::new().init(5).unwrap(), 3).unwrap();
    let w = vec![1.0f32; 15];
    let (mut gw, mut gb) = (vec![9.0f32; 15], vec![9.0f32; 5]);
    let inputs = LinearInputs {
        x: &[],
        weight: &w,
        bias: None,
    };
    let grads = LinearGrads {
        x: Some(&mut []),
        weight: Some(&mut gw),
        bias: Some(&mut gb),
    };
    let loss = lce.loss_and_grad(inputs, &[], GradOutput::ONE, grads).unwrap();
    assert_eq!(loss, Loss::Scalar(0.0));
    assert!(gw.iter().chain(&gb).all(|&v| v == 0.0));
}

/// The loss of `x W^T + b` in f64 through the reference, as a function of the three parameters.
fn loss64(
    config: &LabelSmoothingConfig,
    labels: &[i64],
    dims: (usize, usize, usize),
    x: &[f64],
    w: &[f64],
    b: &[f64],
) -> f64 {
    let (n, d, k) = dims;
    let z: Vec<f64> = (0..n * k)
        .map(|ik| {
            let (i, c) = (ik / k, ik % k);
            b[c] + (0..d).map(|e| x[i * d + e] * w[c * d + e]).sum::<f64>()
        })
        .collect();
    reference::loss_and_grad(config, k, &z, RefTargets::Labels(labels), None)
        .unwrap()
        .loss[0]
}

#[test]
fn gradients_match_central_finite_differences() {
    // Fixed smoothing only: adaptive smoothing holds alpha * p constant in its gradient by definition, so its
    // gradient is not the derivative of its loss (the composition test covers it).
    let (n, d, k) = (6, 4, 7);
    let p = problem(n, d, k, 31, Some(-100));
    let weights: Vec<f32> = (0..k).map(|c| 0.5 + 0.25 * c as f32).collect();
    for config in [
        LabelSmoothingConfig::pytorch(0.1).with_weights(Some(weights.clone())),
        LabelSmoothingConfig::pytorch(0.2)
            .with_spread(Spread::Others)
            .with_reduction(Reduction::Sum),
        LabelSmoothingConfig::pytorch(0.0),
    ] {
        let lce = LinearCrossEntropy::new(config.clone().init(k).unwrap(), d)
            .unwrap()
            .with_block_rows(4)
            .unwrap();
        let got = fused(&lce, &p, true, GradOutput::ONE);
        let (x, w, b): (Vec<f64>, Vec<f64>, Vec<f64>) = (
            p.x.iter().map(|&v| v as f64).collect(),
            p.w.iter().map(|&v| v as f64).collect(),
            p.b.iter().map(|&v| v as f64).collect(),
        );
        let f = |x: &[f64], w: &[f64], b: &[f64]| loss64(&config, &p.labels, (n, d, k), x, w, b);
        let h = 1e-6;
        let fd = |which: usize, i: usize| {
            let (mut xp, mut wp, mut bp) = (x.clone(), w.clone(), b.clone());
            let (mut xm, mut wm, mut bm) = (x.clone(), w.clone(), b.clone());
            match which {
                0 => (xp[i] += h, xm[i] -= h),
                1 => (wp[i] += h, wm[i] -= h),
                _ => (bp[i] += h, bm[i] -= h),
            };
            (f(&xp, &wp, &bp) - f(&xm, &wm, &bm)) / (2.0 * h)
        };
        for (which, name, grad) in [(0, "x", &got.gx), (1, "W", &got.gw), (2, "b", &got.gb)] {
            for (i, &g) in grad.iter().enumerate() {
                let want = fd(which, i);
                assert!(
                    (g as f64 - want).abs() <= 1e-5 + 1e-4 * want.abs(),
                    "{config:?}: grad {name}[{i}] {g} vs finite difference {want}"
                );
            }
        }
    }
}
