//! Strength sweeps (`lsmooth compare --grid others:0,0.01,0.05,0.1`): one setting per strength, and which
//! strength the validation split picks.

use super::stats::{SettingSummary, Stat};
use crate::CliError;
use serde::Serialize;

/// One `--grid KIND:V1,V2,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// `others`, `uniform` or `adaptive`.
    pub kind: String,
    /// The strengths, in the order given (`eps`, or `alpha` for `adaptive`).
    pub strengths: Vec<f64>,
}

impl Grid {
    /// The setting names of the grid's points, as `lsmooth compare --settings` spells them.
    pub fn settings(&self) -> Vec<String> {
        self.strengths.iter().map(|v| format!("{}:{v}", self.kind)).collect()
    }
}

/// Parses `KIND:V1,V2,...` with `KIND` one of `others`, `uniform`, `adaptive` and at least two distinct finite
/// strengths in `[0, 1)`.
pub fn parse_grid(s: &str) -> Result<Grid, CliError> {
    let usage = |why: String| CliError::Usage(format!("--grid {s}: {why}"));
    let (kind, values) = s
        .split_once(':')
        .ok_or_else(|| usage("expected KIND:V1,V2,... with KIND others, uniform or adaptive".into()))?;
    if !matches!(kind, "others" | "uniform" | "adaptive") {
        return Err(usage(format!("{kind:?} is not others, uniform or adaptive")));
    }
    let mut strengths = Vec::new();
    for v in values.split(',') {
        let x: f64 = v.trim().parse().map_err(|_| usage(format!("{v:?} is not a number")))?;
        if !(x.is_finite() && (0.0..1.0).contains(&x)) {
            return Err(usage(format!("strength {v} is outside [0, 1)")));
        }
        if strengths.contains(&x) {
            return Err(usage(format!("strength {v} is given twice")));
        }
        strengths.push(x);
    }
    if strengths.len() < 2 {
        return Err(usage("a sweep needs at least two strengths".into()));
    }
    Ok(Grid {
        kind: kind.to_string(),
        strengths,
    })
}

/// The strength a criterion picks and the test metrics there (means over seeds).
#[derive(Debug, Clone, Serialize)]
pub struct GridPick {
    /// The strength.
    pub strength: f64,
    /// Its setting's name.
    pub setting: String,
    /// The criterion's value there (validation NLL or validation ECE, mean over seeds).
    pub criterion: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Test NLL.
    pub test_nll: f64,
    /// Test ECE.
    pub test_ece: f64,
    /// The fitted temperature.
    pub temperature: f64,
}

/// One grid in `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct GridSummary {
    /// `others`, `uniform` or `adaptive`.
    pub kind: String,
    /// The strengths, in the order given.
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

/// The grid's summary from the sweep's settings (each grid point must be among them).
pub fn summarise(grid: &Grid, settings: &[SettingSummary]) -> GridSummary {
    let names = grid.settings();
    let points: Vec<&SettingSummary> = names
        .iter()
        .map(|n| settings.iter().find(|s| &s.name == n).expect("grid settings are run"))
        .collect();
    GridSummary {
        kind: grid.kind.clone(),
        strengths: grid.strengths.clone(),
        best_validation_nll: pick(grid, &points, |s| &s.validation_nll),
        best_validation_ece: pick(grid, &points, |s| &s.validation_ece),
        settings: names,
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
