//! Post-hoc scaling of logits fitted on held-out data: one temperature for all classes (Guo et al. 2017), or
//! vector scaling, one temperature and one bias per class.

use super::{check_inputs, nll_of_logits, CalibrationError};
use rayon::prelude::*;

fn check_finite(logits: &[f32], k: usize) -> Result<(), CalibrationError> {
    match logits.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(CalibrationError::NonFiniteLogit {
            row: i / k,
            class: i % k,
            value: logits[i],
        }),
        None => Ok(()),
    }
}

/// Fits the temperature `T > 0` that minimises the NLL of `softmax(z / T)` on held-out logits.
///
/// A golden-section search on `ln T` over `[ln 0.01, ln 100]`: the NLL is convex in `1/T`, so it is unimodal in
/// `ln T` and the search cannot diverge; 80 iterations narrow the bracket to about `1e-15` in `ln T`. Scaling by
/// `T` never changes the argmax.
///
/// Every logit must be finite ([`CalibrationError::NonFiniteLogit`] names the first that is not): one NaN or
/// infinity makes the NLL undefined or infinite at every temperature, and the search would end on a bound.
pub fn fit_temperature(logits: &[f32], labels: &[i64], k: usize) -> Result<f64, CalibrationError> {
    check_inputs(logits.len(), labels, k, "logits")?;
    check_finite(logits, k)?;
    let f = |t: f64| nll_of_logits(logits, labels, k, t.exp()).unwrap_or(f64::INFINITY);
    let (mut a, mut b) = (0.01f64.ln(), 100f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..80 {
        if fc <= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    Ok(((a + b) / 2.0).exp())
}

/// Vector scaling (Guo et al. 2017): class `k`'s logit becomes `weights[k] * z_k + biases[k]`.
///
/// The biases are reported with mean zero: adding one constant to every bias leaves every probability unchanged,
/// so only their differences are determined by the data.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VectorScaling {
    /// One multiplier per class (the inverse of a per-class temperature).
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub weights: Vec<f64>,
    /// One bias per class, mean zero.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub biases: Vec<f64>,
    /// The mean NLL on the data it was fitted on.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub nll: f64,
    /// Quasi-Newton iterations used.
    pub iterations: usize,
}

impl VectorScaling {
    /// The identity map for `k` classes.
    pub fn identity(k: usize) -> Self {
        VectorScaling {
            weights: vec![1.0; k],
            biases: vec![0.0; k],
            nll: f64::NAN,
            iterations: 0,
        }
    }

    /// The scaled logits `[N, K]` (in f32, like the input), ready for [`super::softmax_rows`] at temperature 1.
    pub fn apply(&self, logits: &[f32]) -> Result<Vec<f32>, CalibrationError> {
        let k = self.weights.len();
        super::check_shape(logits.len(), k, "logits")?;
        Ok(logits
            .chunks_exact(k)
            .flat_map(|row| {
                row.iter()
                    .zip(self.weights.iter().zip(&self.biases))
                    .map(|(&z, (&w, &b))| (w * z as f64 + b) as f32)
            })
            .collect())
    }
}

/// The fixed number of row blocks of [`vector_nll`]: its partial sums are added in block order, so the result has
/// the same bits for any number of threads.
const NLL_BLOCKS: usize = 16;

/// Mean NLL of vector scaling with parameters `theta = [weights; biases]`, and its gradient into `grad`.
///
/// The rows are split into [`NLL_BLOCKS`] contiguous blocks, computed in parallel, each into its own gradient,
/// and the blocks' sums are added in order.
fn vector_nll(logits: &[f32], labels: &[i64], k: usize, theta: &[f64], grad: &mut [f64]) -> f64 {
    let n = labels.len();
    let rows_per_block = n.div_ceil(NLL_BLOCKS).max(1);
    let partials: Vec<(f64, Vec<f64>)> = (0..n.div_ceil(rows_per_block))
        .into_par_iter()
        .map(|b| {
            let rows = b * rows_per_block..((b + 1) * rows_per_block).min(n);
            let mut g = vec![0.0f64; 2 * k];
            let total = block_nll(&logits[rows.start * k..rows.end * k], &labels[rows], k, theta, &mut g);
            (total, g)
        })
        .collect();
    grad.fill(0.0);
    let mut total = 0.0;
    for (t, g) in &partials {
        total += t;
        grad.iter_mut().zip(g).for_each(|(a, b)| *a += b);
    }
    let n = n as f64;
    grad.iter_mut().for_each(|g| *g /= n);
    total / n
}

/// The summed NLL of some rows, their gradient added into `grad` (`[2 K]`, weights then biases).
fn block_nll(logits: &[f32], labels: &[i64], k: usize, theta: &[f64], grad: &mut [f64]) -> f64 {
    let (w, b) = theta.split_at(k);
    let (gw, gb) = grad.split_at_mut(k);
    let mut total = 0.0;
    let mut e = vec![0.0f64; k];
    for (row, &y) in logits.chunks_exact(k).zip(labels) {
        let y = y as usize;
        for c in 0..k {
            e[c] = w[c] * row[c] as f64 + b[c];
        }
        let m = e.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s_y = e[y];
        let mut sum = 0.0;
        for v in e.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        total += m + sum.ln() - s_y;
        let inv = 1.0 / sum;
        for c in 0..k {
            let g = e[c] * inv;
            gw[c] += g * row[c] as f64;
            gb[c] += g;
        }
        gw[y] -= row[y] as f64;
        gb[y] -= 1.0;
    }
    total
}

/// The iteration cap of [`fit_vector_scaling`].
const MAX_ITERATIONS: usize = 1000;

/// The relative decrease of the NLL below which [`fit_vector_scaling`] stops: SciPy's L-BFGS-B default `ftol`
/// (`factr = 1e7` times the f64 machine epsilon).
const FTOL: f64 = 1e7 * f64::EPSILON;

/// Fits vector scaling by minimising the mean NLL on held-out logits `[N, K]` and labels `[N]`.
///
/// The NLL is convex in the weights and biases (a log-sum-exp of functions linear in them), so the minimiser is
/// global; it is found with L-BFGS (memory 10) and a backtracking Armijo line search from the identity, until
/// the largest gradient entry is below `1e-9`, a step decreases the NLL by less than `2.2e-9` of its value
/// (SciPy's L-BFGS-B default), or 1000 iterations. Each evaluation runs over 16 fixed blocks of rows in parallel,
/// added in block order: the same bits for any number of threads.
/// With few rows per class the weights can grow without bound on separable data; then the iteration cap ends the
/// search at a point whose NLL is still below the identity's.
pub fn fit_vector_scaling(logits: &[f32], labels: &[i64], k: usize) -> Result<VectorScaling, CalibrationError> {
    fit_vector_scaling_with_progress(logits, labels, k, &mut |_, _| ())
}

/// [`fit_vector_scaling`], calling `progress(iteration, nll)` after each iteration (at most 1000): for a progress
/// display. The fit is the same as [`fit_vector_scaling`]'s.
pub fn fit_vector_scaling_with_progress(
    logits: &[f32],
    labels: &[i64],
    k: usize,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<VectorScaling, CalibrationError> {
    check_inputs(logits.len(), labels, k, "logits")?;
    check_finite(logits, k)?;
    let p = 2 * k;
    let mut theta: Vec<f64> = (0..p).map(|i| if i < k { 1.0 } else { 0.0 }).collect();
    let mut grad = vec![0.0; p];
    let mut f = vector_nll(logits, labels, k, &theta, &mut grad);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    const MEMORY: usize = 10;
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new(); // (s, y, 1 / y.s)
    let mut iterations = 0;
    let mut converged = false;
    let (mut trial, mut trial_grad) = (vec![0.0; p], vec![0.0; p]);
    while !converged && iterations < MAX_ITERATIONS && grad.iter().fold(0.0f64, |a, g| a.max(g.abs())) > 1e-9 {
        iterations += 1;
        // Two-loop recursion: dir = -H grad.
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let Some((s, y, _)) = history.last() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let bcoef = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - bcoef) * si);
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&dir, &grad);
        if slope >= 0.0 {
            // Not a descent direction (curvature lost to rounding): restart from steepest descent.
            history.clear();
            dir = grad.iter().map(|g| -g).collect();
            slope = dot(&dir, &grad);
        }
        let mut step = if history.is_empty() {
            1.0 / grad.iter().fold(0.0f64, |a, g| a.max(g.abs())).max(1.0)
        } else {
            1.0
        };
        let mut accepted = false;
        for _ in 0..60 {
            for i in 0..p {
                trial[i] = theta[i] + step * dir[i];
            }
            let ft = vector_nll(logits, labels, k, &trial, &mut trial_grad);
            if ft.is_finite() && ft <= f + 1e-4 * step * slope {
                let s: Vec<f64> = (0..p).map(|i| trial[i] - theta[i]).collect();
                let y: Vec<f64> = (0..p).map(|i| trial_grad[i] - grad[i]).collect();
                let sy = dot(&s, &y);
                if sy > 1e-300 {
                    if history.len() == MEMORY {
                        history.remove(0);
                    }
                    history.push((s, y, 1.0 / sy));
                }
                std::mem::swap(&mut theta, &mut trial);
                std::mem::swap(&mut grad, &mut trial_grad);
                // SciPy's L-BFGS-B test (`ftol`): the relative decrease of an accepted step.
                converged = (f - ft) <= FTOL * f.abs().max(ft.abs()).max(1.0);
                f = ft;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break; // No decrease representable in f64 along any direction tried: a minimum to rounding.
        }
        progress(iterations, f);
    }
    let (w, b) = theta.split_at(k);
    let mean_b = b.iter().sum::<f64>() / k as f64;
    let scaling = VectorScaling {
        weights: w.to_vec(),
        biases: b.iter().map(|v| v - mean_b).collect(),
        nll: f,
        iterations,
    };
    Ok(scaling)
}
