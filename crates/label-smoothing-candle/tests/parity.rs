//! The candle loss (fused custom op and composed fallback) against the golden cases computed with PyTorch,
//! against the core crate's kernel, and against `candle_nn::loss::cross_entropy`.

use candle_core::{DType, Device, Tensor, Var};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
use label_smoothing_candle::{label_smoothing_cross_entropy, Error, LabelSmoothingCrossEntropy, LossError};
use label_smoothing_candle::{Reduction, Smoothing, Spread};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Fused,
    Composed,
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Loss values and d(sum_i g_i loss_i)/dlogits through candle's backprop.
fn run(
    path: Path,
    cfg: &LabelSmoothingConfig,
    (n, k): (usize, usize),
    logits: &[f32],
    targets: &Tensor,
    grad_output: Option<&[f32]>,
) -> Result<(Vec<f32>, Vec<f32>), Error> {
    let dev = Device::Cpu;
    let loss_fn = LabelSmoothingCrossEntropy::new(cfg.clone(), k)?;
    let x = Var::from_slice(logits, (n, k), &dev)?;
    let loss = match path {
        Path::Fused => loss_fn.forward_fused(&x, targets)?,
        Path::Composed => loss_fn.forward_composed(&x, targets)?,
    };
    let values = loss.flatten_all()?.to_vec1::<f32>()?;
    let objective = match grad_output {
        Some(g) => (loss * Tensor::from_slice(g, g.len(), &dev)?)?.sum_all()?,
        None => loss.sum_all()?,
    };
    let grads = objective.backward()?;
    let grad = grads.get(&x).expect("gradient").flatten_all()?.to_vec1::<f32>()?;
    Ok((values, grad))
}

fn close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= abs.max(rel * w.abs()), "{what}[{i}]: {g} vs {w} (error {err:e})");
    }
}

fn config_of(o: &Value) -> LabelSmoothingConfig {
    LabelSmoothingConfig {
        spread: o["spread"].as_str().unwrap().parse().unwrap(),
        smoothing: match o["alpha"].as_f64() {
            Some(a) => Smoothing::Adaptive { alpha: a as f32 },
            None => Smoothing::Fixed(o["eps"].as_f64().unwrap() as f32),
        },
        reduction: o["reduction"].as_str().unwrap().parse().unwrap(),
        ignore_index: o["ignore_index"].as_i64(),
        weights: o["weights"]
            .as_array()
            .map(|w| w.iter().map(|x| x.as_f64().unwrap() as f32).collect()),
        z_loss: o["z_loss"].as_f64().unwrap_or(0.0) as f32,
        softcap: o["softcap"].as_f64().map(|c| c as f32),
    }
}

fn golden_cases(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    file["cases"].as_array().unwrap().clone()
}

#[test]
fn golden_cases_values_and_gradients_on_both_paths() {
    let mut cases = golden_cases("cross_entropy_cases.json");
    assert!(cases.len() > 100);
    // z-loss and soft-capping (scripts/gen_logit_option_cases.py: Liger-Kernel's formulas and SPEC.md).
    let logit_options = golden_cases("logit_option_cases.json");
    assert_eq!(logit_options.len(), 66);
    cases.extend(logit_options);
    let cases = &cases;
    for path in [Path::Fused, Path::Composed] {
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let (n, k) = (
                case["n"].as_u64().unwrap() as usize,
                case["k"].as_u64().unwrap() as usize,
            );
            let cfg = config_of(&case["options"]);
            let logits: Vec<f32> = floats(&case["logits"]).iter().map(|&x| x as f32).collect();
            let targets = match case["targets"].as_array() {
                Some(a) => {
                    let y: Vec<i64> = a.iter().map(|x| x.as_i64().unwrap()).collect();
                    Tensor::from_vec(y, n, &Device::Cpu).unwrap()
                }
                None => {
                    let t: Vec<f32> = floats(&case["soft_targets"]).iter().map(|&x| x as f32).collect();
                    Tensor::from_vec(t, (n, k), &Device::Cpu).unwrap()
                }
            };
            let go: Option<Vec<f32>> = case["grad_output"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_f64().unwrap() as f32).collect());
            let (loss, grad) = run(path, &cfg, (n, k), &logits, &targets, go.as_deref())
                .unwrap_or_else(|e| panic!("{path:?} {name}: {e}"));
            let want_loss = match &case["expected_loss"] {
                Value::Array(_) => floats(&case["expected_loss"]),
                v => vec![v.as_f64().unwrap()],
            };
            // SPEC.md: 1e-5 relative on the loss, 1e-6 absolute on the gradient. The composed path is a chain
            // of f32 ops: where logits of 1e4 leave log_softmax an f32 spacing of 1e-3, its loss is held to that.
            let huge = logits.iter().any(|x| x.abs() >= 1e3);
            let loss_abs = if path == Path::Composed && huge { 1e-2 } else { 1e-6 };
            close(&format!("{path:?} {name}: loss"), &loss, &want_loss, 1e-5, loss_abs);
            let want_grad = floats(&case["expected_grad"]);
            let scale = want_grad.iter().fold(1.0f64, |m, g| m.max(g.abs()));
            close(&format!("{path:?} {name}: grad"), &grad, &want_grad, 0.0, 1e-6 * scale);
        }
    }
}

