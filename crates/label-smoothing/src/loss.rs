//! The loss object and its three calls: [`loss`](LabelSmoothingLoss::loss),
//! [`loss_and_grad`](LabelSmoothingLoss::loss_and_grad) and
//! [`loss_and_grad_in_place`](LabelSmoothingLoss::loss_and_grad_in_place).

use crate::config::{LabelSmoothingConfig, Reduction, Smoothing, Spread};
use crate::error::{LossError, Result};
use crate::kernel::{
    grad_row, label_grad, label_prob, row_stats, slice_grad, slice_stats, Element, GradRow, InPlace, ReadOnly, RowIo,
    RowStats, Separate, WithScratch, CHUNK,
};
use crate::simd::{dispatch, Isa, Kernel};
use rayon::prelude::*;

mod small_k;

/// The targets of a batch of `N` rows.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// One hard label per row, `[N]`: a class in `[0, K)` or the configured ignore index.
    Labels(&'a [i64]),
    /// One probability row per row, `[N, K]` row-major: entries non-negative, each row summing to 1 (within
    /// `1e-4`). Smoothed by the configured spread like a hard label's one-hot row.
    Soft(&'a [f32]),
}

impl<'a> From<&'a [i64]> for Targets<'a> {
    fn from(labels: &'a [i64]) -> Self {
        Targets::Labels(labels)
    }
}

impl<'a> From<&'a Vec<i64>> for Targets<'a> {
    fn from(labels: &'a Vec<i64>) -> Self {
        Targets::Labels(labels)
    }
}

/// The upstream gradient `dOut/dLoss` by which the gradient is multiplied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradOutput<'a> {
    /// One scalar for every row (for reduction `none` it is broadcast to every row).
    Scalar(f32),
    /// One value per row, `[N]`; only with reduction `none`.
    PerRow(&'a [f32]),
}

impl GradOutput<'_> {
    /// The upstream gradient of a loss that is the final objective: `1`.
    pub const ONE: GradOutput<'static> = GradOutput::Scalar(1.0);
}

impl Default for GradOutput<'_> {
    fn default() -> Self {
        GradOutput::ONE
    }
}

/// The value of the loss: a scalar, or one value per row for reduction `none`.
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    /// The reduced loss (`sum`, `mean`, `mean-nonzero`).
    Scalar(f32),
    /// The per-row losses (`none`); ignored rows are 0.
    PerRow(Vec<f32>),
}

impl Loss {
    /// The scalar, or `None` for per-row losses.
    pub fn scalar(&self) -> Option<f32> {
        match self {
            Loss::Scalar(v) => Some(*v),
            Loss::PerRow(_) => None,
        }
    }

    /// The values as a slice (one value for a scalar).
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Loss::Scalar(v) => std::slice::from_ref(v),
            Loss::PerRow(v) => v,
        }
    }
}

/// A validated label-smoothed cross-entropy for `K` classes; build it with [`LabelSmoothingConfig::init`].
///
/// Logits are `[N, K]` row-major, `f32` or (see [`Element`]) `bf16` / `f16`, always computed in f32 with f64
/// accumulation of the row statistics; `N` is `logits.len() / K`. Rows run in parallel on rayon's pool (a row
/// with many classes is itself split across threads when there are fewer rows than threads), and the results
/// are bit-identical for any number of threads.
///
/// fast-reid's `cross_entropy_loss(pred, gt, eps, alpha)`, forward and backward:
/// ```
/// use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
/// let (logits, labels) = (vec![2.0f32, 0.5, -1.0, 0.0, 1.0, -0.5], vec![0i64]);
/// let mut grad = vec![0.0f32; logits.len()];
///
/// let loss_fn = LabelSmoothingConfig::fast_reid(0.1, 0.2).init(6)?;
/// let loss = loss_fn.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad)?;
///
/// assert!((loss.scalar().unwrap() - 0.8196174).abs() < 1e-5);
/// # Ok::<(), label_smoothing::LossError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LabelSmoothingLoss {
    config: LabelSmoothingConfig,
    k: usize,
    weight_total: f64,
}

/// Classes per parallel task, at most: a task's rows stay in L2 while their gradient is written.
const TASK_ELEMS: usize = 1 << 15;

/// Classes per parallel task, at least: enough that a task outweighs rayon's scheduling cost.
const MIN_TASK_ELEMS: usize = 1 << 13;

/// Rows per parallel task: at most [`TASK_ELEMS`] classes, and at most a quarter of a thread's share of the rows
/// (so that short problems such as 4096x10 still spread evenly), but at least [`MIN_TASK_ELEMS`] classes. Rows
/// are independent and the loss is reduced in row order afterwards, so the split changes only the speed.
/// With the rows across the lanes ([`small_k`]), a whole number of groups of [`LANES`](crate::simd::LANES)
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

/// [`SERIAL_ELEMS`] for the rows across the lanes ([`small_k`]), which do a row's work in about a third of the
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

