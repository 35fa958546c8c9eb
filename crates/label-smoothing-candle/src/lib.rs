//! Label-smoothed cross-entropy for [candle](https://github.com/huggingface/candle).
//!
//! The whole loss family of the core crate [`label_smoothing`] (both spreads, fixed or adaptive smoothing, class
//! weights, an ignore index, soft targets, every reduction) as a function of candle tensors that
//! backpropagates:
//!
//! - on the CPU it runs the core's fused kernel as a candle custom op: the forward pass computes the loss only,
//!   the backward pass recomputes the row statistics and writes the gradient in one fused pass (no softmax, target
//!   or log-probability tensor is ever materialised);
//! - on any other device (CUDA, Metal) it composes the same definition from candle ops, so the numbers are
//!   right everywhere; [`LabelSmoothingCrossEntropy::forward_composed`] forces that path on any device;
//! - [`linear_cross_entropy`] is the loss of a linear classifier `x W^T + b` through the core's fused linear
//!   loss: the gradients of `x`, `W` and `b` without the `[N, K]` logits.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use label_smoothing::LabelSmoothingConfig;
//! use label_smoothing_candle::label_smoothing_cross_entropy;
//!
//! let dev = Device::Cpu;
//! let logits = Var::from_vec(vec![2.0f32, 0.5, -1.0, 0.0, 1.0, 3.0], (2, 3), &dev)?;
//! let labels = Tensor::new(&[0u32, 2], &dev)?;
//! // fast-reid's cross_entropy_loss(pred, gt, eps=0.1): e/(K-1) on the other classes, mean over rows.
//! let loss = label_smoothing_cross_entropy(&logits, &labels, &LabelSmoothingConfig::fast_reid(0.1, 0.2))?;
//! let grads = loss.backward()?;
//! let g = grads.get(&logits).expect("the logits have a gradient");
//! assert_eq!(g.dims(), &[2, 3]);
//! # Ok::<(), label_smoothing_candle::Error>(())
//! ```
#![warn(missing_docs)]

mod composed;
mod error_slot;
mod fused;
mod linear;
pub mod related;

use candle_core::{DType, Tensor};
pub use label_smoothing::{LabelSmoothingConfig, LabelSmoothingLoss, LossError, Reduction, Smoothing, Spread};
pub use linear::{linear_cross_entropy, linear_cross_entropy_composed};

/// What can go wrong: a bad input (typed, from the core crate), a tensor of the wrong shape or type, or a candle
/// failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inputs break the loss's definition: a label out of range, a soft-target row that is not a
    /// distribution, a bad configuration, and so on.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// A tensor of the wrong shape.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument.
        what: &'static str,
        /// The shape that was expected.
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },
    /// A tensor of an unsupported element type.
    #[error("{what}: unsupported dtype {dtype:?} ({expected})")]
    DType {
        /// Which argument.
        what: &'static str,
        /// The dtype that was passed.
        dtype: DType,
        /// What is accepted.
        expected: &'static str,
    },
    /// An error from candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The label-smoothed cross-entropy on candle tensors, validated once for a number of classes.
///
/// Build it with [`LabelSmoothingCrossEntropy::new`]; call [`forward`](Self::forward) per batch.
#[derive(Debug, Clone)]
pub struct LabelSmoothingCrossEntropy {
    loss: LabelSmoothingLoss,
}

/// The targets of one call, as classified from the target tensor's dtype and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// Integer labels `[N]`.
    Labels,
    /// Float soft targets `[N, K]`.
    Soft,
}

impl LabelSmoothingCrossEntropy {
    /// Validates `config` for `num_classes` classes (at least 2).
    pub fn new(config: LabelSmoothingConfig, num_classes: usize) -> Result<Self> {
        Ok(Self {
            loss: config.init(num_classes)?,
        })
    }

    /// The underlying core loss (its configuration and `K`).
    pub fn loss(&self) -> &LabelSmoothingLoss {
        &self.loss
    }

