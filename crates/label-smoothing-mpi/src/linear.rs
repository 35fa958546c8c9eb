//! [`ShardedLinearLoss`]: the loss of a linear classifier whose rows are sharded by class.

use crate::exchange::sum_in_rank_order;
use crate::loss::{check_all, combine, make_plan};
use crate::Result;
use label_smoothing::linear::{LinearGrads, LinearInputs, LinearShard};
use label_smoothing::shard::ShardLayout;
use label_smoothing::{GradOutput, LabelSmoothingConfig, Loss};
use mpi::traits::*;

/// The label-smoothed cross-entropy of `logits = x W^T (+ b)` with the classifier's rows sharded over the ranks:
/// rank `r` holds `W_r [K_r, D]` (and `b_r [K_r]`) for the classes `[offset_r, offset_r + K_r)`; the hidden states
/// `x [N, D]` and the labels are the same on every rank. The logits are computed a block of rows at a time and
/// never held whole, on any rank ([`LinearShard`]).
///
/// Returns the same loss on every rank, the rank's `grad_W_r` and `grad_b_r`, and `grad_x`, summed over the
/// ranks in rank order (the same bits on every rank and for any MPI reduction algorithm). Agrees with the
/// single-process [`LinearCrossEntropy`](label_smoothing::linear::LinearCrossEntropy) within SPEC.md's
/// tolerances (the products of a shard's rows are not promised to round as the whole product's).
pub struct ShardedLinearLoss<'c, C: Communicator> {
    comm: &'c C,
    shard: LinearShard,
}

impl<C: Communicator> std::fmt::Debug for ShardedLinearLoss<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedLinearLoss").field("shard", &self.shard).finish()
    }
}

impl<'c, C: Communicator> ShardedLinearLoss<'c, C> {
    /// Collective: this rank's classes `[offset, offset + len)` of `num_classes`, on top of a linear layer with
    /// `hidden` inputs; `config` as for [`ShardedLoss::new`](crate::ShardedLoss::new) (weights, if any, of this
    /// rank's classes). The same errors, on every rank, and [`ShardError::Mismatch`](crate::ShardError::Mismatch)
    /// when the ranks disagree on `hidden`.
    pub fn new(
        comm: &'c C,
        config: LabelSmoothingConfig,
        num_classes: usize,
        offset: usize,
        len: usize,
        hidden: usize,
    ) -> Result<Self> {
        let plan = make_plan(comm, config, num_classes, offset, len)?;
        // Every rank sums grad_x [N, D]: a rank with another D would leave the others waiting.
        let hidden_all = crate::exchange::gather_fixed(comm, &[hidden as u64]);
        crate::exchange::same(&hidden_all, 0, "the hidden size D")?;
        Ok(Self {
            comm,
            shard: LinearShard::new(plan, hidden)?,
        })
    }

    /// Uses blocks of `rows` rows instead of the default chosen from the shapes (see [`LinearShard`]).
    pub fn with_block_rows(mut self, rows: usize) -> Result<Self> {
        self.shard = self.shard.with_block_rows(rows)?;
        Ok(self)
    }

    /// The core crate's shard (its plan, layout and block size).
    pub fn shard(&self) -> &LinearShard {
        &self.shard
    }

    /// The layout of all the shards.
    pub fn layout(&self) -> &ShardLayout {
        self.shard.plan().layout()
    }

    /// Collective: the loss alone. `inputs`: `x [N, D]`, this rank's `W_r [K_r, D]` and bias `[K_r]`.
    pub fn loss(&self, inputs: LinearInputs<'_>, labels: &[i64]) -> Result<Loss> {
        self.loss_and_grad(inputs, labels, GradOutput::ONE, LinearGrads::default())
    }

    /// Collective: the loss and the gradients asked for in `grads` (each fully overwritten): `grad_x [N, D]`
    /// (summed over the ranks: asked for on every rank or on none), and this rank's `grad_W_r [K_r, D]`,
    /// `grad_b_r [K_r]`.
    pub fn loss_and_grad(
        &self,
        inputs: LinearInputs<'_>,
        labels: &[i64],
        grad_output: GradOutput<'_>,
        mut grads: LinearGrads<'_>,
    ) -> Result<Loss> {
        let local = self.shard.check(&inputs, labels, grad_output, &grads).map(|_| ());
        // Whether grad_x is summed is agreed too: a rank that skipped the sum would leave the others waiting.
        let wants_x = ("whether grad_x is asked for", u64::from(grads.x.is_some()));
        check_all(self.comm, local, labels, grad_output, Some(wants_x))?;
        let plan = self.shard.plan();
        let n = labels.len();
        let mut record = vec![0.0f64; n * plan.record_len(plan.rank())];
        self.shard.local_stats(inputs, labels, &mut record)?;
        let combined = combine(self.comm, plan, labels, grad_output, &record)?;
        let backward = grads.x.is_some() || grads.weight.is_some() || grads.bias.is_some();
        if backward {
            self.shard.local_grads(
                &combined,
                inputs,
                labels,
                LinearGrads {
                    x: grads.x.as_deref_mut(),
                    weight: grads.weight.as_deref_mut(),
                    bias: grads.bias.as_deref_mut(),
                },
            )?;
        }
        if let Some(gx) = grads.x.as_deref_mut() {
            sum_in_rank_order(self.comm, gx)?;
        }
        Ok(combined.loss().clone())
    }
}
