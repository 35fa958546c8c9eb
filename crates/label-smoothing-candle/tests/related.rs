//! The related losses through candle's backprop: the gradient candle computes equals the core crate's, and scales
//! with the upstream gradient.

use candle_core::{Device, Tensor, Var};
use label_smoothing::confidence_penalty::confidence_penalty_loss;
use label_smoothing::distillation::{distillation_loss, DistillationConfig};
use label_smoothing::label_relaxation::label_relaxation_loss;
use label_smoothing::mixup::{mixed_loss, MixedLabels};
use label_smoothing::online::OnlineLabelSmoothing;
use label_smoothing::rng::SplitMix64;
use label_smoothing::{LabelSmoothingConfig, Loss, Reduction};
use label_smoothing_candle::related::{
    composed, confidence_penalty, distillation, label_relaxation, mixed_cross_entropy, online_label_smoothing,
};
use label_smoothing_candle::{Error, LossError};

const N: usize = 9;
const K: usize = 5;

fn data(seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut r = SplitMix64::new(seed);
    (
        (0..N * K).map(|_| r.uniform(-3.0, 3.0) as f32).collect(),
        (0..N).map(|_| r.below(K as u64) as i64).collect(),
    )
}

type CoreLoss<'a> = Box<dyn Fn(&[f32], Option<&mut [f32]>) -> f32 + 'a>;
type CandleLoss<'a> = Box<dyn Fn(&Tensor) -> Result<Tensor, Error> + 'a>;

/// Candle's value and gradient of `3 * loss` against the core's, times 3.
fn check(name: &str, z: &[f32], core: CoreLoss<'_>, candle: CandleLoss<'_>) {
    check_with(name, z, core, candle, true)
}

/// As [`check`]; the value bit for bit when `exact`, else within SPEC.md's relative `1e-5`.
fn check_with(name: &str, z: &[f32], core: CoreLoss<'_>, candle: CandleLoss<'_>, exact: bool) {
    let x = Var::from_slice(z, (N, K), &Device::Cpu).unwrap();
    let loss = candle(x.as_tensor()).unwrap();
    let value = loss.to_scalar::<f32>().unwrap();
    let grad = (loss * 3.0)
        .unwrap()
        .backward()
        .unwrap()
        .get(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut want = vec![0.0f32; z.len()];
    let want_value = core(z, Some(&mut want));
    if exact {
        assert_eq!(value, want_value, "{name}: value");
    } else {
        assert!(
            (value - want_value).abs() <= 1e-5 * want_value.abs().max(1.0),
            "{name}: value {value} vs {want_value}"
        );
    }
    for (i, (g, w)) in grad.iter().zip(&want).enumerate() {
        assert!(
            (g - 3.0 * w).abs() <= 1e-6 * (1.0 + w.abs()),
            "{name}[{i}]: {g} vs 3 * {w}"
        );
    }
}

fn scalar(l: Loss) -> f32 {
    l.scalar().unwrap()
}

#[test]
fn every_related_loss_backpropagates_the_core_gradient() {
    let (z, y) = data(1);
    let (t, b) = data(2);
    let dev = Device::Cpu;
    let yt = Tensor::from_slice(&y, N, &dev).unwrap();
    let bt = Tensor::from_slice(&b, N, &dev).unwrap();
    let teacher = Tensor::from_slice(&t, (N, K), &dev).unwrap();
    let ce = LabelSmoothingConfig::new().with_smoothing(0.1).init(K).unwrap();

    check(
        "mixup",
        &z,
        Box::new(|z, g| {
            scalar(
                mixed_loss(
                    &ce,
                    z,
                    MixedLabels {
                        a: &y,
                        b: &b,
                        lambda: &[0.3],
                    },
                    g,
                )
                .unwrap(),
            )
        }),
        Box::new(|x| mixed_cross_entropy(x, &yt, &bt, 0.3, &ce)),
    );
    let kd = DistillationConfig::new(0.7, 3.0);
    check(
        "distillation",
        &z,
        Box::new(|z, g| distillation_loss(&ce, kd, z, &t, &y, g).unwrap()),
        Box::new(|x| distillation(x, &teacher, &yt, &ce, kd)),
    );
    check(
        "confidence penalty",
        &z,
        Box::new(|z, g| scalar(confidence_penalty_loss(&ce, 0.2, z, &y, g).unwrap())),
        Box::new(|x| confidence_penalty(x, &yt, &ce, 0.2)),
    );
    check(
        "label relaxation",
        &z,
        Box::new(|z, g| scalar(label_relaxation_loss(0.1, Reduction::Mean, K, z, &y, g).unwrap())),
        Box::new(|x| label_relaxation(x, &yt, 0.1)),
    );
    let mut ols = OnlineLabelSmoothing::new(K).unwrap();
    ols.observe(&t, &b).unwrap();
    ols.finish_epoch();
    check(
        "online label smoothing",
        &z,
        Box::new(|z, g| scalar(ols.loss(z, &y, Reduction::Mean, g).unwrap())),
        Box::new(|x| online_label_smoothing(x, &yt, &ols)),
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, K), candle_core::DType::F32, &dev).unwrap();
    let y = Tensor::new(&[0u32, 9], &dev).unwrap();
    match label_relaxation(&x, &y, 0.1) {
        Err(Error::Loss(LossError::LabelOutOfRange { row: 1, label: 9, .. })) => {}
        other => panic!("{other:?}"),
    }
    let ce = LabelSmoothingConfig::new().init(K).unwrap();
    let ok = Tensor::new(&[0u32, 1], &dev).unwrap();
    match distillation(&x, &x, &ok, &ce, DistillationConfig::new(0.5, 0.0)) {
        Err(Error::Loss(LossError::InvalidParameter {
            name: "temperature", ..
        })) => {}
        other => panic!("{other:?}"),
    }
}

