//! The loss object and its three calls: [`loss`](LabelSmoothingLoss::loss),
//! [`loss_and_grad`](LabelSmoothingLoss::loss_and_grad) and
//! [`loss_and_grad_in_place`](LabelSmoothingLoss::loss_and_grad_in_place).

use crate::config::{LabelSmoothingConfig, Reduction, Smoothing, Spread};
use crate::error::{LossError, Result};
use crate::kernel::{grad_row, grad_row_in_place, row_stats, GradRow};
use rayon::prelude::*;

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
/// Logits are `[N, K]` row-major f32; `N` is `logits.len() / K`. Rows run in parallel on rayon's pool, and the
/// results are bit-identical for any number of threads.
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

/// Rows per parallel task: enough classes that a task outweighs rayon's scheduling cost. Depends only on `K`.
const TASK_ELEMS: usize = 1 << 15;

/// How the gradient is delivered for one call.
enum Out<'a> {
    None(&'a [f32]),
    Buffer(&'a [f32], &'a mut [f32]),
    InPlace(&'a mut [f32]),
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
    /// Per-row upstream gradient divided by the mean's denominator: row `i` gets `scale * g_i`.
    grad_output: GradOutput<'a>,
    scale: f64,
    /// The `shifted` sums are needed for hard labels (smoothing can be non-zero).
    hard_lin: bool,
    /// The base `shifted` sums are needed for soft targets (eps > 0).
    soft_lin: bool,
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
    pub fn loss(&self, logits: &[f32], targets: Targets<'_>) -> Result<Loss> {
        let n = self.check(logits.len(), targets, GradOutput::ONE, None)?;
        self.run(n, targets, GradOutput::ONE, Out::None(logits))
    }

    /// The loss and its gradient with respect to the logits, written into `grad` (`[N, K]`, fully overwritten).
    ///
    /// `grad_output` is the upstream gradient ([`GradOutput::ONE`] when this loss is the objective).
    pub fn loss_and_grad(
        &self,
        logits: &[f32],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        grad: &mut [f32],
    ) -> Result<Loss> {
        let n = self.check(logits.len(), targets, grad_output, Some(grad.len()))?;
        self.run(n, targets, grad_output, Out::Buffer(logits, grad))
    }

    /// The loss, with the gradient written over the logits (no second `[N, K]` buffer).
    ///
    /// Everything is validated before the first write: on an error the logits are untouched.
    pub fn loss_and_grad_in_place(
        &self,
        logits: &mut [f32],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
    ) -> Result<Loss> {
        let n = self.check(logits.len(), targets, grad_output, None)?;
        self.run(n, targets, grad_output, Out::InPlace(logits))
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
        if logits_len % k != 0 {
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

    fn run(&self, n: usize, targets: Targets<'_>, grad_output: GradOutput<'_>, mut out: Out<'_>) -> Result<Loss> {
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
        let eps_nonzero = !matches!(self.config.smoothing, Smoothing::Fixed(e) if e == 0.0);
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
            hard_lin: eps_nonzero,
            soft_lin: eps_nonzero,
        };

        let mut losses = vec![0.0f64; n];
        let rows_per_task = (TASK_ELEMS / k).max(1);
        match &mut out {
            Out::None(z) => z
                .par_chunks(rows_per_task * k)
                .zip(losses.par_chunks_mut(rows_per_task))
                .enumerate()
                .for_each(|(task, (zc, lc))| {
                    crate::simd::dispatch(RowTask {
                        plan: &plan,
                        first_row: task * rows_per_task,
                        bufs: TaskBufs::Read(zc),
                        losses: lc,
                    })
                }),
            Out::Buffer(z, g) => z
                .par_chunks(rows_per_task * k)
                .zip(g.par_chunks_mut(rows_per_task * k))
                .zip(losses.par_chunks_mut(rows_per_task))
                .enumerate()
                .for_each(|(task, ((zc, gc), lc))| {
                    crate::simd::dispatch(RowTask {
                        plan: &plan,
                        first_row: task * rows_per_task,
                        bufs: TaskBufs::Write(zc, gc),
                        losses: lc,
                    })
                }),
            Out::InPlace(z) => z
                .par_chunks_mut(rows_per_task * k)
                .zip(losses.par_chunks_mut(rows_per_task))
                .enumerate()
                .for_each(|(task, (zc, lc))| {
                    crate::simd::dispatch(RowTask {
                        plan: &plan,
                        first_row: task * rows_per_task,
                        bufs: TaskBufs::InPlace(zc),
                        losses: lc,
                    })
                }),
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
                    let grad: &mut [f32] = match out {
                        Out::None(_) => &mut [],
                        Out::Buffer(_, g) => g,
                        Out::InPlace(z) => z,
                    };
                    grad.par_chunks_mut(TASK_ELEMS)
                        .for_each(|c| c.iter_mut().for_each(|v| *v = (*v as f64 * ratio) as f32));
                }
                Loss::Scalar((losses.iter().sum::<f64>() / nonzero as f64) as f32)
            }
        };
        Ok(loss)
    }
}

