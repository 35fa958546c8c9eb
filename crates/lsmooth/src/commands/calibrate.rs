//! `lsmooth calibrate`: calibration metrics of saved logits or probabilities, optional temperature scaling and a
//! reliability diagram.

use crate::cli::CalibrateArgs;
use crate::io::{atomic, npy};
use crate::report::png::{check_extension, encode_for};
use crate::CliError;
use label_smoothing::calibration::{
    calibration, fit_temperature, nll_of_logits, softmax_rows, CalibrationError, CalibrationReport,
};
use serde::Serialize;
use std::path::Path;

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Output {
    /// The metrics of the inputs as given (the core crate's report: its fields, and its bins as `reliability`).
    #[serde(flatten)]
    pub metrics: CalibrationReport,
    /// Classes.
    pub k: usize,
    /// Bins.
    pub bins: usize,
    /// The fitted temperature, with `--fit-temperature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The metrics after temperature scaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<CalibrationReport>,
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

/// A row of the printed table: the metric's name and how to read it.
type MetricRow = (&'static str, fn(&CalibrationReport) -> f64);

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
    if n == 0 {
        return Err(CliError::input(input, "no rows"));
    }
    let labels = read_labels(&args.labels, n)?;
    let label_err = |e: CalibrationError| match e {
        CalibrationError::LabelOutOfRange { .. } => calib_err(&args.labels, e),
        other => calib_err(input, other),
    };
    let probs: Vec<f64> = if args.logits.is_some() {
        softmax_rows(&values, k, 1.0).map_err(label_err)?
    } else {
        values.iter().map(|&v| v as f64).collect()
    };
    let mut report = calibration(&probs, &labels, k, args.bins).map_err(label_err)?;
    if args.logits.is_some() {
        report.nll = nll_of_logits(&values, &labels, k, 1.0).map_err(label_err)?;
    }

    let mut temperature = None;
    let mut calibrated = None;
    if let Some(paths) = &args.fit_temperature {
        let (vl, vy) = (&paths[0], &paths[1]);
        let (vn, vk, val) = read_logits(vl, "validation logits")?;
        if vk != k {
            return Err(CliError::input(
                vl,
                format!("expected {k} classes like {}, found {vk}", input.display()),
            ));
        }
        let val_labels = read_labels(vy, vn)?;
        let t = fit_temperature(&val, &val_labels, k).map_err(|e| match e {
            CalibrationError::LabelOutOfRange { .. } => calib_err(vy, e),
            other => calib_err(vl, other),
        })?;
        let scaled = softmax_rows(&values, k, t).map_err(label_err)?;
        let mut r = calibration(&scaled, &labels, k, args.bins).map_err(label_err)?;
        r.nll = nll_of_logits(&values, &labels, k, t).map_err(label_err)?;
        temperature = Some(t);
        calibrated = Some(r);
    }

    if let Some(plot) = &args.plot {
        let shown = calibrated.as_ref().unwrap_or(&report);
        let title = match temperature {
            Some(t) => format!("Reliability after temperature scaling (T = {t:.3})"),
            None => "Reliability diagram".to_string(),
        };
        let svg = crate::report::reliability::svg(shown, &title);
        let bytes = encode_for(plot, &svg).map_err(|e| CliError::Usage(format!("--plot {}: {e}", plot.display())))?;
        atomic::write(plot, &bytes)?;
    }

    let w = |e: std::io::Error| CliError::Usage(format!("cannot write to stdout: {e}"));
    if args.json {
        let o = Output {
            metrics: report.clone(),
            k,
            bins: args.bins,
            temperature,
            calibrated: calibrated.clone(),
        };
        writeln!(
            out,
            "{}",
            serde_json::to_string(&o).map_err(|e| CliError::Usage(e.to_string()))?
        )
        .map_err(w)?;
    } else {
        let rows: [MetricRow; 8] = [
            ("accuracy", |m| m.accuracy),
            ("top-5 accuracy", |m| m.top5_accuracy),
            ("NLL", |m| m.nll),
            ("Brier", |m| m.brier),
            ("ECE", |m| m.ece),
            ("MCE", |m| m.mce),
            ("adaptive ECE", |m| m.adaptive_ece),
            ("classwise ECE", |m| m.classwise_ece),
        ];
        let before = &report;
        let after = calibrated.as_ref();
        writeln!(out, "{n} examples, {k} classes, {} bins", args.bins).map_err(w)?;
        match (&after, temperature) {
            (Some(a), Some(t)) => {
                writeln!(out, "{:<16}{:>12}{:>16}", "metric", "as given", format!("T = {t:.4}")).map_err(w)?;
                for (name, f) in rows {
                    writeln!(out, "{name:<16}{:>12.5}{:>16.5}", f(before), f(a)).map_err(w)?;
                }
            }
            _ => {
                for (name, f) in rows {
                    writeln!(out, "{name:<16}{:>12.5}", f(before)).map_err(w)?;
                }
            }
        }
    }
    Ok(())
}
