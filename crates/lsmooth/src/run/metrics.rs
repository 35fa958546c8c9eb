//! What a run measures: per-epoch and final metrics (`metrics.json`, `epochs.csv`).

use label_smoothing::calibration::{evaluate, CalibrationReport, Predictions, RowScores};
use serde::{Deserialize, Serialize};

use super::{Model, TrainConfig, ECE_BINS};
use crate::data::Dataset;
use crate::CliError;

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (the smoothed objective).
    #[serde(with = "label_smoothing::json_float")]
    pub train_loss: f64,
    /// Accuracy on the training set (against its possibly noisy labels), after the epoch.
    #[serde(with = "label_smoothing::json_float")]
    pub train_accuracy: f64,
    /// Validation accuracy.
    #[serde(with = "label_smoothing::json_float")]
    pub validation_accuracy: f64,
    /// Test accuracy.
    #[serde(with = "label_smoothing::json_float")]
    pub test_accuracy: f64,
    /// Test negative log-likelihood (unsmoothed).
    #[serde(with = "label_smoothing::json_float")]
    pub test_nll: f64,
    /// Test ECE, 15 equal-width bins.
    #[serde(with = "label_smoothing::json_float")]
    pub test_ece: f64,
    /// Test Brier score.
    #[serde(with = "label_smoothing::json_float")]
    pub test_brier: f64,
    /// Wall-clock seconds of the epoch's training and evaluation.
    #[serde(with = "label_smoothing::json_float")]
    pub seconds: f64,
}

/// The contents of `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The run's configuration.
    pub config: TrainConfig,
    /// What made the run (absent from `metrics.json` files written without it).
    #[serde(default = "super::config::Provenance::here")]
    pub made_by: super::config::Provenance,
    /// Model description.
    pub model: String,
    /// Epochs completed.
    pub epochs: usize,
    /// Final test accuracy.
    #[serde(with = "label_smoothing::json_float")]
    pub test_accuracy: f64,
    /// Final test NLL.
    #[serde(with = "label_smoothing::json_float")]
    pub test_nll: f64,
    /// Final test ECE (15 bins).
    #[serde(with = "label_smoothing::json_float")]
    pub test_ece: f64,
    /// Final test Brier score.
    #[serde(with = "label_smoothing::json_float")]
    pub test_brier: f64,
    /// Final test MCE.
    #[serde(with = "label_smoothing::json_float")]
    pub test_mce: f64,
    /// Final test adaptive ECE.
    #[serde(with = "label_smoothing::json_float")]
    pub test_adaptive_ece: f64,
    /// Final training accuracy.
    #[serde(with = "label_smoothing::json_float")]
    pub train_accuracy: f64,
    /// `train_accuracy - test_accuracy`: over-fitting.
    #[serde(with = "label_smoothing::json_float")]
    pub train_test_gap: f64,
    /// The best test accuracy of any epoch.
    #[serde(with = "label_smoothing::json_float")]
    pub best_test_accuracy: f64,
    /// The first epoch whose test accuracy is within 0.5 points of the best.
    pub convergence_epoch: usize,
    /// The temperature fitted on the validation split.
    #[serde(with = "label_smoothing::json_float")]
    pub temperature: f64,
    /// Validation NLL (before temperature scaling): what a strength sweep picks by.
    #[serde(default)]
    #[serde(with = "label_smoothing::json_float")]
    pub validation_nll: f64,
    /// Validation ECE (15 bins, before temperature scaling).
    #[serde(default)]
    #[serde(with = "label_smoothing::json_float")]
    pub validation_ece: f64,
    /// Test ECE after temperature scaling.
    #[serde(with = "label_smoothing::json_float")]
    pub test_ece_scaled: f64,
    /// Test NLL after temperature scaling.
    #[serde(with = "label_smoothing::json_float")]
    pub test_nll_scaled: f64,
    /// Test Brier score after temperature scaling.
    #[serde(with = "label_smoothing::json_float")]
    pub test_brier_scaled: f64,
    /// Per-epoch history.
    pub history: Vec<EpochMetrics>,
}

/// A finished run, with what the reports draw.
#[derive(Debug)]
pub struct Outcome {
    /// The metrics (as in `metrics.json`).
    pub metrics: RunMetrics,
    /// The final test calibration (reliability bins).
    pub test_report: CalibrationReport,
    /// The same after temperature scaling.
    pub test_report_scaled: CalibrationReport,
    /// Each test example's confidence, correctness, NLL and Brier term (before scaling), for bootstrap intervals
    /// and the smoothed reliability curve.
    pub test_rows: label_smoothing::calibration::RowScores,
    /// The trained network.
    pub model: Model,
    /// The data it was trained on.
    pub dataset: Dataset,
}

pub(super) fn accuracy(logits: &[f32], labels: &[u32], k: usize) -> f64 {
    let correct = logits
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, &y)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (c, &v)| if v > row[b] { c } else { b });
            best == y as usize
        })
        .count();
    correct as f64 / labels.len().max(1) as f64
}

/// The calibration report of logits at a temperature and the per-row scores behind it, the NLL computed from
/// the logits (`lse - z_y`): finite wherever the logits are, where `-ln p` of an underflowed probability would
/// be infinite.
pub(super) fn report(
    logits: &[f32],
    labels: &[u32],
    k: usize,
    temperature: f64,
) -> Result<(CalibrationReport, RowScores), CliError> {
    let labels: Vec<i64> = labels.iter().map(|&y| y as i64).collect();
    let predictions = Predictions::Logits {
        logits,
        temperature,
        scaling: None,
    };
    evaluate(predictions, &labels, k, ECE_BINS).map_err(|e| CliError::Train(e.to_string()))
}

pub(super) fn epochs_csv(history: &[EpochMetrics]) -> String {
    let mut s = String::from(
        "epoch,train_loss,train_accuracy,validation_accuracy,test_accuracy,test_nll,test_ece,test_brier,seconds\n",
    );
    for h in history {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3}\n",
            h.epoch,
            h.train_loss,
            h.train_accuracy,
            h.validation_accuracy,
            h.test_accuracy,
            h.test_nll,
            h.test_ece,
            h.test_brier,
            h.seconds
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nll_of_an_underflowing_probability_is_finite() {
        // p(label) = 1 / (1 + e^800) underflows to 0 in f64, so -ln p is infinite; the definition,
        // ln(e^0 + e^800) - 0 = 800 + ln(1 + e^-800), is 800 to f64 precision.
        let (r, _) = report(&[0.0, 800.0, 1.0, 0.0], &[0, 0], 2, 1.0).unwrap();
        let second = 1.0f64.exp().ln_1p() - 1.0; // ln(e^1 + e^0) - 1
        assert!((r.nll - (800.0 + second) / 2.0).abs() < 1e-12, "{}", r.nll);
    }
}
