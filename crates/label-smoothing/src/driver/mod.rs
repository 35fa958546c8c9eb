//! The parallel driver of a validated call: rows cut into tasks on rayon's pool (or one long row split across
//! threads), the reductions in row order, and the `mean-nonzero` rescale. Compiled once per element type
//! ([`run`]'s three non-generic instances), so that every crate calling the generic API links to these.

use crate::config::{LabelSmoothingConfig, Reduction};
use crate::element::Element;
use crate::error::Result;
use crate::kernel::{CallBuffers, CHUNK};
use crate::loss::LabelSmoothingLoss;
use crate::row::{CallPlan, RowLoss};
use crate::types::{GradOutput, Loss, LossReport, Targets, TokenAccuracy};
use rayon::prelude::*;

/// Runs `$body` with the const booleans `$W`, `$T` (and `$SHIFTED`) set from the run-time values `$w`, `$t` (and
/// `$shifted`): the one place where a row variant (class weights, soft targets, `shifted` sums) becomes a compile-time
/// parameter.
macro_rules! with_variant {
    (($w:expr, $t:expr, $shifted:expr) => |$W:ident, $T:ident, $SHIFTED:ident| $body:expr) => {
        match ($w, $t, $shifted) {
            (false, false, false) => with_variant!(@ $W = false, $T = false, $SHIFTED = false; $body),
            (false, false, true) => with_variant!(@ $W = false, $T = false, $SHIFTED = true; $body),
            (true, false, false) => with_variant!(@ $W = true, $T = false, $SHIFTED = false; $body),
            (true, false, true) => with_variant!(@ $W = true, $T = false, $SHIFTED = true; $body),
            (false, true, false) => with_variant!(@ $W = false, $T = true, $SHIFTED = false; $body),
            (false, true, true) => with_variant!(@ $W = false, $T = true, $SHIFTED = true; $body),
            (true, true, false) => with_variant!(@ $W = true, $T = true, $SHIFTED = false; $body),
            (true, true, true) => with_variant!(@ $W = true, $T = true, $SHIFTED = true; $body),
        }
    };
    (($w:expr, $t:expr) => |$W:ident, $T:ident| $body:expr) => {
        match ($w, $t) {
            (false, false) => with_variant!(@ $W = false, $T = false; $body),
            (true, false) => with_variant!(@ $W = true, $T = false; $body),
            (false, true) => with_variant!(@ $W = false, $T = true; $body),
            (true, true) => with_variant!(@ $W = true, $T = true; $body),
        }
    };
    (@ $($N:ident = $v:literal),*; $body:expr) => {{
        $(const $N: bool = $v;)*
        $body
    }};
}

pub(crate) mod lanes;
pub(crate) mod pieces;
mod rows;
mod wide;

/// Classes per parallel task, at most: a task's rows stay in L2 while their gradient is written.
const TASK_ELEMS: usize = 1 << 15;

/// Classes per parallel task, at least: enough that a task outweighs rayon's scheduling cost.
const MIN_TASK_ELEMS: usize = 1 << 13;

/// Rows per parallel task: at most [`TASK_ELEMS`] classes, and at most a quarter of a thread's share of the rows
/// (so that short problems such as 4096x10 still spread evenly), but at least [`MIN_TASK_ELEMS`] classes. Rows
/// are independent and the loss is reduced in row order afterwards, so the split changes only the speed.
/// With the rows across the lanes ([`lanes`]), a whole number of groups of [`LANES`](crate::simd::LANES)
/// rows: a task's last, partial group costs as much as a full one.
fn rows_per_task(n: usize, k: usize, threads: usize, lanes: bool) -> usize {
    let rows = (TASK_ELEMS / k)
        .min(n.div_ceil(4 * threads))
        .max(MIN_TASK_ELEMS.div_ceil(k))
        .max(1);
    if lanes {
        rows.next_multiple_of(crate::simd::LANES)
    } else {
        rows
    }
}

/// Problems smaller than this many logits run on the calling thread: waking the pool costs more than the work.
const SERIAL_ELEMS: usize = 1 << 15;

/// [`SERIAL_ELEMS`] for the rows across the lanes ([`lanes`]), which do a row's work in about a third of the
/// row kernel's instructions, so that the pool's wake-up is worth it only for larger problems. Measured on
/// 2 threads (docs/BENCHMARKS.md): 4096x10 ran in 198 us on the calling thread and 303 us on the pool
/// (medians of nine runs), 8192x10 in 635 and 399 us.
const SERIAL_ELEMS_LANES: usize = 1 << 16;

/// Whether a problem of `elems` logits runs on the calling thread.
fn serial(elems: usize, lanes: bool) -> bool {
    elems < if lanes { SERIAL_ELEMS_LANES } else { SERIAL_ELEMS }
}

/// A row is split across threads when there are fewer rows than threads and it has at least this many chunks.
const WIDE_MIN_CHUNKS: usize = 4;

