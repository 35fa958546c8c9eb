//! Calibration metrics (SPEC.md, "Calibration"): accuracy, top-k accuracy, NLL, Brier, ECE and MCE with
//! equal-width bins, adaptive ECE with equal-mass bins, classwise ECE, smooth ECE ([`smooth`]), the debiased L2
//! calibration error ([`debiased`]), the data of a reliability diagram, bootstrap confidence intervals
//! ([`bootstrap`](fn@bootstrap)), and temperature and vector scaling ([`scaling`]). Everything accumulates in f64.
//!
//! Bins: with `M` equal-width bins, a confidence `c` falls in bin `floor(c * M)`, so bin `m` holds `[m/M, (m+1)/M)`
//! and a confidence of exactly 1 falls in the last bin.
//!
//! ```
//! use label_smoothing::calibration::{calibration, softmax_rows};
//! let logits = [2.0f32, 0.0, 0.0, /* row 2 */ 0.0, 3.0, 0.0];
//! let probs = softmax_rows(&logits, 3, 1.0)?;
//! let report = calibration(&probs, &[0, 2], 3, 15)?;
//! assert_eq!(report.accuracy, 0.5);
//! assert!(report.ece > 0.0);
//! # Ok::<(), label_smoothing::calibration::CalibrationError>(())
//! ```

use thiserror::Error;

pub mod bootstrap;
pub mod debiased;
mod evaluate;
pub mod scaling;
pub mod smooth;

pub use bootstrap::{
    bootstrap, bootstrap_reliability, bootstrap_with_progress, BootstrapConfig, BootstrapIntervals, RowScores,
};
pub use debiased::debiased_l2_ce;
pub use evaluate::{evaluate, Predictions};
pub use scaling::{fit_temperature, fit_vector_scaling, fit_vector_scaling_with_progress, VectorScaling};
pub use smooth::{smooth_ece, smooth_ece_at, smoothed_reliability, SmoothEce};

/// Why a calibration metric could not be computed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// No rows.
    #[error("no rows: calibration needs at least one example")]
    Empty,
    /// Fewer than two classes, or a buffer whose length does not fit `[N, K]`.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// What it must be.
        expected: String,
        /// What it is.
        got: usize,
    },
    /// A label outside `[0, K)`.
    #[error("label {label} at row {row} is out of range [0, {k})")]
    LabelOutOfRange {
        /// The row.
        row: usize,
        /// Its label.
        label: i64,
        /// The number of classes.
        k: usize,
    },
    /// A probability row that is not a distribution (negative or non-finite entries, or a sum away from 1 by more
    /// than `1e-3`).
    #[error("probability row {row} is not a distribution: {why}")]
    NotADistribution {
        /// The row.
        row: usize,
        /// What is wrong.
        why: String,
    },
    /// A logit that is NaN or infinite where a finite one is needed: fitting a temperature, or a row whose
    /// softmax it leaves undefined (a NaN or `+inf`, or a row of `-inf` only).
    #[error("row {row}, class {class}: logit {value} is not finite")]
    NonFiniteLogit {
        /// The row.
        row: usize,
        /// The class.
        class: usize,
        /// The value.
        value: f32,
    },
    /// Zero bins.
    #[error("the number of bins must be at least 1")]
    ZeroBins,
    /// A bootstrap configuration out of range.
    #[error("bootstrap: {0}")]
    BadBootstrap(String),
    /// A temperature that is not a finite positive number.
    #[error("temperature must be finite and positive, got {0}")]
    BadTemperature(f64),
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Bin {
    /// Lower edge of the bin.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub lower: f64,
    /// Upper edge of the bin.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub upper: f64,
    /// Examples whose top-label confidence falls in the bin.
    pub count: usize,
    /// Their mean confidence (0 for an empty bin).
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub confidence: f64,
    /// Their accuracy (0 for an empty bin).
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub accuracy: f64,
}

