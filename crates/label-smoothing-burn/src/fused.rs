//! The core's fused kernel inside burn, on its CPU backends Flex and NdArray: with autodiff
//! (`Device::flex().autodiff()`) as a custom operation with its own backward node, and without it as the loss alone.
//!
//! The logits are read where the backend keeps them (f32, row-major: no copy; another layout is copied once), the
//! labels or soft targets are read back to the host (they are checked there anyway), and the forward pass writes
//! the loss and, when the logits are tracked, their gradient in the same fused pass. The backward node holds that
//! gradient and hands it over (upstream gradient 1) or scales it once, as the Python package does.
//!
//! Everything else (other backends, f64 or half logits, gradient checkpointing other than burn's default) takes
//! the composition of burn operations: [`try_forward`] returns `None` for it.
//!
//! burn 0.22 deprecates NdArray in favour of Flex; both are covered, hence the `allow(deprecated)` here.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ndarray::NdArrayTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::DispatchKindConversion;
use burn::backend::{Autodiff, Backend, BackendTypes, Flex, NdArray};
use burn::tensor::{BackendPrimitive, DispatchTensor, Float, Shape, Tensor, TensorData};
use label_smoothing::{GradOutput, LabelSmoothingLoss, Loss, LossError, Reduction, Targets};
use std::borrow::Cow;
use std::sync::Mutex;

/// What the fused path needs of a CPU backend's float tensors.
trait CpuBackend: Backend + FloatTensorOps<Self> {
    /// The tensor's values as row-major f32: borrowed where they already are, copied otherwise. `None` for
    /// another element type.
    fn rows(t: &Self::FloatTensorPrimitive) -> Option<Cow<'_, [f32]>>;
    /// Its first value, if it is f32.
    fn first(t: &Self::FloatTensorPrimitive) -> Option<f32>;
    /// An f32 tensor of `shape` holding `values`.
    fn tensor(values: Vec<f32>, shape: &[usize]) -> Self::FloatTensorPrimitive;
    /// The f32 values of a tensor nobody else holds, for writing; `None` when it is shared, not f32, or not
    /// `[n, k]`.
    fn writable(t: &mut Self::FloatTensorPrimitive, n: usize, k: usize) -> Option<&mut [f32]>;
    /// The gradient buffer kept between calls.
    fn cache() -> &'static Mutex<Option<Self::FloatTensorPrimitive>>;
}

/// The gradient buffer of the last tracked call, per backend, kept so that the next call of the same shape writes
/// into memory that is already mapped: a new `[N, K]` buffer costs its page faults, at 2048x32000 three times the
/// kernel's own time (docs/BENCHMARKS.md). It is reused only once burn has let go of it (the cache's reference is
/// then the only one); while burn still holds it, a call takes a new buffer. [`empty_gradient_cache`] frees it.
static NDARRAY_CACHE: Mutex<Option<NdArrayTensor>> = Mutex::new(None);
static FLEX_CACHE: Mutex<Option<FlexTensor>> = Mutex::new(None);

impl CpuBackend for NdArray {
    fn rows(t: &NdArrayTensor) -> Option<Cow<'_, [f32]>> {
        let NdArrayTensor::F32(storage) = t else {
            return None;
        };
        Some(match storage.view().to_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(storage.view().iter().copied().collect()),
        })
    }

    fn first(t: &NdArrayTensor) -> Option<f32> {
        match t {
            NdArrayTensor::F32(storage) => storage.view().iter().next().copied(),
            _ => None,
        }
    }

    fn tensor(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
        NdArrayTensor::from_data(TensorData::new(values, shape.to_vec()))
    }

    fn writable(t: &mut NdArrayTensor, n: usize, k: usize) -> Option<&mut [f32]> {
        match t {
            NdArrayTensor::F32(storage) if storage.is_unique() && storage.shape() == [n, k] => {
                storage.ensure_owned().as_slice_mut()
            }
            _ => None,
        }
    }

    fn cache() -> &'static Mutex<Option<NdArrayTensor>> {
        &NDARRAY_CACHE
    }
}

impl CpuBackend for Flex {
    fn rows(t: &FlexTensor) -> Option<Cow<'_, [f32]>> {
        if t.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        Some(match t.as_slice::<f32>() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(t.clone().into_data().iter::<f32>().collect()),
        })
    }

    fn first(t: &FlexTensor) -> Option<f32> {
        t.as_slice::<f32>().and_then(|s| s.first().copied())
    }

    fn tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
    }

    fn writable(t: &mut FlexTensor, n: usize, k: usize) -> Option<&mut [f32]> {
        let fits = t.dtype() == burn::tensor::DType::F32 && t.is_contiguous() && t.layout().shape()[..] == [n, k];
        if !fits {
            return None;
        }
        t.try_storage_mut::<f32>().filter(|s| s.len() == n * k)
    }

    fn cache() -> &'static Mutex<Option<FlexTensor>> {
        &FLEX_CACHE
    }
}

/// Frees the gradient buffers kept between calls.
pub(crate) fn empty_gradient_cache() {
    *NdArray::cache().lock().unwrap_or_else(|e| e.into_inner()) = None;
    *Flex::cache().lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The backward node: the gradient of the loss computed in the forward pass, `[N, K]`, times the upstream
/// gradient (one value, or with reduction `none` one per row).
#[derive(Debug)]
struct FusedBackward;

impl<B: CpuBackend> Backward<B, 1> for FusedBackward {
    /// The gradient (for `none`, of each row's own loss) and the upstream gradient's shape, `[1, 1]` or `[N, 1]`.
    type State = (B::FloatTensorPrimitive, [usize; 2]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (grad, upstream_shape) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |upstream| {
            // One upstream value: 1 when the loss is the objective (`loss.backward()`), and then the gradient is
            // handed over as it is, without another pass over `[N, K]` values.
            let scalar = if upstream_shape[0] == 1 {
                B::first(&upstream)
            } else {
                None
            };
            match scalar {
                Some(1.0) => grad,
                Some(g) => B::float_mul_scalar(grad, g.into()),
                None => B::float_mul(grad, B::float_reshape(upstream, Shape::new(upstream_shape))),
            }
        });
    }
}