/// Logits and where their gradient goes: the whole call, a parallel task's rows, or one long row.
// `pub` (in this private module, not re-exported) because `Sealed::run_loss` takes it; no other crate can name it.
pub enum Bufs<'a, E> {
    /// Logits only (the loss alone).
    Read(&'a [E]),
    /// Logits and a separate gradient buffer.
    Write(&'a [E], &'a mut [E]),
    /// One buffer: logits in, gradient out.
    InPlace(&'a mut [E]),
}

/// Per-call constants of the row computation.
struct Plan<'a> {
    k: usize,
    spread: Spread,
    smoothing: Smoothing,
    ignore: Option<i64>,
    weights: Option<&'a [f32]>,
    weight_total: f64,
    targets: Targets<'a>,
    grad_output: GradOutput<'a>,
    /// Row `i`'s gradient is scaled by `scale * g_i` (`scale` is `1 / D` for the means).
    scale: f64,
    /// The `shifted` sums are needed (the smoothing can be non-zero).
    lin: bool,
    /// Rows go across the SIMD lanes ([`small_k`]): hard labels and at most [`small_k::SMALL_K`] classes.
    small_k: bool,
}

impl LabelSmoothingLoss {
    pub(crate) fn from_validated(config: LabelSmoothingConfig, k: usize) -> Self {
        let weight_total = match &config.weights {
            Some(w) => w.iter().map(|&x| x as f64).sum(),
            None => k as f64,
        };
        Self {
            config,
            k,
            weight_total,
        }
    }

    /// The number of classes `K`.
    pub fn num_classes(&self) -> usize {
        self.k
    }

    /// The configuration this loss was built from.
    pub fn config(&self) -> &LabelSmoothingConfig {
        &self.config
    }

    /// The loss alone (evaluation): reads the logits once.
    ///
    /// `logits`: `[N, K]` row-major. `targets`: labels `[N]` or soft targets `[N, K]`.
    /// Returns a scalar, or `[N]` values for reduction `none`.
    pub fn loss<E: Element>(&self, logits: &[E], targets: Targets<'_>) -> Result<Loss> {
        let n = self.check(logits.len(), targets, GradOutput::ONE, None)?;
        self.run(n, targets, GradOutput::ONE, Bufs::Read(logits))
    }

    /// The loss and its gradient with respect to the logits, written into `grad` (`[N, K]`, fully overwritten,
    /// in the logits' type).
    ///
    /// `grad_output` is the upstream gradient ([`GradOutput::ONE`] when this loss is the objective).
    pub fn loss_and_grad<E: Element>(
        &self,
        logits: &[E],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        grad: &mut [E],
    ) -> Result<Loss> {
        let n = self.check(logits.len(), targets, grad_output, Some(grad.len()))?;
        self.run(n, targets, grad_output, Bufs::Write(logits, grad))
    }

    /// The loss, with the gradient written over the logits (no second `[N, K]` buffer).
    ///
    /// Everything is validated before the first write: on an error the logits are untouched.
    pub fn loss_and_grad_in_place<E: Element>(
        &self,
        logits: &mut [E],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
    ) -> Result<Loss> {
        let n = self.check(logits.len(), targets, grad_output, None)?;
        self.run(n, targets, grad_output, Bufs::InPlace(logits))
    }

    /// Checks logits of `logits_len` elements and `targets` against the configuration without computing
    /// anything; returns `N`. The same checks run inside every loss call; adapters whose tensors live on
    /// other devices use this to report a typed error before composing the loss themselves.
    pub fn validate(&self, logits_len: usize, targets: Targets<'_>) -> Result<usize> {
        self.check(logits_len, targets, GradOutput::ONE, None)
    }

    /// Validates every input against the configuration; returns `N`.
    fn check(
        &self,
        logits_len: usize,
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        grad_len: Option<usize>,
    ) -> Result<usize> {
        let k = self.k;
        if !logits_len.is_multiple_of(k) {
            return Err(LossError::Length {
                what: "logits",
                expected: format!("a multiple of K = {k} ([N, K] row-major)"),
                got: logits_len,
            });
        }
        let n = logits_len / k;
        match targets {
            Targets::Labels(labels) => {
                check_len("labels", labels.len(), n, || {
                    format!("{n} (one per row of [{n}, {k}] logits)")
                })?;
                check_labels(labels, k, self.config.ignore_index)?;
            }
            Targets::Soft(t) => {
                if matches!(self.config.smoothing, Smoothing::Adaptive { .. }) {
                    return Err(LossError::AdaptiveWithSoftTargets);
                }
                check_len("soft targets", t.len(), n * k, || {
                    format!("{} ([{n}, {k}] like the logits)", n * k)
                })?;
                check_soft_targets(t.iter().map(|&x| x as f64), k)?;
            }
        }
        if let GradOutput::PerRow(g) = grad_output {
            if self.config.reduction != Reduction::None {
                return Err(LossError::GradOutputShape {
                    reduction: self.config.reduction.name(),
                    got: g.len(),
                });
            }
            check_len("grad_output", g.len(), n, || format!("{n} (one per row)"))?;
        }
        if let Some(len) = grad_len {
            check_len("grad", len, n * k, || format!("{} ([{n}, {k}] like the logits)", n * k))?;
        }
        Ok(n)
    }