/// Every metric of SPEC.md's calibration section for one set of predictions. With the `serde` feature it
/// serialises with these field names, the bins under `reliability`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CalibrationReport {
    /// Rows.
    pub n: usize,
    /// Top-1 accuracy.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub accuracy: f64,
    /// Top-5 accuracy (top-`K` when `K < 5`).
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub top5_accuracy: f64,
    /// Mean `-ln p[label]`.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub nll: f64,
    /// `1/N sum_i sum_k (p_ik - [k = y_i])^2`.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub brier: f64,
    /// Expected calibration error, equal-width bins.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub ece: f64,
    /// Maximum calibration error over non-empty equal-width bins.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub mce: f64,
    /// ECE with equal-mass bins.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub adaptive_ece: f64,
    /// Mean over classes of the per-class binned ECE (Kull et al. 2019).
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub classwise_ece: f64,
    /// Smooth ECE (Błasiok and Nakkiran 2023, as `relplot.smECE` computes it): see [`smooth`].
    #[cfg_attr(feature = "serde", serde(default))]
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub smooth_ece: f64,
    /// The kernel bandwidth smooth ECE was computed at.
    #[cfg_attr(feature = "serde", serde(default))]
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub smooth_ece_bandwidth: f64,
    /// The debiased L2 calibration error (Kumar et al. 2019), top-label, `bins` equal-mass bins: see [`debiased`].
    #[cfg_attr(feature = "serde", serde(default))]
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub debiased_l2_ce: f64,
    /// The equal-width bins: the data of a reliability diagram.
    #[cfg_attr(feature = "serde", serde(rename = "reliability"))]
    pub bins: Vec<Bin>,
}

/// A temperature must be finite and positive.
fn check_temperature(temperature: f64) -> Result<(), CalibrationError> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(())
    } else {
        Err(CalibrationError::BadTemperature(temperature))
    }
}

fn check_shape(len: usize, k: usize, what: &'static str) -> Result<usize, CalibrationError> {
    if k < 2 {
        return Err(CalibrationError::Shape {
            what: "classes",
            expected: "at least 2".into(),
            got: k,
        });
    }
    if !len.is_multiple_of(k) {
        return Err(CalibrationError::Shape {
            what,
            expected: format!("a multiple of K = {k} ([N, K] row-major)"),
            got: len,
        });
    }
    Ok(len / k)
}

/// `softmax(z / temperature)` of every row of `[N, K]` logits, in f64.
pub fn softmax_rows(logits: &[f32], k: usize, temperature: f64) -> Result<Vec<f64>, CalibrationError> {
    check_shape(logits.len(), k, "logits")?;
    check_temperature(temperature)?;
    let mut out = vec![0.0; logits.len()];
    for (row, p) in logits.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        evaluate::softmax_row(row, temperature, p);
    }
    Ok(out)
}

/// Mean negative log-likelihood of `softmax(z / temperature)`, computed stably from the logits.
pub fn nll_of_logits(logits: &[f32], labels: &[i64], k: usize, temperature: f64) -> Result<f64, CalibrationError> {
    let n = check_inputs(logits.len(), labels, k, "logits")?;
    check_temperature(temperature)?;
    let total: f64 = logits
        .chunks_exact(k)
        .zip(labels)
        .map(|(row, &y)| {
            let m = row
                .iter()
                .map(|&v| v as f64 / temperature)
                .fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row
                .iter()
                .map(|&v| (v as f64 / temperature - m).exp())
                .sum::<f64>()
                .ln();
            lse - row[y as usize] as f64 / temperature
        })
        .sum();
    Ok(total / n as f64)
}

fn check_inputs(len: usize, labels: &[i64], k: usize, what: &'static str) -> Result<usize, CalibrationError> {
    let n = check_shape(len, k, what)?;
    if n == 0 {
        return Err(CalibrationError::Empty);
    }
    if labels.len() != n {
        return Err(CalibrationError::Shape {
            what: "labels",
            expected: format!("{n} (one per row)"),
            got: labels.len(),
        });
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, &y)| !(0..k as i64).contains(&y)) {
        return Err(CalibrationError::LabelOutOfRange { row, label, k });
    }
    Ok(n)
}

