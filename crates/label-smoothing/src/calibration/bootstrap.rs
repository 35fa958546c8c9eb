//! Bootstrap confidence intervals for the calibration metrics: the rows resampled with replacement, each metric
//! recomputed on every resample, and the percentile interval of the resampled values (linear interpolation
//! between order statistics, as `numpy.percentile`'s default).
//!
//! Resample `r` draws its rows from a [`SplitMix64`] seeded with a function of `(seed, r)` alone, and the
//! resamples run in parallel but are collected in order: the intervals depend on the seed and the number of
//! resamples, never on the number of threads.
//!
//! ```
//! use label_smoothing::calibration::{bootstrap, BootstrapConfig, RowScores};
//! let probs = [0.9, 0.1, /* row 2 */ 0.2, 0.8, /* row 3 */ 0.6, 0.4, /* row 4 */ 0.3, 0.7];
//! let rows = RowScores::from_probs(&probs, &[0, 1, 1, 1], 2)?;
//! let ci = bootstrap(&rows, 15, &BootstrapConfig::default().with_resamples(200).with_seed(7))?;
//! assert!(ci.accuracy[0] <= 0.75 && 0.75 <= ci.accuracy[1]);
//! # Ok::<(), label_smoothing::calibration::CalibrationError>(())
//! ```

use super::{
    check_inputs, check_probabilities, debiased_l2_ce, equal_width, smooth_ece, smoothed_reliability, top_label,
    CalibrationError,
};
use crate::rng::SplitMix64;
use rayon::prelude::*;

/// What each row contributes to the metrics: its top-label confidence and correctness, `-ln p[label]` and its
/// Brier term `sum_k (p_k - [k = label])^2`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowScores {
    /// Top-label confidence per row.
    pub confidence: Vec<f64>,
    /// Whether the top label is the row's label.
    pub correct: Vec<bool>,
    /// `-ln p[label]` per row.
    pub nll: Vec<f64>,
    /// The row's Brier term.
    pub brier: Vec<f64>,
}

impl RowScores {
    /// From probabilities `[N, K]` (rows distributions within `1e-3`) and labels `[N]` in `[0, K)`.
    pub fn from_probs(probs: &[f64], labels: &[i64], k: usize) -> Result<Self, CalibrationError> {
        let mut rows = RowScores::with_capacity(check_probabilities(probs, labels, k)?);
        for (p, &y) in probs.chunks_exact(k).zip(labels) {
            rows.push(p, y as usize, -p[y as usize].ln());
        }
        Ok(rows)
    }

    /// From logits `[N, K]` at a temperature (`softmax(z / T)`), the NLL computed from the logits (finite where
    /// the probability of the label underflows).
    pub fn from_logits(logits: &[f32], labels: &[i64], k: usize, temperature: f64) -> Result<Self, CalibrationError> {
        let mut rows = RowScores::with_capacity(check_inputs(logits.len(), labels, k, "logits")?);
        super::check_temperature(temperature)?;
        // One row of probabilities at a time, as `softmax_rows` computes them.
        let mut p = vec![0.0f64; k];
        for (z, &y) in logits.chunks_exact(k).zip(labels) {
            let y = y as usize;
            let lse = super::evaluate::softmax_row(z, temperature, &mut p);
            rows.push(&p, y, lse - z[y] as f64 / temperature);
        }
        Ok(rows)
    }

    pub(super) fn with_capacity(n: usize) -> Self {
        RowScores {
            confidence: Vec::with_capacity(n),
            correct: Vec::with_capacity(n),
            nll: Vec::with_capacity(n),
            brier: Vec::with_capacity(n),
        }
    }

    /// Appends another set's rows after these (to pool the predictions of several runs).
    pub fn append(&mut self, other: RowScores) {
        self.confidence.extend(other.confidence);
        self.correct.extend(other.correct);
        self.nll.extend(other.nll);
        self.brier.extend(other.brier);
    }

