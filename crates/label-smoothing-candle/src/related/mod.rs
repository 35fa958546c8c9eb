//! The related losses of the core crate (mixup/CutMix targets, distillation, the confidence penalty, label
//! relaxation, online label smoothing) on candle tensors.
//!
//! On the CPU each is a candle custom op on the logits whose forward computes the loss with the core crate's
//! kernels and whose backward computes the gradient on the same inputs, scaled by the upstream gradient; labels
//! and teacher logits are read to the host once per call. On other devices the same definitions are composed from
//! candle ops ([`composed`]). They return a scalar tensor in the logits' dtype.

pub mod composed;

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use label_smoothing::confidence_penalty::confidence_penalty_loss;
use label_smoothing::distillation::{distillation_loss, DistillationConfig};
use label_smoothing::label_relaxation::label_relaxation_loss;
use label_smoothing::mixup::{mixed_loss, MixedLabels};
use label_smoothing::online::OnlineLabelSmoothing;
use label_smoothing::{LabelSmoothingLoss, Loss, LossError, Reduction};

use crate::error_slot::ErrorSlot;
use crate::{classes_of, labels_to_host, Error, Result};

/// A scalar loss on `[N, K]` f32 logits: its value, and its gradient into `grad` when given.
type SliceLoss = dyn Fn(&[f32], Option<&mut [f32]>) -> std::result::Result<f32, LossError> + Send + Sync;

struct SliceLossOp {
    name: &'static str,
    k: usize,
    f: Arc<SliceLoss>,
    error: ErrorSlot,
}

impl SliceLossOp {
    fn fail(&self, e: LossError) -> candle_core::Error {
        self.error.fail(e)
    }
}

impl CustomOp1 for SliceLossOp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("{}: expected f32 logits", self.name);
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("{}: expected contiguous logits", self.name);
        };
        let value = (self.f)(&v[start..end], None).map_err(|e| self.fail(e))?;
        Ok((CpuStorage::F32(vec![value]), Shape::from(())))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let logits = arg.flatten_all()?.to_vec1::<f32>()?;
        let mut grad = vec![0.0f32; logits.len()];
        (self.f)(&logits, Some(&mut grad)).map_err(|e| self.fail(e))?;
        let grad = Tensor::from_vec(grad, (logits.len() / self.k, self.k), &Device::Cpu)?;
        Ok(Some(grad.broadcast_mul(&grad_res.to_dtype(DType::F32)?)?))
    }
}

/// Applies a slice loss to `logits` `[N, K]` (computed in f32; the result in the logits' dtype).
fn apply(name: &'static str, logits: &Tensor, k: usize, f: Arc<SliceLoss>) -> Result<Tensor> {
    // The public functions send other devices to `composed`.
    debug_assert!(logits.device().is_cpu());
    match *logits.dims() {
        [_, lk] if lk == k => {}
        _ => {
            return Err(Error::Shape {
                what: "logits",
                expected: format!("[N, {k}]"),
                got: logits.dims().to_vec(),
            })
        }
    }
    let dtype = logits.dtype();
    let x = logits.to_dtype(DType::F32)?.contiguous()?;
    let error = ErrorSlot::default();
    let op = SliceLossOp {
        name,
        k,
        f,
        error: error.clone(),
    };
    let out = x.apply_op1(op).map_err(|e| error.resolve(e))?;
    Ok(out.to_dtype(dtype)?)
}

fn scalar(loss: Loss) -> f32 {
    match loss {
        Loss::Scalar(v) => v,
        Loss::PerRow(v) => v.iter().sum(),
    }
}

/// The label-smoothed cross-entropy against mixup/CutMix targets `lambda * smooth(a) + (1 - lambda) * smooth(b)`.
///
/// `loss`: spread and fixed smoothing, and a reduction other than `none`; `a`, `b`: labels `[N]` (integer
/// tensors); `lambda`: one weight for the batch, as `label_smoothing::mixup` draws it.
pub fn mixed_cross_entropy(
    logits: &Tensor,
    a: &Tensor,
    b: &Tensor,
    lambda: f32,
    loss: &LabelSmoothingLoss,
) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        return composed::mixed_cross_entropy(logits, a, b, lambda, loss);
    }
    if loss.config().reduction == Reduction::None {
        return Err(Error::Loss(LossError::Unsupported {
            loss: "mixed_cross_entropy",
            option: "reduction none (it returns a scalar)",
        }));
    }
    let (a, b) = (labels_to_host(a)?, labels_to_host(b)?);
    let loss = loss.clone();
    let k = loss.num_classes();
    let f = move |z: &[f32], g: Option<&mut [f32]>| {
        let labels = MixedLabels {
            a: &a,
            b: &b,
            lambda: std::slice::from_ref(&lambda),
        };
        mixed_loss(&loss, z, labels, g).map(scalar)
    };
    apply("mixup cross-entropy", logits, k, Arc::new(f))
}

/// Knowledge distillation: `(1 - beta) * CE_smoothed(logits, labels) + beta * T^2 * KL(softmax(teacher / T) ||
/// softmax(logits / T))`, mean over rows. `teacher`: `[N, K]`, a constant (no gradient flows to it).
pub fn distillation(
    logits: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    ce: &LabelSmoothingLoss,
    config: DistillationConfig,
) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        return composed::distillation(logits, teacher, labels, ce, config);
    }
    let labels = labels_to_host(labels)?;
    let teacher = teacher.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let ce = ce.clone();
    let k = ce.num_classes();
    let f = move |z: &[f32], g: Option<&mut [f32]>| distillation_loss(&ce, config, z, &teacher, &labels, g);
    apply("distillation", logits, k, Arc::new(f))
}

/// The confidence penalty: `CE_smoothed(logits, labels) - beta * H(softmax(logits))`.
pub fn confidence_penalty(logits: &Tensor, labels: &Tensor, ce: &LabelSmoothingLoss, beta: f32) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        return composed::confidence_penalty(logits, labels, ce, beta);
    }
    let labels = labels_to_host(labels)?;
    let ce = ce.clone();
    let k = ce.num_classes();
    let f = move |z: &[f32], g: Option<&mut [f32]>| confidence_penalty_loss(&ce, beta, z, &labels, g).map(scalar);
    apply("confidence penalty", logits, k, Arc::new(f))
}

/// Label relaxation with parameter `alpha`, mean over rows.
pub fn label_relaxation(logits: &Tensor, labels: &Tensor, alpha: f32) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        return composed::label_relaxation(logits, labels, alpha);
    }
    let labels = labels_to_host(labels)?;
    let k = classes_of(logits)?;
    let f = move |z: &[f32], g: Option<&mut [f32]>| {
        label_relaxation_loss(alpha, Reduction::Mean, k, z, &labels, g).map(scalar)
    };
    apply("label relaxation", logits, k, Arc::new(f))
}

/// Online label smoothing's loss with the current soft-label matrix of `state`, mean over rows. Call
/// `state.observe` with the batch's logits and `state.finish_epoch` at each epoch's end.
pub fn online_label_smoothing(logits: &Tensor, labels: &Tensor, state: &OnlineLabelSmoothing) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        return composed::online_label_smoothing(logits, labels, state);
    }
    let labels = labels_to_host(labels)?;
    let state = state.clone();
    let k = state.state().k;
    let f = move |z: &[f32], g: Option<&mut [f32]>| state.loss(z, &labels, Reduction::Mean, g).map(scalar);
    apply("online label smoothing", logits, k, Arc::new(f))
}