fn bin_of(c: f64, m: usize) -> usize {
    ((c * m as f64).floor() as usize).min(m - 1)
}

/// ECE, MCE and the bins of a reliability diagram from top-label confidences and their correctness, with `bins`
/// equal-width bins.
fn equal_width(confidence: &[f64], correct: &[bool], bins: usize) -> (f64, f64, Vec<Bin>) {
    let nf = confidence.len() as f64;
    let mut count = vec![0usize; bins];
    let mut conf_sum = vec![0.0f64; bins];
    let mut acc_sum = vec![0.0f64; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = bin_of(c, bins);
        count[b] += 1;
        conf_sum[b] += c;
        acc_sum[b] += ok as u8 as f64;
    }
    let mut ece = 0.0;
    let mut mce = 0.0f64;
    let mut bin_list = Vec::with_capacity(bins);
    for b in 0..bins {
        let (confidence, accuracy) = if count[b] > 0 {
            (conf_sum[b] / count[b] as f64, acc_sum[b] / count[b] as f64)
        } else {
            (0.0, 0.0)
        };
        if count[b] > 0 {
            let gap = (accuracy - confidence).abs();
            ece += count[b] as f64 / nf * gap;
            mce = mce.max(gap);
        }
        bin_list.push(Bin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            count: count[b],
            confidence,
            accuracy,
        });
    }
    (ece, mce, bin_list)
}

/// Checks `[N, K]` probabilities (rows distributions within `1e-3`) and their labels; returns `N`.
fn check_probabilities(probs: &[f64], labels: &[i64], k: usize) -> Result<usize, CalibrationError> {
    let n = check_inputs(probs.len(), labels, k, "probabilities")?;
    for (row, p) in probs.chunks_exact(k).enumerate() {
        check_distribution(p, row)?;
    }
    Ok(n)
}

/// Checks that row `row`, `p`, is a distribution: finite non-negative entries summing to 1 within `1e-3`.
fn check_distribution(p: &[f64], row: usize) -> Result<(), CalibrationError> {
    if let Some(v) = p.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return Err(CalibrationError::NotADistribution {
            row,
            why: format!("entry {v}"),
        });
    }
    let s: f64 = p.iter().sum();
    if (s - 1.0).abs() > 1e-3 {
        return Err(CalibrationError::NotADistribution {
            row,
            why: format!("sums to {s}"),
        });
    }
    Ok(())
}

/// The top label of one row of probabilities (ties: the first maximal class, like argmax) and its probability.
fn top_label(p: &[f64]) -> (usize, f64) {
    p.iter()
        .enumerate()
        .fold((0, p[0]), |best, (c, &v)| if v > best.1 { (c, v) } else { best })
}

/// Every calibration metric from probabilities `[N, K]` (rows must be distributions within `1e-3`), labels `[N]`
/// in `[0, K)`, and `bins` equal-width (and equal-mass) bins.
pub fn calibration(
    probs: &[f64],
    labels: &[i64],
    k: usize,
    bins: usize,
) -> Result<CalibrationReport, CalibrationError> {
    if bins == 0 {
        return Err(CalibrationError::ZeroBins);
    }
    let n = check_probabilities(probs, labels, k)?;
    let mut acc = Accumulator::new(n, k, bins);
    for (p, &y) in probs.chunks_exact(k).zip(labels) {
        acc.row(p, y as usize, -p[y as usize].ln());
    }
    Ok(acc.finish().0)
}

