//! Sequence logits `[B, T, K]` (and any rank) against the core crate's kernel on the same rows, and `?` on both
//! error types inside a `candle_nn::Module`-style forward.

use candle_core::{DType, Device, Module, Tensor, Var};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
use label_smoothing_candle::{label_smoothing_cross_entropy, Error, LabelSmoothingCrossEntropy, LossError};
use label_smoothing_candle::{Reduction, Spread};

fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut r = label_smoothing::rng::SplitMix64::new(seed);
    (0..len).map(|_| (r.next_f64() as f32 * 2.0 - 1.0) * scale).collect()
}

/// The core kernel on the flattened rows: per-row losses (or the reduced loss) and the gradient of their sum.
fn core(cfg: &LabelSmoothingConfig, k: usize, logits: &[f32], targets: Targets<'_>) -> (Vec<f32>, Vec<f32>) {
    let loss_fn = cfg.clone().init(k).unwrap();
    let mut grad = vec![0.0f32; logits.len()];
    let n = logits.len() / k;
    let ones = vec![1.0f32; n];
    let go = match cfg.reduction {
        Reduction::None => GradOutput::PerRow(&ones),
        _ => GradOutput::ONE,
    };
    let loss = loss_fn.loss_and_grad(logits, targets, go, &mut grad).unwrap();
    (loss.as_slice().to_vec(), grad)
}

/// Values (flattened) and shape.
type Flat = (Vec<f32>, Vec<usize>);

/// The loss and the gradient of its sum through candle's backprop, each flattened with its shape, on either path.
fn candle(cfg: &LabelSmoothingConfig, x: &Var, targets: &Tensor, fused: bool) -> Result<(Flat, Flat), Error> {
    let k = *x.dims().last().unwrap();
    let loss_fn = LabelSmoothingCrossEntropy::new(cfg.clone(), k)?;
    let loss = if fused {
        loss_fn.forward_fused(x, targets)?
    } else {
        loss_fn.forward_composed(x, targets)?
    };
    let grads = loss.sum_all()?.backward()?;
    let g = grads.get(x).expect("the logits have a gradient");
    Ok((
        (loss.flatten_all()?.to_vec1()?, loss.dims().to_vec()),
        (g.flatten_all()?.to_vec1()?, g.dims().to_vec()),
    ))
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn sequence_logits_are_their_rows() {
    let dev = Device::Cpu;
    let (b, t, k) = (3, 5, 11);
    let logits = values(1, b * t * k, 4.0);
    let mut labels: Vec<i64> = values(2, b * t, 1.0)
        .iter()
        .map(|v| ((v + 1.0) * 5.49) as i64)
        .collect();
    // Padding positions, as a language model's batch has them.
    labels[4] = -100;
    labels[14] = -100;
    for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::MeanNonZero] {
        for spread in [Spread::Others, Spread::Uniform] {
            let cfg = LabelSmoothingConfig::new()
                .with_smoothing(0.1)
                .with_spread(spread)
                .with_reduction(reduction)
                .with_ignore_index(Some(-100));
            let (want_loss, want_grad) = core(&cfg, k, &logits, Targets::Labels(&labels));
            let x = Var::from_slice(&logits, (b, t, k), &dev).unwrap();
            let y = Tensor::from_slice(&labels, (b, t), &dev).unwrap();
            for fused in [true, false] {
                let what = format!("{reduction:?} {spread:?} fused={fused}");
                let ((loss, loss_dims), (grad, grad_dims)) = candle(&cfg, &x, &y, fused).unwrap();
                let want_dims: Vec<usize> = if reduction == Reduction::None {
                    vec![b, t]
                } else {
                    vec![]
                };
                assert_eq!(loss_dims, want_dims, "{what}: loss shape");
                assert_eq!(grad_dims, vec![b, t, k], "{what}: gradient shape");
                close(&format!("{what} loss"), &loss, &want_loss, 1e-5);
                close(&format!("{what} grad"), &grad, &want_grad, 1e-5);
            }
        }
    }
}

#[test]
fn soft_targets_rank_four_and_rank_one() {
    let dev = Device::Cpu;
    let (dims, k) = ([2usize, 2, 3], 7);
    let n: usize = dims.iter().product();
    let logits = values(3, n * k, 3.0);
    let raw: Vec<f32> = values(4, n * k, 1.0).iter().map(|v| v + 1.0).collect();
    let soft: Vec<f32> = raw
        .chunks(k)
        .flat_map(|r| {
            let s: f32 = r.iter().sum();
            r.iter().map(move |v| v / s)
        })
        .collect();
    let cfg = LabelSmoothingConfig::new()
        .with_smoothing(0.2)
        .with_reduction(Reduction::Sum);
    let (want_loss, want_grad) = core(&cfg, k, &logits, Targets::Soft(&soft));
    let x = Var::from_slice(&logits, (2, 2, 3, k), &dev).unwrap();
    let t = Tensor::from_slice(&soft, (2, 2, 3, k), &dev).unwrap();
    for fused in [true, false] {
        let ((loss, _), (grad, grad_dims)) = candle(&cfg, &x, &t, fused).unwrap();
        assert_eq!(grad_dims, vec![2, 2, 3, k]);
        close("soft loss", &loss, &want_loss, 1e-5);
        close("soft grad", &grad, &want_grad, 1e-5);
    }

    // One row of logits `[K]` with a scalar label, as `F.cross_entropy` takes it.
    let row = &logits[..k];
    let cfg = LabelSmoothingConfig::pytorch(0.1);
    let (want_loss, want_grad) = core(&cfg, k, row, Targets::Labels(&[3]));
    let x = Var::from_slice(row, k, &dev).unwrap();
    let y = Tensor::new(3u32, &dev).unwrap();
    for fused in [true, false] {
        let ((loss, loss_dims), (grad, grad_dims)) = candle(&cfg, &x, &y, fused).unwrap();
        assert_eq!((loss_dims, grad_dims), (vec![], vec![k]));
        close("row loss", &loss, &want_loss, 1e-5);
        close("row grad", &grad, &want_grad, 1e-5);
    }
}

