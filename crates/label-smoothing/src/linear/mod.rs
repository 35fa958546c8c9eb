//! The label-smoothed cross-entropy of a linear classifier, `logits = x W^T (+ b)`, computed without ever
//! holding the `[N, K]` logits: [`LinearCrossEntropy`].
//!
//! The rows are cut into blocks of `B` rows ([`LinearCrossEntropy::block_rows`]). For each block, in row order:
//! the block's logits `[B, K]` come from one product, the fused kernel turns them in place into their gradient
//! `G = dL/dlogits` (and the block's per-row losses), then `grad_x = G W` for the block's rows, and
//! `grad_W += G^T x`, `grad_b += sum_rows G`. The scratch memory is the one `[B, K]` block; the logits and
//! their gradient for all `N` rows (`8 N K` bytes in f32) never exist. The products are `gemm`'s (the crate
//! candle uses) on a fixed grid of single-threaded tasks (the private module `products`), so the whole result is bit-identical
//! for any number of threads. It is not bit-identical across block sizes: `grad_W` and `grad_b` add the
//! blocks' contributions in block order.
//!
//! Where even [`BLOCK_ROW_MULTIPLE`] rows of all `K` classes would not fit in [`BLOCK_BYTES`] (more than two
//! million classes), the classes are cut into blocks too ([`LinearCrossEntropy::block_classes`]): for each block
//! of rows, a first pass over the class blocks computes each one's logits and their softmax statistics (the
//! pieces of [`crate::shard`], folded in class order as in one pass), and a second pass recomputes each class
//! block's logits, turns them into their gradient and runs the products. The scratch is then one `[B, K_c]` block:
//! bounded by the budget whatever `K`, for four products instead of three. With class blocks that are multiples
//! of [`CHUNK`](crate::shard::CHUNK) (the default), the kernel's part is the same as without them.
//!
//! The smoothing costs nothing beyond the plain cross-entropy: the kernel writes `coef (Q p - w q)` with the
//! smoothed target `q` directly, in the one pass over the block that the softmax needs anyway, and the three
//! products are the same dense products as without smoothing.
//!
//! An optional gradient filter ([`LinearCrossEntropy::with_gradient_filter`], off by default) takes the
//! smoothing's rank-one part and the label entries out of each block's gradient in closed form and skips, in the
//! two backward products, every tile whose remaining entries are all below a threshold, with a documented bound
//! on the error: it pays on the peaked softmax of a confident classifier.
//!
//! The whole family of SPEC.md for hard labels: both spreads, fixed and adaptive smoothing, class weights, the
//! ignore index, every reduction and an upstream gradient, z-loss and soft-capping (on the logits `x W^T + b`),
//! and each row's predicted class ([`LinearCrossEntropy::report`]). Soft targets are not supported (a `[N, K]` target
//! would be the very tensor this avoids); compose [`LabelSmoothingLoss::loss_and_grad`] with your own products
//! for them.

mod baseline;
mod class_shard;
mod filter;
mod products;

use filter::Block;
use products::ClassGrads;

pub use baseline::{gemms_only, unfused};
pub use class_shard::LinearShard;

use crate::checks::{check_grad_output, check_labels, check_positive};
use crate::config::{LabelSmoothingConfig, Reduction};
use crate::driver::{self, nonzero_rows, reduce, reduce_z, reduction_scale};
use crate::error::{LossError, Result};
use crate::kernel::combine_argmax;
use crate::loss::LabelSmoothingLoss;
use crate::row::RowLoss;
use crate::shard::{ShardLayout, ShardPlan};
use crate::types::{GradOutput, Loss, LossReport, Targets};
use std::borrow::Cow;

/// The scratch budget that chooses the default block of rows: the `[B, K]` logits block in f32.
pub const BLOCK_BYTES: usize = 128 << 20;
/// Rows of a block are a multiple of this (and at least this, unless `N` is smaller).
pub const BLOCK_ROW_MULTIPLE: usize = 16;