/// A validated call's inputs besides the logits: `N`, the targets and the upstream gradient.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) n: usize,
    pub(crate) targets: Targets<'a>,
    pub(crate) grad_output: GradOutput<'a>,
    /// Each row's predicted class is wanted (and so the accuracy).
    pub(crate) predictions: bool,
}

/// Computes a validated call through the instance compiled for its element type: the public calls are generic,
/// and a generic function is compiled again in every crate that calls it (and the kernels are large); these
/// non-generic, never inlined instances are compiled once, here, and every caller links to them.
#[inline(always)]
pub(crate) fn run<E: Element>(
    loss: &LabelSmoothingLoss,
    call: Call<'_>,
    out: CallBuffers<'_, E>,
) -> Result<LossReport> {
    let out = match out.cast::<f32>() {
        Ok(out) => return run_f32(loss, call, out),
        Err(out) => out,
    };
    let out = match out.cast::<half::bf16>() {
        Ok(out) => return run_bf16(loss, call, out),
        Err(out) => out,
    };
    match out.cast::<half::f16>() {
        Ok(out) => run_f16(loss, call, out),
        Err(_) => unreachable!("Element is sealed: f32, bf16 and f16 only"),
    }
}

macro_rules! instantiate {
    ($($name:ident: $t:ty),*) => {$(
        #[inline(never)]
        fn $name(loss: &LabelSmoothingLoss, call: Call<'_>, out: CallBuffers<'_, $t>) -> Result<LossReport> {
            run_typed(loss, call, out)
        }
    )*};
}
instantiate!(run_f32: f32, run_bf16: half::bf16, run_f16: half::f16);

/// The denominator of the mean for hard labels: the count (or the weight) of the rows not ignored.
pub(crate) fn mean_denominator(config: &LabelSmoothingConfig, n: usize, targets: Targets<'_>) -> f64 {
    match targets {
        Targets::Soft(_) => n as f64,
        Targets::Labels(labels) => {
            let kept = labels.iter().filter(|&&y| Some(y) != config.ignore_index);
            match &config.weights {
                Some(w) => kept.map(|&y| w[y as usize] as f64).sum(),
                None => kept.count() as f64,
            }
        }
    }
}

/// `D / D_z`, the factor by which a row's z-loss term enters its loss so that the reduction's `1 / D` leaves it
/// divided by its own denominator `D_z` (SPEC.md, "z-loss"): they differ only for a weighted mean of hard labels,
/// where `D` sums the label weights and `D_z` counts the rows (Liger-Kernel's rule). 0 when `D` is 0 (the mean
/// and its gradient are then 0, z-loss included).
pub(crate) fn z_ratio(config: &LabelSmoothingConfig, targets: Targets<'_>, denominator: f64) -> f64 {
    match (config.reduction, targets, &config.weights) {
        (Reduction::Mean, Targets::Labels(labels), Some(_)) if config.z_loss != 0.0 => {
            let counted = labels.iter().filter(|&&y| Some(y) != config.ignore_index).count();
            if counted == 0 {
                1.0
            } else {
                denominator / counted as f64
            }
        }
        _ => 1.0,
    }
}

/// The z-loss term of a call from the rows' terms `z_i`: per row for `none`, else their sum (in row order, f64)
/// over the call's denominator divided by `z_ratio` (`D_z = D / z_ratio`; `nonzero` rows for `mean-nonzero`).
pub(crate) fn reduce_z(reduction: Reduction, rows: &[RowLoss], scale: f64, z_ratio: f64, nonzero: f64) -> Loss {
    let total = || rows.iter().map(|r| r.z).sum::<f64>();
    match reduction {
        Reduction::None => Loss::PerRow(rows.iter().map(|r| r.z as f32).collect()),
        Reduction::Sum => Loss::Scalar(total() as f32),
        Reduction::Mean => Loss::Scalar((total() * scale * z_ratio) as f32),
        Reduction::MeanNonZero => Loss::Scalar((total() / nonzero) as f32),
    }
}

/// The denominator of the configured reduction (1 for `none` and `sum`) and the gradient's scale, its inverse
/// (0 for a zero denominator). `mean-nonzero` assumes every kept row has a non-zero loss (true unless a row is
/// fit exactly); [`reduce`] gives the correction for the rare case it is not.
pub(crate) fn reduction_scale(config: &LabelSmoothingConfig, n: usize, targets: Targets<'_>) -> (f64, f64) {
    let denominator = match config.reduction {
        Reduction::None | Reduction::Sum => 1.0,
        Reduction::Mean => mean_denominator(config, n, targets),
        Reduction::MeanNonZero => match targets {
            Targets::Labels(labels) => labels.iter().filter(|&&y| Some(y) != config.ignore_index).count(),
            Targets::Soft(_) => n,
        }
        .max(1) as f64,
    };
    (denominator, if denominator == 0.0 { 0.0 } else { 1.0 / denominator })
}