    /// The denominator of the mean for hard labels: the count (or the weight) of the rows not ignored.
    fn mean_denominator(&self, n: usize, targets: Targets<'_>) -> f64 {
        match targets {
            Targets::Soft(_) => n as f64,
            Targets::Labels(labels) => {
                let kept = labels.iter().filter(|&&y| Some(y) != self.config.ignore_index);
                match &self.config.weights {
                    Some(w) => kept.map(|&y| w[y as usize] as f64).sum(),
                    None => kept.count() as f64,
                }
            }
        }
    }

    /// Computes a validated call through its element type's one compiled instance
    /// ([`Sealed::run_loss`](crate::kernel::sealed::Sealed::run_loss)).
    #[inline(always)]
    fn run<E: Element>(
        &self,
        n: usize,
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        out: Bufs<'_, E>,
    ) -> Result<Loss> {
        E::run_loss(self, n, targets, grad_output, out)
    }

    /// The computation of a validated call, for any element type (instantiated once per type in
    /// [`Sealed`](crate::kernel::sealed::Sealed)).
    pub(crate) fn run_generic<E: Element>(
        &self,
        n: usize,
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        mut out: Bufs<'_, E>,
    ) -> Result<Loss> {
        let k = self.k;
        let reduction = self.config.reduction;
        let kept_rows = match targets {
            Targets::Labels(labels) => labels.iter().filter(|&&y| Some(y) != self.config.ignore_index).count(),
            Targets::Soft(_) => n,
        };
        // mean-nonzero: assume every kept row has a non-zero loss (true unless a row is fit exactly) and
        // correct the gradient afterwards in the rare case it is not.
        let denominator = match reduction {
            Reduction::None | Reduction::Sum => 1.0,
            Reduction::Mean => self.mean_denominator(n, targets),
            Reduction::MeanNonZero => kept_rows.max(1) as f64,
        };
        let scale = if denominator == 0.0 { 0.0 } else { 1.0 / denominator };
        let plan = Plan {
            k,
            spread: self.config.spread,
            smoothing: self.config.smoothing,
            ignore: self.config.ignore_index,
            weights: self.config.weights.as_deref(),
            weight_total: self.weight_total,
            targets,
            grad_output,
            scale,
            lin: !matches!(self.config.smoothing, Smoothing::Fixed(e) if e == 0.0),
            small_k: !ROWS_ONLY.get() && k <= small_k::SMALL_K && matches!(targets, Targets::Labels(_)),
        };

        let mut losses = vec![0.0f64; n];
        let threads = rayon::current_num_threads();
        if n < threads && k >= WIDE_MIN_CHUNKS * CHUNK {
            // Few, long rows: each row is split across threads (same chunks, same combine order, same bits).
            for (i, l) in losses.iter_mut().enumerate() {
                let rows = i * k..(i + 1) * k;
                *l = match &mut out {
                    Bufs::Read(z) => plan.wide_row(i, Bufs::Read(&z[rows])),
                    Bufs::Write(z, g) => plan.wide_row(i, Bufs::Write(&z[rows.clone()], &mut g[rows])),
                    Bufs::InPlace(z) => plan.wide_row(i, Bufs::InPlace(&mut z[rows])),
                };
            }
        } else {
            let rows_per_task = rows_per_task(n, k, threads, plan.small_k);
            let task = |first_row: usize, bufs: Bufs<'_, E>, losses: &mut [f64]| plan.rows(first_row, bufs, losses);
            if serial(n * k, plan.small_k) {
                match &mut out {
                    Bufs::Read(z) => task(0, Bufs::Read(z), &mut losses),
                    Bufs::Write(z, g) => task(0, Bufs::Write(z, g), &mut losses),
                    Bufs::InPlace(z) => task(0, Bufs::InPlace(z), &mut losses),
                }
            } else {
                let rt = rows_per_task;
                match &mut out {
                    Bufs::Read(z) => z
                        .par_chunks(rt * k)
                        .zip(losses.par_chunks_mut(rt))
                        .enumerate()
                        .for_each(|(ti, (zc, lc))| task(ti * rt, Bufs::Read(zc), lc)),
                    Bufs::Write(z, g) => z
                        .par_chunks(rt * k)
                        .zip(g.par_chunks_mut(rt * k))
                        .zip(losses.par_chunks_mut(rt))
                        .enumerate()
                        .for_each(|(ti, ((zc, gc), lc))| task(ti * rt, Bufs::Write(zc, gc), lc)),
                    Bufs::InPlace(z) => z
                        .par_chunks_mut(rt * k)
                        .zip(losses.par_chunks_mut(rt))
                        .enumerate()
                        .for_each(|(ti, (zc, lc))| task(ti * rt, Bufs::InPlace(zc), lc)),
                }
            }
        }

        // Reductions add the per-row f64 losses in row order: the same bits for any number of threads.
        let loss = match reduction {
            Reduction::None => Loss::PerRow(losses.iter().map(|&l| l as f32).collect()),
            Reduction::Sum => Loss::Scalar(losses.iter().sum::<f64>() as f32),
            Reduction::Mean => Loss::Scalar((losses.iter().sum::<f64>() * scale) as f32),
            Reduction::MeanNonZero => {
                let nonzero = losses.iter().filter(|&&l| l != 0.0).count().max(1);
                if nonzero as f64 != denominator {
                    // Some kept rows fit exactly (loss 0): the gradient was scaled by 1/kept, not 1/nonzero.
                    let ratio = denominator / nonzero as f64;
                    let grad: &mut [E] = match out {
                        Bufs::Read(_) => &mut [],
                        Bufs::Write(_, g) => g,
                        Bufs::InPlace(z) => z,
                    };
                    grad.par_chunks_mut(TASK_ELEMS).for_each(|c| {
                        c.iter_mut()
                            .for_each(|v| *v = E::from_f32((v.to_f32() as f64 * ratio) as f32))
                    });
                }
                Loss::Scalar((losses.iter().sum::<f64>() / nonzero as f64) as f32)
            }
        };
        Ok(loss)
    }
}

