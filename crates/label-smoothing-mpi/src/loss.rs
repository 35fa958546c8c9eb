//! [`ShardedLoss`]: the loss on class-sharded logits.

use crate::exchange::{agree, fnv1a, gather_var, same};
use crate::{Result, ShardError};
use label_smoothing::shard::{ShardCombined, ShardLayout, ShardPlan};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Loss, LossError};
use mpi::traits::*;

/// The label-smoothed cross-entropy with the classes sharded over the ranks of a communicator.
///
/// Rank `r` holds the logits `[N, K_r]` of the classes `[offset_r, offset_r + K_r)`; the shards must tile
/// `[0, K)` in rank order. Every call is collective: every rank calls it with its own logits and the same
/// labels, and gets the same loss. See the [crate](crate) documentation for exactness and communication.
pub struct ShardedLoss<'c, C: Communicator> {
    comm: &'c C,
    plan: ShardPlan,
}

impl<C: Communicator> std::fmt::Debug for ShardedLoss<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedLoss").field("plan", &self.plan).finish()
    }
}

/// The configuration without its weights, as text: what every rank must agree on.
fn fingerprint(config: &LabelSmoothingConfig, k: usize) -> String {
    let c = LabelSmoothingConfig {
        weights: None,
        ..config.clone()
    };
    format!(
        "K = {k}, weights: {}, {c:?}",
        if config.weights.is_some() { "yes" } else { "no" }
    )
}

impl<'c, C: Communicator> ShardedLoss<'c, C> {
    /// Collective: this rank's shard, the classes `[offset, offset + len)` of `num_classes`, with `config` the
    /// same on every rank except its `weights`, which (if given) are this rank's classes' `[len]` weights.
    ///
    /// Errors, on every rank: a rank whose weights are not `[len]` ([`ShardError::Input`]), ranks that disagree
    /// on `num_classes` or the configuration ([`ShardError::Mismatch`]), shards that do not tile `[0, K)` in
    /// rank order, an invalid configuration or weight ([`ShardError::Loss`]).
    pub fn new(
        comm: &'c C,
        config: LabelSmoothingConfig,
        num_classes: usize,
        offset: usize,
        len: usize,
    ) -> Result<Self> {
        let plan = make_plan(comm, config, num_classes, offset, len)?;
        Ok(Self { comm, plan })
    }

    /// The core crate's plan of this rank's shard (its layout, its classes).
    pub fn plan(&self) -> &ShardPlan {
        &self.plan
    }

    /// The layout of all the shards.
    pub fn layout(&self) -> &ShardLayout {
        self.plan.layout()
    }

    /// Collective: the loss alone. `logits`: `[N, K_r]`; `labels`: `[N]`, the same on every rank.
    pub fn loss(&self, logits: &[f32], labels: &[i64]) -> Result<Loss> {
        Ok(self.forward(logits, labels, GradOutput::ONE, Ok(()))?.loss().clone())
    }

    /// Collective: the loss, and this rank's slice of its gradient written into `grad` (`[N, K_r]`, fully
    /// overwritten). `grad_output`: the upstream gradient, the same on every rank.
    pub fn loss_and_grad(
        &self,
        logits: &[f32],
        labels: &[i64],
        grad_output: GradOutput<'_>,
        grad: &mut [f32],
    ) -> Result<Loss> {
        let grad_len = if grad.len() == logits.len() {
            Ok(())
        } else {
            Err(LossError::Length {
                what: "grad",
                expected: format!("{} (like the shard's logits)", logits.len()),
                got: grad.len(),
            })
        };
        let combined = self.forward(logits, labels, grad_output, grad_len)?;
        self.plan.local_grad(&combined, logits, grad)?;
        Ok(combined.loss().clone())
    }

    /// Collective: the loss, with this rank's slice of its gradient written over its logits (no second
    /// `[N, K_r]` buffer). Everything is checked and agreed before the first write: on an error the logits are
    /// untouched.
    pub fn loss_and_grad_in_place(
        &self,
        logits: &mut [f32],
        labels: &[i64],
        grad_output: GradOutput<'_>,
    ) -> Result<Loss> {
        let combined = self.forward(logits, labels, grad_output, Ok(()))?;
        self.plan.local_grad_in_place(&combined, logits)?;
        Ok(combined.loss().clone())
    }

