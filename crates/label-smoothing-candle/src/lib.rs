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

/// This crate's README, whose examples run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

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

/// Into candle's error, so that `?` works in a function returning `candle_core::Result` (a model's `forward`).
///
/// A candle failure comes back as the candle error it was. Every other error is wrapped whole
/// (`candle_core::Error::WrappedContext`, its message as the context), and [`Error::downcast`] finds it again.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use label_smoothing_candle::{label_smoothing_cross_entropy, Error, LabelSmoothingConfig, LossError};
///
/// fn forward(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
///     let loss = label_smoothing_cross_entropy(logits, labels, &LabelSmoothingConfig::pytorch(0.1))?;
///     loss.affine(2.0, 0.0)
/// }
/// let dev = Device::Cpu;
/// let logits = Tensor::zeros((2, 3), candle_core::DType::F32, &dev)?;
/// let e = forward(&logits, &Tensor::new(&[0u32, 7], &dev)?).unwrap_err();
/// assert!(matches!(Error::downcast(&e), Some(Error::Loss(LossError::LabelOutOfRange { row: 1, .. }))));
/// # Ok::<(), candle_core::Error>(())
/// ```
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(c) => c,
            other => candle_core::Error::WrappedContext {
                context: other.to_string(),
                wrapped: Box::new(other),
            },
        }
    }
}

impl Error {
    /// This crate's error inside a candle error made by `From<Error> for candle_core::Error` (also under
    /// candle's backtrace, context and path wrappers), if it is one.
    pub fn downcast(e: &candle_core::Error) -> Option<&Error> {
        match e {
            candle_core::Error::WrappedContext { wrapped, .. } => wrapped.downcast_ref::<Error>(),
            candle_core::Error::WithBacktrace { inner, .. }
            | candle_core::Error::Context { inner, .. }
            | candle_core::Error::WithPath { inner, .. } => Error::downcast(inner),
            _ => None,
        }
    }
}

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
    /// - `logits`: `[..., K]` (`[N, K]`, or `[B, T, K]` sequence logits, ...), f32, bf16 or f16 (f64 is computed
    ///   in f32); any layout. The leading dimensions are the rows: `[B, T, K]` is `B * T` rows.
    /// - `targets`: labels of the leading shape (`[N]`, `[B, T]`, ...; u8, u32, i16, i32 or i64; each in
    ///   `[0, K)` or the configured ignore index), or soft targets of the logits' shape (a float dtype; each row
    ///   a probability distribution).
    ///
    /// Returns a scalar tensor (shape `[]`) for `sum`, `mean` and `mean-nonzero`, and the leading shape (`[N]`,
    /// `[B, T]`) for `none`, in the logits' dtype. The result backpropagates to the logits (never to the
    /// targets), with the logits' shape.
    pub fn forward(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        if logits.device().is_cpu() && targets.device().is_cpu() {
            self.forward_fused(logits, targets)
        } else {
            self.forward_composed(logits, targets)
        }
    }

    /// As [`forward`](Self::forward), always through the fused kernel. The tensors must be on the CPU.
    pub fn forward_fused(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.rows(logits, targets, fused::forward)
    }

    /// As [`forward`](Self::forward), always composed from candle ops (any device). Labels, and soft targets, are
    /// read back to the host once to validate them: a device synchronisation on GPUs.
    pub fn forward_composed(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.rows(logits, targets, composed::forward)
    }

    /// Checks the shapes, runs `f` on the rows (`[..., K]` flattened to `[N, K]`, the targets alike), and gives a
    /// per-row result the leading shape back.
    fn rows(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        f: fn(&LabelSmoothingLoss, &Tensor, &Tensor, TargetKind) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let kind = self.check_shapes(logits, targets)?;
        let k = self.loss.num_classes();
        let lead = logits.dims()[..logits.rank() - 1].to_vec();
        if lead.len() == 1 {
            return f(&self.loss, logits, targets, kind);
        }
        let n = lead.iter().product::<usize>();
        let rows = logits.reshape((n, k))?;
        let targets = match kind {
            TargetKind::Labels => targets.reshape(n)?,
            TargetKind::Soft => targets.reshape((n, k))?,
        };
        let out = f(&self.loss, &rows, &targets, kind)?;
        Ok(match self.loss.config().reduction {
            Reduction::None => out.reshape(lead)?,
            _ => out,
        })
    }

    fn check_shapes(&self, logits: &Tensor, targets: &Tensor) -> Result<TargetKind> {
        let k = self.loss.num_classes();
        let dims = logits.dims();
        if dims.last() != Some(&k) {
            return Err(Error::Shape {
                what: "logits",
                expected: format!("[..., {k}] (K = {k} classes last)"),
                got: dims.to_vec(),
            });
        }
        let lead = &dims[..dims.len() - 1];
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
            TargetKind::Labels => lead,
            TargetKind::Soft => dims,
        };
        if targets.dims() != expected {
            return Err(Error::Shape {
                what: match kind {
                    TargetKind::Labels => "labels",
                    TargetKind::Soft => "soft targets",
                },
                expected: format!("{expected:?} for {dims:?} logits"),
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
/// - `logits`: `[..., K]` float; `targets`: labels of the leading shape (integer dtype) or soft targets of the
///   logits' shape (float dtype).
///
/// With `LabelSmoothingConfig::pytorch(0.0)` this is `candle_nn::loss::cross_entropy`.
pub fn label_smoothing_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    config: &LabelSmoothingConfig,
) -> Result<Tensor> {
    LabelSmoothingCrossEntropy::new(config.clone(), last_dim(logits)?)?.forward(logits, targets)
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

/// `K` of `[..., K]` logits (rank at least 1).
fn last_dim(logits: &Tensor) -> Result<usize> {
    match logits.dims().last() {
        Some(&k) => Ok(k),
        None => Err(Error::Shape {
            what: "logits",
            expected: "[..., K]".into(),
            got: Vec::new(),
        }),
    }
}

/// Integer labels of any supported dtype as `i64` on the host.
pub(crate) fn labels_to_host(targets: &Tensor) -> Result<Vec<i64>> {
    Ok(targets.to_dtype(DType::I64)?.to_vec1::<i64>()?)
}