/// The definitions composed from candle ops (the path for CUDA and Metal), run on the CPU: values and autograd
/// gradients against the core crate's kernels, over several reductions.
#[test]
fn composed_related_losses_match_the_kernels() {
    let (mut z, y) = data(3);
    let (t, b) = data(4);
    // Row 0 confident in its label: accepted by label relaxation (zero loss and gradient).
    z[y[0] as usize] = 12.0;
    let dev = Device::Cpu;
    let yt = Tensor::from_slice(&y, N, &dev).unwrap();
    let bt = Tensor::from_slice(&b, N, &dev).unwrap();
    let teacher = Tensor::from_slice(&t, (N, K), &dev).unwrap();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::MeanNonZero] {
        for spread in [label_smoothing::Spread::Others, label_smoothing::Spread::Uniform] {
            let ce = LabelSmoothingConfig::new()
                .with_smoothing(0.1)
                .with_spread(spread)
                .with_reduction(reduction)
                .init(K)
                .unwrap();
            let name = |loss: &str| format!("composed {loss}, {reduction:?}, {spread:?}");
            check_with(
                &name("mixup"),
                &z,
                Box::new(|z, g| {
                    let labels = MixedLabels {
                        a: &y,
                        b: &b,
                        lambda: &[0.3],
                    };
                    scalar(mixed_loss(&ce, z, labels, g).unwrap())
                }),
                Box::new(|x| composed::mixed_cross_entropy(x, &yt, &bt, 0.3, &ce)),
                false,
            );
            if reduction != Reduction::MeanNonZero {
                check_with(
                    &name("confidence penalty"),
                    &z,
                    Box::new(|z, g| scalar(confidence_penalty_loss(&ce, 0.2, z, &y, g).unwrap())),
                    Box::new(|x| composed::confidence_penalty(x, &yt, &ce, 0.2)),
                    false,
                );
            }
            if reduction == Reduction::Mean {
                let kd = DistillationConfig::new(0.7, 3.0);
                check_with(
                    &name("distillation"),
                    &z,
                    Box::new(|z, g| distillation_loss(&ce, kd, z, &t, &y, g).unwrap()),
                    Box::new(|x| composed::distillation(x, &teacher, &yt, &ce, kd)),
                    false,
                );
            }
        }
    }
    for alpha in [0.0, 0.1, 0.5] {
        check_with(
            &format!("composed label relaxation {alpha}"),
            &z,
            Box::new(|z, g| scalar(label_relaxation_loss(alpha, Reduction::Mean, K, z, &y, g).unwrap())),
            Box::new(|x| composed::label_relaxation(x, &yt, alpha)),
            false,
        );
    }
    let mut ols = OnlineLabelSmoothing::new(K).unwrap();
    ols.observe(&t, &b).unwrap();
    ols.finish_epoch();
    check_with(
        "composed online label smoothing",
        &z,
        Box::new(|z, g| scalar(ols.loss(z, &y, Reduction::Mean, g).unwrap())),
        Box::new(|x| composed::online_label_smoothing(x, &yt, &ols)),
        false,
    );
    // The same typed errors as the kernels.
    let x = Tensor::zeros((2, K), candle_core::DType::F32, &dev).unwrap();
    let bad = Tensor::new(&[0u32, 9], &dev).unwrap();
    match composed::label_relaxation(&x, &bad, 0.1) {
        Err(Error::Loss(LossError::LabelOutOfRange { row: 1, label: 9, .. })) => {}
        other => panic!("{other:?}"),
    }
    let ce = LabelSmoothingConfig::new().init(K).unwrap();
    let ok = Tensor::new(&[0u32, 1], &dev).unwrap();
    match composed::distillation(&x, &x, &ok, &ce, DistillationConfig::new(0.5, 0.0)) {
        Err(Error::Loss(LossError::InvalidParameter {
            name: "temperature", ..
        })) => {}
        other => panic!("{other:?}"),
    }
    match composed::mixed_cross_entropy(&x, &ok, &bad, 0.5, &ce) {
        Err(Error::Loss(LossError::LabelOutOfRange { row: 1, label: 9, .. })) => {}
        other => panic!("{other:?}"),
    }
}
