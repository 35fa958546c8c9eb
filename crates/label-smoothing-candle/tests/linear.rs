//! `linear_cross_entropy` (the fused custom op) against candle's own composition,
//! `label_smoothing_cross_entropy(&x.matmul(&w.t())?.broadcast_add(&b)?, &labels, &config)` (PyTorch:
//! `F.cross_entropy(F.linear(x, W, b), y, label_smoothing=...)`), through candle's backprop.

use candle_core::{Device, Tensor, Var};
use label_smoothing::rng::SplitMix64;
use label_smoothing::{LabelSmoothingConfig, Reduction};
use label_smoothing_candle::{
    label_smoothing_cross_entropy, linear_cross_entropy, linear_cross_entropy_composed, Error, LossError,
};

struct Outputs {
    loss: Vec<f32>,
    gx: Vec<f32>,
    gw: Vec<f32>,
    gb: Option<Vec<f32>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Fused,
    Composed,
    CandleMatmul,
}

fn run(path: Path, (n, d, k): (usize, usize, usize), bias: bool, cfg: &LabelSmoothingConfig, per_row: bool) -> Outputs {
    let dev = Device::Cpu;
    let mut rng = SplitMix64::new(7);
    let mut draw = |len: usize, s: f64| (0..len).map(|_| (rng.normal() * s) as f32).collect::<Vec<_>>();
    let x = Var::from_vec(draw(n * d, 1.0), (n, d), &dev).unwrap();
    let w = Var::from_vec(draw(k * d, 0.4), (k, d), &dev).unwrap();
    let b = Var::from_vec(draw(k, 0.5), k, &dev).unwrap();
    let labels: Vec<i64> = (0..n as i64).map(|i| (i * 7 + 3) % k as i64).collect();
    let labels = Tensor::new(labels.as_slice(), &dev).unwrap();
    let bt = bias.then(|| b.as_tensor());
    let loss = match path {
        Path::Fused => linear_cross_entropy(&x, &w, bt, &labels, cfg).unwrap(),
        Path::Composed => linear_cross_entropy_composed(&x, &w, bt, &labels, cfg).unwrap(),
        Path::CandleMatmul => {
            let mut logits = x.matmul(&w.t().unwrap()).unwrap();
            if bias {
                logits = logits.broadcast_add(&b).unwrap();
            }
            label_smoothing_cross_entropy(&logits, &labels, cfg).unwrap()
        }
    };
    let objective = if per_row {
        let g: Vec<f32> = (0..n).map(|i| 0.5 + (i % 4) as f32 * 0.5).collect();
        (loss.clone() * Tensor::from_vec(g, n, &dev).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
    } else {
        (loss.clone() * 2.5).unwrap().sum_all().unwrap()
    };
    let grads = objective.backward().unwrap();
    let get = |v: &Var| grads.get(v).map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    Outputs {
        loss: loss.flatten_all().unwrap().to_vec1().unwrap(),
        gx: get(&x).unwrap(),
        gw: get(&w).unwrap(),
        gb: if bias { get(&b) } else { None },
    }
}

fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn matches_candles_matmul_followed_by_the_loss() {
    let shape = (24, 33, 700);
    for cfg in [
        LabelSmoothingConfig::pytorch(0.1),
        LabelSmoothingConfig::fast_reid(0.1, 0.2),
        LabelSmoothingConfig::fast_reid(-1.0, 0.2),
        LabelSmoothingConfig::new()
            .with_smoothing(0.2)
            .with_reduction(Reduction::Sum),
        LabelSmoothingConfig::new()
            .with_smoothing(0.1)
            .with_reduction(Reduction::None),
        // z-loss and soft-capping (the candle path: the composed loss on candle's matmul).
        LabelSmoothingConfig::pytorch(0.1).with_z_loss(1e-3).with_softcap(3.0),
        LabelSmoothingConfig::fast_reid(-1.0, 0.2).with_softcap(2.0),
        LabelSmoothingConfig::new()
            .with_smoothing(0.1)
            .with_z_loss(0.01)
            .with_reduction(Reduction::None),
    ] {
        for bias in [true, false] {
            let per_row = cfg.reduction == Reduction::None;
            let want = run(Path::CandleMatmul, shape, bias, &cfg, per_row);
            for path in [Path::Fused, Path::Composed] {
                let got = run(path, shape, bias, &cfg, per_row);
                let name = format!("{cfg:?} bias {bias}");
                close(&format!("{name}: loss"), &got.loss, &want.loss, 1e-5);
                close(&format!("{name}: grad x"), &got.gx, &want.gx, 2e-5);
                close(&format!("{name}: grad w"), &got.gw, &want.gw, 2e-5);
                match (&got.gb, &want.gb) {
                    (Some(a), Some(b)) => close(&format!("{name}: grad b"), a, b, 2e-5),
                    (None, None) => {}
                    _ => panic!("{name}: bias gradient present in one path only"),
                }
            }
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((3, 4), candle_core::DType::F32, &dev).unwrap();
    let w = Tensor::zeros((5, 4), candle_core::DType::F32, &dev).unwrap();
    let cfg = LabelSmoothingConfig::pytorch(0.1);
    let labels = Tensor::new(&[0u32, 5, 1], &dev).unwrap();
    match linear_cross_entropy(&x, &w, None, &labels, &cfg) {
        Err(Error::Loss(LossError::LabelOutOfRange {
            row: 1, label: 5, k: 5, ..
        })) => {}
        other => panic!("{other:?}"),
    }
    let labels = Tensor::new(&[0u32, 1, 2], &dev).unwrap();
    let w3 = Tensor::zeros((5, 3), candle_core::DType::F32, &dev).unwrap();
    match linear_cross_entropy(&x, &w3, None, &labels, &cfg) {
        Err(Error::Shape { what: "w", .. }) => {}
        other => panic!("{other:?}"),
    }
    let b = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
    match linear_cross_entropy(&x, &w, Some(&b), &labels, &cfg) {
        Err(Error::Shape { what: "b", .. }) => {}
        other => panic!("{other:?}"),
    }
}