thread_local! {
    /// Calls on this thread use the row kernel for every row, never [`small_k`] (tests check that the two give
    /// the same bits: [`crate::__test_hooks::with_row_kernel_only`]).
    static ROWS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Hooks for the tests that compare the kernels; not part of the API (hidden, no stability promised). They
/// are public so that the comparison can be an integration test, which links to the kernels the core crate
/// compiled once ([`crate::kernel::sealed::Sealed`]) instead of compiling them again as a unit test would.
pub mod test_hooks {
    /// Runs `f` with every loss call it makes on this thread computed by the row kernel alone (no rows across
    /// the lanes). The setting is restored when `f` returns or panics.
    pub fn with_row_kernel_only<R>(f: impl FnOnce() -> R) -> R {
        struct Restore(bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                super::ROWS_ONLY.set(self.0);
            }
        }
        let _restore = Restore(super::ROWS_ONLY.replace(true));
        f()
    }

    /// The number of groups of rows the few-classes kernel has computed on this thread so far.
    pub fn lane_groups() -> usize {
        super::small_k::GROUPS.get()
    }
}

/// The rows of one parallel task, run under [`dispatch`], for one row variant: class weights (`W`), soft targets
/// (`T`), `shifted` sums needed (`LIN`; see [`crate::kernel::row_stats`]). The variant is the same for every row
/// of a call, so it is chosen once per task ([`Plan::rows_one_at_a_time`]) and each variant is a function of its
/// own rather than eight inlined into one; with the chunk loops shared through [`Isa::outline`], that took the
/// core crate's release build from 271 s to 54 s (docs/DESIGN.md, "Compiled in pieces").
struct RowTask<'a, 'p, E, const W: bool, const T: bool, const LIN: bool> {
    plan: &'a Plan<'p>,
    first_row: usize,
    bufs: Bufs<'a, E>,
    losses: &'a mut [f64],
}

impl<E: Element, const W: bool, const T: bool, const LIN: bool> Kernel for RowTask<'_, '_, E, W, T, LIN> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self) {
        let (k, first, plan) = (self.plan.k, self.first_row, self.plan);
        // Chunk maxima of the current row (rows longer than one chunk only).
        let mut maxima = Vec::new();
        match self.bufs {
            Bufs::Read(zc) => {
                for (r, (z, l)) in zc.chunks_exact(k).zip(self.losses.iter_mut()).enumerate() {
                    *l = plan.row::<S, E, _, W, T, LIN>(first + r, &mut ReadOnly(z), &mut maxima);
                }
            }
            Bufs::Write(zc, gc) => {
                let mut scratch = ScratchRow::take::<E>(k);
                let rows = zc
                    .chunks_exact(k)
                    .zip(gc.chunks_exact_mut(k))
                    .zip(self.losses.iter_mut());
                for (r, ((z, g), l)) in rows.enumerate() {
                    *l = plan.row_out::<S, E, _, W, T, LIN>(first + r, Separate::new(z, g), &mut scratch, &mut maxima);
                }
                scratch.give_back();
            }
            Bufs::InPlace(zc) => {
                let mut scratch = ScratchRow::take::<E>(k);
                for (r, (z, l)) in zc.chunks_exact_mut(k).zip(self.losses.iter_mut()).enumerate() {
                    *l = plan.row_out::<S, E, _, W, T, LIN>(first + r, InPlace(z), &mut scratch, &mut maxima);
                }
                scratch.give_back();
            }
        }
    }
}