/// A parallel task's rows: logits, and where their gradients go.
enum TaskBufs<'a> {
    Read(&'a [f32]),
    Write(&'a [f32], &'a mut [f32]),
    InPlace(&'a mut [f32]),
}

/// The rows of one parallel task, run under [`crate::simd::dispatch`].
struct RowTask<'a, 'p> {
    plan: &'a Plan<'p>,
    first_row: usize,
    bufs: TaskBufs<'a>,
    losses: &'a mut [f64],
}

impl crate::simd::Kernel for RowTask<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let (k, first, plan) = (self.plan.k, self.first_row, self.plan);
        match self.bufs {
            TaskBufs::Read(zc) => {
                for (r, (z, l)) in zc.chunks_exact(k).zip(self.losses.iter_mut()).enumerate() {
                    *l = plan.row(first + r, RowBuf::Read(z));
                }
            }
            TaskBufs::Write(zc, gc) => {
                let rows = zc
                    .chunks_exact(k)
                    .zip(gc.chunks_exact_mut(k))
                    .zip(self.losses.iter_mut());
                for (r, ((z, g), l)) in rows.enumerate() {
                    *l = plan.row(first + r, RowBuf::Write(z, g));
                }
            }
            TaskBufs::InPlace(zc) => {
                for (r, (z, l)) in zc.chunks_exact_mut(k).zip(self.losses.iter_mut()).enumerate() {
                    *l = plan.row(first + r, RowBuf::InPlace(z));
                }
            }
        }
    }
}

