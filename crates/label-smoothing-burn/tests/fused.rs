//! The fused kernel inside burn (Flex and NdArray, with and without autodiff) against the composition of burn operations
//! and against the core crate, on random problems of the whole family; its gradients by central finite
//! differences; bad input; and a short training run that takes the same steps through either path.

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor};
use label_smoothing::rng::SplitMix64;
use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
use label_smoothing_burn::{LabelSmoothingCrossEntropyConfig, LossError, Reduction, Spread};

/// burn's two CPU backends, with autodiff.
#[allow(deprecated)]
fn devices() -> [Device; 2] {
    [Device::flex().autodiff(), Device::ndarray().autodiff()]
}

/// The same without autodiff.
#[allow(deprecated)]
fn plain_devices() -> [Device; 2] {
    [Device::flex(), Device::ndarray()]
}

fn uniform(r: &mut SplitMix64, len: usize, scale: f64) -> Vec<f32> {
    (0..len).map(|_| ((r.next_f64() * 2.0 - 1.0) * scale) as f32).collect()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Path {
    Fused,
    Composed,
}

/// The loss values and d(sum_i g_i loss_i)/dlogits through burn's autodiff on one path.
fn burn_run(
    dev: &Device,
    cfg: &LabelSmoothingConfig,
    (n, k): (usize, usize),
    logits: &[f32],
    targets: Targets<'_>,
    upstream: &[f32],
    path: Path,
) -> Result<(Vec<f32>, Vec<f32>), LossError> {
    let dev = dev.clone();
    let loss_fn = LabelSmoothingCrossEntropyConfig::from(cfg.clone()).init(k, &dev)?;
    let x = Tensor::<1>::from_floats(logits, &dev).reshape([n, k]).require_grad();
    assert!(
        loss_fn.uses_fused_kernel(&x),
        "f32 NdArray logits with autodiff take the kernel"
    );
    let loss = match (targets, path) {
        (Targets::Labels(y), Path::Fused) => loss_fn.forward(x.clone(), Tensor::<1, Int>::from_ints(y, &dev))?,
        (Targets::Labels(y), Path::Composed) => {
            loss_fn.forward_composed(x.clone(), Tensor::<1, Int>::from_ints(y, &dev))?
        }
        (Targets::Soft(t), Path::Fused) => {
            loss_fn.forward_soft(x.clone(), Tensor::<1>::from_floats(t, &dev).reshape([n, k]))?
        }
        (Targets::Soft(t), Path::Composed) => {
            loss_fn.forward_soft_composed(x.clone(), Tensor::<1>::from_floats(t, &dev).reshape([n, k]))?
        }
    };
    let values: Vec<f32> = loss.to_data().iter::<f32>().collect();
    let weights = Tensor::<1>::from_floats(&upstream[..values.len()], &dev);
    let grads = (loss * weights).sum().backward();
    Ok((values, x.grad(&grads).unwrap().to_data().iter::<f32>().collect()))
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn fused_equals_the_composition_and_the_core_crate() {
    let mut r = SplitMix64::new(2026);
    let mut cases = 0;
    for (n, k) in [(7, 5), (33, 64), (4, 2500)] {
        for spread in [Spread::Others, Spread::Uniform] {
            for reduction in [Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::MeanNonZero] {
                for variant in ["plain", "weights+ignore", "adaptive", "soft"] {
                    let logits = uniform(&mut r, n * k, 4.0);
                    let mut labels: Vec<i64> = (0..n).map(|_| r.below(k as u64) as i64).collect();
                    let mut cfg = LabelSmoothingConfig::new()
                        .with_smoothing(0.15)
                        .with_spread(spread)
                        .with_reduction(reduction);
                    match variant {
                        "weights+ignore" => {
                            let w: Vec<f32> = (0..k).map(|_| r.next_f64() as f32 * 2.0).collect();
                            cfg = cfg.with_weights(Some(w)).with_ignore_index(Some(-100));
                            labels[0] = -100;
                        }
                        "adaptive" => cfg = cfg.with_adaptive(0.3),
                        _ => {}
                    }
                    let soft: Vec<f32> = if variant == "soft" {
                        let raw: Vec<f32> = (0..n * k).map(|_| r.next_f64() as f32).collect();
                        raw.chunks(k)
                            .flat_map(|row| {
                                let s: f32 = row.iter().sum();
                                row.iter().map(move |v| v / s)
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let targets = if variant == "soft" {
                        Targets::Soft(&soft)
                    } else {
                        Targets::Labels(&labels)
                    };
                    let upstream = uniform(&mut r, n, 1.0);
                    let what = format!("{n}x{k} {spread:?} {reduction:?} {variant}");

                    // The core crate: the loss and d(sum_i g_i loss_i)/dz (one upstream value unless per row).
                    let core = cfg.clone().init(k).unwrap();
                    let mut want_grad = vec![0.0f32; n * k];
                    let go = match reduction {
                        Reduction::None => GradOutput::PerRow(&upstream),
                        _ => GradOutput::Scalar(upstream[0]),
                    };
                    let want = core.loss_and_grad(&logits, targets, go, &mut want_grad).unwrap();

                    for dev in devices() {
                        let what = format!("{what} on {dev:?}");
                        let run = |path| burn_run(&dev, &cfg, (n, k), &logits, targets, &upstream, path).unwrap();
                        let ((fl, fg), (cl, cg)) = (run(Path::Fused), run(Path::Composed));
                        // The fused path is the core kernel: the same loss bits, the gradient up to the one
                        // multiplication by the upstream gradient.
                        assert_eq!(fl, want.as_slice(), "{what}: fused loss vs core");
                        close(&format!("{what} fused grad vs core"), &fg, &want_grad, 1e-6);
                        // The composition sums 2500 f32 terms per row with the backend's own reductions (Flex's
                        // lose about 3e-5 relative there); the kernel accumulates in f64.
                        close(&format!("{what} fused vs composed loss"), &fl, &cl, 1e-4);
                        close(&format!("{what} fused vs composed grad"), &fg, &cg, 2e-5);
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 3 * 2 * 4 * 4 * 2);
}

/// Central differences of the fused loss in f32 (h = 1e-2 on logits of order 1): the truncation error is
/// about h^2 and the rounding error about 1e-7 / h.
#[test]
fn fused_gradients_match_finite_differences() {
    let mut r = SplitMix64::new(7);
    let (n, k) = (3, 6);
    let configs = [
        LabelSmoothingConfig::pytorch(0.1),
        LabelSmoothingConfig::fast_reid(0.1, 0.2),
        LabelSmoothingConfig::new()
            .with_smoothing(0.2)
            .with_weights(Some(vec![1.0, 0.5, 2.0, 1.0, 0.0, 1.5])),
    ];
    for (dev, cfg) in devices()
        .iter()
        .flat_map(|d| configs.iter().map(move |c| (d.clone(), c)))
    {
        let logits = uniform(&mut r, n * k, 1.5);
        let labels: Vec<i64> = vec![0, 3, 5];
        let loss_fn = LabelSmoothingCrossEntropyConfig::from(cfg.clone())
            .init(k, &dev)
            .unwrap();
        let value = |z: &[f32]| -> f64 {
            let x = Tensor::<1>::from_floats(z, &dev).reshape([n, k]);
            let l = loss_fn
                .forward(x, Tensor::<1, Int>::from_ints(labels.as_slice(), &dev))
                .unwrap();
            l.into_scalar::<f32>() as f64
        };
        let x = Tensor::<1>::from_floats(logits.as_slice(), &dev)
            .reshape([n, k])
            .require_grad();
        let loss = loss_fn
            .forward(x.clone(), Tensor::<1, Int>::from_ints(labels.as_slice(), &dev))
            .unwrap();
        let grad: Vec<f32> = x.grad(&loss.backward()).unwrap().to_data().iter::<f32>().collect();
        let h = 1e-2f32;
        for i in 0..n * k {
            let (mut up, mut down) = (logits.clone(), logits.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (value(&up) - value(&down)) / (2.0 * h as f64);
            assert!((grad[i] as f64 - fd).abs() < 2e-3, "{cfg:?}: [{i}] {} vs {fd}", grad[i]);
        }
    }
}

#[test]
fn without_autodiff_the_kernel_gives_the_loss() {
    for dev in plain_devices() {
        kernel_gives_the_loss_without_autodiff(&dev);
    }
}

fn kernel_gives_the_loss_without_autodiff(dev: &Device) {
    let dev = dev.clone();
    let mut r = SplitMix64::new(3);
    let (n, k) = (10, 12);
    let logits = uniform(&mut r, n * k, 3.0);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % k as i64).collect();
    let cfg = LabelSmoothingConfig::fast_reid(0.1, 0.2);
    let loss_fn = LabelSmoothingCrossEntropyConfig::from(cfg.clone())
        .init(k, &dev)
        .unwrap();
    let x = Tensor::<1>::from_floats(logits.as_slice(), &dev).reshape([n, k]);
    assert!(loss_fn.uses_fused_kernel(&x));
    let got = loss_fn
        .forward(x.clone(), Tensor::<1, Int>::from_ints(labels.as_slice(), &dev))
        .unwrap()
        .into_scalar::<f32>();
    let want = cfg.init(k).unwrap().loss(&logits, Targets::Labels(&labels)).unwrap();
    assert_eq!(got, want.scalar().unwrap());
    // f64 logits are the composition's.
    let x64 = x.cast(burn::tensor::DType::F64);
    assert!(!loss_fn.uses_fused_kernel(&x64));
}

#[test]
fn bad_input_is_a_typed_error_on_the_fused_path() {
    for dev in devices() {
        bad_input_on(&dev);
    }
}

fn bad_input_on(dev: &Device) {
    let dev = dev.clone();
    let loss_fn = LabelSmoothingCrossEntropyConfig::pytorch(0.1).init(4, &dev).unwrap();
    let x = Tensor::<2>::zeros([3, 4], &dev).require_grad();
    match loss_fn.forward(x.clone(), Tensor::<1, Int>::from_ints([0, 9, 1], &dev)) {
        Err(LossError::LabelOutOfRange { row: 1, label: 9, .. }) => {}
        other => panic!("label 9 of 4 classes: {other:?}"),
    }
    let soft = Tensor::<2>::ones([3, 4], &dev);
    match loss_fn.forward_soft(x, soft) {
        Err(LossError::SoftTargetSum { row: 0, .. }) => {}
        other => panic!("soft rows summing to 4: {other:?}"),
    }
}

#[derive(Module, Debug)]
struct Mlp {
    hidden: burn::nn::Linear,
    out: burn::nn::Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(burn::tensor::activation::relu(self.hidden.forward(x)))
    }
}

/// Twenty SGD steps of a small MLP on a seeded problem take the same losses through either path.
#[test]
fn training_takes_the_same_steps_through_either_path() {
    for dev in devices() {
        held_gradient_on(&dev);
    }
}

fn held_gradient_on(dev: &Device) {
    let dev = dev.clone();
    let (n, d, k) = (64, 10, 7);
    let mut r = SplitMix64::new(11);
    let xs = uniform(&mut r, n * d, 1.0);
    let ys: Vec<i64> = (0..n).map(|i| (i % k) as i64).collect();
    let run = |path: Path| -> Vec<f32> {
        dev.seed(5);
        let mut model = Mlp {
            hidden: burn::nn::LinearConfig::new(d, 16).init(&dev),
            out: burn::nn::LinearConfig::new(16, k).init(&dev),
        };
        let loss_fn = LabelSmoothingCrossEntropyConfig::fast_reid(0.1, 0.2)
            .init(k, &dev)
            .unwrap();
        let mut optim = SgdConfig::new().init();
        let mut losses = Vec::new();
        for _ in 0..20 {
            let x = Tensor::<1>::from_floats(xs.as_slice(), &dev).reshape([n, d]);
            let y = Tensor::<1, Int>::from_ints(ys.as_slice(), &dev);
            let logits = model.forward(x);
            let loss = match path {
                Path::Fused => loss_fn.forward(logits, y).unwrap(),
                Path::Composed => loss_fn.forward_composed(logits, y).unwrap(),
            };
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.5, model, grads);
        }
        losses
    };
    let (fused, composed) = (run(Path::Fused), run(Path::Composed));
    assert!(fused[19] < fused[0] - 0.05, "the loss falls: {fused:?}");
    close("losses per step", &fused, &composed, 1e-4);
}

/// The gradient buffer kept between calls is reused only once burn has let go of it: a gradient the caller still
/// holds is never written over by the next call.
#[test]
fn a_held_gradient_is_not_overwritten_by_the_next_call() {
    for dev in devices() {
        training_on(&dev);
    }
}

fn training_on(dev: &Device) {
    let dev = dev.clone();
    let (n, k) = (16, 40);
    let mut r = SplitMix64::new(12);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % k as i64).collect();
    let loss_fn = LabelSmoothingCrossEntropyConfig::pytorch(0.1).init(k, &dev).unwrap();
    let core = LabelSmoothingConfig::pytorch(0.1).init(k).unwrap();
    let grad_of = |logits: &[f32]| {
        let x = Tensor::<1>::from_floats(logits, &dev).reshape([n, k]).require_grad();
        let loss = loss_fn
            .forward(x.clone(), Tensor::<1, Int>::from_ints(labels.as_slice(), &dev))
            .unwrap();
        x.grad(&loss.backward()).unwrap()
    };
    let want = |logits: &[f32]| {
        let mut g = vec![0.0f32; n * k];
        core.loss_and_grad(logits, Targets::Labels(&labels), GradOutput::ONE, &mut g)
            .unwrap();
        g
    };
    let (a, b, c) = (
        uniform(&mut r, n * k, 2.0),
        uniform(&mut r, n * k, 2.0),
        uniform(&mut r, n * k, 2.0),
    );
    let held = grad_of(&a);
    let second: Vec<f32> = grad_of(&b).to_data().iter::<f32>().collect();
    assert_eq!(
        held.to_data().iter::<f32>().collect::<Vec<_>>(),
        want(&a),
        "the held gradient is intact"
    );
    assert_eq!(second, want(&b));
    drop(held);
    // Now nothing holds the buffer: the next call may reuse it, and is right either way.
    let third: Vec<f32> = grad_of(&c).to_data().iter::<f32>().collect();
    assert_eq!(third, want(&c));
    label_smoothing_burn::empty_gradient_cache();
}