    /// The loss of `logits` against `targets`, on the fused CPU kernel when the logits are on the CPU and composed
    /// from candle ops elsewhere.
    ///
    /// - `logits`: `[N, K]`, f32, bf16 or f16 (f64 is computed in f32); any layout.
    /// - `targets`: labels `[N]` (u8, u32, i16, i32 or i64; each in `[0, K)` or the configured ignore index), or
    ///   soft targets `[N, K]` (a float dtype; each row a probability distribution).
    ///
    /// Returns a scalar tensor (shape `[]`) for `sum`, `mean` and `mean-nonzero`, and `[N]` for `none`, in the
    /// logits' dtype. The result backpropagates to the logits (never to the targets).
    pub fn forward(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        if logits.device().is_cpu() && targets.device().is_cpu() {
            self.forward_fused(logits, targets)
        } else {
            self.forward_composed(logits, targets)
        }
    }

    /// As [`forward`](Self::forward), always through the fused kernel. The tensors must be on the CPU.
    pub fn forward_fused(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let kind = self.check_shapes(logits, targets)?;
        fused::forward(&self.loss, logits, targets, kind)
    }

    /// As [`forward`](Self::forward), always composed from candle ops (any device). Labels, and soft targets, are
    /// read back to the host once to validate them: a device synchronisation on GPUs.
    pub fn forward_composed(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let kind = self.check_shapes(logits, targets)?;
        composed::forward(&self.loss, logits, targets, kind)
    }

    fn check_shapes(&self, logits: &Tensor, targets: &Tensor) -> Result<TargetKind> {
        let k = self.loss.num_classes();
        let (n, lk) = match *logits.dims() {
            [n, lk] => (n, lk),
            _ => {
                return Err(Error::Shape {
                    what: "logits",
                    expected: format!("[N, {k}]"),
                    got: logits.dims().to_vec(),
                })
            }
        };
        if lk != k {
            return Err(Error::Shape {
                what: "logits",
                expected: format!("[N, {k}] (K = {k} classes)"),
                got: logits.dims().to_vec(),
            });
        }
        if !logits.dtype().is_float() {
            return Err(Error::DType {
                what: "logits",
                dtype: logits.dtype(),
                expected: "a float dtype",
            });
        }
        let kind = if targets.dtype().is_float() {
            TargetKind::Soft
        } else {
            TargetKind::Labels
        };
        let expected: &[usize] = match kind {
            TargetKind::Labels => &[n],
            TargetKind::Soft => &[n, k],
        };
        if targets.dims() != expected {
            return Err(Error::Shape {
                what: match kind {
                    TargetKind::Labels => "labels",
                    TargetKind::Soft => "soft targets",
                },
                expected: format!("{expected:?} for [{n}, {k}] logits"),
                got: targets.dims().to_vec(),
            });
        }
        if kind == TargetKind::Labels
            && !matches!(
                targets.dtype(),
                DType::U8 | DType::U32 | DType::I16 | DType::I32 | DType::I64
            )
        {
            return Err(Error::DType {
                what: "labels",
                dtype: targets.dtype(),
                expected: "u8, u32, i16, i32 or i64",
            });
        }
        Ok(kind)
    }
}

/// The label-smoothed cross-entropy in one call: validates `config` for the logits' `K` and runs
/// [`LabelSmoothingCrossEntropy::forward`].
///
/// - `logits`: `[N, K]` float; `targets`: labels `[N]` (integer dtype) or soft targets `[N, K]` (float dtype).
///
/// With `LabelSmoothingConfig::pytorch(0.0)` this is `candle_nn::loss::cross_entropy`.
pub fn label_smoothing_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    config: &LabelSmoothingConfig,
) -> Result<Tensor> {
    LabelSmoothingCrossEntropy::new(config.clone(), classes_of(logits)?)?.forward(logits, targets)
}

/// `K` of `[N, K]` logits.
pub(crate) fn classes_of(logits: &Tensor) -> Result<usize> {
    match *logits.dims() {
        [_, k] => Ok(k),
        _ => Err(Error::Shape {
            what: "logits",
            expected: "[N, K]".into(),
            got: logits.dims().to_vec(),
        }),
    }
}

/// Integer labels of any supported dtype as `i64` on the host.
pub(crate) fn labels_to_host(targets: &Tensor) -> Result<Vec<i64>> {
    Ok(targets.to_dtype(DType::I64)?.to_vec1::<i64>()?)
}
