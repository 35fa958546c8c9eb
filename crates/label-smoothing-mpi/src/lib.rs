//! The label-smoothed cross-entropy with the classes sharded over MPI processes: for classifiers whose logits
//! (millions of identities, large vocabularies) are split by class across machines.
//!
//! Each rank holds the logits `[N, K_r]` of its classes `[offset_r, offset_r + K_r)` ([`ShardedLoss`]), or the
//! classifier rows `W_r [K_r, D]` with the hidden states replicated ([`ShardedLinearLoss`]); the labels are the
//! global ones on every rank. One call computes the same loss on every rank and the rank's slice of the
//! gradient. The whole family of the core crate for hard labels: both spreads with the global `K`, fixed and
//! adaptive smoothing, class weights (each rank gives the weights of its own classes), the ignore index, every
//! reduction and an upstream gradient.
//!
//! **Exactness.** Where every shard boundary is a multiple of
//! [`CHUNK`](label_smoothing::shard::CHUNK) = 2048 classes
//! ([`ShardLayout::chunk_aligned`](label_smoothing::shard::ShardLayout::chunk_aligned)), the loss and every
//! gradient entry of [`ShardedLoss`] are bit-identical to the single-process
//! [`LabelSmoothingLoss`](label_smoothing::LabelSmoothingLoss) on the concatenated logits, for any number of
//! ranks; elsewhere they agree within SPEC.md's tolerances. Every rank gets the same bits whatever MPI's
//! reduction algorithms, because nothing is reduced by MPI: the statistics are gathered and folded in class
//! order on every rank, and `grad_x` of [`ShardedLinearLoss`] is summed in rank order.
//!
//! **Communication** (see [`label_smoothing::shard`] for the protocol): one all-gather of a short header per call
//! (so that a bad input on any rank is an error on every rank, before anything else is exchanged; its message
//! follows in a second all-gather only then), and one all-gather of the per-row records: `8 (1 + 4 pieces_r)`
//! bytes per row from rank `r`, with `pieces_r` about `K_r / 2048`, about 16 bytes per 1024 classes
//! (0.4% of the logits' own bytes); no `[N, K]` traffic. [`ShardedLinearLoss`] adds the sum of `grad_x`:
//! about `2 * 4 N D` bytes sent and received per rank.
//!
//! ```no_run
//! use label_smoothing::{GradOutput, LabelSmoothingConfig};
//! use label_smoothing_mpi::ShardedLoss;
//! use mpi::traits::*;
//! let universe = mpi::initialize().unwrap();
//! let world = universe.world();
//! let (k, n) = (100_000, 64);
//! // This rank's classes: an even split at chunk boundaries.
//! let layout = label_smoothing::shard::ShardLayout::even(k, world.size() as usize)?;
//! let range = layout.range(world.rank() as usize);
//! let loss = ShardedLoss::new(&world, LabelSmoothingConfig::pytorch(0.1), k, range.start, range.len())?;
//! let logits = vec![0.0f32; n * range.len()];
//! let labels = vec![7i64; n];
//! let mut grad = vec![0.0f32; logits.len()];
//! let value = loss.loss_and_grad(&logits, &labels, GradOutput::ONE, &mut grad)?; // the same on every rank
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

/// This crate's README, whose examples run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod exchange;
mod linear;
mod loss;

pub use label_smoothing;
pub use linear::ShardedLinearLoss;
pub use loss::ShardedLoss;
pub use mpi;

use label_smoothing::LossError;
use thiserror::Error;

/// What went wrong in a sharded call. Every rank of the communicator returns the same variant for the same
/// cause (a bad input on one rank is an error on all of them, never a deadlock).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The inputs of rank `rank` failed the core crate's checks (shapes, labels, upstream gradient).
    #[error("rank {rank}: {message}")]
    Input {
        /// The first rank whose inputs failed.
        rank: usize,
        /// Its error, as text (the same on every rank).
        message: String,
        /// The typed error, on the rank that found it.
        local: Option<LossError>,
    },
    /// The ranks disagree on something that must be the same everywhere (`N`, the labels, the configuration).
    #[error("the ranks disagree on {what}: rank 0 has {first}, rank {rank} has {other}")]
    Mismatch {
        /// What differs.
        what: &'static str,
        /// The first rank that differs from rank 0.
        rank: usize,
        /// Rank 0's value.
        first: String,
        /// That rank's value.
        other: String,
    },
    /// An error every rank finds the same from the gathered values: a layout that does not tile `[0, K)`, an
    /// invalid configuration or class weight.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// A message longer than MPI's `int` counts allow.
    #[error("{what}: {count} values exceed MPI's count limit ({})", i32::MAX)]
    TooLarge {
        /// What was to be sent.
        what: &'static str,
        /// How many values.
        count: usize,
    },
}

/// `Result` with [`ShardError`].
pub type Result<T, E = ShardError> = std::result::Result<T, E>;