/// One row's logits and where its gradient goes.
enum RowBuf<'a> {
    Read(&'a [f32]),
    Write(&'a [f32], &'a mut [f32]),
    InPlace(&'a mut [f32]),
}

impl Plan<'_> {
    /// Loss of row `i` (f64); writes its gradient when the buffer asks for it.
    #[inline(always)]
    fn row(&self, i: usize, buf: RowBuf<'_>) -> f64 {
        let has_w = self.weights.is_some();
        match self.targets {
            Targets::Labels(labels) => match (has_w, self.hard_lin) {
                (false, false) => self.hard_row::<false, false>(i, labels[i], buf),
                (false, true) => self.hard_row::<false, true>(i, labels[i], buf),
                (true, false) => self.hard_row::<true, false>(i, labels[i], buf),
                (true, true) => self.hard_row::<true, true>(i, labels[i], buf),
            },
            Targets::Soft(t) => {
                let t = &t[i * self.k..(i + 1) * self.k];
                match (has_w, self.soft_lin) {
                    (false, false) => self.soft_row::<false, false>(i, t, buf),
                    (false, true) => self.soft_row::<false, true>(i, t, buf),
                    (true, false) => self.soft_row::<true, false>(i, t, buf),
                    (true, true) => self.soft_row::<true, true>(i, t, buf),
                }
            }
        }
    }

    fn row_coef(&self, i: usize) -> f64 {
        let g = match self.grad_output {
            GradOutput::Scalar(g) => g as f64,
            GradOutput::PerRow(g) => g[i] as f64,
        };
        g * self.scale
    }

    #[inline(always)]
    fn hard_row<const W: bool, const LIN: bool>(&self, i: usize, y: i64, buf: RowBuf<'_>) -> f64 {
        if Some(y) == self.ignore {
            match buf {
                RowBuf::Read(_) => {}
                RowBuf::Write(_, g) => g.fill(0.0),
                RowBuf::InPlace(z) => z.fill(0.0),
            }
            return 0.0;
        }
        let y = y as usize;
        let w: &[f32] = self.weights.unwrap_or(&[]);
        let z: &[f32] = match &buf {
            RowBuf::Read(z) | RowBuf::Write(z, _) => z,
            RowBuf::InPlace(z) => z,
        };
        let st = row_stats::<W, false, LIN>(z, w, &[]);
        let ln_s = st.sum_exp.ln();
        let zy = z[y];
        let d_y = zy as f64 - st.max as f64;
        let e = match self.smoothing {
            Smoothing::Fixed(e) => e as f64,
            Smoothing::Adaptive { alpha } => alpha as f64 * (d_y.exp() / st.sum_exp),
        };
        let (off, on) = self.spread.hard_target(e, self.k);
        let w_y = if W { w[y] as f64 } else { 1.0 };
        let w_all = self.weight_total;
        let spread_term = if off != 0.0 {
            off * (w_all * ln_s - st.shifted)
        } else {
            0.0
        };
        // -log p_y as the definition computes it, `lse - z_y`: a row fit to within f64 round-off of `lse` has
        // a loss of exactly 0, as in PyTorch and fast-reid, which matters to `mean-nonzero`'s count.
        let nll_y = (st.max as f64 + ln_s) - zy as f64;
        let loss = spread_term + (on - off) * w_y * nll_y;
        let grad = GradRow {
            max: st.max,
            inv_sum: (1.0 / st.sum_exp) as f32,
            coef: self.row_coef(i) as f32,
            q_scale: if W {
                (off * w_all + (on - off) * w_y) as f32
            } else {
                1.0
            },
            t_scale: 0.0,
            off: off as f32,
            label: Some((y, zy, on as f32)),
        };
        match buf {
            RowBuf::Read(_) => {}
            RowBuf::Write(z, g) => grad_row::<W, false>(&grad, z, w, &[], g),
            RowBuf::InPlace(z) => grad_row_in_place::<W, false>(&grad, z, w, &[]),
        }
        loss
    }

    #[inline(always)]
    fn soft_row<const W: bool, const LIN: bool>(&self, i: usize, t: &[f32], buf: RowBuf<'_>) -> f64 {
        let w: &[f32] = self.weights.unwrap_or(&[]);
        let z: &[f32] = match &buf {
            RowBuf::Read(z) | RowBuf::Write(z, _) => z,
            RowBuf::InPlace(z) => z,
        };
        let st = row_stats::<W, true, LIN>(z, w, t);
        let ln_s = st.sum_exp.ln();
        let e = match self.smoothing {
            Smoothing::Fixed(e) => e as f64,
            Smoothing::Adaptive { .. } => 0.0, // rejected by `check`
        };
        let (t_scale, off) = self.spread.soft_target(e, self.k);
        let target_term = if t_scale != 0.0 {
            t_scale * (st.target_mass * ln_s - st.target_shifted)
        } else {
            0.0
        };
        let spread_term = if off != 0.0 {
            off * (self.weight_total * ln_s - st.shifted)
        } else {
            0.0
        };
        let grad = GradRow {
            max: st.max,
            inv_sum: (1.0 / st.sum_exp) as f32,
            coef: self.row_coef(i) as f32,
            q_scale: (t_scale * st.target_mass + off * self.weight_total) as f32,
            t_scale: t_scale as f32,
            off: off as f32,
            label: None,
        };
        match buf {
            RowBuf::Read(_) => {}
            RowBuf::Write(z, g) => grad_row::<W, true>(&grad, z, w, t, g),
            RowBuf::InPlace(z) => grad_row_in_place::<W, true>(&grad, z, w, t),
        }
        target_term + spread_term
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