/// Whether [`try_forward`] takes these logits: f32 tensors of Flex or NdArray, with burn's default autodiff or
/// none.
pub(crate) fn supports(logits: &Tensor<2>) -> bool {
    supported::<Flex>(logits) || supported::<NdArray>(logits)
}

fn supported<B: CpuBackend>(logits: &Tensor<2>) -> bool
where
    Float: BackendPrimitive<B, Primitive = B::FloatTensorPrimitive>
        + BackendPrimitive<Autodiff<B>, Primitive = <Autodiff<B> as BackendTypes>::FloatTensorPrimitive>,
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    if let Ok(t) = logits.clone().try_into_primitive::<Autodiff<B>>() {
        return B::rows(t.primitive()).is_some();
    }
    matches!(logits.clone().try_into_primitive::<B>(), Ok(t) if B::rows(&t).is_some())
}

/// The loss on the fused kernel when `logits` are f32 tensors of Flex or NdArray (with or without autodiff);
/// `None` otherwise, for the composition. `targets` are the checked labels or soft targets on the host.
pub(crate) fn try_forward(
    loss: &LabelSmoothingLoss,
    logits: &Tensor<2>,
    targets: Targets<'_>,
) -> Option<Result<Tensor<1>, LossError>> {
    on::<Flex>(loss, logits, targets).or_else(|| on::<NdArray>(loss, logits, targets))
}

fn on<B: CpuBackend>(
    loss: &LabelSmoothingLoss,
    logits: &Tensor<2>,
    targets: Targets<'_>,
) -> Option<Result<Tensor<1>, LossError>>
where
    Float: BackendPrimitive<B, Primitive = B::FloatTensorPrimitive>
        + BackendPrimitive<Autodiff<B>, Primitive = <Autodiff<B> as BackendTypes>::FloatTensorPrimitive>,
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B>>,
{
    if let Ok(tensor) = logits.clone().try_into_primitive::<Autodiff<B>>() {
        let z = B::rows(tensor.primitive())?;
        return Some(autodiff::<B>(loss, &tensor, &z, targets));
    }
    if let Ok(tensor) = logits.clone().try_into_primitive::<B>() {
        let z = B::rows(&tensor)?;
        return Some(
            loss.loss(&z, targets)
                .map(|l| Tensor::from_primitive::<B>(loss_tensor::<B>(l))),
        );
    }
    None
}

/// The loss as a tensor: `[1]`, or `[N]` for reduction `none`.
fn loss_tensor<B: CpuBackend>(loss: Loss) -> B::FloatTensorPrimitive {
    let values = loss.as_slice().to_vec();
    let len = values.len();
    B::tensor(values, &[len])
}

/// An `[n, k]` f32 buffer for the gradient: the cached one when burn no longer holds it and it has this shape,
/// else a new one. Its contents are overwritten by the kernel.
fn grad_buffer<B: CpuBackend>(n: usize, k: usize) -> B::FloatTensorPrimitive {
    let cached = B::cache().lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut t) = cached {
        if B::writable(&mut t, n, k).is_some() {
            return t;
        }
    }
    B::tensor(vec![0.0f32; n * k], &[n, k])
}

/// The forward pass of autodiff logits: for tracked logits the loss and its gradient in one fused pass, and the
/// backward node; for untracked ones the loss alone.
fn autodiff<B: CpuBackend>(
    loss: &LabelSmoothingLoss,
    tensor: &<Autodiff<B> as BackendTypes>::FloatTensorPrimitive,
    z: &[f32],
    targets: Targets<'_>,
) -> Result<Tensor<1>, LossError>
where
    Float: BackendPrimitive<Autodiff<B>, Primitive = <Autodiff<B> as BackendTypes>::FloatTensorPrimitive>,
    DispatchTensor: DispatchKindConversion<Autodiff<B>>,
{
    let k = loss.num_classes();
    let n = z.len() / k;
    let prep = FusedBackward
        .prepare::<NoCheckpointing>([tensor.node()])
        .compute_bound()
        .stateful();
    let prep = match prep {
        OpsKind::Tracked(prep) => prep,
        OpsKind::UnTracked(prep) => {
            let out = prep.finish(loss_tensor::<B>(loss.loss(z, targets)?));
            return Ok(Tensor::from_primitive::<Autodiff<B>>(out));
        }
    };
    let mut grad = grad_buffer::<B>(n, k);
    let slice = B::writable(&mut grad, n, k).expect("a new or unique [n, k] f32 tensor");
    let per_row = loss.config().reduction == Reduction::None;
    let ones = vec![1.0f32; if per_row { n } else { 0 }];
    let upstream = if per_row {
        GradOutput::PerRow(&ones)
    } else {
        GradOutput::ONE
    };
    let value = loss.loss_and_grad(z, targets, upstream, slice)?;
    *B::cache().lock().unwrap_or_else(|e| e.into_inner()) = Some(grad.clone());
    let upstream_shape = if per_row { [n, 1] } else { [1, 1] };
    let out = prep.finish((grad, upstream_shape), loss_tensor::<B>(value));
    Ok(Tensor::from_primitive::<Autodiff<B>>(out))
}