/// Rows per block of `k` classes for `n` rows: `rows` if given, else as many as fit in [`BLOCK_BYTES`] in
/// multiples of [`BLOCK_ROW_MULTIPLE`] (at least that many); at most `n`, at least 1.
fn rows_per_block(rows: Option<usize>, k: usize, n: usize) -> usize {
    let rows = rows.unwrap_or_else(|| {
        let fit = BLOCK_BYTES / (4 * k.max(1));
        (fit / BLOCK_ROW_MULTIPLE * BLOCK_ROW_MULTIPLE).max(BLOCK_ROW_MULTIPLE)
    });
    rows.min(n).max(1)
}

/// Checks that a buffer holds `rows x d` values (`shape` names it, as `[N, D]`).
fn check_rows(what: &'static str, got: usize, rows: usize, d: usize, shape: &str) -> Result<()> {
    if rows.checked_mul(d) == Some(got) {
        Ok(())
    } else {
        Err(LossError::Length {
            what,
            expected: format!("{} ({shape} = [{rows}, {d}])", rows.saturating_mul(d)),
            got,
        })
    }
}

/// The inputs of a linear classifier: hidden states `x [N, D]`, weight `W [K, D]` (row-major, as `nn.Linear`
/// stores it) and an optional bias `[K]`.
#[derive(Debug, Clone, Copy)]
pub struct LinearInputs<'a> {
    /// Hidden states `[N, D]`, row-major.
    pub x: &'a [f32],
    /// Classifier weight `[K, D]`, row-major.
    pub weight: &'a [f32],
    /// Bias `[K]`, if the classifier has one.
    pub bias: Option<&'a [f32]>,
}

/// Where the gradients go; each is fully overwritten, and `None` skips its computation.
#[derive(Debug, Default)]
pub struct LinearGrads<'a> {
    /// `dL/dx`, `[N, D]`.
    pub x: Option<&'a mut [f32]>,
    /// `dL/dW`, `[K, D]`.
    pub weight: Option<&'a mut [f32]>,
    /// `dL/db`, `[K]`.
    pub bias: Option<&'a mut [f32]>,
}

/// The label-smoothed cross-entropy of `x W^T (+ b)` for hidden size `D`, with the `[N, K]` logits never
/// materialised (see the [module](self) documentation).
///
/// ```
/// use label_smoothing::linear::{LinearCrossEntropy, LinearGrads, LinearInputs};
/// use label_smoothing::{GradOutput, LabelSmoothingConfig};
/// let (n, d, k) = (4, 3, 5);
/// let x: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
/// let w: Vec<f32> = (0..k * d).map(|i| (i as f32 * 0.11).cos()).collect();
/// let labels = vec![0i64, 4, 2, 1];
///
/// // PyTorch: F.cross_entropy(F.linear(x, w), labels, label_smoothing=0.1)
/// let lce = LinearCrossEntropy::new(LabelSmoothingConfig::pytorch(0.1).init(k)?, d)?;
/// let (mut gx, mut gw) = (vec![0.0; n * d], vec![0.0; k * d]);
/// let grads = LinearGrads { x: Some(&mut gx), weight: Some(&mut gw), bias: None };
/// let inputs = LinearInputs { x: &x, weight: &w, bias: None };
/// let loss = lce.loss_and_grad(inputs, &labels, GradOutput::ONE, grads)?;
/// assert!(loss.scalar().unwrap() > 0.0);
/// # Ok::<(), label_smoothing::LossError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LinearCrossEntropy {
    loss: LabelSmoothingLoss,
    per_row: LabelSmoothingLoss,
    hidden: usize,
    block_rows: Option<usize>,
    block_classes: Option<usize>,
    filter: Option<f32>,
}

impl LinearCrossEntropy {
    /// The loss `loss` (its configuration and `K`) on top of a linear layer with `hidden` inputs (`D >= 1`).
    pub fn new(loss: LabelSmoothingLoss, hidden: usize) -> Result<Self> {
        check_positive("hidden", hidden)?;
        let per_row = LabelSmoothingConfig {
            reduction: Reduction::None,
            ..loss.config().clone()
        }
        .init(loss.num_classes())?;
        Ok(Self {
            loss,
            per_row,
            hidden,
            block_rows: None,
            block_classes: None,
            filter: None,
        })
    }

