//! One setting's results over its seeds: mean and spread per metric ([`Stat`]), in [`SettingSummary`].

use crate::run::{LossSpec, Objective};
use label_smoothing::calibration::BootstrapIntervals;
use serde::Serialize;

/// Mean and sample standard deviation over seeds, with the values.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    /// Mean.
    #[serde(with = "label_smoothing::json_float")]
    pub mean: f64,
    /// Sample standard deviation (0 for one seed).
    #[serde(with = "label_smoothing::json_float")]
    pub sd: f64,
    /// One value per seed, in seed order.
    #[serde(with = "label_smoothing::json_float")]
    pub values: Vec<f64>,
}

impl Stat {
    /// The statistics of `values`.
    pub fn of(values: Vec<f64>) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n.max(1.0);
        let sd = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        Stat { mean, sd, values }
    }
}

/// One setting's results in `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SettingSummary {
    /// The setting as given (`plain`, `others:0.1`, ...).
    pub name: String,
    /// Its loss.
    pub loss: LossSpec,
    /// Its regulariser (mixup, CutMix, OLS, a penalty, relaxation), if any.
    pub objective: Option<Objective>,
    /// For `distill:SETTING`, the teacher setting (each seed distils from the same seed's teacher).
    pub teacher: Option<String>,
    /// For `distill:SETTING`, the distillation temperature.
    pub distill_temperature: Option<f32>,
    /// For `distill:SETTING`, the weight of the distillation term.
    pub distill_beta: Option<f32>,
    /// For `distill:SETTING` with `--student-hidden`, the student's hidden widths.
    pub student_hidden: Option<Vec<usize>>,
    /// The seeds it was trained with.
    pub seeds: Vec<u64>,
    /// Final test accuracy.
    pub test_accuracy: Stat,
    /// Final test NLL.
    pub test_nll: Stat,
    /// Final test ECE (15 bins).
    pub test_ece: Stat,
    /// Final test Brier score.
    pub test_brier: Stat,
    /// Training minus test accuracy.
    pub train_test_gap: Stat,
    /// First epoch within 0.5 points of the run's best test accuracy.
    pub convergence_epoch: Stat,
    /// Temperature fitted on the validation split.
    pub temperature: Stat,
    /// Test ECE after temperature scaling.
    pub test_ece_scaled: Stat,
    /// Test NLL after temperature scaling.
    pub test_nll_scaled: Stat,
    /// Validation NLL (before temperature scaling).
    pub validation_nll: Stat,
    /// Validation ECE (before temperature scaling).
    pub validation_ece: Stat,
    /// With fewer than [`FEW_SEEDS`] seeds: bootstrap intervals of the test metrics over the test predictions of
    /// all seeds pooled ([`POOLED_BOOTSTRAP`] resamples, seed 0, 95%), where a spread over seeds says little.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_bootstrap: Option<BootstrapIntervals>,
}

/// Below this many seeds the table shows bootstrap intervals next to the means.
pub const FEW_SEEDS: usize = 3;
/// Resamples of those intervals.
pub const POOLED_BOOTSTRAP: usize = 1000;