#[test]
fn non_contiguous_sequence_logits() {
    let dev = Device::Cpu;
    let (b, t, k) = (2, 3, 5);
    let logits = values(5, b * t * k, 2.0);
    let labels: Vec<u32> = vec![0, 4, 2, 1, 3, 3];
    // [T, B, K] in memory, read as [B, T, K] through a transpose.
    let stored = Var::from_slice(&logits, (t, b, k), &dev).unwrap();
    let x = stored.transpose(0, 1).unwrap();
    assert!(!x.is_contiguous());
    let rows: Vec<f32> = x.contiguous().unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let labels64: Vec<i64> = labels.iter().map(|&y| y as i64).collect();
    let cfg = LabelSmoothingConfig::fast_reid(0.1, 0.2);
    let (want_loss, _) = core(&cfg, k, &rows, Targets::Labels(&labels64));
    let y = Tensor::from_slice(&labels, (b, t), &dev).unwrap();
    let loss = label_smoothing_cross_entropy(&x, &y, &cfg).unwrap();
    close("transposed loss", &[loss.to_scalar::<f32>().unwrap()], &want_loss, 1e-5);
    // The gradient reaches the stored [T, B, K] variable, transposed back.
    let g = loss.backward().unwrap();
    assert_eq!(g.get(&stored).unwrap().dims(), &[t, b, k]);
}

#[test]
fn shapes_that_do_not_match_are_typed_errors() {
    let dev = Device::Cpu;
    let loss_fn = LabelSmoothingCrossEntropy::new(LabelSmoothingConfig::pytorch(0.1), 4).unwrap();
    let x = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
    let flat_labels = Tensor::zeros(6, DType::U32, &dev).unwrap();
    match loss_fn.forward(&x, &flat_labels) {
        Err(Error::Shape {
            what: "labels", got, ..
        }) => assert_eq!(got, vec![6]),
        other => panic!("[6] labels for [2, 3, 4] logits: {other:?}"),
    }
    let classes_first = Tensor::zeros((4, 2, 3), DType::F32, &dev).unwrap();
    match loss_fn.forward(&classes_first, &Tensor::zeros((4, 2), DType::U32, &dev).unwrap()) {
        Err(Error::Shape {
            what: "logits", got, ..
        }) => assert_eq!(got, vec![4, 2, 3]),
        other => panic!("[4, 2, 3] logits for 4 classes: {other:?}"),
    }
}

/// A language-model head in the style of a candle model: `forward` returns `candle_core::Result`, and both the
/// layer's errors and the loss's go through `?`.
struct Head {
    proj: candle_nn::Linear,
    loss: LabelSmoothingCrossEntropy,
}

impl Head {
    fn loss(&self, hidden: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
        let logits = self.proj.forward(hidden)?;
        let loss = self.loss.forward(&logits, labels)?;
        loss.affine(1.0, 0.0)
    }
}

#[test]
fn question_mark_in_a_module_forward_keeps_the_typed_error() {
    let dev = Device::Cpu;
    let (b, t, d, k) = (2, 3, 4, 6);
    let w = Tensor::from_slice(&values(6, k * d, 0.5), (k, d), &dev).unwrap();
    let head = Head {
        proj: candle_nn::Linear::new(w, None),
        loss: LabelSmoothingCrossEntropy::new(LabelSmoothingConfig::pytorch(0.1), k).unwrap(),
    };
    let hidden = Tensor::from_slice(&values(7, b * t * d, 1.0), (b, t, d), &dev).unwrap();
    let good = Tensor::from_slice(&[0u32, 1, 2, 3, 4, 5], (b, t), &dev).unwrap();
    assert!(head.loss(&hidden, &good).unwrap().to_scalar::<f32>().unwrap() > 0.0);

    let bad = Tensor::from_slice(&[0u32, 1, 2, 9, 4, 5], (b, t), &dev).unwrap();
    let e = head.loss(&hidden, &bad).unwrap_err();
    match Error::downcast(&e) {
        Some(Error::Loss(LossError::LabelOutOfRange {
            row: 3, label: 9, k: 6, ..
        })) => {}
        other => panic!("expected the label error of row 3 inside {e}: {other:?}"),
    }
    assert!(e.to_string().contains("row 3"), "{e}");

    // A candle error from the layer (a hidden size that does not match) comes back as candle's own.
    let wrong = Tensor::zeros((b, t, d + 1), DType::F32, &dev).unwrap();
    let e = head.loss(&wrong, &good).unwrap_err();
    assert!(Error::downcast(&e).is_none(), "{e}");
}
