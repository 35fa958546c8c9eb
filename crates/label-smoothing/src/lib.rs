//! Exact, fast label-smoothed cross-entropy for classification training.
//!
//! Label smoothing trains against a softened target: the label gets `1-e` and the other classes share `e`.
//! This crate implements the whole family defined in the project's `SPEC.md`:
//!
//! - two spreads: [`Spread::Others`] (`e/(K-1)` on every other class: fast-reid) and
//!   [`Spread::Uniform`] (`e/K` on every class: PyTorch's `label_smoothing`);
//! - fixed smoothing `eps`, or fast-reid's adaptive smoothing `alpha * p(label)` held constant for the gradient;
//! - hard labels with an ignore index, or soft target rows; class weights with PyTorch's normalisation;
//! - reductions `none`, `sum`, `mean`, `mean-nonzero`, and an upstream gradient.
//!
//! The kernel is fused: per row, one pass gathers the softmax statistics ([`RowStats`]) and a second writes the
//! gradient while the row is still in cache. Rows run in parallel with rayon, and the results are
//! bit-identical for any number of threads. [`reference`](mod@reference) holds a plain float64 implementation of the same
//! definition.
//!
//! Its relatives, each with its gradient: [`mixup`] (mixup and CutMix targets, without materialising them),
//! [`distillation`] (knowledge distillation), [`confidence_penalty`], [`label_relaxation`] and [`online`] (online
//! label smoothing); [`linear`] computes the loss of a linear classifier without materialising its logits;
//! [`calibration`] measures what smoothing does to confidence; [`shard`] splits the classes across processes
//! (the transport-free half of a class-sharded loss, bit-identical to one process).
//!
//! ```
//! use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
//! // PyTorch: F.cross_entropy(x, y, label_smoothing=0.1)
//! let logits = vec![1.0f32, 2.0, 0.5, /* row 2 */ 0.0, -1.0, 3.0];
//! let labels = vec![1i64, 2];
//! let loss_fn = LabelSmoothingConfig::pytorch(0.1).init(3)?;
//! let mut grad = vec![0.0; logits.len()];
//! let loss = loss_fn.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad)?;
//! assert!(loss.scalar().unwrap() > 0.0);
//! # Ok::<(), label_smoothing::LossError>(())
//! ```
#![warn(missing_docs)]

/// This crate's README, whose examples run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod api;
pub mod calibration;
mod checks;
mod config;
mod driver;
mod element;
mod error;
#[cfg(feature = "serde")]
pub mod json_float;
mod kernel;
pub mod linear;
mod loss;
pub mod reference;
mod related;
pub mod rng;
mod row;
pub mod shard;
mod simd;
mod types;

pub use config::{target_distribution, LabelSmoothingConfig, Reduction, Smoothing, Spread};
pub use element::Element;
pub use error::{LossError, Result};
pub use half::{bf16, f16};
pub use kernel::RowStats;
pub use loss::LabelSmoothingLoss;
pub use related::{confidence_penalty, distillation, label_relaxation, mixup, online};
pub use simd::instruction_set;
pub use types::{GradOutput, Loss, LossReport, Targets, TokenAccuracy};

#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use driver::test_hooks as __test_hooks;
