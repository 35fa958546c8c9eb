//! The fused linear classifier loss ([`label_smoothing::linear`]) as a candle custom op: the loss of
//! `x W^T (+ b)` and the gradients of `x`, `W` and `b`, with the `[N, K]` logits never materialised.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor};
use label_smoothing::linear::{LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Loss, Reduction};

use crate::error_slot::ErrorSlot;
use crate::{labels_to_host, Error, Result};

/// The loss of a linear classifier, `label_smoothing_cross_entropy(x.matmul(w.t()) + b, labels, config)`,
/// without the `[N, K]` logits.
///
/// - `x`: hidden states `[N, D]`; `w`: the classifier's weight `[K, D]` (as `candle_nn::Linear` stores it);
///   `b`: its bias `[K]`, if any; float tensors (computed in f32).
/// - `labels`: `[N]`, an integer dtype; each in `[0, K)` or the configured ignore index. Soft targets are not
///   supported here.
///
/// Returns a scalar (or `[N]` for reduction `none`) in f32 that backpropagates to `x`, `w` and `b`. On the CPU
/// it is the core's fused [`LinearCrossEntropy`]: when a gradient is wanted and the reduction gives a scalar,
/// the forward pass computes the gradients too and the backward pass scales them by the upstream gradient (three
/// matrix products per step, as the unfused composition has); for reduction `none` the backward pass computes
/// them with the per-row upstream gradient. On other devices it is [`linear_cross_entropy_composed`].
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use label_smoothing::LabelSmoothingConfig;
/// use label_smoothing_candle::linear_cross_entropy;
///
/// let dev = Device::Cpu;
/// let x = Var::from_vec(vec![0.5f32, -1.0, 2.0, 0.0, 1.0, 1.5], (2, 3), &dev)?;
/// let w = Var::from_vec((0..12).map(|i| (i as f32 * 0.7).sin()).collect::<Vec<_>>(), (4, 3), &dev)?;
/// let labels = Tensor::new(&[3u32, 0], &dev)?;
/// let loss = linear_cross_entropy(&x, &w, None, &labels, &LabelSmoothingConfig::pytorch(0.1))?;
/// let grads = loss.backward()?;
/// assert_eq!(grads.get(&w).expect("W has a gradient").dims(), &[4, 3]);
/// # Ok::<(), label_smoothing_candle::Error>(())
/// ```
pub fn linear_cross_entropy(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    labels: &Tensor,
    config: &LabelSmoothingConfig,
) -> Result<Tensor> {
    let (_, _, k) = check_shapes(x, w, b, labels)?;
    let on_cpu = [Some(x), Some(w), b, Some(labels)]
        .into_iter()
        .flatten()
        .all(|t| t.device().is_cpu());
    if !on_cpu {
        return linear_cross_entropy_composed(x, w, b, labels, config);
    }
    let d = x.dims()[1];
    let lce = LinearCrossEntropy::new(config.clone().init(k)?, d)?;
    let f32c = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.contiguous()?) };
    let (x, w, b) = (f32c(x)?, f32c(w)?, b.map(f32c).transpose()?);
    let track = x.track_op() || w.track_op() || b.as_ref().is_some_and(|b| b.track_op());
    let error = ErrorSlot::default();
    let op = LinearOp {
        keep: track && config.reduction != Reduction::None,
        lce,
        labels: labels_to_host(labels)?,
        kept: Arc::default(),
        error: error.clone(),
    };
    let result = match (&b, track) {
        (Some(b), true) => x.apply_op3(&w, b, op),
        (Some(b), false) => x.apply_op3_no_bwd(&w, b, &op),
        (None, true) => x.apply_op2(&w, op),
        (None, false) => x.apply_op2_no_bwd(&w, &op),
    };
    result.map_err(|e| error.resolve(e))
}

/// As [`linear_cross_entropy`], composed from candle ops on any device: `x.matmul(w.t())`, the bias added,
/// then [`crate::label_smoothing_cross_entropy`]. Materialises the logits.
pub fn linear_cross_entropy_composed(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    labels: &Tensor,
    config: &LabelSmoothingConfig,
) -> Result<Tensor> {
    check_shapes(x, w, b, labels)?;
    let mut logits = x.matmul(&w.t()?)?;
    if let Some(b) = b {
        logits = logits.broadcast_add(b)?;
    }
    crate::label_smoothing_cross_entropy(&logits, labels, config)
}

