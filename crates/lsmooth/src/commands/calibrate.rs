//! `lsmooth calibrate`: calibration metrics of saved logits or probabilities, optional temperature or vector
//! scaling fitted on held-out data, bootstrap intervals, and a reliability diagram.

use crate::cli::CalibrateArgs;
use crate::io::{atomic, npy};
use crate::report::png::{check_extension, encode_for};
use crate::report::reliability::smooth_curve;
use crate::CliError;
use label_smoothing::calibration::{
    bootstrap, calibration, fit_temperature, fit_vector_scaling, nll_of_logits, softmax_rows, BootstrapConfig,
    BootstrapIntervals, CalibrationError, CalibrationReport, RowScores, VectorScaling,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Bootstrap intervals of one set of metrics, under the names `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Intervals {
    /// Top-1 accuracy.
    pub accuracy_ci: [f64; 2],
    /// Mean NLL.
    pub nll_ci: [f64; 2],
    /// Brier score.
    pub brier_ci: [f64; 2],
    /// ECE.
    pub ece_ci: [f64; 2],
    /// Smooth ECE.
    pub smooth_ece_ci: Option<[f64; 2]>,
    /// Debiased L2 calibration error.
    pub debiased_l2_ce_ci: [f64; 2],
}

impl From<&BootstrapIntervals> for Intervals {
    fn from(b: &BootstrapIntervals) -> Self {
        Intervals {
            accuracy_ci: b.accuracy,
            nll_ci: b.nll,
            brier_ci: b.brier,
            ece_ci: b.ece,
            smooth_ece_ci: b.smooth_ece,
            debiased_l2_ce_ci: b.debiased_l2_ce,
        }
    }
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Output {
    /// The metrics of the inputs as given (the core crate's report: its fields, and its bins as `reliability`).
    #[serde(flatten)]
    pub metrics: CalibrationReport,
    /// With `--bootstrap`: the intervals of the metrics as given (`ece_ci: [lo, hi]` and so on).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<Intervals>,
    /// Classes.
    pub k: usize,
    /// Bins.
    pub bins: usize,
    /// The bootstrap's resamples, seed and level, with `--bootstrap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapConfig>,
    /// The fitted temperature, with `--fit-temperature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The metrics after temperature scaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<CalibrationReport>,
    /// Their intervals, with `--bootstrap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated_ci: Option<Intervals>,
    /// The fitted vector scaling (per-class weights, mean-zero biases), with `--fit-vector`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_scaling: Option<VectorScaling>,
    /// The metrics after vector scaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_calibrated: Option<CalibrationReport>,
    /// Their intervals, with `--bootstrap`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_calibrated_ci: Option<Intervals>,
}

fn calib_err(path: &Path, e: CalibrationError) -> CliError {
    CliError::input(path, e.to_string())
}

fn read_logits(path: &Path, what: &str) -> Result<(usize, usize, Vec<f32>), CliError> {
    let a = npy::read(path)?;
    let shape = a.expect_ndim(2, &format!("{what} of shape [N, K]"))?.to_vec();
    Ok((shape[0], shape[1], a.to_f32(what)?))
}

fn read_labels(path: &Path, n: usize) -> Result<Vec<i64>, CliError> {
    let a = npy::read(path)?;
    a.expect_ndim(1, &format!("labels of shape [{n}]"))?;
    let y = a.to_i64("labels")?;
    if y.len() != n {
        return Err(CliError::input(
            path,
            format!("expected {n} labels, found shape {:?}", a.shape),
        ));
    }
    Ok(y)
}

/// Held-out logits and labels from `--fit-temperature` or `--fit-vector`, checked against `k` classes.
fn read_validation(paths: &[PathBuf], k: usize, input: &Path) -> Result<(Vec<f32>, Vec<i64>), CliError> {
    let (vl, vy) = (&paths[0], &paths[1]);
    let (vn, vk, val) = read_logits(vl, "validation logits")?;
    if vk != k {
        return Err(CliError::input(
            vl,
            format!("expected {k} classes like {}, found {vk}", input.display()),
        ));
    }
    Ok((val, read_labels(vy, vn)?))
}