/// The longest scratch row a thread keeps between tasks: 1 MiB of f32, which covers the largest language-model
/// vocabularies (256k). A task with longer rows allocates its own and frees it at the end.
const SCRATCH_KEEP: usize = 1 << 18;

thread_local! {
    /// Each thread's f32 scratch row for 16-bit gradients, kept between tasks and calls (at most
    /// [`SCRATCH_KEEP`] values).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A task's f32 scratch row for bf16 and f16 gradients ([`crate::kernel::WithScratch`]): it saves the gradient
/// pass one `exp` per class and changes no bits ([`crate::kernel::RowIo::KEEPS_EXP`]). Its values are never read
/// before the statistics pass of the same row wrote them. Taken out of the thread-local and given back rather
/// than borrowed inside `LocalKey::with`: the kernel must not run in a closure, which would not be compiled for
/// the dispatched instruction set.
struct ScratchRow(Vec<f32>);

impl ScratchRow {
    /// `k` values for bf16 and f16; none for f32, which keeps the exponentials in its gradient buffer.
    fn take<E: Element>(k: usize) -> Self {
        if E::STORES_EXP {
            return ScratchRow(Vec::new());
        }
        let mut v = SCRATCH.take();
        v.truncate(k);
        v.resize(k, 0.0);
        ScratchRow(v)
    }

    /// The scratch row.
    fn row(&mut self) -> &mut [f32] {
        &mut self.0
    }

    /// Returns the row to the thread for its next task, unless longer than [`SCRATCH_KEEP`].
    fn give_back(self) {
        if !self.0.is_empty() && self.0.len() <= SCRATCH_KEEP {
            SCRATCH.set(self.0);
        }
    }
}

/// What a part of a long row computes.
#[derive(Clone, Copy)]
enum PartOp<'a> {
    /// Statistics of each chunk of the part (and, when storing, `exp(z - chunk max)` into the output).
    Stats,
    /// The gradient, given the row's finished `GradRow` and every chunk's max.
    Grad(&'a GradRow, &'a [f32]),
}

/// A run of whole chunks of one long row, run under [`dispatch`] on some thread.
struct PartTask<'a, 'p, E> {
    plan: &'a Plan<'p>,
    row: usize,
    /// Class index of the part's first element.
    offset: usize,
    bufs: Bufs<'a, E>,
    op: PartOp<'a>,
}

impl<E: Element> Kernel for PartTask<'_, '_, E> {
    type Output = Vec<RowStats>;
    #[inline(always)]
    fn run<S: Isa>(self) -> Vec<RowStats> {
        match self.bufs {
            Bufs::Read(z) => self
                .plan
                .part::<S, E, _>(self.row, self.offset, &mut ReadOnly(z), self.op),
            Bufs::Write(z, g) => self
                .plan
                .part::<S, E, _>(self.row, self.offset, &mut Separate::new(z, g), self.op),
            Bufs::InPlace(z) => self
                .plan
                .part::<S, E, _>(self.row, self.offset, &mut InPlace(z), self.op),
        }
    }
}

/// The label's gradient entry of a wide row, computed with the same instructions as a narrow row's.
struct LabelFix<'a> {
    g: &'a GradRow,
    stored: Option<f32>,
    chunk_max: f32,
    weights: Option<&'a [f32]>,
}

impl Kernel for LabelFix<'_> {
    type Output = Option<(usize, f32)>;
    #[inline(always)]
    fn run<S: Isa>(self) -> Option<(usize, f32)> {
        let p = label_prob::<S>(self.g, self.stored, self.chunk_max);
        match self.weights {
            Some(w) => label_grad::<S, true>(self.g, p, w),
            None => label_grad::<S, false>(self.g, p, &[]),
        }
    }
}

/// The per-row quantities that the loss and the gradient need besides the statistics.
enum RowKind<'a> {
    Ignored,
    Hard { y: usize, zy: f32 },
    Soft(&'a [f32]),
}