/// `(N, D, K)` of the arguments, or an error naming the one of the wrong shape or type.
fn check_shapes(x: &Tensor, w: &Tensor, b: Option<&Tensor>, labels: &Tensor) -> Result<(usize, usize, usize)> {
    let shape = |what, expected: String, t: &Tensor| Error::Shape {
        what,
        expected,
        got: t.dims().to_vec(),
    };
    let [n, d] = *x.dims() else {
        return Err(shape("x", "[N, D]".into(), x));
    };
    let [k, wd] = *w.dims() else {
        return Err(shape("w", format!("[K, {d}]"), w));
    };
    if wd != d {
        return Err(shape("w", format!("[K, {d}] (D = {d} as in x)"), w));
    }
    if let Some(b) = b {
        if b.dims() != [k] {
            return Err(shape("b", format!("[{k}] (K = {k} as in w)"), b));
        }
    }
    if labels.dims() != [n] {
        return Err(shape("labels", format!("[{n}] (N = {n} as in x)"), labels));
    }
    for (what, t) in [("x", Some(x)), ("w", Some(w)), ("b", b)] {
        if let Some(t) = t.filter(|t| !t.dtype().is_float()) {
            return Err(Error::DType {
                what,
                dtype: t.dtype(),
                expected: "a float dtype",
            });
        }
    }
    if labels.dtype().is_float() {
        return Err(Error::DType {
            what: "labels",
            dtype: labels.dtype(),
            expected: "an integer dtype (soft targets are not supported by the linear loss)",
        });
    }
    Ok((n, d, k))
}

/// The gradients at upstream gradient 1, kept by the forward pass for the backward pass.
struct Kept {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

struct LinearOp {
    lce: LinearCrossEntropy,
    labels: Vec<i64>,
    /// Whether the forward pass computes the gradients too (a gradient is wanted and the loss is a scalar).
    keep: bool,
    kept: Arc<Mutex<Option<Kept>>>,
    error: ErrorSlot,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: expected f32 storage, got {:?}", s.dtype());
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{what}: the fused linear loss needs a contiguous tensor"),
    }
}

impl LinearOp {
    fn fwd(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> candle_core::Result<(CpuStorage, Shape)> {
        let inputs = LinearInputs { x, weight: w, bias: b };
        let loss = if self.keep {
            let (d, k) = (self.lce.hidden(), self.lce.loss_fn().num_classes());
            let mut kept = Kept {
                x: vec![0.0; x.len()],
                w: vec![0.0; k * d],
                b: vec![0.0; if b.is_some() { k } else { 0 }],
            };
            let grads = LinearGrads {
                x: Some(&mut kept.x),
                weight: Some(&mut kept.w),
                bias: b.is_some().then_some(&mut kept.b[..]),
            };
            let loss = self.lce.loss_and_grad(inputs, &self.labels, GradOutput::ONE, grads);
            if let Ok(mut slot) = self.kept.lock() {
                *slot = Some(kept);
            }
            loss
        } else {
            self.lce.loss(inputs, &self.labels)
        }
        .map_err(|e| self.error.fail(e))?;
        Ok(match loss {
            Loss::Scalar(v) => (CpuStorage::F32(vec![v]), Shape::from(())),
            Loss::PerRow(v) => {
                let n = v.len();
                (CpuStorage::F32(v), Shape::from(n))
            }
        })
    }

    /// The gradients of `x`, `w` and (with `b`) the bias, for the upstream gradient `grad_res`.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let upstream = grad_res.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let kept = self.kept.lock().ok().and_then(|mut slot| slot.take());
        let (d, k) = (self.lce.hidden(), self.lce.loss_fn().num_classes());
        let n = x.dims()[0];
        let kept = match (kept, upstream.as_slice()) {
            (Some(mut kept), &[g]) => {
                if g != 1.0 {
                    for v in kept.x.iter_mut().chain(&mut kept.w).chain(&mut kept.b) {
                        *v *= g;
                    }
                }
                kept
            }
            _ => {
                let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
                let (xv, wv, bv) = (host(x)?, host(w)?, b.map(host).transpose()?);
                let mut kept = Kept {
                    x: vec![0.0; n * d],
                    w: vec![0.0; k * d],
                    b: vec![0.0; if b.is_some() { k } else { 0 }],
                };
                let grad_output = match upstream.as_slice() {
                    [g] => GradOutput::Scalar(*g),
                    g => GradOutput::PerRow(g),
                };
                let grads = LinearGrads {
                    x: Some(&mut kept.x),
                    weight: Some(&mut kept.w),
                    bias: b.is_some().then_some(&mut kept.b[..]),
                };
                let inputs = LinearInputs {
                    x: &xv,
                    weight: &wv,
                    bias: bv.as_deref(),
                };
                self.lce
                    .loss_and_grad(inputs, &self.labels, grad_output, grads)
                    .map_err(|e| self.error.fail(e))?;
                kept
            }
        };
        let gb = match b {
            Some(_) => Some(Tensor::from_vec(kept.b, k, &Device::Cpu)?),
            None => None,
        };
        Ok((
            Tensor::from_vec(kept.x, (n, d), &Device::Cpu)?,
            Tensor::from_vec(kept.w, (k, d), &Device::Cpu)?,
            gb,
        ))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "label-smoothing-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(f32_slice(s1, l1, "x")?, f32_slice(s2, l2, "w")?, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = self.grads(x, w, None, grad_res)?;
        Ok((Some(gx), Some(gw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "label-smoothing-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(
            f32_slice(s1, l1, "x")?,
            f32_slice(s2, l2, "w")?,
            Some(f32_slice(s3, l3, "b")?),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, gb) = self.grads(x, w, Some(b), grad_res)?;
        Ok((Some(gx), Some(gw), gb))
    }
}
