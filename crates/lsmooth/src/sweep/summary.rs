//! `summary.json` of a sweep over settings and seeds ([`Summary`]), and the table that shows it.

use super::grid::GridSummary;
use super::stats::{SettingSummary, Stat};
use crate::run::TrainConfig;
use label_smoothing::calibration::BootstrapIntervals;
use serde::Serialize;

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
    /// What made the sweep.
    pub made_by: crate::run::Provenance,
    /// The strength sweeps (`--grid`), with the strengths the validation split picks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grid: Vec<GridSummary>,
}

/// A column of the table.
#[derive(Clone, Copy)]
pub(crate) struct Column {
    /// Its header.
    pub header: &'static str,
    /// The statistic it shows.
    pub stat: fn(&SettingSummary) -> &Stat,
    /// The factor the values are shown at (100 for percentages).
    pub scale: f64,
    /// Decimals shown.
    pub decimals: usize,
    /// The statistic's bootstrap interval, if it has one.
    pub interval: Option<fn(&BootstrapIntervals) -> [f64; 2]>,
}

const fn column(
    header: &'static str,
    stat: fn(&SettingSummary) -> &Stat,
    scale: f64,
    decimals: usize,
    interval: Option<fn(&BootstrapIntervals) -> [f64; 2]>,
) -> Column {
    Column {
        header,
        stat,
        scale,
        decimals,
        interval,
    }
}

/// A column of the HTML table: its header and how to format a setting's cell.
pub type HtmlColumn = (&'static str, Box<dyn Fn(&SettingSummary) -> String>);

pub(crate) const COLUMNS: [Column; 9] = [
    column("test accuracy %", |s| &s.test_accuracy, 100.0, 2, Some(|b| b.accuracy)),
    column("NLL", |s| &s.test_nll, 1.0, 4, Some(|b| b.nll)),
    column("ECE %", |s| &s.test_ece, 100.0, 2, Some(|b| b.ece)),
    column("Brier", |s| &s.test_brier, 1.0, 4, Some(|b| b.brier)),
    column("train-test gap (points)", |s| &s.train_test_gap, 100.0, 2, None),
    column("converged by epoch", |s| &s.convergence_epoch, 1.0, 1, None),
    column("T (fitted)", |s| &s.temperature, 1.0, 3, None),
    column("ECE % after T", |s| &s.test_ece_scaled, 100.0, 2, None),
    column("NLL after T", |s| &s.test_nll_scaled, 1.0, 4, None),
];

pub(crate) fn cell(stat: &Stat, scale: f64, decimals: usize) -> String {
    format!("{:.*} ± {:.*}", decimals, stat.mean * scale, decimals, stat.sd * scale)
}

/// A setting's cell of a column: `mean ± sd`, and `[lo, hi]` after it where the setting has bootstrap intervals
/// and the column one.
pub(crate) fn cell_of(s: &SettingSummary, c: &Column) -> String {
    let base = cell((c.stat)(s), c.scale, c.decimals);
    match (&s.test_bootstrap, c.interval) {
        (Some(b), Some(f)) => {
            let [lo, hi] = f(b);
            format!(
                "{base} [{:.*}, {:.*}]",
                c.decimals,
                lo * c.scale,
                c.decimals,
                hi * c.scale
            )
        }
        _ => base,
    }
}

/// The table as plain text (aligned columns).
pub fn text_table(summary: &Summary) -> String {
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("setting".to_string())
        .chain(COLUMNS.iter().map(|c| c.header.to_string()))
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