impl Plan<'_> {
    fn row_kind<E: Element, IO: RowIo<E>>(&self, i: usize, io: &IO) -> RowKind<'_> {
        match self.targets {
            Targets::Labels(labels) => {
                if Some(labels[i]) == self.ignore {
                    RowKind::Ignored
                } else {
                    let y = labels[i] as usize;
                    RowKind::Hard { y, zy: io.load(y) }
                }
            }
            Targets::Soft(t) => RowKind::Soft(&t[i * self.k..(i + 1) * self.k]),
        }
    }

    fn row_coef(&self, i: usize) -> f64 {
        let g = match self.grad_output {
            GradOutput::Scalar(g) => g as f64,
            GradOutput::PerRow(g) => g[i] as f64,
        };
        g * self.scale
    }

    /// The loss of a row and what its gradient pass needs, from its statistics.
    fn finish(&self, i: usize, kind: &RowKind<'_>, st: &RowStats) -> (f64, GradRow) {
        let ln_s = st.sum_exp.ln();
        let mut g = GradRow {
            max: st.max,
            sum_exp: st.sum_exp,
            coef: self.row_coef(i) as f32,
            q_scale: 1.0,
            t_scale: 0.0,
            off: 0.0,
            label: None,
        };
        let w_all = self.weight_total;
        let loss = match *kind {
            RowKind::Ignored => 0.0,
            RowKind::Hard { y, zy } => {
                let d_y = zy as f64 - st.max as f64;
                let e = match self.smoothing {
                    Smoothing::Fixed(e) => e as f64,
                    Smoothing::Adaptive { alpha } => alpha as f64 * (d_y.exp() / st.sum_exp),
                };
                let (off, on) = self.spread.hard_target(e, self.k);
                let w_y = self.weights.map_or(1.0, |w| w[y] as f64);
                if self.weights.is_some() {
                    g.q_scale = (off * w_all + (on - off) * w_y) as f32;
                }
                g.off = off as f32;
                g.label = Some((y, zy, on as f32));
                let spread_term = if off != 0.0 {
                    off * (w_all * ln_s - st.shifted)
                } else {
                    0.0
                };
                // -log p_y as the definition computes it, `lse - z_y`: a row fit to within f64 round-off of
                // `lse` has a loss of exactly 0, as in PyTorch and fast-reid, which matters to `mean-nonzero`.
                let nll_y = (st.max as f64 + ln_s) - zy as f64;
                spread_term + (on - off) * w_y * nll_y
            }
            RowKind::Soft(_) => {
                let e = match self.smoothing {
                    Smoothing::Fixed(e) => e as f64,
                    Smoothing::Adaptive { .. } => 0.0, // rejected by `check`
                };
                let (t_scale, off) = self.spread.soft_target(e, self.k);
                g.q_scale = (t_scale * st.target_mass + off * w_all) as f32;
                g.t_scale = t_scale as f32;
                g.off = off as f32;
                let target_term = if t_scale != 0.0 {
                    t_scale * (st.target_mass * ln_s - st.target_shifted)
                } else {
                    0.0
                };
                let spread_term = if off != 0.0 {
                    off * (w_all * ln_s - st.shifted)
                } else {
                    0.0
                };
                target_term + spread_term
            }
        };
        (loss, g)
    }

    /// The rows `first_row..` of one task: across the lanes when [`Plan::small_k`] holds, else one at a time.
    fn rows<E: Element>(&self, first_row: usize, bufs: Bufs<'_, E>, losses: &mut [f64]) {
        if self.small_k {
            dispatch(small_k::LanesTask {
                plan: self,
                first: first_row,
                bufs,
                losses,
            })
        } else {
            self.rows_one_at_a_time(first_row, bufs, losses)
        }
    }

    /// The rows `first_row..` of one task by the row kernel, in the call's row variant ([`RowTask`]).
    fn rows_one_at_a_time<E: Element>(&self, first_row: usize, bufs: Bufs<'_, E>, losses: &mut [f64]) {
        macro_rules! run {
            ($w:literal, $t:literal, $lin:literal) => {
                dispatch(RowTask::<E, $w, $t, $lin> {
                    plan: self,
                    first_row,
                    bufs,
                    losses,
                })
            };
        }
        let soft = matches!(self.targets, Targets::Soft(_));
        match (self.weights.is_some(), soft, self.lin) {
            (false, false, false) => run!(false, false, false),
            (false, false, true) => run!(false, false, true),
            (true, false, false) => run!(true, false, false),
            (true, false, true) => run!(true, false, true),
            (false, true, false) => run!(false, true, false),
            (false, true, true) => run!(false, true, true),
            (true, true, false) => run!(true, true, false),
            (true, true, true) => run!(true, true, true),
        }
    }

    /// Loss of row `i` (f64); writes its gradient when `io` has an output. `W`, `T`, `LIN`: the call's row variant
    /// ([`RowTask`]).
    #[inline(always)]
    fn row<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const LIN: bool>(
        &self,
        i: usize,
        io: &mut IO,
        maxima: &mut Vec<f32>,
    ) -> f64 {
        let kind = self.row_kind::<E, IO>(i, io);
        if matches!(kind, RowKind::Ignored) {
            if IO::WRITES {
                for c in 0..self.k {
                    io.store(c, 0.0);
                }
            }
            return 0.0;
        }
        if IO::KEEPS_EXP {
            self.row_impl::<S, E, IO, W, T, LIN, true>(i, &kind, io, maxima)
        } else {
            self.row_impl::<S, E, IO, W, T, LIN, false>(i, &kind, io, maxima)
        }
    }

    /// Loss of row `i` and its gradient into `io`'s output, which keeps the exponentials between the passes
    /// itself (f32) or, for the 16-bit types, in the task's `scratch` row ([`ScratchRow`]).
    #[inline(always)]
    fn row_out<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const LIN: bool>(
        &self,
        i: usize,
        io: IO,
        scratch: &mut ScratchRow,
        maxima: &mut Vec<f32>,
    ) -> f64 {
        // A constant condition: only one of the two is compiled for each `E` (a choice made at run time
        // compiled both and more than doubled the release build, docs/DESIGN.md).
        if E::STORES_EXP {
            self.row::<S, E, _, W, T, LIN>(i, &mut { io }, maxima)
        } else {
            self.row::<S, E, _, W, T, LIN>(i, &mut WithScratch::new(io, scratch.row()), maxima)
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn row_impl<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const LIN: bool, const STORE: bool>(
        &self,
        i: usize,
        kind: &RowKind<'_>,
        io: &mut IO,
        maxima: &mut Vec<f32>,
    ) -> f64 {
        let w: &[f32] = self.weights.unwrap_or(&[]);
        let t: &[f32] = match kind {
            RowKind::Soft(t) => t,
            _ => &[],
        };
        let st = row_stats::<S, E, IO, W, T, LIN, STORE>(io, w, t, maxima);
        let (loss, g) = self.finish(i, kind, &st);
        if IO::WRITES {
            grad_row::<S, E, IO, W, T, STORE>(&g, io, maxima, w, t);
        }
        loss
    }

    /// Loss of row `i` with its chunks spread over rayon's threads (rows with many classes, few rows).
    fn wide_row<E: Element>(&self, i: usize, mut bufs: Bufs<'_, E>) -> f64 {
        let k = self.k;
        let n_chunks = k.div_ceil(CHUNK);
        // Parts of whole chunks; how many does not change the result, only the balance.
        let chunks_per_part = n_chunks.div_ceil(4 * rayon::current_num_threads()).max(1);
        let part_len = chunks_per_part * CHUNK;
        let kind = match &bufs {
            Bufs::Read(z) => self.row_kind::<E, _>(i, &ReadOnly(z)),
            Bufs::Write(z, _) => self.row_kind::<E, _>(i, &ReadOnly(z)),
            Bufs::InPlace(z) => self.row_kind::<E, _>(i, &ReadOnly(z)),
        };
        let run_parts = |bufs: &mut Bufs<'_, E>, op: PartOp<'_>| -> Vec<RowStats> {
            let task = |ci: usize, b: Bufs<'_, E>| {
                dispatch(PartTask {
                    plan: self,
                    row: i,
                    offset: ci * part_len,
                    bufs: b,
                    op,
                })
            };
            let parts: Vec<Vec<RowStats>> = match bufs {
                Bufs::Read(z) => z
                    .par_chunks(part_len)
                    .enumerate()
                    .map(|(ci, zc)| task(ci, Bufs::Read(zc)))
                    .collect(),
                Bufs::Write(z, g) => z
                    .par_chunks(part_len)
                    .zip(g.par_chunks_mut(part_len))
                    .enumerate()
                    .map(|(ci, (zc, gc))| task(ci, Bufs::Write(zc, gc)))
                    .collect(),
                Bufs::InPlace(z) => z
                    .par_chunks_mut(part_len)
                    .enumerate()
                    .map(|(ci, zc)| task(ci, Bufs::InPlace(zc)))
                    .collect(),
            };
            parts.into_iter().flatten().collect()
        };

        if matches!(kind, RowKind::Ignored) {
            match &mut bufs {
                Bufs::Read(_) => {}
                Bufs::Write(_, g) => g.iter_mut().for_each(|v| *v = E::from_f32(0.0)),
                Bufs::InPlace(z) => z.iter_mut().for_each(|v| *v = E::from_f32(0.0)),
            }
            return 0.0;
        }
        let chunk_stats = run_parts(&mut bufs, PartOp::Stats);
        let st = chunk_stats.iter().fold(RowStats::EMPTY, |acc, c| acc.combine(c));
        let (loss, g) = self.finish(i, &kind, &st);
        if matches!(bufs, Bufs::Read(_)) {
            return loss;
        }
        let maxima: Vec<f32> = chunk_stats.iter().map(|c| c.max).collect();
        // The label's entry needs p_y, read before the gradient pass overwrites what it is computed from.
        let label_fix = g.label.map(|(y, _, _)| {
            let stored = match &bufs {
                Bufs::Write(_, o) if E::STORES_EXP => Some(o[y].to_f32()),
                Bufs::InPlace(z) if E::STORES_EXP => Some(z[y].to_f32()),
                _ => None,
            };
            LabelFix {
                g: &g,
                stored,
                chunk_max: maxima[y / CHUNK],
                weights: self.weights,
            }
        });
        run_parts(&mut bufs, PartOp::Grad(&g, &maxima));
        if let Some((y, v)) = label_fix.and_then(dispatch) {
            match &mut bufs {
                Bufs::Write(_, o) => o[y] = E::from_f32(v),
                Bufs::InPlace(z) => z[y] = E::from_f32(v),
                Bufs::Read(_) => {}
            }
        }
        loss
    }

    /// One part of a wide row: chunk statistics, or the gradient.
    #[inline(always)]
    fn part<S: Isa, E: Element, IO: RowIo<E>>(
        &self,
        i: usize,
        offset: usize,
        io: &mut IO,
        op: PartOp<'_>,
    ) -> Vec<RowStats> {
        if IO::KEEPS_EXP {
            self.part_with::<S, E, IO, true>(i, offset, io, op)
        } else {
            self.part_with::<S, E, IO, false>(i, offset, io, op)
        }
    }

    #[inline(always)]
    fn part_with<S: Isa, E: Element, IO: RowIo<E>, const STORE: bool>(
        &self,
        i: usize,
        offset: usize,
        io: &mut IO,
        op: PartOp<'_>,
    ) -> Vec<RowStats> {
        let len = io.len();
        let w_all: &[f32] = self.weights.map_or(&[][..], |w| &w[offset..offset + len]);
        let t_all: &[f32] = match self.targets {
            Targets::Soft(t) => &t[i * self.k + offset..i * self.k + offset + len],
            Targets::Labels(_) => &[],
        };
        let (has_w, has_t) = (self.weights.is_some(), !t_all.is_empty());
        let mut out = Vec::new();
        let mut start = 0;
        while start < len {
            let end = (start + CHUNK).min(len);
            match op {
                PartOp::Stats => {
                    let st = match (has_w, has_t, self.lin) {
                        (false, false, false) => {
                            slice_stats::<S, E, IO, false, false, false, STORE>(io, start, end, w_all, t_all)
                        }
                        (false, false, true) => {
                            slice_stats::<S, E, IO, false, false, true, STORE>(io, start, end, w_all, t_all)
                        }
                        (true, false, false) => {
                            slice_stats::<S, E, IO, true, false, false, STORE>(io, start, end, w_all, t_all)
                        }
                        (true, false, true) => {
                            slice_stats::<S, E, IO, true, false, true, STORE>(io, start, end, w_all, t_all)
                        }
                        (false, true, false) => {
                            slice_stats::<S, E, IO, false, true, false, STORE>(io, start, end, w_all, t_all)
                        }
                        (false, true, true) => {
                            slice_stats::<S, E, IO, false, true, true, STORE>(io, start, end, w_all, t_all)
                        }
                        (true, true, false) => {
                            slice_stats::<S, E, IO, true, true, false, STORE>(io, start, end, w_all, t_all)
                        }
                        (true, true, true) => {
                            slice_stats::<S, E, IO, true, true, true, STORE>(io, start, end, w_all, t_all)
                        }
                    };
                    out.push(st);
                }
                PartOp::Grad(g, maxima) => {
                    let m = maxima[(offset + start) / CHUNK];
                    match (has_w, has_t) {
                        (false, false) => {
                            slice_grad::<S, E, IO, false, false, STORE>(g, io, start, end, m, w_all, t_all)
                        }
                        (true, false) => slice_grad::<S, E, IO, true, false, STORE>(g, io, start, end, m, w_all, t_all),
                        (false, true) => slice_grad::<S, E, IO, false, true, STORE>(g, io, start, end, m, w_all, t_all),
                        (true, true) => slice_grad::<S, E, IO, true, true, STORE>(g, io, start, end, m, w_all, t_all),
                    }
                }
            }
            start = end;
        }
        out
    }
}

