//! The label-smoothed cross-entropy with the classes split across processes (or devices), without the
//! transport: [`ShardPlan`] computes what one shard contributes, and what every shard computes the same from
//! everyone's contributions. A transport (MPI in the `label-smoothing-mpi` crate) moves the records between the
//! three steps:
//!
//! 1. [`ShardPlan::local_stats`]: each shard turns its logits `[N, K_r]` into a record of `N` rows of
//!    [`ShardPlan::record_len`] `f64` values: the label's logit when the label is in the shard, and four
//!    statistics ([`RowStats`] without the soft-target sums) per *piece*, the shard's part of one chunk of
//!    [`CHUNK`] classes of the global row.
//! 2. The transport gathers every shard's record on every shard (an all-gather).
//! 3. [`ShardPlan::combine`] folds the pieces of each row in class order, left to right, into the row's
//!    statistics and computes the loss and the reduction: the same on every shard, whatever the transport's
//!    reduction tree, because each shard folds the same values in the same order. Then
//!    [`ShardPlan::local_grad`] writes the shard's slice of the gradient.
//!
//! This is exactly what the single-process kernel does, chunk by chunk: where every shard boundary is a
//! multiple of [`CHUNK`] ([`ShardLayout::chunk_aligned`]), the pieces are the kernel's chunks, computed by the
//! same chunk kernels and folded in the same order, so the loss and every gradient entry are **bit-identical** to
//! [`LabelSmoothingLoss::loss_and_grad`] on the concatenated logits, for any number of shards. Elsewhere a
//! chunk is split between two shards; the result then agrees within SPEC.md's tolerances.
//!
//! Hard labels only (both spreads with the global `K`, fixed and adaptive smoothing, class weights, the ignore
//! index, every reduction and an upstream gradient); soft targets are not supported. Logits are `f32`.
//!
//! ```
//! use label_smoothing::shard::{ShardLayout, ShardPlan};
//! use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
//! let (n, k) = (2, 5000);
//! let logits: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0).collect();
//! let labels = vec![3i64, 4999];
//! let loss_fn = LabelSmoothingConfig::pytorch(0.1).init(k)?;
//!
//! // Two shards cut at a chunk boundary: classes [0, 4096) and [4096, 5000).
//! let layout = ShardLayout::from_lens(&[4096, 904])?;
//! let plans: Vec<ShardPlan> =
//!     (0..2).map(|r| ShardPlan::new(loss_fn.clone(), layout.clone(), r)).collect::<Result<_, _>>()?;
//! let shard_logits = |r: usize| -> Vec<f32> {
//!     let range = layout.range(r);
//!     logits.chunks(k).flat_map(|row| row[range.clone()].to_vec()).collect()
//! };
//! // Step 1 on each shard, step 2 (the exchange) by hand, step 3 on each shard.
//! let mut records = Vec::new();
//! for (r, plan) in plans.iter().enumerate() {
//!     let mut rec = vec![0.0; n * plan.record_len(r)];
//!     plan.local_stats(&shard_logits(r), &labels, &mut rec)?;
//!     records.push(rec);
//! }
//! let gathered: Vec<&[f64]> = records.iter().map(|r| r.as_slice()).collect();
//! let combined = plans[1].combine(&labels, GradOutput::ONE, &gathered)?;
//! let mut grad1 = vec![0.0f32; n * 904];
//! plans[1].local_grad(&combined, &shard_logits(1), &mut grad1)?;
//!
//! // The same bits as one process on the whole logits.
//! let mut grad = vec![0.0f32; n * k];
//! let whole = loss_fn.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad)?;
//! assert_eq!(combined.loss(), &whole);
//! assert_eq!(&grad1[..904], &grad[4096..5000]);
//! # Ok::<(), label_smoothing::LossError>(())
//! ```