    /// The checks (this rank's, `extra` among them, then the agreement of all) and the exchange: every rank's
    /// record gathered and combined.
    fn forward(
        &self,
        logits: &[f32],
        labels: &[i64],
        grad_output: GradOutput<'_>,
        extra: std::result::Result<(), LossError>,
    ) -> Result<ShardCombined> {
        let local = extra.and_then(|()| self.plan.check(logits.len(), labels, grad_output).map(|_| ()));
        check_all(self.comm, local, labels, grad_output, None)?;
        let n = labels.len();
        let mut record = vec![0.0f64; n * self.plan.record_len(self.plan.rank())];
        self.plan.local_stats(logits, labels, &mut record)?;
        combine(self.comm, &self.plan, labels, grad_output, &record)
    }
}

/// The collective part of [`ShardedLoss::new`], shared with the linear loss.
pub(crate) fn make_plan<C: Communicator>(
    comm: &C,
    config: LabelSmoothingConfig,
    num_classes: usize,
    offset: usize,
    len: usize,
) -> Result<ShardPlan> {
    let local = match &config.weights {
        Some(w) if w.len() != len => Err(LossError::Length {
            what: "weights",
            expected: format!(
                "{len} (the weights of this rank's classes [{offset}, {}))",
                offset + len
            ),
            got: w.len(),
        }),
        _ => Ok(()),
    };
    let fp = fingerprint(&config, num_classes);
    let headers = agree(
        comm,
        &[offset as u64, len as u64, num_classes as u64, fp.len() as u64],
        local,
    )?;
    let fp_lens: Vec<usize> = headers.iter().map(|h| h[3] as usize).collect();
    let fps = gather_var(comm, "configurations", fp.as_bytes(), &fp_lens)?;
    let mut at = 0;
    let texts: Vec<String> = fp_lens
        .iter()
        .map(|&l| {
            let t = String::from_utf8_lossy(&fps[at..at + l]).into_owned();
            at += l;
            t
        })
        .collect();
    same(&headers, 2, "the number of classes K")?;
    if let Some(rank) = texts.iter().position(|t| *t != texts[0]) {
        return Err(ShardError::Mismatch {
            what: "the loss configuration",
            rank,
            first: texts[0].clone(),
            other: texts[rank].clone(),
        });
    }
    let ranges: Vec<(usize, usize)> = headers.iter().map(|h| (h[0] as usize, h[1] as usize)).collect();
    let layout = ShardLayout::from_ranges(&ranges, num_classes)?;
    let weights = match &config.weights {
        Some(w) => {
            let lens: Vec<usize> = ranges.iter().map(|&(_, l)| l).collect();
            Some(gather_var(comm, "class weights", w, &lens)?)
        }
        None => None,
    };
    let loss = LabelSmoothingConfig { weights, ..config }.init(num_classes)?;
    Ok(ShardPlan::new(loss, layout, comm.rank() as usize)?)
}

/// Agrees on validity and on `N`, the labels and the upstream gradient, and on `also` (a named value that must
/// be the same everywhere), in one all-gather.
pub(crate) fn check_all<C: Communicator>(
    comm: &C,
    local: std::result::Result<(), LossError>,
    labels: &[i64],
    grad_output: GradOutput<'_>,
    also: Option<(&'static str, u64)>,
) -> Result<()> {
    let labels_hash = fnv1a(labels.iter().flat_map(|y| y.to_le_bytes()));
    let go_hash = match grad_output {
        GradOutput::Scalar(g) => fnv1a(g.to_bits().to_le_bytes()),
        GradOutput::PerRow(g) => fnv1a(g.iter().flat_map(|v| v.to_bits().to_le_bytes())) ^ 1,
    };
    let extra = also.map_or(0, |(_, v)| v);
    let headers = agree(comm, &[labels.len() as u64, labels_hash, go_hash, extra], local)?;
    same(&headers, 0, "N (the number of rows)")?;
    same(&headers, 1, "the labels (their hash)")?;
    same(&headers, 2, "the upstream gradient (its hash)")?;
    if let Some((what, _)) = also {
        same(&headers, 3, what)?;
    }
    Ok(())
}

/// Gathers every rank's record and combines them (the same on every rank).
pub(crate) fn combine<C: Communicator>(
    comm: &C,
    plan: &ShardPlan,
    labels: &[i64],
    grad_output: GradOutput<'_>,
    record: &[f64],
) -> Result<ShardCombined> {
    let n = labels.len();
    let p = plan.layout().parts();
    let counts: Vec<usize> = (0..p).map(|r| n * plan.record_len(r)).collect();
    let all = gather_var(comm, "the row statistics", record, &counts)?;
    let mut at = 0;
    let records: Vec<&[f64]> = counts
        .iter()
        .map(|&c| {
            let s = &all[at..at + c];
            at += c;
            s
        })
        .collect();
    Ok(plan.combine(labels, grad_output, &records)?)
}
