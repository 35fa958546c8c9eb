//! Strength sweeps (`lsmooth compare --grid others:0,0.01,0.05,0.1`): one setting per strength, and which
//! strength the validation split picks.

use super::stats::{SettingSummary, Stat};
use crate::run::LossSpec;
use crate::CliError;
use label_smoothing::{Smoothing, Spread};
use serde::Serialize;

/// What a grid sweeps: the fixed smoothing of either spread, or adaptive smoothing's `alpha`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GridKind {
    /// `others:EPS`.
    Others,
    /// `uniform:EPS`.
    Uniform,
    /// `adaptive:ALPHA`.
    Adaptive,
}

impl std::fmt::Display for GridKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GridKind::Others => "others",
            GridKind::Uniform => "uniform",
            GridKind::Adaptive => "adaptive",
        })
    }
}

/// One `--grid KIND:V1,V2,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// What it sweeps.
    pub kind: GridKind,
    /// The strengths, in the order given (`eps`, or `alpha` for `adaptive`).
    pub strengths: Vec<f64>,
}

impl Grid {
    /// The grid's points in order: each one's setting name, as `lsmooth compare --settings` spells it, and loss.
    pub fn points(&self) -> Vec<(String, LossSpec)> {
        self.strengths
            .iter()
            .map(|&v| {
                let (smoothing, spread) = match self.kind {
                    GridKind::Others => (Smoothing::Fixed(v as f32), Spread::Others),
                    GridKind::Uniform => (Smoothing::Fixed(v as f32), Spread::Uniform),
                    GridKind::Adaptive => (Smoothing::Adaptive { alpha: v as f32 }, Spread::Others),
                };
                (
                    format!("{}:{}", self.kind, crate::run::short(v)),
                    LossSpec::mean(smoothing, spread),
                )
            })
            .collect()
    }
}

/// Parses `KIND:V1,V2,...` with `KIND` one of `others`, `uniform`, `adaptive` and at least two distinct finite
/// strengths in `[0, 1)`.
pub fn parse_grid(s: &str) -> Result<Grid, CliError> {
    let usage = |why: String| CliError::Usage(format!("--grid {s}: {why}"));
    let (kind, values) = s
        .split_once(':')
        .ok_or_else(|| usage("expected KIND:V1,V2,... with KIND others, uniform or adaptive".into()))?;
    let kind = match kind {
        "others" => GridKind::Others,
        "uniform" => GridKind::Uniform,
        "adaptive" => GridKind::Adaptive,
        _ => return Err(usage(format!("{kind:?} is not others, uniform or adaptive"))),
    };
    let mut strengths = Vec::new();
    for v in values.split(',') {
        let x: f64 = v.trim().parse().map_err(|_| usage(format!("{v:?} is not a number")))?;
        if !(x.is_finite() && (0.0..1.0).contains(&x)) {
            return Err(usage(format!("strength {v} is outside [0, 1)")));
        }
        // The loss takes its smoothing in float32.
        if x != 0.0 && x as f32 == 0.0 {
            return Err(usage(format!(
                "strength {v} is 0 in float32, in which the loss takes it"
            )));
        }
        if strengths.iter().any(|&y: &f64| y as f32 == x as f32) {
            return Err(usage(format!("strength {v} is given twice (in float32)")));
        }
        strengths.push(x);
    }
    if strengths.len() < 2 {
        return Err(usage("a sweep needs at least two strengths".into()));
    }
    Ok(Grid { kind, strengths })
}

/// The strength a criterion picks and the test metrics there (means over seeds).
#[derive(Debug, Clone, Serialize)]
pub struct GridPick {
    /// The strength.
    #[serde(with = "label_smoothing::json_float")]
    pub strength: f64,
    /// Its setting's name.
    pub setting: String,
    /// The criterion's value there (validation NLL or validation ECE, mean over seeds).
    #[serde(with = "label_smoothing::json_float")]
    pub criterion: f64,
    /// Test accuracy.
    #[serde(with = "label_smoothing::json_float")]
    pub test_accuracy: f64,
    /// Test NLL.
    #[serde(with = "label_smoothing::json_float")]
    pub test_nll: f64,
    /// Test ECE.
    #[serde(with = "label_smoothing::json_float")]
    pub test_ece: f64,
    /// The fitted temperature.
    #[serde(with = "label_smoothing::json_float")]
    pub temperature: f64,
}

/// One grid in `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct GridSummary {
    /// `others`, `uniform` or `adaptive`.
    pub kind: GridKind,
    /// The strengths, in the order given.
    #[serde(with = "label_smoothing::json_float")]
    pub strengths: Vec<f64>,
    /// Their settings' names (entries of `settings`).
    pub settings: Vec<String>,
    /// The strength with the lowest mean validation NLL.
    pub best_validation_nll: GridPick,
    /// The strength with the lowest mean validation ECE.
    pub best_validation_ece: GridPick,
}

fn pick(grid: &Grid, points: &[&SettingSummary], criterion: fn(&SettingSummary) -> &Stat) -> GridPick {
    // The first strength of the lowest mean: ties go to the earlier point, as given.
    let (i, s) = points
        .iter()
        .enumerate()
        .fold(None::<(usize, &SettingSummary)>, |best, (i, s)| match best {
            Some((_, b)) if criterion(b).mean <= criterion(s).mean => best,
            _ => Some((i, s)),
        })
        .expect("a grid has at least two points");
    GridPick {
        strength: grid.strengths[i],
        setting: s.name.clone(),
        criterion: criterion(s).mean,
        test_accuracy: s.test_accuracy.mean,
        test_nll: s.test_nll.mean,
        test_ece: s.test_ece.mean,
        temperature: s.temperature.mean,
    }
}

/// The grid's summary from its points' settings, one per strength in order.
pub fn summarise(grid: &Grid, points: &[&SettingSummary]) -> GridSummary {
    GridSummary {
        kind: grid.kind,
        strengths: grid.strengths.clone(),
        best_validation_nll: pick(grid, points, |s| &s.validation_nll),
        best_validation_ece: pick(grid, points, |s| &s.validation_ece),
        settings: points.iter().map(|s| s.name.clone()).collect(),
    }
}

/// The grid's picks as plain sentences, for the printed table and the Markdown report.
pub fn describe(g: &GridSummary) -> String {
    let line = |what: &str, p: &GridPick| {
        format!(
            "{} grid: lowest validation {what} at {} ({}): test accuracy {:.2}%, NLL {:.4}, ECE {:.2}%, T {:.3}",
            g.kind,
            p.strength,
            p.setting,
            100.0 * p.test_accuracy,
            p.test_nll,
            100.0 * p.test_ece,
            p.temperature
        )
    };
    format!(
        "{}\n{}\n",
        line("NLL", &g.best_validation_nll),
        line("ECE", &g.best_validation_ece)
    )
}