use crate::checks::{check_grad_output, check_labels};
use crate::driver::pieces::{run_shard_rows, ShardOp, ShardRows};
use crate::driver::{nonzero_rows, reduce, reduce_z, reduction_scale, z_ratio};
use crate::error::{LossError, Result};
use crate::kernel::{GradRow, RowStats};
use crate::loss::LabelSmoothingLoss;
use crate::row::{CallPlan, RowKind, RowLoss};
use crate::types::{GradOutput, Loss, Targets};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

pub use crate::kernel::CHUNK;

/// `f64` values per piece in a record: `max`, `sum_exp`, `mass`, `shifted` (see [`RowStats`]).
pub const VALUES_PER_PIECE: usize = 4;

/// Rows per parallel task: about this many logits.
const TASK_ELEMS: usize = 1 << 15;

/// How the classes `[0, K)` are cut into contiguous shards, shard `r` holding `[offset_r, offset_r + K_r)` with
/// the shards in order (`offset_0 = 0`, `offset_{r+1} = offset_r + K_r`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    /// `P + 1` offsets, from 0 to `K`.
    offsets: Vec<usize>,
}

impl ShardLayout {
    /// Shards of the given sizes, in order. Errors: no shards, or a shard of no classes
    /// ([`LossError::ShardLayout`]).
    pub fn from_lens(lens: &[usize]) -> Result<Self> {
        if lens.is_empty() {
            return Err(LossError::ShardLayout {
                reason: "no shards".into(),
            });
        }
        if let Some(r) = lens.iter().position(|&l| l == 0) {
            return Err(LossError::ShardLayout {
                reason: format!("shard {r} holds no classes"),
            });
        }
        let mut offsets = Vec::with_capacity(lens.len() + 1);
        offsets.push(0usize);
        for &l in lens {
            let next = offsets[offsets.len() - 1]
                .checked_add(l)
                .ok_or_else(|| LossError::ShardLayout {
                    reason: "the shard sizes overflow".into(),
                })?;
            offsets.push(next);
        }
        Ok(Self { offsets })
    }

    /// Shards given as `(offset, len)` per shard, in shard order, checked to tile `[0, K)` exactly: the first
    /// offset is 0 and each shard starts where the previous one ends. The error names the first shard that
    /// does not.
    pub fn from_ranges(ranges: &[(usize, usize)], k: usize) -> Result<Self> {
        let mut expect = 0usize;
        for (r, &(offset, len)) in ranges.iter().enumerate() {
            if offset != expect {
                return Err(LossError::ShardLayout {
                    reason: format!(
                        "shard {r} starts at class {offset}, but the shards before it end at {expect}: the shards \
                         must tile [0, {k}) in order"
                    ),
                });
            }
            expect = offset.saturating_add(len);
        }
        if expect != k {
            return Err(LossError::ShardLayout {
                reason: format!("the shards cover [0, {expect}), not [0, {k})"),
            });
        }
        Self::from_lens(&ranges.iter().map(|&(_, l)| l).collect::<Vec<_>>())
    }

    /// `parts` shards of `k` classes, cut at multiples of [`CHUNK`] (so the result is bit-identical to one
    /// process) when there are at least as many chunks as shards, the chunks shared out as evenly as possible;
    /// otherwise cut as evenly as possible by classes. Errors when `parts` is 0 or exceeds `k`.
    pub fn even(k: usize, parts: usize) -> Result<Self> {
        if parts == 0 || parts > k {
            return Err(LossError::ShardLayout {
                reason: format!("{parts} shards of {k} classes: need 1 <= shards <= classes"),
            });
        }
        let chunks = k.div_ceil(CHUNK);
        let lens: Vec<usize> = if chunks >= parts {
            (0..parts)
                .map(|r| {
                    let (a, b) = (r * chunks / parts * CHUNK, ((r + 1) * chunks / parts * CHUNK).min(k));
                    b - a
                })
                .collect()
        } else {
            (0..parts).map(|r| (r + 1) * k / parts - r * k / parts).collect()
        };
        Self::from_lens(&lens)
    }

    /// The number of classes `K`.
    pub fn num_classes(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }

