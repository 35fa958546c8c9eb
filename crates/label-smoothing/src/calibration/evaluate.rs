//! Every metric and the per-row scores of a set of predictions, by blocks of rows: the probabilities exist in f64
//! for one block at a time (at most [`BLOCK_VALUES`] of them), so memory is `O(N + K * bins)` beyond the
//! predictions themselves, never `[N, K]` in f64. The numbers are those of [`calibration`](super::calibration)
//! on [`softmax_rows`](super::softmax_rows) (with the NLL from the logits) and of [`RowScores`], bit for bit:
//! the rows are visited in order and every sum keeps its order.

use super::CalibrationReport;
use super::{check_inputs, Accumulator, CalibrationError, RowScores, VectorScaling};

/// Probabilities held in f64 at once.
const BLOCK_VALUES: usize = 1 << 16;

/// Predictions `[N, K]`, row-major.
#[derive(Debug, Clone, Copy)]
pub enum Predictions<'a> {
    /// Logits, evaluated as `softmax(s / temperature)` where `s` is the logits, or with `scaling` the vector-scaled
    /// logits `(w_c z_c + b_c)` rounded to f32 (as [`VectorScaling::apply`] gives them).
    Logits {
        /// The logits.
        logits: &'a [f32],
        /// The temperature (positive, finite).
        temperature: f64,
        /// Vector scaling applied first.
        scaling: Option<&'a VectorScaling>,
    },
    /// Probabilities, rows summing to 1 within `1e-3`.
    Probs(&'a [f32]),
}

/// Every metric of SPEC.md's calibration section and the per-row scores the bootstrap and the smoothed
/// reliability curve need, for `predictions` with labels `[N]` in `[0, K)` and `bins` bins. For logits, the NLL
/// is computed from the logits (finite where a probability underflows).
///
/// ```
/// use label_smoothing::calibration::{evaluate, Predictions};
/// let logits = [2.0f32, 0.0, -1.0, 0.5, 0.5, 3.0];
/// let given = Predictions::Logits { logits: &logits, temperature: 1.0, scaling: None };
/// let (report, rows) = evaluate(given, &[0, 2], 3, 15)?;
/// assert_eq!(report.accuracy, 1.0);
/// assert_eq!(rows.len(), 2);
/// # Ok::<(), label_smoothing::calibration::CalibrationError>(())
/// ```
pub fn evaluate(
    predictions: Predictions<'_>,
    labels: &[i64],
    k: usize,
    bins: usize,
) -> Result<(CalibrationReport, RowScores), CalibrationError> {
    if bins == 0 {
        return Err(CalibrationError::ZeroBins);
    }
    let (values, what) = match predictions {
        Predictions::Logits { logits, .. } => (logits, "logits"),
        Predictions::Probs(p) => (p, "probabilities"),
    };
    let n = check_inputs(values.len(), labels, k, what)?;
    if let Predictions::Logits {
        temperature, scaling, ..
    } = predictions
    {
        super::check_temperature(temperature)?;
        if let Some(v) = scaling {
            if v.weights.len() != k || v.biases.len() != k {
                return Err(CalibrationError::Shape {
                    what: "vector scaling",
                    expected: format!("{k} weights and biases"),
                    got: v.weights.len().min(v.biases.len()),
                });
            }
        }
    }
    let mut acc = Accumulator::new(n, k, bins);
    let per_block = (BLOCK_VALUES / k).max(1);
    let mut probs = vec![0.0f64; per_block.min(n) * k];
    let mut scaled = vec![
        0.0f32;
        if matches!(predictions, Predictions::Logits { scaling: Some(_), .. }) {
            k
        } else {
            0
        }
    ];
    for first in (0..n).step_by(per_block) {
        let count = per_block.min(n - first);
        for i in 0..count {
            let row = first + i;
            let z = &values[row * k..(row + 1) * k];
            let p = &mut probs[i * k..(i + 1) * k];
            let y = labels[row] as usize;
            let nll = match predictions {
                Predictions::Logits {
                    temperature, scaling, ..
                } => {
                    let z = match scaling {
                        Some(v) => {
                            for (c, s) in scaled.iter_mut().enumerate() {
                                *s = (v.weights[c] * z[c] as f64 + v.biases[c]) as f32;
                            }
                            &scaled[..]
                        }
                        None => z,
                    };
                    softmax_row(z, temperature, p) - z[y] as f64 / temperature
                }
                Predictions::Probs(_) => {
                    for (d, &v) in p.iter_mut().zip(z) {
                        *d = v as f64;
                    }
                    -p[y].ln()
                }
            };
            super::check_distribution(p, row).map_err(|e| match predictions {
                // A NaN or infinite logit is named as such, not as the probabilities it made undefined.
                Predictions::Logits { .. } => non_finite_logit(z, row).unwrap_or(e),
                Predictions::Probs(_) => e,
            })?;
            acc.row(p, y, nll);
        }
    }
    Ok(acc.finish())
}

/// The first NaN or `+inf` logit of row `row` (else the first `-inf`: a row of them all has no softmax).
fn non_finite_logit(z: &[f32], row: usize) -> Option<CalibrationError> {
    let at = z
        .iter()
        .position(|v| v.is_nan() || *v == f32::INFINITY)
        .or_else(|| z.iter().position(|v| v.is_infinite()))?;
    Some(CalibrationError::NonFiniteLogit {
        row,
        class: at,
        value: z[at],
    })
}

/// `softmax(z / t)` of one row into `p`, as [`softmax_rows`](super::softmax_rows) computes it; returns the row's
/// log-sum-exp as [`nll_of_logits`](super::nll_of_logits) computes it.
pub(super) fn softmax_row(z: &[f32], t: f64, p: &mut [f64]) -> f64 {
    let m = z.iter().map(|&v| v as f64 / t).fold(f64::NEG_INFINITY, f64::max);
    for (d, &v) in p.iter_mut().zip(z) {
        *d = (v as f64 / t - m).exp();
    }
    // The same sum, in the same order, as the log-sum-exp's.
    let s: f64 = p.iter().sum();
    for d in p.iter_mut() {
        *d /= s;
    }
    m + s.ln()
}
