//! [`LinearShard`]: one shard of a class-sharded linear classifier, the classifier rows `W_r [K_r, D]` (and
//! bias `[K_r]`) of the classes of a [`ShardPlan`], with the hidden states replicated on every shard.

use super::products::{self, ClassGrads};
use super::{check_rows, rows_per_block, LinearCrossEntropy, LinearGrads, LinearInputs};
use crate::checks::check_positive;
use crate::error::{LossError, Result};
use crate::shard::{ShardCombined, ShardPlan};
use crate::types::GradOutput;

/// One shard of `logits = x W^T (+ b)` with the classes split across shards: the same three steps as
/// [`ShardPlan`] (statistics, exchange, combine) on logits that are computed a block of rows at a time and never
/// held whole, then the gradients: this shard's `grad_W_r` and `grad_b_r`, and its *part* of `grad_x`, which the
/// transport sums over the shards (in shard order, for the same bits everywhere).
///
/// The logits of a block are computed twice, once for the statistics and once for the gradient (the statistics
/// of every shard must be known before the gradient of any class): four products of the block instead of three.
#[derive(Debug, Clone)]
pub struct LinearShard {
    plan: ShardPlan,
    hidden: usize,
    block_rows: Option<usize>,
}

impl LinearShard {
    /// The shard `plan` on top of a linear layer with `hidden` inputs (`D >= 1`).
    pub fn new(plan: ShardPlan, hidden: usize) -> Result<Self> {
        // The same checks and defaults as the single-process loss.
        LinearCrossEntropy::new(plan.loss_fn().clone(), hidden)?;
        Ok(Self {
            plan,
            hidden,
            block_rows: None,
        })
    }

    /// Uses blocks of `rows` rows (at least 1) instead of the default chosen from the shapes.
    pub fn with_block_rows(mut self, rows: usize) -> Result<Self> {
        self.block_rows = Some(check_positive("block_rows", rows)?);
        Ok(self)
    }

    /// The shard of the loss this computes on the logits.
    pub fn plan(&self) -> &ShardPlan {
        &self.plan
    }

    /// The hidden size `D`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Rows per block for `n` rows: the override, or as [`LinearCrossEntropy::block_rows`] for `K_r` classes.
    pub fn block_rows(&self, n: usize) -> usize {
        rows_per_block(self.block_rows, self.plan.classes().len(), n)
    }

    /// Checks the shard's inputs (`x [N, D]`, `W_r [K_r, D]`, bias `[K_r]`, the global labels `[N]`, the
    /// gradients' lengths) and returns `N`.
    pub fn check(
        &self,
        inputs: &LinearInputs<'_>,
        labels: &[i64],
        grad_output: GradOutput<'_>,
        grads: &LinearGrads<'_>,
    ) -> Result<usize> {
        let (n, d, kr) = (labels.len(), self.hidden, self.plan.classes().len());
        let len = |what, got, rows, shape| check_rows(what, got, rows, d, shape);
        let bias = |what: &'static str, got: usize| {
            if got == kr {
                Ok(())
            } else {
                Err(LossError::Length {
                    what,
                    expected: format!("{kr} ([K_r], the shard's classes {:?})", self.plan.classes()),
                    got,
                })
            }
        };
        len("x", inputs.x.len(), n, "[N, D]")?;
        len("weight", inputs.weight.len(), kr, "[K_r, D]")?;
        if let Some(b) = inputs.bias {
            bias("bias", b.len())?;
        }
        if let Some(g) = &grads.x {
            len("grad x", g.len(), n, "[N, D]")?;
        }
        if let Some(g) = &grads.weight {
            len("grad weight", g.len(), kr, "[K_r, D]")?;
        }
        if let Some(g) = &grads.bias {
            bias("grad bias", g.len())?;
        }
        self.plan.check(n * kr, labels, grad_output)
    }

    /// Step 1: this shard's record (`[N, plan().record_len(rank)]`) from `x`, `W_r` and `b_r`.
    pub fn local_stats(&self, inputs: LinearInputs<'_>, labels: &[i64], record: &mut [f64]) -> Result<()> {
        let n = self.check(&inputs, labels, GradOutput::ONE, &LinearGrads::default())?;
        let (d, kr) = (self.hidden, self.plan.classes().len());
        let rec_len = self.plan.record_len(self.plan.rank());
        if record.len() != n * rec_len {
            return Err(LossError::Length {
                what: "record",
                expected: format!("{} ([N, record_len] = [{n}, {rec_len}])", n * rec_len),
                got: record.len(),
            });
        }
        let rows = self.block_rows(n);
        let mut block = vec![0.0f32; rows.min(n) * kr];
        for start in (0..n).step_by(rows) {
            let end = (start + rows).min(n);
            let z = &mut block[..(end - start) * kr];
            products::logits(&inputs.x[start * d..end * d], inputs.weight, inputs.bias, d, kr, z);
            self.plan
                .local_stats(z, &labels[start..end], &mut record[start * rec_len..end * rec_len])?;
        }
        Ok(())
    }

    /// Step 3b: the gradients asked for in `grads` (each fully overwritten): `grad_W_r [K_r, D]`, `grad_b_r
    /// [K_r]`, and this shard's part of `grad_x [N, D]` (to be summed over the shards), from `combined`
    /// ([`ShardPlan::combine`] on the gathered records).
    pub fn local_grads(
        &self,
        combined: &ShardCombined,
        inputs: LinearInputs<'_>,
        labels: &[i64],
        mut grads: LinearGrads<'_>,
    ) -> Result<()> {
        let n = self.check(&inputs, labels, GradOutput::ONE, &grads)?;
        if combined.rows() != n {
            return Err(LossError::Length {
                what: "labels",
                expected: format!("{} (the rows of the combined statistics)", combined.rows()),
                got: n,
            });
        }
        let (d, kr) = (self.hidden, self.plan.classes().len());
        let rows = self.block_rows(n);
        let mut block = vec![0.0f32; rows.min(n) * kr];
        let mut bias_acc = grads.bias.as_ref().map(|_| vec![0.0f64; kr]);
        for start in (0..n).step_by(rows) {
            let end = (start + rows).min(n);
            let x = &inputs.x[start * d..end * d];
            let z = &mut block[..(end - start) * kr];
            products::logits(x, inputs.weight, inputs.bias, d, kr, z);
            self.plan.local_grad_rows(combined, start, z)?;
            if let Some(gx) = grads.x.as_deref_mut() {
                products::grad_input(z, inputs.weight, d, kr, false, &mut gx[start * d..end * d]);
            }
            let out = ClassGrads {
                weight: grads.weight.as_deref_mut(),
                bias: bias_acc.as_deref_mut(),
            };
            products::grad_weight(z, x, d, kr, start > 0, out);
        }
        if n == 0 {
            if let Some(gw) = grads.weight.as_deref_mut() {
                gw.fill(0.0);
            }
        }
        let ratio = combined.ratio();
        if let (Some(gb), Some(acc)) = (grads.bias.as_deref_mut(), &bias_acc) {
            gb.iter_mut().zip(acc).for_each(|(g, &a)| *g = (a * ratio) as f32);
        }
        if ratio != 1.0 {
            let rescale = |g: &mut [f32]| g.iter_mut().for_each(|v| *v = (*v as f64 * ratio) as f32);
            grads.x.as_deref_mut().map(rescale);
            grads.weight.as_deref_mut().map(rescale);
        }
        Ok(())
    }
}