/// Uniform draws in `[0, 1)` for test inputs (the core crate's SplitMix64).
fn rng(seed: u64) -> impl FnMut() -> f64 {
    let mut g = label_smoothing::rng::SplitMix64::new(seed);
    move || g.next_f64()
}

fn configs() -> Vec<LabelSmoothingConfig> {
    let mut out = Vec::new();
    for spread in [Spread::Others, Spread::Uniform] {
        for smoothing in [
            Smoothing::Fixed(0.0),
            Smoothing::Fixed(0.1),
            Smoothing::Adaptive { alpha: 0.2 },
        ] {
            for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::MeanNonZero] {
                out.push(LabelSmoothingConfig {
                    spread,
                    smoothing,
                    reduction,
                    ignore_index: Some(-100),
                    weights: None,
                    ..Default::default()
                });
            }
        }
    }
    let weights = vec![0.5, 1.0, 2.0, 1.5, 0.25, 1.0, 3.0];
    out.push(LabelSmoothingConfig::pytorch(0.1).with_weights(Some(weights.clone())));
    // z-loss and soft-capping, alone and with weights, adaptive smoothing and every reduction.
    out.push(LabelSmoothingConfig::pytorch(0.1).with_z_loss(0.01).with_softcap(3.0));
    out.push(
        LabelSmoothingConfig::pytorch(0.1)
            .with_weights(Some(weights))
            .with_z_loss(0.02),
    );
    for reduction in [Reduction::None, Reduction::Sum, Reduction::MeanNonZero] {
        out.push(
            LabelSmoothingConfig::new()
                .with_adaptive(0.2)
                .with_softcap(2.0)
                .with_z_loss(1e-3)
                .with_reduction(reduction)
                .with_ignore_index(Some(-100)),
        );
    }
    out
}

/// The fused path is the core kernel: the same bits as calling it directly, loss and gradient.
#[test]
fn fused_path_equals_the_core_kernel_bitwise() {
    let (n, k) = (37, 7);
    let mut r = rng(7);
    let logits: Vec<f32> = (0..n * k).map(|_| (r() * 8.0 - 4.0) as f32).collect();
    let labels: Vec<i64> = (0..n)
        .map(|i| if i % 9 == 4 { -100 } else { (r() * k as f64) as i64 })
        .collect();
    let upstream: Vec<f32> = (0..n).map(|_| (r() * 2.0 - 0.5) as f32).collect();
    let y = Tensor::from_slice(&labels, n, &Device::Cpu).unwrap();
    for cfg in configs() {
        let per_row = cfg.reduction == Reduction::None;
        let go = per_row.then_some(upstream.as_slice());
        let (loss, grad) = run(Path::Fused, &cfg, (n, k), &logits, &y, go).unwrap();
        let core = cfg.clone().init(k).unwrap();
        let mut want_grad = vec![0.0f32; n * k];
        let g = match go {
            Some(g) => GradOutput::PerRow(g),
            None => GradOutput::ONE,
        };
        let want = core
            .loss_and_grad(&logits, Targets::Labels(&labels), g, &mut want_grad)
            .unwrap();
        assert_eq!(loss, want.as_slice(), "{cfg:?}: loss");
        assert_eq!(grad, want_grad, "{cfg:?}: grad");
    }
}