    /// The number of shards `P`.
    pub fn parts(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The classes of shard `r` (`r < P`).
    pub fn range(&self, r: usize) -> Range<usize> {
        self.offsets[r]..self.offsets[r + 1]
    }

    /// The shard holding class `c` (`c < K`).
    pub fn owner(&self, c: usize) -> usize {
        self.offsets.partition_point(|&o| o <= c) - 1
    }

    /// Whether every boundary between shards is a multiple of [`CHUNK`]: then the sharded loss is
    /// bit-identical to one process.
    pub fn chunk_aligned(&self) -> bool {
        self.offsets[1..self.parts()].iter().all(|&o| o % CHUNK == 0)
    }

    /// The pieces of shard `r`: local `[start, end)` of its part of each chunk of the global row.
    fn pieces(&self, r: usize) -> Vec<(usize, usize)> {
        let range = self.range(r);
        let mut out = Vec::new();
        let mut c = range.start;
        while c < range.end {
            let end = ((c / CHUNK + 1) * CHUNK).min(range.end);
            out.push((c - range.start, end - range.start));
            c = end;
        }
        out
    }
}

/// One shard's part of a class-sharded loss: the shard `rank` of `layout`, with the global loss `loss` (its `K`
/// and class weights are the global ones). See the [module](self) documentation for the protocol.
#[derive(Debug, Clone)]
pub struct ShardPlan {
    /// Shared by the plans of every shard of one loss ([`ShardPlan::for_rank`]): the weights can be large.
    loss: Arc<LabelSmoothingLoss>,
    layout: ShardLayout,
    rank: usize,
    /// The pieces of every shard.
    pieces: Arc<Vec<Vec<(usize, usize)>>>,
}

/// What every shard computes the same from the gathered records: the loss, and what the gradient pass needs.
#[derive(Debug, Clone)]
pub struct ShardCombined {
    loss: Loss,
    losses: Vec<f64>,
    /// Each row's z-loss term `s lse^2` (0 for an ignored row).
    z: Vec<f64>,
    /// The z-loss term alone, reduced like the loss.
    z_loss: Loss,
    rows: Vec<Option<GradRow>>,
    /// Every piece's max, `[N, all pieces]` in class order: what each shard's gradient pass reads its own from.
    maxima: Vec<f32>,
    /// The `mean-nonzero` correction of the gradient (1 when every kept row has a non-zero loss).
    ratio: f64,
}

impl ShardCombined {
    /// The loss: a scalar, or `[N]` values for reduction `none` (the same on every shard).
    pub fn loss(&self) -> &Loss {
        &self.loss
    }

    /// Each row's loss in f64, before the reduction.
    pub fn row_losses(&self) -> &[f64] {
        &self.losses
    }

    /// The z-loss term alone (SPEC.md, "z-loss"), reduced like the loss: a scalar, or `[N]` values for
    /// reduction `none`; zero without z-loss.
    pub fn z_loss(&self) -> &Loss {
        &self.z_loss
    }

    /// Each row's z-loss term `s lse_i^2` in f64 (0 for an ignored row).
    pub(crate) fn row_z(&self) -> &[f64] {
        &self.z
    }

    /// The number of rows `N`.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// The factor `mean-nonzero` applies to the gradient at the end (1 when every kept row has a non-zero
    /// loss): [`ShardPlan::local_grad`] applies it; callers of [`ShardPlan::local_grad_rows`] apply it
    /// themselves.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }
}

impl ShardPlan {
    /// Shard `rank` of `layout` for the loss `loss`. Errors: a layout whose `K` is not the loss's, a rank outside
    /// the layout, soft-target-only settings are not involved (hard labels only).
    pub fn new(loss: LabelSmoothingLoss, layout: ShardLayout, rank: usize) -> Result<Self> {
        if layout.num_classes() != loss.num_classes() {
            return Err(LossError::ShardLayout {
                reason: format!(
                    "the shards cover {} classes, the loss has K = {}",
                    layout.num_classes(),
                    loss.num_classes()
                ),
            });
        }
        if rank >= layout.parts() {
            return Err(LossError::ShardLayout {
                reason: format!("rank {rank} of a layout of {} shards", layout.parts()),
            });
        }
        let pieces = Arc::new((0..layout.parts()).map(|r| layout.pieces(r)).collect());
        Ok(Self {
            loss: Arc::new(loss),
            layout,
            rank,
            pieces,
        })
    }

