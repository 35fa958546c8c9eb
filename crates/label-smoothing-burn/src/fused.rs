//! The core's fused kernel inside burn, on the NdArray backend: with autodiff (`Device::ndarray().autodiff()`) as a
//! custom operation with its own backward node, and without it as the loss alone.
//!
//! The logits are read where NdArray keeps them (f32, row-major: no copy; another layout is copied once), the
//! labels or soft targets are read back to the host (they are checked there anyway), and the forward pass writes
//! the loss and, when the logits are tracked, their gradient in the same fused pass. The backward node holds that
//! gradient and scales it by the upstream gradient (one multiplication), as the Python package does.
//!
//! Everything else (other backends, f64 or half logits, gradient checkpointing other than burn's default) takes
//! the composition of burn operations: [`try_forward`] returns `None` for it.
//!
//! burn 0.22 deprecates NdArray in favour of its Flex backend; NdArray is the CPU backend this crate is built and
//! tested with, hence the `allow(deprecated)` on this module.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Shape, Tensor, TensorData};
use label_smoothing::{GradOutput, LabelSmoothingLoss, Loss, LossError, Reduction, Targets};
use std::sync::Mutex;

type AutodiffNdArray = Autodiff<NdArray, NoCheckpointing>;

/// The gradient buffer of the last tracked call, kept so that the next call of the same shape writes into memory
/// that is already mapped: a new `[N, K]` buffer costs its page faults, at 2048x32000 three times the kernel's
/// own time (docs/BENCHMARKS.md). It is reused only once burn has let go of it (the cache's reference is then
/// the only one); while burn still holds it, a call takes a new buffer. [`empty_gradient_cache`] frees it.
static GRAD_CACHE: Mutex<Option<NdArrayTensor>> = Mutex::new(None);