    /// Uses blocks of `rows` rows (at least 1) instead of the default chosen from the shapes.
    pub fn with_block_rows(mut self, rows: usize) -> Result<Self> {
        self.block_rows = Some(check_positive("block_rows", rows)?);
        Ok(self)
    }

    /// Uses blocks of `classes` classes (at least 1) instead of the default chosen from the shapes; `classes >= K`
    /// turns class blocking off. Multiples of [`CHUNK`](crate::shard::CHUNK) keep the kernel's part of the
    /// result the same as without class blocks; other sizes agree within SPEC.md's tolerances.
    pub fn with_block_classes(mut self, classes: usize) -> Result<Self> {
        self.block_classes = Some(check_positive("block_classes", classes)?);
        Ok(self)
    }

    /// Turns on the gradient filter (off by default): the products skip every tile of 512 classes of a block of
    /// rows where the logits' gradient, less its closed-form smoothing and label parts, is at most `threshold`
    /// in absolute value. Each gradient is then off by at most `threshold * sum_c |W[c, e]|` (`grad_x`),
    /// `threshold * sum_i |x[i, e]|` (`grad_W`) or `threshold * N` (`grad_b`); the loss is exact. It pays where
    /// the softmax is peaked (a trained classifier), where most tiles are skipped; see the `filter` module's
    /// documentation in the source and docs/BENCHMARKS.md.
    ///
    /// Errors: a negative or non-finite threshold; adaptive smoothing, whose target depends on `p` and has no
    /// constant part to take out ([`LossError::Unsupported`]). Works with blocks of classes too.
    pub fn with_gradient_filter(mut self, threshold: f32) -> Result<Self> {
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(LossError::InvalidParameter {
                name: "gradient filter threshold",
                value: threshold as f64,
                expected: "[0, inf)",
            });
        }
        if matches!(self.loss.config().smoothing, crate::config::Smoothing::Adaptive { .. }) {
            return Err(LossError::Unsupported {
                loss: "the gradient filter",
                option: "adaptive smoothing",
            });
        }
        self.filter = Some(threshold);
        Ok(self)
    }

    /// The gradient filter's threshold, if on.
    pub fn gradient_filter(&self) -> Option<f32> {
        self.filter
    }

    /// The classes per block: the override, or all `K` when [`BLOCK_ROW_MULTIPLE`] rows of `K` f32 logits fit
    /// in [`BLOCK_BYTES`], else the most multiple of [`CHUNK`](crate::shard::CHUNK) classes that do. At most `K`.
    pub fn block_classes(&self) -> usize {
        let k = self.loss.num_classes();
        let fit = BLOCK_BYTES / (4 * BLOCK_ROW_MULTIPLE);
        let classes = self.block_classes.unwrap_or(if k <= fit {
            k
        } else {
            (fit / crate::shard::CHUNK * crate::shard::CHUNK).max(crate::shard::CHUNK)
        });
        classes.min(k)
    }

    /// The loss this computes on the logits.
    pub fn loss_fn(&self) -> &LabelSmoothingLoss {
        &self.loss
    }

    /// The hidden size `D`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The rows per block for `n` rows: the override, or the most rows whose `[B, K_c]` f32 logits (`K_c` from
    /// [`block_classes`](Self::block_classes)) fit in [`BLOCK_BYTES`], rounded down to a multiple of
    /// [`BLOCK_ROW_MULTIPLE`] (at least that many), at most `n`.
    pub fn block_rows(&self, n: usize) -> usize {
        rows_per_block(self.block_rows, self.block_classes(), n)
    }

    /// The loss alone.
    ///
    /// `inputs`: `x [N, D]`, `W [K, D]`, bias `[K]`; `labels`: `[N]`. Returns a scalar, or `[N]` values for
    /// reduction `none`.
    pub fn loss(&self, inputs: LinearInputs<'_>, labels: &[i64]) -> Result<Loss> {
        Ok(self.report(inputs, labels, false)?.loss)
    }

    /// The loss with its z-loss term alone and, when `predictions` is set, each row's predicted class (the
    /// arg-max of its logits `x W^T + b`) and the token accuracy: the [`LossReport`] of
    /// [`LabelSmoothingLoss::report`] on the logits this never holds.
    pub fn report(&self, inputs: LinearInputs<'_>, labels: &[i64], predictions: bool) -> Result<LossReport> {
        self.run(
            inputs,
            labels,
            GradOutput::ONE,
            LinearGrads::default(),
            false,
            predictions,
        )
    }

    /// The loss and the gradients asked for in `grads`, scaled by the upstream gradient `grad_output` (per row
    /// only with reduction `none`). Everything is validated before anything is written.
    pub fn loss_and_grad(
        &self,
        inputs: LinearInputs<'_>,
        labels: &[i64],
        grad_output: GradOutput<'_>,
        grads: LinearGrads<'_>,
    ) -> Result<Loss> {
        Ok(self.run(inputs, labels, grad_output, grads, true, false)?.loss)
    }

    /// [`loss_and_grad`](Self::loss_and_grad) with the [`LossReport`] of [`report`](Self::report).
    pub fn report_and_grad(
        &self,
        inputs: LinearInputs<'_>,
        labels: &[i64],
        grad_output: GradOutput<'_>,
        grads: LinearGrads<'_>,
        predictions: bool,
    ) -> Result<LossReport> {
        self.run(inputs, labels, grad_output, grads, true, predictions)
    }

    /// Validates the shapes and labels; returns `N`.
    pub(crate) fn check(
        &self,
        inputs: &LinearInputs<'_>,
        labels: &[i64],
        grad_output: &GradOutput<'_>,
        grads: &LinearGrads<'_>,
    ) -> Result<usize> {
        let (k, d, n) = (self.loss.num_classes(), self.hidden, labels.len());
        let len = |what, got, rows, shape| check_rows(what, got, rows, d, shape);
        len("x", inputs.x.len(), n, "[N, D]")?;
        len("weight", inputs.weight.len(), k, "[K, D]")?;
        let bias = |what: &'static str, got: usize| {
            if got == k {
                Ok(())
            } else {
                Err(LossError::Length {
                    what,
                    expected: format!("{k} ([K])"),
                    got,
                })
            }
        };
        if let Some(b) = inputs.bias {
            bias("bias", b.len())?;
        }
        if let Some(g) = &grads.x {
            len("grad x", g.len(), n, "[N, D]")?;
        }
        if let Some(g) = &grads.weight {
            len("grad weight", g.len(), k, "[K, D]")?;
        }
        if let Some(g) = &grads.bias {
            bias("grad bias", g.len())?;
        }
        check_labels(labels, k, self.loss.config().ignore_index)?;
        check_grad_output(self.loss.config().reduction, *grad_output, n)?;
        Ok(n)
    }

    /// The blocks of rows with the classes in blocks too (see the [module](self) documentation), with the loss
    /// `per_row` (reduction `none`): each row's loss and z-loss term into `rows` (and its predicted class with
    /// `predictions`), and with `backward` the gradients (before the `mean-nonzero` correction) into `grads` and
    /// `bias_acc`.
    #[allow(clippy::too_many_arguments)] // the call's inputs, its two outputs and the per-row loss it runs
    fn class_blocks(
        &self,
        per_row: &LabelSmoothingLoss,
        inputs: &LinearInputs<'_>,
        labels: &[i64],
        backward: Option<&Backward<'_>>,
        grads: &mut LinearGrads<'_>,
        mut bias_acc: Option<&mut [f64]>,
        (rows_out, predictions): (&mut Vec<RowLoss>, bool),
    ) -> Result<()> {
        let (k, d, n) = (self.loss.num_classes(), self.hidden, labels.len());
        let kc = self.block_classes();
        let lens: Vec<usize> = (0..k.div_ceil(kc)).map(|j| kc.min(k - j * kc)).collect();
        let layout = ShardLayout::from_lens(&lens)?;
        let first = ShardPlan::new(per_row.clone(), layout.clone(), 0)?;
        let plans: Vec<ShardPlan> = (0..lens.len()).map(|j| first.for_rank(j)).collect::<Result<_>>()?;
        let rows = self.block_rows(n);
        let mut block = vec![0.0f32; rows.min(n) * kc];
        let mut records: Vec<Vec<f64>> = (0..lens.len())
            .map(|j| vec![0.0; rows.min(n) * plans[j].record_len(j)])
            .collect();
        let mut upstream: Vec<f32> = Vec::with_capacity(rows);
        let mut best: Vec<Option<(f32, usize)>> = Vec::with_capacity(rows);
        let weight_of = |j: usize| {
            let r = layout.range(j);
            (&inputs.weight[r.start * d..r.end * d], inputs.bias.map(|b| &b[r]))
        };
        for start in (0..n).step_by(rows.max(1)) {
            let end = (start + rows).min(n);
            let (x, y, nb) = (&inputs.x[start * d..end * d], &labels[start..end], end - start);
            best.clear();
            best.resize(nb, None);
            // Pass 1: every class block's statistics (and its arg-max per row).
            for (j, plan) in plans.iter().enumerate() {
                let (w, b) = weight_of(j);
                let z = &mut block[..nb * lens[j]];
                products::logits(x, w, b, d, lens[j], z);
                if predictions {
                    fold_argmax(z, lens[j], layout.range(j).start, &mut best);
                }
                plan.local_stats(z, y, &mut records[j][..nb * plan.record_len(j)])?;
            }
            let recs: Vec<&[f64]> = records
                .iter()
                .enumerate()
                .map(|(j, r)| &r[..nb * plans[j].record_len(j)])
                .collect();
            let coef = match backward {
                Some(backward) => {
                    backward.upstream(start, end, &mut upstream);
                    GradOutput::PerRow(&upstream)
                }
                None => GradOutput::ONE,
            };
            let combined = plans[0].combine(y, coef, &recs)?;
            rows_out.extend((0..nb).map(|i| RowLoss {
                loss: combined.row_losses()[i],
                z: combined.row_z()[i],
                pred: match best[i] {
                    Some((_, c)) if Some(y[i]) != per_row.config().ignore_index => c as i64,
                    _ => -1,
                },
            }));
            let (Some(backward), GradOutput::PerRow(coef)) = (backward, coef) else {
                continue;
            };
            // Pass 2: each class block's gradient from the rows' statistics, and its products.
            for (j, plan) in plans.iter().enumerate() {
                let (w, b) = weight_of(j);
                let z = &mut block[..nb * lens[j]];
                products::logits(x, w, b, d, lens[j], z);
                plan.local_grad_rows(&combined, 0, z)?;
                let r = layout.range(j);
                let out = ClassGrads {
                    weight: grads.weight.as_deref_mut().map(|g| &mut g[r.start * d..r.end * d]),
                    bias: bias_acc.as_deref_mut().map(|b| &mut b[r.clone()]),
                };
                self.block_backward(
                    z,
                    &self.block(x, w, r, y, coef),
                    (backward.off, (j == 0).then_some(backward.u)),
                    (j > 0, start > 0),
                    grads.x.as_deref_mut().map(|g| &mut g[start * d..end * d]),
                    out,
                );
            }
        }
        Ok(())
    }

    /// The block of rows `x` (labels `labels`, scaled upstream gradients `coef`) and of the classes `classes`
    /// (their rows `w` of `W`).
    fn block<'a>(
        &'a self,
        x: &'a [f32],
        w: &'a [f32],
        classes: std::ops::Range<usize>,
        labels: &'a [i64],
        coef: &'a [f32],
    ) -> Block<'a> {
        let config = self.loss.config();
        Block {
            x,
            w,
            d: self.hidden,
            weights: config.weights.as_deref().map(|w| &w[classes.clone()]),
            classes,
            labels,
            ignore: config.ignore_index,
            coef,
        }
    }

    /// The backward products of one block from its gradient `z [rows, classes]`: into `gx` (the block's rows of
    /// `grad_x`) and `out` (its classes' rows of `grad_W` and of the bias accumulator), added to what they hold
    /// where `accumulate = (x, weight)` says so. Through the gradient filter when it is on, with `filter = (off,
    /// u)`: the target's spread and, once per block of rows, `u = sum_c w_c W_c` over all classes.
    fn block_backward(
        &self,
        z: &mut [f32],
        block: &Block<'_>,
        (off, u): (f64, Option<&[f64]>),
        (accumulate_x, accumulate_w): (bool, bool),
        mut gx: Option<&mut [f32]>,
        mut out: ClassGrads<'_>,
    ) {
        let (d, kc) = (self.hidden, block.classes.len());
        let split = self.filter.map(|t| filter::split(z, block, off, t));
        let keep = split.as_ref().map(|s| &s.keep[..]);
        if let Some(gx) = gx.as_deref_mut() {
            products::grad_input_kept(z, block.w, d, kc, accumulate_x, keep, gx);
        }
        products::grad_weight_kept(z, block.x, d, kc, accumulate_w, keep, out.reborrow());
        if let Some(split) = &split {
            filter::add_closed_forms(split, block, u, gx, out);
        }
    }

    /// The loss `per_row` (reduction `none`) of this call: the configured one, with the z-loss scale times
    /// `z_ratio` where that is not 1 (a weighted mean: see [`driver::z_ratio`]), so that the rows' losses and
    /// gradients carry the z-loss term already weighted for the call's reduction.
    fn per_row_for(&self, z_ratio: f64) -> Result<Cow<'_, LabelSmoothingLoss>> {
        if z_ratio == 1.0 {
            return Ok(Cow::Borrowed(&self.per_row));
        }
        let config = self.per_row.config();
        let scaled = LabelSmoothingConfig {
            z_loss: (config.z_loss as f64 * z_ratio) as f32,
            ..config.clone()
        };
        Ok(Cow::Owned(scaled.init(self.loss.num_classes())?))
    }

    fn run(
        &self,
        inputs: LinearInputs<'_>,
        labels: &[i64],
        grad_output: GradOutput<'_>,
        mut grads: LinearGrads<'_>,
        backward: bool,
        predictions: bool,
    ) -> Result<LossReport> {
        let n = self.check(&inputs, labels, &grad_output, &grads)?;
        let config = self.loss.config();
        let (k, d) = (self.loss.num_classes(), self.hidden);
        // As in the fused loss, with its reduction; mean-nonzero's correction is applied at the end.
        let targets = Targets::Labels(labels);
        let (denominator, scale) = reduction_scale(config, n, targets);
        let per_row = self.per_row_for(driver::z_ratio(config, targets, denominator))?;
        let backward = backward && (grads.x.is_some() || grads.weight.is_some() || grads.bias.is_some());

        let rows = self.block_rows(n);
        let mut bias_acc = grads.bias.as_ref().map(|_| vec![0.0f64; k]);
        let mut row_losses: Vec<RowLoss> = Vec::with_capacity(n);
        // The filter's constants: the spread of the target, and u = sum_c w_c W_c for grad_x.
        let off = match config.smoothing {
            crate::config::Smoothing::Fixed(e) => config.spread.hard_target(e as f64, k).0,
            crate::config::Smoothing::Adaptive { .. } => 0.0,
        };
        let u = match (self.filter, &grads.x) {
            (Some(_), Some(_)) if backward => filter::weighted_column_sums(inputs.weight, config.weights.as_deref(), d),
            _ => Vec::new(),
        };
        let pass = Backward {
            grad_output,
            scale,
            off,
            u: &u,
        };
        let pass = backward.then_some(&pass);
        if self.block_classes() < k {
            let out = (&mut row_losses, predictions);
            self.class_blocks(
                &per_row,
                &inputs,
                labels,
                pass,
                &mut grads,
                bias_acc.as_deref_mut(),
                out,
            )?;
        } else {
            let mut block = vec![0.0f32; rows.min(n) * k];
            let mut upstream: Vec<f32> = Vec::with_capacity(rows);
            for start in (0..n).step_by(rows.max(1)) {
                let end = (start + rows).min(n);
                let (x, y) = (&inputs.x[start * d..end * d], &labels[start..end]);
                let z = &mut block[..(end - start) * k];
                products::logits(x, inputs.weight, inputs.bias, d, k, z);
                let Some(pass) = pass else {
                    push_rows(&mut row_losses, per_row.report(z, Targets::Labels(y), predictions)?);
                    continue;
                };
                pass.upstream(start, end, &mut upstream);
                let report = per_row.report_and_grad_in_place(
                    z,
                    Targets::Labels(y),
                    GradOutput::PerRow(&upstream),
                    predictions,
                )?;
                push_rows(&mut row_losses, report);
                let out = ClassGrads {
                    weight: grads.weight.as_deref_mut(),
                    bias: bias_acc.as_deref_mut(),
                };
                self.block_backward(
                    z,
                    &self.block(x, inputs.weight, 0..k, y, &upstream),
                    (off, Some(&u)),
                    (false, start > 0),
                    grads.x.as_deref_mut().map(|g| &mut g[start * d..end * d]),
                    out,
                );
            }
        }
        if backward && n == 0 {
            if let Some(gw) = grads.weight.as_deref_mut() {
                gw.fill(0.0);
            }
        }

        // The per-row losses reduced in f64 in row order: the same bits for any number of threads. The rows'
        // z-loss terms are already weighted by `z_ratio`, so they reduce over the call's denominator.
        let losses64: Vec<f64> = row_losses.iter().map(|r| r.loss).collect();
        let (loss, ratio) = reduce(config.reduction, &losses64, denominator, scale);
        let z_loss = reduce_z(config.reduction, &row_losses, scale, 1.0, nonzero_rows(&losses64));
        if let (Some(gb), Some(acc)) = (grads.bias.as_deref_mut(), &bias_acc) {
            gb.iter_mut().zip(acc).for_each(|(g, &a)| *g = (a * ratio) as f32);
        }
        if ratio != 1.0 && backward {
            let rescale = |g: &mut [f32]| g.iter_mut().for_each(|v| *v = (*v as f64 * ratio) as f32);
            grads.x.as_deref_mut().map(rescale);
            grads.weight.as_deref_mut().map(rescale);
        }
        Ok(driver::report(config, targets, loss, z_loss, &row_losses, predictions))
    }
}