/// A row of the printed table: the metric's name, how to read it, and its interval if bootstrapped.
type MetricRow = (
    &'static str,
    fn(&CalibrationReport) -> f64,
    fn(&Intervals) -> Option<[f64; 2]>,
);

/// One scaled (or unscaled) set of predictions: its report and, with `--bootstrap`, its intervals.
struct Evaluated {
    report: CalibrationReport,
    intervals: Option<Intervals>,
    rows: RowScores,
}

/// Runs the command.
pub fn run(args: &CalibrateArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    if args.bins == 0 {
        return Err(CliError::Usage("--bins must be at least 1".into()));
    }
    if let Some(plot) = &args.plot {
        check_extension(plot).map_err(|e| CliError::Usage(format!("--plot {}: {e}", plot.display())))?;
    }
    let (input, (n, k, values)) = match (&args.logits, &args.probs) {
        (Some(l), None) => (l, read_logits(l, "logits")?),
        (None, Some(p)) => (p, read_logits(p, "probabilities")?),
        _ => unreachable!("clap requires exactly one of --logits and --probs"),
    };
    if args.probs.is_some() && args.fit_temperature.is_some() {
        return Err(CliError::Usage(
            "--fit-temperature needs --logits: a temperature rescales logits, not probabilities".into(),
        ));
    }
    if args.probs.is_some() && args.fit_vector.is_some() {
        return Err(CliError::Usage(
            "--fit-vector needs --logits: vector scaling rescales logits, not probabilities".into(),
        ));
    }
    if n == 0 {
        return Err(CliError::input(input, "no rows"));
    }
    let labels = read_labels(&args.labels, n)?;
    let label_err = |e: CalibrationError| match e {
        CalibrationError::LabelOutOfRange { .. } => calib_err(&args.labels, e),
        other => calib_err(input, other),
    };
    let boot = args.bootstrap.map(|r| {
        BootstrapConfig::default()
            .with_resamples(r)
            .with_seed(args.bootstrap_seed)
            .with_level(args.level)
    });
    // The metrics of logits at temperature `t` (NLL from the logits, finite where a probability underflows).
    let of_logits = |z: &[f32], t: f64| -> Result<Evaluated, CliError> {
        let probs = softmax_rows(z, k, t).map_err(label_err)?;
        let mut report = calibration(&probs, &labels, k, args.bins).map_err(label_err)?;
        report.nll = nll_of_logits(z, &labels, k, t).map_err(label_err)?;
        let rows = RowScores::from_logits(z, &labels, k, t).map_err(label_err)?;
        let intervals = match &boot {
            Some(config) => Some(Intervals::from(
                &bootstrap(&rows, args.bins, config).map_err(label_err)?,
            )),
            None => None,
        };
        Ok(Evaluated {
            report,
            intervals,
            rows,
        })
    };

    let given = if args.logits.is_some() {
        of_logits(&values, 1.0)?
    } else {
        let probs: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        let report = calibration(&probs, &labels, k, args.bins).map_err(label_err)?;
        let rows = RowScores::from_probs(&probs, &labels, k).map_err(label_err)?;
        let intervals = match &boot {
            Some(config) => Some(Intervals::from(
                &bootstrap(&rows, args.bins, config).map_err(label_err)?,
            )),
            None => None,
        };
        Evaluated {
            report,
            intervals,
            rows,
        }
    };

    let mut temperature = None;
    let mut calibrated = None;
    if let Some(paths) = &args.fit_temperature {
        let (val, val_labels) = read_validation(paths, k, input)?;
        let t = fit_temperature(&val, &val_labels, k).map_err(|e| match e {
            CalibrationError::LabelOutOfRange { .. } => calib_err(&paths[1], e),
            other => calib_err(&paths[0], other),
        })?;
        temperature = Some(t);
        calibrated = Some(of_logits(&values, t)?);
    }
    let mut vector = None;
    let mut vector_calibrated = None;
    if let Some(paths) = &args.fit_vector {
        let (val, val_labels) = read_validation(paths, k, input)?;
        let v = fit_vector_scaling(&val, &val_labels, k).map_err(|e| match e {
            CalibrationError::LabelOutOfRange { .. } => calib_err(&paths[1], e),
            other => calib_err(&paths[0], other),
        })?;
        let scaled = v.apply(&values).map_err(label_err)?;
        vector_calibrated = Some(of_logits(&scaled, 1.0)?);
        vector = Some(v);
    }

    if let Some(plot) = &args.plot {
        let (shown, title) = match (&calibrated, temperature, &vector_calibrated) {
            (Some(c), Some(t), _) => (c, format!("Reliability after temperature scaling (T = {t:.3})")),
            (None, _, Some(v)) => (v, "Reliability after vector scaling".to_string()),
            _ => (&given, "Reliability diagram".to_string()),
        };
        let curve = smooth_curve(&shown.rows, shown.report.smooth_ece_bandwidth, boot.as_ref()).map_err(label_err)?;
        let svg = crate::report::reliability::svg_with_curve(&shown.report, &title, Some(&curve));
        let bytes = encode_for(plot, &svg).map_err(|e| CliError::Usage(format!("--plot {}: {e}", plot.display())))?;
        atomic::write(plot, &bytes)?;
    }

    let w = |e: std::io::Error| CliError::Usage(format!("cannot write to stdout: {e}"));
    if args.json {
        let o = Output {
            metrics: given.report.clone(),
            intervals: given.intervals.clone(),
            k,
            bins: args.bins,
            bootstrap: boot,
            temperature,
            calibrated: calibrated.as_ref().map(|c| c.report.clone()),
            calibrated_ci: calibrated.as_ref().and_then(|c| c.intervals.clone()),
            vector_scaling: vector,
            vector_calibrated: vector_calibrated.as_ref().map(|c| c.report.clone()),
            vector_calibrated_ci: vector_calibrated.as_ref().and_then(|c| c.intervals.clone()),
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&o).map_err(|e| CliError::Usage(e.to_string()))?
        )
        .map_err(w)?;
        return Ok(());
    }

    let none = |_: &Intervals| None;
    let rows: [MetricRow; 10] = [
        ("accuracy", |m| m.accuracy, |i| Some(i.accuracy_ci)),
        ("top-5 accuracy", |m| m.top5_accuracy, none),
        ("NLL", |m| m.nll, |i| Some(i.nll_ci)),
        ("Brier", |m| m.brier, |i| Some(i.brier_ci)),
        ("ECE", |m| m.ece, |i| Some(i.ece_ci)),
        ("smooth ECE", |m| m.smooth_ece, |i| i.smooth_ece_ci),
        ("debiased L2 CE", |m| m.debiased_l2_ce, |i| Some(i.debiased_l2_ce_ci)),
        ("MCE", |m| m.mce, none),
        ("adaptive ECE", |m| m.adaptive_ece, none),
        ("classwise ECE", |m| m.classwise_ece, none),
    ];
    let mut columns: Vec<(String, &Evaluated)> = vec![("as given".into(), &given)];
    if let (Some(c), Some(t)) = (&calibrated, temperature) {
        columns.push((format!("T = {t:.4}"), c));
    }
    if let Some(v) = &vector_calibrated {
        columns.push(("vector".into(), v));
    }
    // With intervals each cell is "value [lo, hi]".
    let width = if boot.is_some() { 30 } else { 14 };
    writeln!(out, "{n} examples, {k} classes, {} bins", args.bins).map_err(w)?;
    if let Some(b) = &boot {
        writeln!(
            out,
            "{:.0}% bootstrap intervals from {} resamples (seed {})",
            b.level * 100.0,
            b.resamples,
            b.seed
        )
        .map_err(w)?;
    }
    let mut header = format!("{:<16}", "metric");
    for (name, _) in &columns {
        header.push_str(&format!("{name:>width$}"));
    }
    writeln!(out, "{}", header.trim_end()).map_err(w)?;
    for (name, value, interval) in rows {
        let mut line = format!("{name:<16}");
        for (_, e) in &columns {
            let cell = match e.intervals.as_ref().and_then(interval) {
                Some([lo, hi]) => format!("{:.5} [{lo:.5}, {hi:.5}]", value(&e.report)),
                None => format!("{:.5}", value(&e.report)),
            };
            line.push_str(&format!("{cell:>width$}"));
        }
        writeln!(out, "{}", line.trim_end()).map_err(w)?;
    }
    Ok(())
}