fn check_len(what: &'static str, got: usize, want: usize, expected: impl FnOnce() -> String) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(LossError::Length {
            what,
            expected: expected(),
            got,
        })
    }
}

/// Every label is in `[0, K)` or the ignore index; the first that is not is reported with its row.
pub(crate) fn check_labels(labels: &[i64], k: usize, ignore_index: Option<i64>) -> Result<()> {
    match labels
        .iter()
        .enumerate()
        .find(|&(_, &y)| Some(y) != ignore_index && !(0..k as i64).contains(&y))
    {
        Some((row, &label)) => Err(LossError::LabelOutOfRange {
            row,
            label,
            k,
            ignore_index,
        }),
        None => Ok(()),
    }
}

/// Every soft-target row is a probability vector: entries finite and `>= 0`, sum within `1e-4` of 1.
pub(crate) fn check_soft_targets(t: impl Iterator<Item = f64>, k: usize) -> Result<()> {
    let mut sum = 0.0;
    for (idx, v) in t.enumerate() {
        let (row, class) = (idx / k, idx % k);
        if !(v.is_finite() && v >= 0.0) {
            return Err(LossError::SoftTargetEntry { row, class, value: v });
        }
        sum += v;
        if class == k - 1 {
            if (sum - 1.0).abs() > 1e-4 {
                return Err(LossError::SoftTargetSum { row, sum });
            }
            sum = 0.0;
        }
    }
    Ok(())
}
