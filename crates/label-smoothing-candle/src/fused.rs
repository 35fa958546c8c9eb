//! The CPU path: the core's fused kernel as a candle [`CustomOp2`] (logits, targets) with a backward.
//!
//! Forward computes the loss only (one read of the logits). Backward gets the upstream gradient and calls the
//! fused `loss_and_grad`, which writes `dLoss/dlogits` already multiplied by it: one read of the logits and one
//! write of the gradient. Nothing of size `[N, K]` is kept between the two.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Shape, Storage, Tensor};
use label_smoothing::{bf16, f16, Element, GradOutput, LabelSmoothingLoss, Loss, LossError, Targets};

use crate::error_slot::ErrorSlot;
use crate::{Error, Result, TargetKind};

struct FusedOp {
    loss: LabelSmoothingLoss,
    kind: TargetKind,
    /// A typed error from the kernel, handed back to the caller.
    error: ErrorSlot,
}

pub(crate) fn forward(
    loss: &LabelSmoothingLoss,
    logits: &Tensor,
    targets: &Tensor,
    kind: TargetKind,
) -> Result<Tensor> {
    for (what, t) in [("logits", logits), ("targets", targets)] {
        if !t.device().is_cpu() {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "{what}: the fused kernel runs on the CPU, got a tensor on {:?}",
                t.device().location()
            ))));
        }
    }
    let logits = match logits.dtype() {
        DType::F32 | DType::BF16 | DType::F16 => logits.contiguous()?,
        _ => logits.to_dtype(DType::F32)?.contiguous()?,
    };
    let targets = match kind {
        TargetKind::Labels => targets.contiguous()?,
        TargetKind::Soft => targets.to_dtype(DType::F32)?.contiguous()?,
    };
    let error = ErrorSlot::default();
    let op = FusedOp {
        loss: loss.clone(),
        kind,
        error: error.clone(),
    };
    let result = if logits.track_op() {
        logits.apply_op2(&targets, op)
    } else {
        logits.apply_op2_no_bwd(&targets, &op)
    };
    result.map_err(|e| error.resolve(e))
}

/// A contiguous CPU slice of a storage.
fn slice<'a, T>(v: &'a [T], layout: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&v[start..end]),
        None => candle_core::bail!("{what}: the fused kernel needs a contiguous tensor"),
    }
}

/// Labels converted to `i64` (they are `N` values; the kernel reads them once per row).
fn labels(s: &CpuStorage, l: &Layout) -> candle_core::Result<Vec<i64>> {
    Ok(match s {
        CpuStorage::U8(v) => slice(v, l, "labels")?.iter().map(|&x| x as i64).collect(),
        CpuStorage::U32(v) => slice(v, l, "labels")?.iter().map(|&x| x as i64).collect(),
        CpuStorage::I16(v) => slice(v, l, "labels")?.iter().map(|&x| x as i64).collect(),
        CpuStorage::I32(v) => slice(v, l, "labels")?.iter().map(|&x| x as i64).collect(),
        CpuStorage::I64(v) => slice(v, l, "labels")?.to_vec(),
        other => candle_core::bail!("labels: unsupported dtype {:?}", other.dtype()),
    })
}

impl FusedOp {
    /// Runs `f` with the targets as the kernel wants them.
    fn with_targets<R>(
        &self,
        s: &CpuStorage,
        l: &Layout,
        f: impl FnOnce(Targets<'_>) -> candle_core::Result<R>,
    ) -> candle_core::Result<R> {
        match self.kind {
            TargetKind::Labels => f(Targets::Labels(&labels(s, l)?)),
            TargetKind::Soft => match s {
                CpuStorage::F32(v) => f(Targets::Soft(slice(v, l, "soft targets")?)),
                other => candle_core::bail!("soft targets: expected f32 storage, got {:?}", other.dtype()),
            },
        }
    }

    /// Keeps a typed error for the caller and turns it into candle's.
    fn fail(&self, e: LossError) -> candle_core::Error {
        self.error.fail(e)
    }

    fn fwd<E: Element + candle_core::WithDType>(
        &self,
        logits: &[E],
        targets: Targets<'_>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let loss = self.loss.loss(logits, targets).map_err(|e| self.fail(e))?;
        let (values, shape) = match loss {
            Loss::Scalar(v) => (vec![v], Shape::from(())),
            Loss::PerRow(v) => {
                let n = v.len();
                (v, Shape::from(n))
            }
        };
        let values: Vec<E> = values.into_iter().map(<E as Element>::from_f32).collect();
        Ok((E::to_cpu_storage_owned(values), shape))
    }

    fn grad<E: Element + candle_core::WithDType>(
        &self,
        logits: &[E],
        targets: Targets<'_>,
        upstream: &[f32],
    ) -> candle_core::Result<Tensor> {
        let grad_output = match upstream {
            [g] => GradOutput::Scalar(*g),
            g => GradOutput::PerRow(g),
        };
        let mut grad = vec![<E as Element>::from_f32(0.0); logits.len()];
        self.loss
            .loss_and_grad(logits, targets, grad_output, &mut grad)
            .map_err(|e| self.fail(e))?;
        let k = self.loss.num_classes();
        Tensor::from_vec(grad, (logits.len() / k, k), &Device::Cpu)
    }
}

impl CustomOp2 for FusedOp {
    fn name(&self) -> &'static str {
        "label-smoothing-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.with_targets(s2, l2, |targets| match s1 {
            CpuStorage::F32(v) => self.fwd(slice(v, l1, "logits")?, targets),
            CpuStorage::BF16(v) => self.fwd::<bf16>(slice(v, l1, "logits")?, targets),
            CpuStorage::F16(v) => self.fwd::<f16>(slice(v, l1, "logits")?, targets),
            other => candle_core::bail!("logits: unsupported dtype {:?}", other.dtype()),
        })
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let upstream = grad_res.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (ls, ll) = logits.storage_and_layout();
        let (ts, tl) = targets.storage_and_layout();
        let (Storage::Cpu(ls), Storage::Cpu(ts)) = (&*ls, &*ts) else {
            candle_core::bail!("the fused label-smoothing backward runs on the CPU");
        };
        let grad = self.with_targets(ts, tl, |t| match ls {
            CpuStorage::F32(v) => self.grad(slice(v, ll, "logits")?, t, &upstream),
            CpuStorage::BF16(v) => self.grad::<bf16>(slice(v, ll, "logits")?, t, &upstream),
            CpuStorage::F16(v) => self.grad::<f16>(slice(v, ll, "logits")?, t, &upstream),
            other => candle_core::bail!("logits: unsupported dtype {:?}", other.dtype()),
        })?;
        Ok((Some(grad), None))
    }
}