    /// The plan of shard `rank` of the same loss and layout (sharing the loss, without copying its weights).
    pub fn for_rank(&self, rank: usize) -> Result<Self> {
        if rank >= self.layout.parts() {
            return Err(LossError::ShardLayout {
                reason: format!("rank {rank} of a layout of {} shards", self.layout.parts()),
            });
        }
        Ok(Self { rank, ..self.clone() })
    }

    /// The global loss.
    pub fn loss_fn(&self) -> &LabelSmoothingLoss {
        &self.loss
    }

    /// The layout.
    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    /// This shard's index.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// This shard's classes.
    pub fn classes(&self) -> Range<usize> {
        self.layout.range(self.rank)
    }

    /// `f64` values per row in shard `r`'s record: 1 (the label's logit) + [`VALUES_PER_PIECE`] per piece.
    pub fn record_len(&self, r: usize) -> usize {
        1 + VALUES_PER_PIECE * self.pieces[r].len()
    }

    /// Checks this shard's inputs: `logits_len` is `N * K_r` with `N = labels.len()`, every label is in the
    /// global `[0, K)` or the ignore index, `grad_output` fits the reduction. Returns `N`. Every call checks
    /// this first; a transport calls it to agree on validity before the exchange.
    pub fn check(&self, logits_len: usize, labels: &[i64], grad_output: GradOutput<'_>) -> Result<usize> {
        let (n, kr) = (labels.len(), self.classes().len());
        if n.checked_mul(kr) != Some(logits_len) {
            return Err(LossError::Length {
                what: "logits",
                expected: format!(
                    "{} ([N, K_r] = [{n}, {kr}]: the shard's classes {:?} of every row)",
                    n.saturating_mul(kr),
                    self.classes()
                ),
                got: logits_len,
            });
        }
        check_labels(labels, self.loss.num_classes(), self.loss.config().ignore_index)?;
        check_grad_output(self.loss.config().reduction, grad_output, n)?;
        Ok(n)
    }