/// Frees the gradient buffer kept between calls (see [`GRAD_CACHE`]).
pub(crate) fn empty_gradient_cache() {
    *GRAD_CACHE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// An `[n, k]` f32 buffer for the gradient: the cached one when burn no longer holds it and it has this shape,
/// else a new one. Its contents are overwritten by the kernel.
fn grad_buffer(n: usize, k: usize) -> NdArrayTensor {
    let cached = GRAD_CACHE.lock().unwrap_or_else(|e| e.into_inner()).take();
    match cached {
        Some(NdArrayTensor::F32(storage)) if storage.is_unique() && storage.shape() == [n, k] => {
            NdArrayTensor::F32(storage)
        }
        _ => NdArrayTensor::from_data(TensorData::new(vec![0.0f32; n * k], [n, k])),
    }
}

/// The backward node: the gradient of the loss computed in the forward pass, `[N, K]`, times the upstream
/// gradient (one value, or with reduction `none` one per row).
#[derive(Debug)]
struct FusedBackward;

impl Backward<NdArray, 1> for FusedBackward {
    /// The gradient (for `none`, of each row's own loss) and the upstream gradient's shape, `[1, 1]` or `[N, 1]`.
    type State = (NdArrayTensor, [usize; 2]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (grad, upstream_shape) = ops.state;
        unary::<NdArray, _>(ops.parents, ops.node, grads, |upstream| {
            if upstream_shape[0] > 1 {
                let upstream = NdArray::float_reshape(upstream, Shape::new(upstream_shape));
                return NdArray::float_mul(grad, upstream);
            }
            // One upstream value: 1 when the loss is the objective (`loss.backward()`), and then the gradient is
            // handed over as it is, without another pass over `[N, K]` values.
            let g = match &upstream {
                NdArrayTensor::F32(storage) => storage.view().iter().next().copied(),
                _ => None,
            };
            match g {
                Some(1.0) => grad,
                Some(g) => NdArray::float_mul_scalar(grad, g.into()),
                None => NdArray::float_mul(grad, NdArray::float_reshape(upstream, Shape::new(upstream_shape))),
            }
        });
    }
}

/// The logits of an NdArray tensor as a row-major f32 slice, borrowed where they already are one, else copied
/// into `copy`. `None` for another element type.
fn logits_of<'a>(tensor: &'a NdArrayTensor, copy: &'a mut Vec<f32>) -> Option<&'a [f32]> {
    let NdArrayTensor::F32(storage) = tensor else {
        return None;
    };
    let view = storage.view();
    if view.as_slice().is_none() {
        *copy = view.iter().copied().collect();
        return Some(copy);
    }
    // Borrow again for the lifetime of `tensor`: the view above was a temporary.
    match tensor {
        NdArrayTensor::F32(storage) => storage.view().to_slice(),
        _ => None,
    }
}

/// The loss as an NdArray tensor: `[1]`, or `[N]` for reduction `none`.
fn loss_tensor(loss: Loss) -> NdArrayTensor {
    let values = loss.as_slice().to_vec();
    let len = values.len();
    NdArrayTensor::from_data(TensorData::new(values, [len]))
}

/// Whether [`try_forward`] takes these logits: f32 NdArray tensors, with burn's default autodiff or none.
pub(crate) fn supports(logits: &Tensor<2>) -> bool {
    let f32_ndarray = |t: &NdArrayTensor| matches!(t, NdArrayTensor::F32(_));
    if let Ok(tensor) = logits.clone().try_into_primitive::<AutodiffNdArray>() {
        return f32_ndarray(tensor.primitive());
    }
    matches!(logits.clone().try_into_primitive::<NdArray>(), Ok(t) if f32_ndarray(&t))
}

/// The loss on the fused kernel when `logits` are f32 NdArray tensors (with or without autodiff); `None`
/// otherwise, for the composition. `targets` are the checked labels or soft targets on the host.
pub(crate) fn try_forward(
    loss: &LabelSmoothingLoss,
    logits: &Tensor<2>,
    targets: Targets<'_>,
) -> Option<Result<Tensor<1>, LossError>> {
    if let Ok(tensor) = logits.clone().try_into_primitive::<AutodiffNdArray>() {
        let mut copy = Vec::new();
        let z = logits_of(tensor.primitive(), &mut copy)?;
        return Some(autodiff(loss, &tensor, z, targets));
    }
    if let Ok(tensor) = logits.clone().try_into_primitive::<NdArray>() {
        let mut copy = Vec::new();
        let z = logits_of(&tensor, &mut copy)?;
        return Some(
            loss.loss(z, targets)
                .map(|l| Tensor::from_primitive::<NdArray>(loss_tensor(l))),
        );
    }
    None
}

/// The forward pass of autodiff logits: for tracked logits the loss and its gradient in one fused pass, and the
/// backward node; for untracked ones the loss alone.
fn autodiff(
    loss: &LabelSmoothingLoss,
    tensor: &<AutodiffNdArray as burn::backend::BackendTypes>::FloatTensorPrimitive,
    z: &[f32],
    targets: Targets<'_>,
) -> Result<Tensor<1>, LossError> {
    let k = loss.num_classes();
    let n = z.len() / k;
    let prep = FusedBackward
        .prepare::<NoCheckpointing>([tensor.node()])
        .compute_bound()
        .stateful();
    let prep = match prep {
        OpsKind::Tracked(prep) => prep,
        OpsKind::UnTracked(prep) => {
            let out = prep.finish(loss_tensor(loss.loss(z, targets)?));
            return Ok(Tensor::from_primitive::<AutodiffNdArray>(out));
        }
    };
    let mut grad = grad_buffer(n, k);
    let NdArrayTensor::F32(storage) = &mut grad else {
        unreachable!("grad_buffer gives f32 tensors")
    };
    let slice = storage
        .ensure_owned()
        .as_slice_mut()
        .expect("a new or unique [n, k] array is contiguous");
    let per_row = loss.config().reduction == Reduction::None;
    let ones = vec![1.0f32; if per_row { n } else { 0 }];
    let upstream = if per_row {
        GradOutput::PerRow(&ones)
    } else {
        GradOutput::ONE
    };
    let value = loss.loss_and_grad(z, targets, upstream, slice)?;
    *GRAD_CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some(grad.clone());
    let upstream_shape = if per_row { [n, 1] } else { [1, 1] };
    let out = prep.finish((grad, upstream_shape), loss_tensor(value));
    Ok(Tensor::from_primitive::<AutodiffNdArray>(out))
}