/// The reduced loss from the per-row losses, added in row order in f64 (the same bits for any number of
/// threads), and the factor by which `mean-nonzero` corrects a gradient scaled by `scale` (1 unless some kept
/// row fit exactly).
pub(crate) fn reduce(reduction: Reduction, losses: &[f64], denominator: f64, scale: f64) -> (Loss, f64) {
    let total = || losses.iter().sum::<f64>();
    match reduction {
        Reduction::None => (Loss::PerRow(losses.iter().map(|&l| l as f32).collect()), 1.0),
        Reduction::Sum => (Loss::Scalar(total() as f32), 1.0),
        Reduction::Mean => (Loss::Scalar((total() * scale) as f32), 1.0),
        Reduction::MeanNonZero => {
            let nonzero = nonzero_rows(losses);
            let ratio = if nonzero != denominator {
                denominator / nonzero
            } else {
                1.0
            };
            (Loss::Scalar((total() / nonzero) as f32), ratio)
        }
    }
}

/// `mean-nonzero`'s denominator: the rows whose loss is not zero (at least 1, so that no rows give 0).
pub(crate) fn nonzero_rows(losses: &[f64]) -> f64 {
    losses.iter().filter(|&&l| l != 0.0).count().max(1) as f64
}

/// The computation of a validated call, for any element type (instantiated once per type by [`run`]).
fn run_typed<E: Element>(loss: &LabelSmoothingLoss, call: Call<'_>, mut out: CallBuffers<'_, E>) -> Result<LossReport> {
    let (
        config,
        k,
        Call {
            n,
            targets,
            grad_output,
            ..
        },
    ) = (loss.config(), loss.num_classes(), call);
    let (denominator, scale) = reduction_scale(config, n, targets);
    // The few-classes kernel has no soft-capping, z-loss or arg-max: the row kernel takes those calls.
    let across_lanes = !rows_only()
        && k <= lanes::MAX_K
        && matches!(targets, Targets::Labels(_))
        && !config.has_logit_options()
        && !call.predictions;
    let z_ratio = z_ratio(config, targets, denominator);
    let mut plan = CallPlan::new(loss, targets, grad_output, scale, across_lanes).with_z_ratio(z_ratio);
    plan.argmax = call.predictions;

    let mut rows = vec![RowLoss::default(); n];
    let losses = &mut rows;
    let threads = rayon::current_num_threads();
    if n < threads && k >= WIDE_MIN_CHUNKS * CHUNK {
        // Few, long rows: each row is split across threads (same chunks, same combine order, same bits).
        for (i, l) in losses.iter_mut().enumerate() {
            *l = plan.wide_row(i, out.range(i * k..(i + 1) * k));
        }
    } else {
        let rt = rows_per_task(n, k, threads, plan.across_lanes);
        if serial(n * k, plan.across_lanes) {
            plan.rows(0, out.reborrow(), losses);
        } else {
            out.par_for_each_part_with(rt * k, losses, rt, |ti, bufs, lc| plan.rows(ti * rt, bufs, lc));
        }
    }

    let row_losses: Vec<f64> = rows.iter().map(|r| r.loss).collect();
    let (loss, ratio) = reduce(config.reduction, &row_losses, denominator, scale);
    let z_loss = reduce_z(config.reduction, &rows, scale, z_ratio, nonzero_rows(&row_losses));
    if ratio != 1.0 {
        // Some kept rows fit exactly (loss 0): the gradient was scaled by 1/kept, not 1/nonzero.
        let grad: &mut [E] = out.output_mut().unwrap_or_default();
        grad.par_chunks_mut(TASK_ELEMS).for_each(|c| {
            c.iter_mut()
                .for_each(|v| *v = E::from_f32((v.to_f32() as f64 * ratio) as f32))
        });
    }
    Ok(report(config, targets, loss, z_loss, &rows, call.predictions))
}

/// The call's [`LossReport`] from its reduced loss and z-loss and its rows (their predictions, when asked for).
pub(crate) fn report(
    config: &LabelSmoothingConfig,
    targets: Targets<'_>,
    loss: Loss,
    z_loss: Loss,
    rows: &[RowLoss],
    predictions: bool,
) -> LossReport {
    if !predictions {
        return LossReport {
            loss,
            z_loss,
            predicted: None,
            accuracy: None,
        };
    }
    let predicted: Vec<i64> = rows.iter().map(|r| r.pred).collect();
    let accuracy = match targets {
        Targets::Labels(labels) => {
            let kept = labels
                .iter()
                .zip(&predicted)
                .filter(|(&y, _)| Some(y) != config.ignore_index);
            let (mut correct, mut counted) = (0, 0);
            for (&y, &p) in kept {
                counted += 1;
                correct += usize::from(y == p);
            }
            Some(TokenAccuracy { correct, counted })
        }
        Targets::Soft(_) => None,
    };
    LossReport {
        loss,
        z_loss,
        predicted: Some(predicted),
        accuracy,
    }
}

#[cfg(feature = "test-hooks")]
pub mod test_hooks;

/// Whether this call must use the row kernel for every row (only ever with the `test-hooks` feature).
#[inline(always)]
fn rows_only() -> bool {
    #[cfg(feature = "test-hooks")]
    {
        test_hooks::ROWS_ONLY.get()
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        false
    }
}