/// The composed fallback (what CUDA and Metal run) agrees with the fused kernel to f32 accuracy.
#[test]
fn composed_path_agrees_with_fused_on_random_inputs() {
    let (n, k) = (29, 7);
    let mut r = rng(11);
    let logits: Vec<f32> = (0..n * k).map(|_| (r() * 10.0 - 5.0) as f32).collect();
    let labels: Vec<u32> = (0..n).map(|_| (r() * k as f64) as u32).collect();
    let y = Tensor::from_slice(&labels, n, &Device::Cpu).unwrap();
    for cfg in configs() {
        let (lf, gf) = run(Path::Fused, &cfg, (n, k), &logits, &y, None).unwrap();
        let (lc, gc) = run(Path::Composed, &cfg, (n, k), &logits, &y, None).unwrap();
        let lf: Vec<f64> = lf.iter().map(|&x| x as f64).collect();
        let gf: Vec<f64> = gf.iter().map(|&x| x as f64).collect();
        close(&format!("{cfg:?}: loss"), &lc, &lf, 1e-5, 1e-6);
        close(&format!("{cfg:?}: grad"), &gc, &gf, 0.0, 1e-6);
    }
}

/// With no smoothing this is candle-nn's cross-entropy: `candle_nn::loss::cross_entropy(logits, labels)`,
/// a mean of `-log_softmax(x)[y]`.
#[test]
fn without_smoothing_it_is_candle_nn_cross_entropy() {
    let (n, k) = (64, 10);
    let mut r = rng(3);
    let logits: Vec<f32> = (0..n * k).map(|_| (r() * 6.0 - 3.0) as f32).collect();
    let labels: Vec<u32> = (0..n).map(|_| (r() * k as f64) as u32).collect();
    let dev = Device::Cpu;
    let y = Tensor::from_slice(&labels, n, &dev).unwrap();
    let x = Var::from_slice(&logits, (n, k), &dev).unwrap();
    let theirs = candle_nn::loss::cross_entropy(&x, &y).unwrap();
    let their_grad = theirs
        .backward()
        .unwrap()
        .get(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for cfg in [
        LabelSmoothingConfig::pytorch(0.0),
        LabelSmoothingConfig::fast_reid(0.0, 0.2),
    ] {
        for path in [Path::Fused, Path::Composed] {
            let (ours, grad) = run(path, &cfg, (n, k), &logits, &y, None).unwrap();
            let t = theirs.to_scalar::<f32>().unwrap() as f64;
            close(&format!("{path:?}: loss"), &ours, &[t], 1e-6, 0.0);
            let tg: Vec<f64> = their_grad.iter().map(|&x| x as f64).collect();
            close(&format!("{path:?}: grad"), &grad, &tg, 0.0, 1e-7);
        }
    }
}

#[test]
fn any_layout_and_half_precision_logits() {
    let (n, k) = (6, 5);
    let dev = Device::Cpu;
    let mut r = rng(5);
    let logits: Vec<f32> = (0..n * k).map(|_| (r() * 4.0 - 2.0) as f32).collect();
    let y = Tensor::new(&[0u32, 4, 2, 1, 3, 0], &dev).unwrap();
    let cfg = LabelSmoothingConfig::fast_reid(0.1, 0.2);
    let contiguous = Tensor::from_slice(&logits, (n, k), &dev).unwrap();
    let want = label_smoothing_cross_entropy(&contiguous, &y, &cfg)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    // The same logits stored transposed: [K, N] viewed as [N, K].
    let transposed = contiguous.t().unwrap().contiguous().unwrap().t().unwrap();
    assert!(!transposed.is_contiguous());
    let got = label_smoothing_cross_entropy(&transposed, &y, &cfg)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(got, want);
    // bf16 logits: the loss in bf16 (computed in f32), the gradient in bf16.
    let x = Var::from_tensor(&contiguous.to_dtype(DType::BF16).unwrap()).unwrap();
    let loss = label_smoothing_cross_entropy(&x, &y, &cfg).unwrap();
    assert_eq!(loss.dtype(), DType::BF16);
    let l = loss.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap();
    assert!((l - want).abs() <= 0.01 * want.abs(), "{l} vs {want}");
    let g = loss.backward().unwrap().get(&x).unwrap().clone();
    assert_eq!(g.dtype(), DType::BF16);
    assert_eq!(g.dims(), &[n, k]);
}

#[test]
fn bad_inputs_are_typed_errors_on_both_paths() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
    let loss_fn = LabelSmoothingCrossEntropy::new(LabelSmoothingConfig::pytorch(0.1), 4).unwrap();
    type Forward = fn(&LabelSmoothingCrossEntropy, &Tensor, &Tensor) -> Result<Tensor, Error>;
    let paths: [(&str, Forward); 2] = [
        ("fused", LabelSmoothingCrossEntropy::forward_fused),
        ("composed", LabelSmoothingCrossEntropy::forward_composed),
    ];
    for (name, forward) in paths {
        let y = Tensor::new(&[0i64, 7, 1], &dev).unwrap();
        match forward(&loss_fn, &x, &y) {
            Err(Error::Loss(LossError::LabelOutOfRange {
                row: 1, label: 7, k: 4, ..
            })) => {}
            other => panic!("{name}: label 7 of 4 classes: {other:?}"),
        }
        let short = Tensor::new(&[0u32, 1], &dev).unwrap();
        match forward(&loss_fn, &x, &short) {
            Err(Error::Shape {
                what: "labels", got, ..
            }) => assert_eq!(got, vec![2]),
            other => panic!("{name}: 2 labels for 3 rows: {other:?}"),
        }
        let wide = Tensor::zeros((3, 5), DType::F32, &dev).unwrap();
        match forward(&loss_fn, &wide, &Tensor::new(&[0u32, 1, 2], &dev).unwrap()) {
            Err(Error::Shape {
                what: "logits", got, ..
            }) => assert_eq!(got, vec![3, 5]),
            other => panic!("{name}: [3, 5] logits for 4 classes: {other:?}"),
        }
        let soft = Tensor::new(
            &[[0.5f32, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]],
            &dev,
        )
        .unwrap();
        match forward(&loss_fn, &x, &soft) {
            Err(Error::Loss(LossError::SoftTargetSum { row: 0, .. })) => {}
            other => panic!("{name}: soft row summing to 1.5: {other:?}"),
        }
        let float_labels = Tensor::new(&[0.0f32, 1.0, 2.0], &dev).unwrap();
        match forward(&loss_fn, &x, &float_labels) {
            Err(Error::Shape {
                what: "soft targets", ..
            }) => {}
            other => panic!("{name}: float [N] targets: {other:?}"),
        }
    }
    assert!(matches!(
        LabelSmoothingCrossEntropy::new(LabelSmoothingConfig::pytorch(1.5), 4),
        Err(Error::Loss(LossError::InvalidSmoothing { .. }))
    ));
}

/// Evaluation (no tracked input) takes the forward-only kernel and gives the same value.
#[test]
fn untracked_logits_give_the_same_loss() {
    let dev = Device::Cpu;
    let mut r = rng(9);
    let logits: Vec<f32> = (0..40 * 9).map(|_| (r() * 4.0 - 2.0) as f32).collect();
    let y: Vec<u32> = (0..40).map(|_| (r() * 9.0) as u32).collect();
    let y = Tensor::from_slice(&y, 40, &dev).unwrap();
    let cfg = LabelSmoothingConfig::new().with_smoothing(0.2);
    let plain = Tensor::from_slice(&logits, (40, 9), &dev).unwrap();
    let var = Var::from_slice(&logits, (40, 9), &dev).unwrap();
    let a = label_smoothing_cross_entropy(&plain, &y, &cfg)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let b = label_smoothing_cross_entropy(&var, &y, &cfg)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(a, b);
}
