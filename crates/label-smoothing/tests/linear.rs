//! The fused linear loss against the float64 composition `x W^T + b` -> SPEC.md's loss and gradient
//! (`reference::loss_and_grad`) -> `grad_x = G W`, `grad_W = G^T x`, `grad_b = sum_rows G`, all in f64; and its
//! bits for any number of threads.
//!
//! PyTorch expression of the composition: `F.cross_entropy(F.linear(x, W, b), y, weight, ignore_index,
//! reduction, label_smoothing)` with `x`, `W`, `b` requiring gradients (for the spread `uniform`).

use label_smoothing::linear::{self, LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::reference::{self, RefTargets};
use label_smoothing::rng::SplitMix64 as Rng;
use label_smoothing::{GradOutput, LabelSmoothingConfig, Loss, LossError, Reduction, Spread};

struct Problem {
    n: usize,
    d: usize,
    k: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    labels: Vec<i64>,
}

fn problem(n: usize, d: usize, k: usize, seed: u64, ignore: Option<i64>) -> Problem {
    let mut rng = Rng::new(seed);
    let x = (0..n * d).map(|_| rng.normal() as f32).collect();
    let w = (0..k * d).map(|_| rng.normal() as f32 * 0.3).collect();
    let b = (0..k).map(|_| rng.normal() as f32 * 0.5).collect();
    let labels = (0..n)
        .map(|i| match ignore {
            Some(ig) if i % 5 == 3 => ig,
            _ => rng.below(k as u64) as i64,
        })
        .collect();
    Problem {
        n,
        d,
        k,
        x,
        w,
        b,
        labels,
    }
}

struct Expected {
    loss: Vec<f64>,
    gx: Vec<f64>,
    gw: Vec<f64>,
    gb: Vec<f64>,
    // Sums of |terms| of each gradient entry, which bound the f32 rounding of the products.
    gx_mag: Vec<f64>,
    gw_mag: Vec<f64>,
}

fn expected(p: &Problem, config: &LabelSmoothingConfig, bias: bool, grad_output: Option<&[f64]>) -> Expected {
    let (n, d, k) = (p.n, p.d, p.k);
    let mut z = vec![0.0f64; n * k];
    for i in 0..n {
        for c in 0..k {
            let mut s = if bias { p.b[c] as f64 } else { 0.0 };
            for e in 0..d {
                s += p.x[i * d + e] as f64 * p.w[c * d + e] as f64;
            }
            z[i * k + c] = s;
        }
    }
    let r = reference::loss_and_grad(config, k, &z, RefTargets::Labels(&p.labels), grad_output).unwrap();
    let g = &r.grad;
    let (mut gx, mut gx_mag) = (vec![0.0; n * d], vec![0.0; n * d]);
    let (mut gw, mut gw_mag) = (vec![0.0; k * d], vec![0.0; k * d]);
    let mut gb = vec![0.0; k];
    // The f32 gradient of the logits is off by a few ulps of its row's scale (`s_i = sum_c |G_ic|`, about
    // twice the row's coefficient), and the label's entry is a difference of O(1) values: each product term
    // may carry an error of eps * s_i times its other factor.
    let s: Vec<f64> = (0..n)
        .map(|i| g[i * k..(i + 1) * k].iter().map(|v| v.abs()).sum())
        .collect();
    let w_max: Vec<f64> = (0..d)
        .map(|e| (0..k).map(|c| (p.w[c * d + e] as f64).abs()).fold(0.0, f64::max))
        .collect();
    for i in 0..n {
        for e in 0..d {
            gx_mag[i * d + e] += s[i] * w_max[e];
        }
    }
    let x_s: Vec<f64> = (0..d)
        .map(|e| (0..n).map(|i| s[i] * (p.x[i * d + e] as f64).abs()).sum())
        .collect();
    for c in 0..k {
        for e in 0..d {
            gw_mag[c * d + e] += x_s[e];
        }
    }
    for i in 0..n {
        for c in 0..k {
            let gic = g[i * k + c];
            gb[c] += gic;
            for e in 0..d {
                let (xv, wv) = (p.x[i * d + e] as f64, p.w[c * d + e] as f64);
                gx[i * d + e] += gic * wv;
                gx_mag[i * d + e] += (gic * wv).abs();
                gw[c * d + e] += gic * xv;
                gw_mag[c * d + e] += (gic * xv).abs();
            }
        }
    }
    Expected {
        loss: r.loss,
        gx,
        gw,
        gb,
        gx_mag,
        gw_mag,
    }
}

struct Got {
    loss: Vec<f32>,
    gx: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

fn fused(lce: &LinearCrossEntropy, p: &Problem, bias: bool, grad_output: GradOutput<'_>) -> Got {
    let (mut gx, mut gw, mut gb) = (
        vec![f32::NAN; p.n * p.d],
        vec![f32::NAN; p.k * p.d],
        vec![f32::NAN; p.k],
    );
    let inputs = LinearInputs {
        x: &p.x,
        weight: &p.w,
        bias: bias.then_some(&p.b[..]),
    };
    let grads = LinearGrads {
        x: Some(&mut gx),
        weight: Some(&mut gw),
        bias: Some(&mut gb),
    };
    let loss = lce.loss_and_grad(inputs, &p.labels, grad_output, grads).unwrap();
    Got {
        loss: loss.as_slice().to_vec(),
        gx,
        gw,
        gb,
    }
}

/// f32 products over `K` (or `N`) terms: the error of an entry is bounded by a small multiple of the unit
/// roundoff times the number of terms times the sum of the terms' magnitudes; 1e-6 absolute as SPEC.md.
fn close(what: &str, got: &[f32], want: &[f64], mag: Option<&[f64]>, terms: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let m = mag.map_or(w.abs(), |m| m[i]);
        let tol = 1e-6 + 4.0 * f32::EPSILON as f64 * (terms as f64).sqrt() * m;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tolerance {tol:e})"
        );
    }
}