    /// Resample `r` of [`bootstrap`]: row indices drawn with replacement from a generator seeded by `(seed, r)`.
    fn resample(&self, seed: u64, r: usize) -> Vec<usize> {
        let n = self.len() as u64;
        let mut rng = SplitMix64::new(seed ^ (r as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        (0..n).map(|_| rng.below(n) as usize).collect()
    }

    pub(super) fn push(&mut self, p: &[f64], y: usize, nll: f64) {
        let (arg, conf) = top_label(p);
        self.confidence.push(conf);
        self.correct.push(arg == y);
        self.nll.push(nll);
        self.brier.push(
            p.iter()
                .enumerate()
                .map(|(c, &v)| {
                    let t = if c == y { 1.0 } else { 0.0 };
                    (v - t) * (v - t)
                })
                .sum(),
        );
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.confidence.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.confidence.is_empty()
    }
}

/// How to bootstrap: resamples, seed, confidence level.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BootstrapConfig {
    /// Resamples (default 1000).
    pub resamples: usize,
    /// Seed of the resampling (default 0).
    pub seed: u64,
    /// Coverage of the intervals, in `(0, 1)` (default 0.95: the 2.5th and 97.5th percentiles).
    pub level: f64,
    /// Whether to bootstrap smooth ECE too (default true): it costs about ten times the other metrics together.
    pub smooth_ece: bool,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 1000,
            seed: 0,
            level: 0.95,
            smooth_ece: true,
        }
    }
}

impl BootstrapConfig {
    /// Sets the number of resamples.
    pub fn with_resamples(mut self, resamples: usize) -> Self {
        self.resamples = resamples;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the coverage level.
    pub fn with_level(mut self, level: f64) -> Self {
        self.level = level;
        self
    }

    /// Sets whether smooth ECE is bootstrapped.
    pub fn with_smooth_ece(mut self, smooth_ece: bool) -> Self {
        self.smooth_ece = smooth_ece;
        self
    }

    /// Checks the fields: at least 2 resamples, a level strictly between 0 and 1.
    pub fn validate(&self) -> Result<(), CalibrationError> {
        if self.resamples < 2 {
            return Err(CalibrationError::BadBootstrap(format!(
                "resamples must be at least 2, got {}",
                self.resamples
            )));
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(CalibrationError::BadBootstrap(format!(
                "level must be in (0, 1), got {}",
                self.level
            )));
        }
        Ok(())
    }
}

/// Percentile intervals `[lo, hi]` of each metric.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BootstrapIntervals {
    /// The configuration they were computed with.
    pub config: BootstrapConfig,
    /// Top-1 accuracy.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub accuracy: [f64; 2],
    /// Mean NLL.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub nll: [f64; 2],
    /// Brier score.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub brier: [f64; 2],
    /// ECE, equal-width bins.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub ece: [f64; 2],
    /// Smooth ECE (its bandwidth chosen again on each resample); `None` unless [`BootstrapConfig::smooth_ece`].
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub smooth_ece: Option<[f64; 2]>,
    /// Debiased L2 calibration error.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub debiased_l2_ce: [f64; 2],
}

/// `numpy.percentile(sorted, 100 q)` with linear interpolation, of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let i = (pos.floor() as usize).min(sorted.len() - 1);
    let j = (i + 1).min(sorted.len() - 1);
    // Equal neighbours are the answer as they are: interpolating two infinities would give NaN.
    if sorted[i] == sorted[j] {
        return sorted[i];
    }
    sorted[i] + (pos - i as f64) * (sorted[j] - sorted[i])
}

/// The bootstrap intervals of accuracy, NLL, Brier, ECE (`bins` equal-width bins), smooth ECE and the debiased
/// L2 calibration error (`bins` equal-mass bins).
///
/// Cost: `resamples` times the metrics on `N` rows; smooth ECE dominates (eleven kernel smoothings per
/// resample).
pub fn bootstrap(
    rows: &RowScores,
    bins: usize,
    config: &BootstrapConfig,
) -> Result<BootstrapIntervals, CalibrationError> {
    bootstrap_with_progress(rows, bins, config, &|| ())
}