/// Appends a block's rows (losses, z-loss terms, predicted classes) from its per-row report.
fn push_rows(rows: &mut Vec<RowLoss>, report: LossReport) {
    let (loss, z) = (report.loss.as_slice(), report.z_loss.as_slice());
    let pred = report.predicted.unwrap_or_default();
    rows.extend((0..loss.len()).map(|i| RowLoss {
        loss: loss[i] as f64,
        z: z[i] as f64,
        pred: pred.get(i).copied().unwrap_or(-1),
    }));
}

/// Folds each row's arg-max over a block of classes `offset..offset + kc` (its logits `z [rows, kc]`) into
/// `best`, in class order: the first of equal values, a NaN the largest (as the fused kernel's).
fn fold_argmax(z: &[f32], kc: usize, offset: usize, best: &mut [Option<(f32, usize)>]) {
    for (row, b) in z.chunks_exact(kc).zip(best) {
        let local = combine_argmax(row.iter().enumerate().map(|(c, &v)| (v, offset + c)));
        *b = combine_argmax(b.iter().copied().chain(local));
    }
}

/// What a backward pass needs besides the blocks: the upstream gradient and the reduction's scale (their product
/// is each row's `coef`), and the gradient filter's constants (the target's spread `off` and `u = sum_c w_c W_c`,
/// empty without the filter).
struct Backward<'a> {
    grad_output: GradOutput<'a>,
    scale: f64,
    off: f64,
    u: &'a [f64],
}

impl Backward<'_> {
    /// The rows `[start, end)`' scaled upstream gradients, into `out`.
    fn upstream(&self, start: usize, end: usize, out: &mut Vec<f32>) {
        out.clear();
        out.extend((start..end).map(|i| {
            let g = match self.grad_output {
                GradOutput::Scalar(g) => g,
                GradOutput::PerRow(g) => g[i],
            };
            (g as f64 * self.scale) as f32
        }));
    }
}