fn check(p: &Problem, config: LabelSmoothingConfig, bias: bool, block: usize, per_row_go: bool) {
    check_blocks(p, config, bias, block, None, per_row_go)
}

/// [`check`] with blocks of `classes` classes too.
fn check_blocks(
    p: &Problem,
    config: LabelSmoothingConfig,
    bias: bool,
    block: usize,
    classes: Option<usize>,
    per_row_go: bool,
) {
    let mut lce = LinearCrossEntropy::new(config.clone().init(p.k).unwrap(), p.d)
        .unwrap()
        .with_block_rows(block)
        .unwrap();
    if let Some(c) = classes {
        lce = lce.with_block_classes(c).unwrap();
    }
    let go: Vec<f32> = (0..p.n).map(|i| 0.5 + (i % 3) as f32 * 0.25).collect();
    let go64: Vec<f64> = go.iter().map(|&v| v as f64).collect();
    let (grad_output, go_ref) = if per_row_go {
        (GradOutput::PerRow(&go), Some(&go64[..]))
    } else {
        (GradOutput::ONE, None)
    };
    let want = expected(p, &config, bias, go_ref);
    let got = fused(&lce, p, bias, grad_output);
    let name = format!("{config:?} bias {bias} block {block} classes {classes:?}");
    for (i, (&g, &w)) in got.loss.iter().zip(&want.loss).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * w.abs() + 1e-6,
            "{name}: loss[{i}] {g} vs {w}"
        );
    }
    close(&format!("{name}: grad x"), &got.gx, &want.gx, Some(&want.gx_mag), p.k);
    close(&format!("{name}: grad W"), &got.gw, &want.gw, Some(&want.gw_mag), p.n);
    close(&format!("{name}: grad b"), &got.gb, &want.gb, None, p.n);
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
                    for (i, (&g, &w)) in got.loss.iter().zip(&want.loss).enumerate() {
                        assert!(
                            (g as f64 - w).abs() <= 1e-5 * w.abs() + 1e-6,
                            "{name}: loss[{i}] {g} vs {w}"
                        );
                    }
                    close(&format!("{name}: grad x"), &got.gx, &want.gx, Some(&want.gx_mag), p.k);
                    close(&format!("{name}: grad W"), &got.gw, &want.gw, Some(&want.gw_mag), p.n);
                    close(&format!("{name}: grad b"), &got.gb, &want.gb, None, p.n);
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
