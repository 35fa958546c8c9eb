//! `lsmooth calibrate`: calibration metrics of saved logits or probabilities, optional temperature or vector
//! scaling fitted on held-out data, bootstrap intervals, and a reliability diagram.

use crate::cli::CalibrateArgs;
use crate::io::arrays::{read_labels, read_matrix, Matrix};
use crate::io::atomic;
use crate::progress::stderr_bar;
use crate::report::png::{check_extension, encode_for};
use crate::report::reliability::smooth_curve;
use crate::CliError;
use label_smoothing::calibration::{
    bootstrap_with_progress, evaluate, fit_temperature, fit_vector_scaling_with_progress, BootstrapConfig,
    BootstrapIntervals, CalibrationError, CalibrationReport, Predictions, RowScores, VectorScaling,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Bootstrap intervals of one set of metrics, under the names `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Intervals {
    /// Top-1 accuracy.
    #[serde(with = "label_smoothing::json_float")]
    pub accuracy_ci: [f64; 2],
    /// Mean NLL.
    #[serde(with = "label_smoothing::json_float")]
    pub nll_ci: [f64; 2],
    /// Brier score.
    #[serde(with = "label_smoothing::json_float")]
    pub brier_ci: [f64; 2],
    /// ECE.
    #[serde(with = "label_smoothing::json_float")]
    pub ece_ci: [f64; 2],
    /// Smooth ECE.
    #[serde(with = "label_smoothing::json_float")]
    pub smooth_ece_ci: Option<[f64; 2]>,
    /// Debiased L2 calibration error.
    #[serde(with = "label_smoothing::json_float")]
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
    #[serde(with = "label_smoothing::json_float")]
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

/// Held-out logits and labels from `--fit-temperature` or `--fit-vector`, checked against `k` classes.
fn read_validation(paths: &[PathBuf], k: usize, input: &Path) -> Result<(Vec<f32>, Vec<i64>), CliError> {
    let (vl, vy) = (&paths[0], &paths[1]);
    let val = read_matrix(vl, "validation logits", "[N, K]")?;
    let vk = val.cols;
    if vk != k {
        return Err(CliError::input(
            vl,
            format!("expected {k} classes like {}, found {vk}", input.display()),
        ));
    }
    Ok((val.values, read_labels(vy, val.rows, "the validation logits")?))
}

/// Held-out logits `[N, K]` (row-major) and their labels `[N]`, for fitting a temperature or vector scaling.
#[derive(Debug, Clone, Copy)]
pub struct HeldOut<'a> {
    /// The logits.
    pub logits: &'a [f32],
    /// The labels.
    pub labels: &'a [i64],
}

/// Everything `calibrate` computes from: the predictions, their labels and the options.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// Logits (or, with `probs`, probabilities) `[N, K]`, row-major.
    pub values: &'a [f32],
    /// Whether `values` are probabilities (rows summing to 1) rather than logits.
    pub probs: bool,
    /// Labels `[N]` in `[0, K)`.
    pub labels: &'a [i64],
    /// Classes.
    pub k: usize,
    /// Bins of ECE, MCE, adaptive and classwise ECE and the debiased L2 error.
    pub bins: usize,
    /// Bootstrap intervals, if wanted.
    pub bootstrap: Option<BootstrapConfig>,
    /// Fit a temperature on this held-out set.
    pub fit_temperature: Option<HeldOut<'a>>,
    /// Fit vector scaling on this held-out set.
    pub fit_vector: Option<HeldOut<'a>>,
}

/// Which input a [`Failure`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Culprit {
    /// The predictions.
    Values,
    /// Their labels.
    Labels,
    /// The temperature's held-out logits.
    TemperatureLogits,
    /// The temperature's held-out labels.
    TemperatureLabels,
    /// Vector scaling's held-out logits.
    VectorLogits,
    /// Vector scaling's held-out labels.
    VectorLabels,
}

/// Why the metrics could not be computed, and which input was at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The input.
    pub culprit: Culprit,
    /// What was wrong with it.
    pub error: CalibrationError,
}

/// A failure about the predictions, or about `labels` when the error is a label out of range.
fn blame(logits: Culprit, labels: Culprit) -> impl Fn(CalibrationError) -> Failure {
    move |error| Failure {
        culprit: match error {
            CalibrationError::LabelOutOfRange { .. } => labels,
            _ => logits,
        },
        error,
    }
}

/// One scaled (or unscaled) set of predictions: its report and, with a bootstrap, its intervals.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The metrics.
    pub report: CalibrationReport,
    /// Their bootstrap intervals.
    pub intervals: Option<Intervals>,
    /// The per-row scores they came from (for the smoothed reliability curve).
    pub rows: RowScores,
}

/// The metrics (and intervals) of predictions (for logits, the NLL from the logits: finite where a probability
/// underflows), computed by blocks of rows (`calibration::evaluate`): memory beyond the predictions is per row
/// and per class, never `[N, K]` in f64.
pub fn evaluate_predictions(
    predictions: Predictions<'_>,
    labels: &[i64],
    k: usize,
    bins: usize,
    boot: Option<&BootstrapConfig>,
) -> Result<Evaluated, CalibrationError> {
    let (report, rows) = evaluate(predictions, labels, k, bins)?;
    let intervals = boot
        .map(|config| {
            let bar = stderr_bar(
                Some(config.resamples as u64),
                "bootstrap [{bar:30}] {pos}/{len} resamples ({elapsed})",
            );
            let b = bootstrap_with_progress(&rows, bins, config, &|| bar.inc(1));
            bar.finish_and_clear();
            b.map(|b| Intervals::from(&b))
        })
        .transpose()?;
    Ok(Evaluated {
        report,
        intervals,
        rows,
    })
}

/// What `calibrate` computed: the `--json` object and the evaluations behind it.
#[derive(Debug)]
pub struct Calibrated {
    /// What `--json` prints.
    pub output: Output,
    /// The predictions as given.
    pub given: Evaluated,
    /// After temperature scaling.
    pub calibrated: Option<Evaluated>,
    /// After vector scaling.
    pub vector_calibrated: Option<Evaluated>,
}

/// Every metric of the predictions, and of their temperature- and vector-scaled versions when a held-out set
/// is given, with bootstrap intervals when asked for.
pub fn compute(inputs: &Inputs<'_>) -> Result<Calibrated, Failure> {
    let Inputs {
        values,
        labels,
        k,
        bins,
        ..
    } = *inputs;
    if bins == 0 {
        return Err(Failure {
            culprit: Culprit::Values,
            error: CalibrationError::ZeroBins,
        });
    }
    let boot = inputs.bootstrap.as_ref();
    let main = blame(Culprit::Values, Culprit::Labels);
    let logits = |temperature, scaling| Predictions::Logits {
        logits: values,
        temperature,
        scaling,
    };
    let given = if inputs.probs {
        evaluate_predictions(Predictions::Probs(values), labels, k, bins, boot).map_err(&main)?
    } else {
        evaluate_predictions(logits(1.0, None), labels, k, bins, boot).map_err(&main)?
    };
    let (mut temperature, mut calibrated) = (None, None);
    if let Some(held) = inputs.fit_temperature {
        let fit = blame(Culprit::TemperatureLogits, Culprit::TemperatureLabels);
        let t = fit_temperature(held.logits, held.labels, k).map_err(fit)?;
        temperature = Some(t);
        calibrated = Some(evaluate_predictions(logits(t, None), labels, k, bins, boot).map_err(&main)?);
    }
    let (mut vector, mut vector_calibrated) = (None, None);
    if let Some(held) = inputs.fit_vector {
        let fit = blame(Culprit::VectorLogits, Culprit::VectorLabels);
        let bar = stderr_bar(
            None,
            "{spinner} vector scaling: iteration {pos}, held-out NLL {msg} ({elapsed})",
        );
        let v = fit_vector_scaling_with_progress(held.logits, held.labels, k, &mut |i, nll| {
            bar.set_position(i as u64);
            bar.set_message(format!("{nll:.6}"));
        });
        bar.finish_and_clear();
        let v = v.map_err(fit)?;
        vector_calibrated = Some(evaluate_predictions(logits(1.0, Some(&v)), labels, k, bins, boot).map_err(&main)?);
        vector = Some(v);
    }
    let output = Output {
        metrics: given.report.clone(),
        intervals: given.intervals.clone(),
        k,
        bins,
        bootstrap: inputs.bootstrap,
        temperature,
        calibrated: calibrated.as_ref().map(|c| c.report.clone()),
        calibrated_ci: calibrated.as_ref().and_then(|c| c.intervals.clone()),
        vector_scaling: vector,
        vector_calibrated: vector_calibrated.as_ref().map(|c| c.report.clone()),
        vector_calibrated_ci: vector_calibrated.as_ref().and_then(|c| c.intervals.clone()),
    };
    Ok(Calibrated {
        output,
        given,
        calibrated,
        vector_calibrated,
    })
}

impl Calibrated {
    /// The reliability diagram `--plot` draws, as SVG: after temperature scaling when fitted, else after
    /// vector scaling when fitted, else of the predictions as given; with the smoothed curve (and its band
    /// when bootstrapped).
    pub fn reliability_svg(&self) -> Result<String, CalibrationError> {
        let (shown, title) = match (&self.calibrated, self.output.temperature, &self.vector_calibrated) {
            (Some(c), Some(t), _) => (c, format!("Reliability after temperature scaling (T = {t:.3})")),
            (None, _, Some(v)) => (v, "Reliability after vector scaling".to_string()),
            _ => (&self.given, "Reliability diagram".to_string()),
        };
        let curve = smooth_curve(
            &shown.rows,
            shown.report.smooth_ece_bandwidth,
            self.output.bootstrap.as_ref(),
        )?;
        Ok(crate::report::reliability::svg_with_curve(
            &shown.report,
            &title,
            Some(&curve),
        ))
    }
}

/// A row of the printed table: the metric's name, how to read it, and its interval if bootstrapped.
struct MetricRow {
    name: &'static str,
    value: fn(&CalibrationReport) -> f64,
    interval: fn(&Intervals) -> Option<[f64; 2]>,
}

const fn row(
    name: &'static str,
    value: fn(&CalibrationReport) -> f64,
    interval: fn(&Intervals) -> Option<[f64; 2]>,
) -> MetricRow {
    MetricRow { name, value, interval }
}

/// The rows of the printed table, in order.
const METRIC_ROWS: [MetricRow; 10] = [
    row("accuracy", |m| m.accuracy, |i| Some(i.accuracy_ci)),
    row("top-5 accuracy", |m| m.top5_accuracy, |_| None),
    row("NLL", |m| m.nll, |i| Some(i.nll_ci)),
    row("Brier", |m| m.brier, |i| Some(i.brier_ci)),
    row("ECE", |m| m.ece, |i| Some(i.ece_ci)),
    row("smooth ECE", |m| m.smooth_ece, |i| i.smooth_ece_ci),
    row("debiased L2 CE", |m| m.debiased_l2_ce, |i| Some(i.debiased_l2_ce_ci)),
    row("MCE", |m| m.mce, |_| None),
    row("adaptive ECE", |m| m.adaptive_ece, |_| None),
    row("classwise ECE", |m| m.classwise_ece, |_| None),
];

/// The table of every metric, one column per evaluation (as given, after T, after vector scaling).
fn write_table(c: &Calibrated, n: usize, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut columns: Vec<(String, &Evaluated)> = vec![("as given".into(), &c.given)];
    if let (Some(e), Some(t)) = (&c.calibrated, c.output.temperature) {
        columns.push((format!("T = {t:.4}"), e));
    }
    if let Some(v) = &c.vector_calibrated {
        columns.push(("vector".into(), v));
    }
    // With intervals each cell is "value [lo, hi]".
    let boot = c.output.bootstrap.as_ref();
    let width = if boot.is_some() { 30 } else { 14 };
    writeln!(out, "{n} examples, {} classes, {} bins", c.output.k, c.output.bins)?;
    if let Some(b) = boot {
        writeln!(
            out,
            "{:.0}% bootstrap intervals from {} resamples (seed {})",
            b.level * 100.0,
            b.resamples,
            b.seed
        )?;
    }
    let mut header = format!("{:<16}", "metric");
    for (name, _) in &columns {
        header.push_str(&format!("{name:>width$}"));
    }
    writeln!(out, "{}", header.trim_end())?;
    for row in &METRIC_ROWS {
        let mut line = format!("{:<16}", row.name);
        for (_, e) in &columns {
            let value = (row.value)(&e.report);
            let cell = match e.intervals.as_ref().and_then(row.interval) {
                Some([lo, hi]) => format!("{value:.5} [{lo:.5}, {hi:.5}]"),
                None => format!("{value:.5}"),
            };
            line.push_str(&format!("{cell:>width$}"));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// The arguments' checks that need no file.
fn check_args(args: &CalibrateArgs) -> Result<(), CliError> {
    if args.bins == 0 {
        return Err(CliError::Usage("--bins must be at least 1".into()));
    }
    if let Some(plot) = &args.plot {
        check_extension(plot).map_err(|e| CliError::Usage(format!("--plot {}: {e}", plot.display())))?;
    }
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
    Ok(())
}

/// The files of one call, read and checked against each other.
struct Read {
    input: PathBuf,
    n: usize,
    k: usize,
    values: Vec<f32>,
    labels: Vec<i64>,
    temperature_set: Option<(Vec<f32>, Vec<i64>)>,
    vector_set: Option<(Vec<f32>, Vec<i64>)>,
}

fn read(args: &CalibrateArgs) -> Result<Read, CliError> {
    let (input, what) = match (&args.logits, &args.probs) {
        (Some(l), None) => (l, "logits"),
        (None, Some(p)) => (p, "probabilities"),
        _ => unreachable!("clap requires exactly one of --logits and --probs"),
    };
    let Matrix {
        rows: n,
        cols: k,
        values,
    } = read_matrix(input, what, "[N, K]")?;
    if n == 0 {
        return Err(CliError::input(input, "no rows"));
    }
    let labels = read_labels(&args.labels, n, &format!("the {what}"))?;
    let held = |paths: &Option<Vec<PathBuf>>| paths.as_ref().map(|p| read_validation(p, k, input)).transpose();
    Ok(Read {
        input: input.clone(),
        n,
        k,
        values,
        labels,
        temperature_set: held(&args.fit_temperature)?,
        vector_set: held(&args.fit_vector)?,
    })
}

fn held_out(set: &Option<(Vec<f32>, Vec<i64>)>) -> Option<HeldOut<'_>> {
    set.as_ref().map(|(l, y)| HeldOut { logits: l, labels: y })
}

/// Runs the command: read, compute, then write the plot and print.
pub fn run(args: &CalibrateArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    check_args(args)?;
    let r = read(args)?;
    let inputs = Inputs {
        values: &r.values,
        probs: args.probs.is_some(),
        labels: &r.labels,
        k: r.k,
        bins: args.bins,
        bootstrap: args.bootstrap.map(|resamples| {
            BootstrapConfig::default()
                .with_resamples(resamples)
                .with_seed(args.bootstrap_seed)
                .with_level(args.level)
        }),
        fit_temperature: held_out(&r.temperature_set),
        fit_vector: held_out(&r.vector_set),
    };
    let c = compute(&inputs).map_err(|f| {
        let path = match f.culprit {
            Culprit::Values => &r.input,
            Culprit::Labels => &args.labels,
            Culprit::TemperatureLogits => &args.fit_temperature.as_ref().expect("fitted")[0],
            Culprit::TemperatureLabels => &args.fit_temperature.as_ref().expect("fitted")[1],
            Culprit::VectorLogits => &args.fit_vector.as_ref().expect("fitted")[0],
            Culprit::VectorLabels => &args.fit_vector.as_ref().expect("fitted")[1],
        };
        calib_err(path, f.error)
    })?;
    let mut outputs = atomic::Outputs::new();
    if let Some(plot) = &args.plot {
        let svg = c.reliability_svg().map_err(|e| calib_err(&r.input, e))?;
        let bytes = encode_for(plot, &svg).map_err(|e| CliError::Usage(format!("--plot {}: {e}", plot.display())))?;
        outputs.add(plot, &bytes)?;
    }
    // The plot replaces an earlier one only once the report is printed.
    super::print_then_commit(outputs, || {
        let w = CliError::Stdout;
        if args.json {
            let json = serde_json::to_string(&c.output)
                .map_err(|e| CliError::Runtime(format!("encoding the JSON output: {e}")))?;
            writeln!(out, "{json}").map_err(w)
        } else {
            write_table(&c, r.n, out).map_err(w)
        }
    })
}