/// [`bootstrap`], calling `progress` once per finished resample (from the worker threads, in any order): for a
/// progress bar. The intervals are the same as [`bootstrap`]'s.
pub fn bootstrap_with_progress(
    rows: &RowScores,
    bins: usize,
    config: &BootstrapConfig,
    progress: &(dyn Fn() + Sync),
) -> Result<BootstrapIntervals, CalibrationError> {
    config.validate()?;
    if bins == 0 {
        return Err(CalibrationError::ZeroBins);
    }
    let n = rows.len();
    if n == 0 {
        return Err(CalibrationError::Empty);
    }
    let samples: Vec<[f64; 6]> = (0..config.resamples)
        .into_par_iter()
        .map(|r| {
            let idx = rows.resample(config.seed, r);
            let conf: Vec<f64> = idx.iter().map(|&i| rows.confidence[i]).collect();
            let ok: Vec<bool> = idx.iter().map(|&i| rows.correct[i]).collect();
            let mean = |v: &[f64]| idx.iter().map(|&i| v[i]).sum::<f64>() / n as f64;
            let accuracy = ok.iter().filter(|&&b| b).count() as f64 / n as f64;
            let sample = [
                accuracy,
                mean(&rows.nll),
                mean(&rows.brier),
                equal_width(&conf, &ok, bins).0,
                if config.smooth_ece {
                    smooth_ece(&conf, &ok).value
                } else {
                    f64::NAN
                },
                debiased_l2_ce(&conf, &ok, bins),
            ];
            progress();
            sample
        })
        .collect();
    let (lo_q, hi_q) = ((1.0 - config.level) / 2.0, (1.0 + config.level) / 2.0);
    let interval = |m: usize| {
        let mut v: Vec<f64> = samples.iter().map(|s| s[m]).collect();
        v.sort_by(f64::total_cmp);
        [percentile(&v, lo_q), percentile(&v, hi_q)]
    };
    Ok(BootstrapIntervals {
        config: *config,
        accuracy: interval(0),
        nll: interval(1),
        brier: interval(2),
        ece: interval(3),
        smooth_ece: config.smooth_ece.then(|| interval(4)),
        debiased_l2_ce: interval(5),
    })
}

/// A pointwise bootstrap band of the smoothed reliability curve at a fixed bandwidth `sigma` (usually the
/// point estimate's): at each of `points` evenly spaced confidences `t`, `(t, lo, hi)`, the percentiles of the
/// resampled curves' accuracy at `t`. Seeded and ordered like [`bootstrap`].
pub fn bootstrap_reliability(
    rows: &RowScores,
    sigma: f64,
    points: usize,
    config: &BootstrapConfig,
) -> Result<Vec<(f64, f64, f64)>, CalibrationError> {
    config.validate()?;
    let n = rows.len();
    if n == 0 {
        return Err(CalibrationError::Empty);
    }
    let curves: Vec<Vec<(f64, f64, f64)>> = (0..config.resamples)
        .into_par_iter()
        .map(|r| {
            let idx = rows.resample(config.seed, r);
            let conf: Vec<f64> = idx.iter().map(|&i| rows.confidence[i]).collect();
            let ok: Vec<bool> = idx.iter().map(|&i| rows.correct[i]).collect();
            smoothed_reliability(&conf, &ok, sigma, points)
        })
        .collect();
    let (lo_q, hi_q) = ((1.0 - config.level) / 2.0, (1.0 + config.level) / 2.0);
    let points = curves[0].len();
    Ok((0..points)
        .map(|p| {
            let mut v: Vec<f64> = curves.iter().map(|c| c[p].1).collect();
            v.sort_by(f64::total_cmp);
            (curves[0][p].0, percentile(&v, lo_q), percentile(&v, hi_q))
        })
        .collect())
}