    /// The plan of a call on `labels`, with its reduction's `(denominator, scale)` ([`reduction_scale`]).
    fn plan<'a>(
        &'a self,
        labels: &'a [i64],
        grad_output: GradOutput<'a>,
        (denominator, scale): (f64, f64),
    ) -> CallPlan<'a> {
        let targets = Targets::Labels(labels);
        let ratio = z_ratio(self.loss.config(), targets, denominator);
        CallPlan::new(&self.loss, targets, grad_output, scale, false).with_z_ratio(ratio)
    }

    fn rows_per_task(&self) -> usize {
        (TASK_ELEMS / self.classes().len().max(1)).max(1)
    }

    /// Step 1: this shard's record (`[N, record_len(rank)]`, fully overwritten) from its logits `[N, K_r]` and
    /// the global labels `[N]`.
    pub fn local_stats(&self, logits: &[f32], labels: &[i64], record: &mut [f64]) -> Result<()> {
        let n = self.check(logits.len(), labels, GradOutput::ONE)?;
        let rec_len = self.record_len(self.rank);
        if record.len() != n * rec_len {
            return Err(LossError::Length {
                what: "record",
                expected: format!("{} ([N, record_len] = [{n}, {rec_len}])", n * rec_len),
                got: record.len(),
            });
        }
        let pieces = &self.pieces[self.rank];
        let (kr, offset) = (self.classes().len(), self.classes().start);
        let plan = self.plan(labels, GradOutput::ONE, (1.0, 1.0));
        let mut stats = vec![RowStats::EMPTY; n * pieces.len()];
        let rt = self.rows_per_task();
        logits
            .par_chunks(rt * kr)
            .zip(stats.par_chunks_mut(rt * pieces.len()))
            .enumerate()
            .for_each(|(ti, (z, st))| {
                run_shard_rows(ShardRows {
                    plan: &plan,
                    first: ti * rt,
                    offset,
                    len: kr,
                    pieces,
                    op: ShardOp::Stats(z, st),
                })
            });
        let ignore = self.loss.config().ignore_index;
        for (i, (rec, st)) in record
            .chunks_exact_mut(rec_len)
            .zip(stats.chunks_exact(pieces.len()))
            .enumerate()
        {
            let y = labels[i];
            rec[0] = if Some(y) != ignore && self.classes().contains(&(y as usize)) {
                logits[i * kr + y as usize - offset] as f64
            } else {
                0.0
            };
            for (v, s) in rec[1..].chunks_exact_mut(VALUES_PER_PIECE).zip(st) {
                v.copy_from_slice(&[s.max as f64, s.sum_exp, s.mass, s.shifted]);
            }
        }
        Ok(())
    }

    /// Step 3a, the same on every shard: the loss from every shard's record (`records[r]` is shard `r`'s,
    /// `[N, record_len(r)]`), the global labels `[N]` and the upstream gradient.
    pub fn combine(&self, labels: &[i64], grad_output: GradOutput<'_>, records: &[&[f64]]) -> Result<ShardCombined> {
        let n = labels.len();
        self.check(n * self.classes().len(), labels, grad_output)?;
        if records.len() != self.layout.parts() {
            return Err(LossError::Length {
                what: "records",
                expected: format!("{} (one per shard)", self.layout.parts()),
                got: records.len(),
            });
        }
        for (r, rec) in records.iter().enumerate() {
            if rec.len() != n * self.record_len(r) {
                return Err(LossError::Length {
                    what: "record",
                    expected: format!(
                        "{} for shard {r} ([N, record_len] = [{n}, {}])",
                        n * self.record_len(r),
                        self.record_len(r)
                    ),
                    got: rec.len(),
                });
            }
        }
        let config = self.loss.config();
        // As the single-process driver, with its reduction.
        let (denominator, scale) = reduction_scale(config, n, Targets::Labels(labels));
        let plan = self.plan(labels, grad_output, (denominator, scale));
        let lens: Vec<usize> = (0..records.len()).map(|r| self.record_len(r)).collect();
        let rows: Vec<(RowLoss, Option<GradRow>)> = (0..n)
            .into_par_iter()
            .with_min_len(64)
            .map(|i| {
                let y = labels[i];
                if Some(y) == config.ignore_index {
                    return (RowLoss::default(), None);
                }
                let mut acc = RowStats::EMPTY;
                for (rec, &len) in records.iter().zip(&lens) {
                    for v in rec[i * len + 1..(i + 1) * len].chunks_exact(VALUES_PER_PIECE) {
                        let piece = RowStats {
                            max: v[0] as f32,
                            sum_exp: v[1],
                            mass: v[2],
                            shifted: v[3],
                            target_mass: 0.0,
                            target_shifted: 0.0,
                        };
                        acc = acc.combine(&piece);
                    }
                }
                let owner = self.layout.owner(y as usize);
                let zy = records[owner][i * lens[owner]] as f32;
                let (loss, g) = plan.finish(i, &RowKind::Hard { y: y as usize, zy }, &acc);
                (loss, Some(g))
            })
            .collect();
        let (row_losses, rows): (Vec<RowLoss>, Vec<Option<GradRow>>) = rows.into_iter().unzip();
        let losses: Vec<f64> = row_losses.iter().map(|r| r.loss).collect();
        let z: Vec<f64> = row_losses.iter().map(|r| r.z).collect();
        let maxima: Vec<f32> = (0..n)
            .flat_map(|i| {
                records.iter().zip(&lens).flat_map(move |(rec, &len)| {
                    rec[i * len + 1..(i + 1) * len]
                        .chunks_exact(VALUES_PER_PIECE)
                        .map(|v| v[0] as f32)
                })
            })
            .collect();
        let (loss, ratio) = reduce(config.reduction, &losses, denominator, scale);
        let z_ratio = z_ratio(config, Targets::Labels(labels), denominator);
        let z_loss = reduce_z(config.reduction, &row_losses, scale, z_ratio, nonzero_rows(&losses));
        Ok(ShardCombined {
            loss,
            losses,
            z,
            z_loss,
            rows,
            maxima,
            ratio,
        })
    }

    /// Step 3b: this shard's slice of the gradient, `grad [N, K_r]` (fully overwritten), from its logits.
    pub fn local_grad(&self, combined: &ShardCombined, logits: &[f32], grad: &mut [f32]) -> Result<()> {
        if grad.len() != logits.len() {
            return Err(LossError::Length {
                what: "grad",
                expected: format!("{} (like the shard's logits)", logits.len()),
                got: grad.len(),
            });
        }
        self.grad_rows(combined, 0, Some(logits), grad)?;
        rescale(combined.ratio, grad);
        Ok(())
    }

    /// [`local_grad`](Self::local_grad) written over the logits.
    pub fn local_grad_in_place(&self, combined: &ShardCombined, logits: &mut [f32]) -> Result<()> {
        self.grad_rows(combined, 0, None, logits)?;
        rescale(combined.ratio, logits);
        Ok(())
    }

    /// The gradient of the rows `first_row..` (as many as `logits` holds, `[rows, K_r]`) written over their
    /// logits, *without* the `mean-nonzero` correction [`ShardCombined::ratio`]: for callers that compute the
    /// logits a block of rows at a time and apply the correction to what they derive from the gradient.
    pub fn local_grad_rows(&self, combined: &ShardCombined, first_row: usize, logits: &mut [f32]) -> Result<()> {
        self.grad_rows(combined, first_row, None, logits)
    }

    /// The gradient of the rows `first_row..` into `out` (from `logits`, or over `out` when `None`).
    fn grad_rows(
        &self,
        combined: &ShardCombined,
        first_row: usize,
        logits: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<()> {
        let kr = self.classes().len();
        let n = combined.rows();
        let rows = out.len() / kr;
        if !out.len().is_multiple_of(kr) || first_row + rows > n {
            return Err(LossError::Length {
                what: "logits",
                expected: format!(
                    "[rows, {kr}] with rows <= {} (the rows from {first_row} of N = {n})",
                    n.saturating_sub(first_row)
                ),
                got: out.len(),
            });
        }
        let pieces = &self.pieces[self.rank];
        let np = pieces.len();
        // Labels only serve the ignore test of the statistics pass; the gradient reads each row's GradRow.
        let plan = self.plan(&[], GradOutput::ONE, (1.0, 1.0));
        let rt = self.rows_per_task();
        let grad_rows = &combined.rows[first_row..first_row + rows];
        // This shard's piece maxima of those rows, out of every shard's.
        let all: usize = self.pieces.iter().map(Vec::len).sum();
        let before: usize = self.pieces[..self.rank].iter().map(Vec::len).sum();
        let maxima: Vec<f32> = (first_row..first_row + rows)
            .flat_map(|i| combined.maxima[i * all + before..i * all + before + np].iter().copied())
            .collect();
        out.par_chunks_mut(rt * kr)
            .zip(grad_rows.par_chunks(rt))
            .zip(maxima.par_chunks(rt * np))
            .enumerate()
            .for_each(|(ti, ((o, g), m))| {
                let z = logits.map(|z| &z[ti * rt * kr..ti * rt * kr + o.len()]);
                run_shard_rows(ShardRows {
                    plan: &plan,
                    first: first_row + ti * rt,
                    offset: self.classes().start,
                    len: kr,
                    pieces,
                    op: ShardOp::Grad(z, o, g, m),
                })
            });
        Ok(())
    }
}

/// The `mean-nonzero` correction, as the single-process driver applies it.
fn rescale(ratio: f64, grad: &mut [f32]) {
    if ratio != 1.0 {
        grad.par_chunks_mut(TASK_ELEMS)
            .for_each(|c| c.iter_mut().for_each(|v| *v = (*v as f64 * ratio) as f32));
    }
}