/// The metrics' running sums over rows given one at a time, in row order: what [`calibration`] computes, in
/// memory `O(N + K * bins)` whatever the size of the probabilities it is shown (see [`evaluate`]).
pub(crate) struct Accumulator {
    k: usize,
    bins: usize,
    /// Per row: top-label confidence and correctness, `-ln p[label]`, Brier term (the sums derive from them).
    rows: RowScores,
    top5: usize,
    /// Per class and equal-width bin (`class * bins + bin`): count, sum of `p_ik`, count of `y_i = k`.
    class_count: Vec<usize>,
    class_conf: Vec<f64>,
    class_hits: Vec<f64>,
}

impl Accumulator {
    pub(crate) fn new(n: usize, k: usize, bins: usize) -> Self {
        Accumulator {
            k,
            bins,
            rows: RowScores::with_capacity(n),
            top5: 0,
            class_count: vec![0; k * bins],
            class_conf: vec![0.0; k * bins],
            class_hits: vec![0.0; k * bins],
        }
    }

    /// Adds one row: its probabilities, label and `-ln p[label]` (from the logits where they are known).
    pub(crate) fn row(&mut self, p: &[f64], y: usize, nll: f64) {
        self.rows.push(p, y, nll);
        let better = p.iter().filter(|&&v| v > p[y]).count();
        self.top5 += (better < 5.min(self.k)) as usize;
        // Classwise: per class, the binned gap between p_ik and the frequency of y = k.
        for (class, &v) in p.iter().enumerate() {
            let at = class * self.bins + bin_of(v, self.bins);
            self.class_count[at] += 1;
            self.class_conf[at] += v;
            self.class_hits[at] += (y == class) as u8 as f64;
        }
    }

    /// The report, and the per-row scores it came from.
    pub(crate) fn finish(self) -> (CalibrationReport, RowScores) {
        let (n, bins, rows) = (self.rows.len(), self.bins, &self.rows);
        let nf = n as f64;
        let (confidence, correct_top) = (&rows.confidence, &rows.correct);
        let (ece, mce, bin_list) = equal_width(confidence, correct_top, bins);
        let smooth = smooth_ece(confidence, correct_top);

        // Equal-mass bins: sorted by confidence (ties by row), sizes differing by at most one.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| confidence[a].total_cmp(&confidence[b]).then(a.cmp(&b)));
        let mut adaptive_ece = 0.0;
        let mut start = 0;
        for b in 0..bins.min(n) {
            let size = n / bins.min(n) + usize::from(b < n % bins.min(n));
            let members = &order[start..start + size];
            let conf: f64 = members.iter().map(|&i| confidence[i]).sum::<f64>() / size as f64;
            let acc: f64 = members.iter().map(|&i| correct_top[i] as u8 as f64).sum::<f64>() / size as f64;
            adaptive_ece += size as f64 / nf * (acc - conf).abs();
            start += size;
        }

        let mut classwise = 0.0;
        for class in 0..self.k {
            let at = class * bins;
            let (cnt, cs, hit) = (
                &self.class_count[at..at + bins],
                &self.class_conf[at..at + bins],
                &self.class_hits[at..at + bins],
            );
            classwise += (0..bins)
                .filter(|&b| cnt[b] > 0)
                .map(|b| cnt[b] as f64 / nf * (hit[b] / cnt[b] as f64 - cs[b] / cnt[b] as f64).abs())
                .sum::<f64>();
        }

        // Summed in row order from 0.0, as rows are added.
        let total = |v: &[f64]| v.iter().fold(0.0, |a, &b| a + b);
        let report = CalibrationReport {
            n,
            accuracy: correct_top.iter().filter(|&&c| c).count() as f64 / nf,
            top5_accuracy: self.top5 as f64 / nf,
            nll: total(&rows.nll) / nf,
            brier: total(&rows.brier) / nf,
            ece,
            mce,
            adaptive_ece,
            classwise_ece: classwise / self.k as f64,
            smooth_ece: smooth.value,
            smooth_ece_bandwidth: smooth.bandwidth,
            debiased_l2_ce: debiased_l2_ce(confidence, correct_top, bins),
            bins: bin_list,
        };
        (report, self.rows)
    }
}
