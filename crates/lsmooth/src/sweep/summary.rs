//! The statistics of a sweep over settings and seeds: mean and spread per metric, and the table that shows them.

use crate::run::{LossSpec, Objective, TrainConfig};
use label_smoothing::calibration::BootstrapIntervals;
use serde::Serialize;

/// Mean and sample standard deviation over seeds, with the values.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one seed).
    pub sd: f64,
    /// One value per seed, in seed order.
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
    pub regularizer: Option<Objective>,
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

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// One entry per setting, in the order given.
    pub settings: Vec<SettingSummary>,
    /// The configuration shared by every run (loss and seed vary).
    pub base: TrainConfig,
    /// Model description.
    pub model: String,
    /// Wall-clock seconds of the whole sweep.
    pub seconds: f64,
    /// The strength sweeps (`--grid`), with the strengths the validation split picks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grid: Vec<super::grid::GridSummary>,
}

/// A table column: header, how to read the statistic, scale (100 for percentages), decimals, and the
/// statistic's bootstrap interval if it has one.
pub(crate) type Column = (
    &'static str,
    fn(&SettingSummary) -> &Stat,
    f64,
    usize,
    Option<fn(&BootstrapIntervals) -> [f64; 2]>,
);

/// A column of the HTML table: its header and how to format a setting's cell.
pub type HtmlColumn = (&'static str, Box<dyn Fn(&SettingSummary) -> String>);

pub(crate) const COLUMNS: [Column; 9] = [
    ("test accuracy %", |s| &s.test_accuracy, 100.0, 2, Some(|b| b.accuracy)),
    ("NLL", |s| &s.test_nll, 1.0, 4, Some(|b| b.nll)),
    ("ECE %", |s| &s.test_ece, 100.0, 2, Some(|b| b.ece)),
    ("Brier", |s| &s.test_brier, 1.0, 4, Some(|b| b.brier)),
    ("train-test gap (points)", |s| &s.train_test_gap, 100.0, 2, None),
    ("converged by epoch", |s| &s.convergence_epoch, 1.0, 1, None),
    ("T (fitted)", |s| &s.temperature, 1.0, 3, None),
    ("ECE % after T", |s| &s.test_ece_scaled, 100.0, 2, None),
    ("NLL after T", |s| &s.test_nll_scaled, 1.0, 4, None),
];

pub(crate) fn cell(stat: &Stat, scale: f64, decimals: usize) -> String {
    format!("{:.*} ± {:.*}", decimals, stat.mean * scale, decimals, stat.sd * scale)
}

/// A setting's cell of a column: `mean ± sd`, and `[lo, hi]` after it where the setting has bootstrap intervals
/// and the column one.
pub(crate) fn cell_of(s: &SettingSummary, c: &Column) -> String {
    let base = cell(c.1(s), c.2, c.3);
    match (&s.test_bootstrap, c.4) {
        (Some(b), Some(f)) => {
            let [lo, hi] = f(b);
            format!("{base} [{:.*}, {:.*}]", c.3, lo * c.2, c.3, hi * c.2)
        }
        _ => base,
    }
}

/// The table as plain text (aligned columns).
pub fn text_table(summary: &Summary) -> String {
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("setting".to_string())
        .chain(COLUMNS.iter().map(|c| c.0.to_string()))
        .collect()];
    for s in &summary.settings {
        rows.push(
            std::iter::once(s.name.clone())
                .chain(COLUMNS.iter().map(|c| cell_of(s, c)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|j| rows.iter().map(|r| r[j].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(j, c)| format!("{c:>w$}", w = widths[j]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
