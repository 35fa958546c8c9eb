//! `lsmooth compare`: a sweep of loss settings over seeds, and its report (`summary.json`, `report.md`, and a
//! self-contained `report.html` with the table, learning curves, reliability diagrams and projection plots).

use std::io::Write;
use std::time::Instant;

use label_smoothing::calibration::{bootstrap, smooth_ece, Bin, BootstrapConfig, CalibrationReport, RowScores};

use crate::cli::{CompareArgs, ModelChoice};
use crate::io::atomic::Outputs;
use crate::report::{html, lines, markdown, projection, reliability};
use crate::run::{self, features_of, ModelKind, Objective, RunMetrics, Verbosity, ECE_BINS};
use crate::sweep::grid::{self, parse_grid, Grid};
use crate::sweep::settings::{config, parse_full_setting, Setting};
use crate::sweep::stats::{SettingSummary, Stat, FEW_SEEDS, POOLED_BOOTSTRAP};
use crate::sweep::summary::{cell_of, text_table, HtmlColumn, Summary, COLUMNS};
use crate::CliError;

/// The settings of `lsmooth compare` without `--settings` or `--grid`.
pub const DEFAULT_SETTINGS: [&str; 4] = ["plain", "others:0.1", "adaptive:0.2", "uniform:0.1"];

/// What the report draws of one setting.
struct SettingRuns {
    name: String,
    runs: Vec<RunMetrics>,
    reports: Vec<CalibrationReport>,
    /// The test predictions of every seed, pooled.
    rows: RowScores,
    projection: Option<crate::analysis::Projection>,
}

/// Pools reliability bins over seeds (counts add; confidence and accuracy are count-weighted).
fn pooled(reports: &[CalibrationReport]) -> CalibrationReport {
    let mut out = reports[0].clone();
    let n: usize = reports.iter().map(|r| r.n).sum();
    let mean = |f: fn(&CalibrationReport) -> f64| reports.iter().map(f).sum::<f64>() / reports.len() as f64;
    out.n = n;
    out.accuracy = mean(|r| r.accuracy);
    out.ece = mean(|r| r.ece);
    out.nll = mean(|r| r.nll);
    out.brier = mean(|r| r.brier);
    out.bins = (0..out.bins.len())
        .map(|b| {
            let count: usize = reports.iter().map(|r| r.bins[b].count).sum();
            let weighted = |f: fn(&Bin) -> f64| {
                if count == 0 {
                    0.0
                } else {
                    reports
                        .iter()
                        .map(|r| f(&r.bins[b]) * r.bins[b].count as f64)
                        .sum::<f64>()
                        / count as f64
                }
            };
            Bin {
                lower: reports[0].bins[b].lower,
                upper: reports[0].bins[b].upper,
                count,
                confidence: weighted(|x| x.confidence),
                accuracy: weighted(|x| x.accuracy),
            }
        })
        .collect();
    out
}

fn summarise(s: &SettingRuns, setting: &Setting, seeds: &[u64]) -> SettingSummary {
    let stat = |f: fn(&RunMetrics) -> f64| Stat::of(s.runs.iter().map(f).collect());
    SettingSummary {
        name: s.name.clone(),
        loss: setting.loss.clone(),
        objective: setting.objective.clone(),
        teacher: setting.teacher.clone(),
        distill_temperature: setting.temperature,
        distill_beta: setting.beta,
        student_hidden: setting.student_hidden.clone(),
        seeds: seeds.to_vec(),
        test_accuracy: stat(|m| m.test_accuracy),
        test_nll: stat(|m| m.test_nll),
        test_ece: stat(|m| m.test_ece),
        test_brier: stat(|m| m.test_brier),
        train_test_gap: stat(|m| m.train_test_gap),
        convergence_epoch: stat(|m| m.convergence_epoch as f64),
        temperature: stat(|m| m.temperature),
        test_ece_scaled: stat(|m| m.test_ece_scaled),
        test_nll_scaled: stat(|m| m.test_nll_scaled),
        validation_nll: stat(|m| m.validation_nll),
        validation_ece: stat(|m| m.validation_ece),
        test_bootstrap: (seeds.len() < FEW_SEEDS)
            .then(|| {
                let config = BootstrapConfig::default()
                    .with_resamples(POOLED_BOOTSTRAP)
                    .with_smooth_ece(false);
                bootstrap(&s.rows, ECE_BINS, &config).ok()
            })
            .flatten(),
    }
}

/// Points `(x, y)`, or bands `(low, high)`.
type Pairs = Vec<(f64, f64)>;

/// Mean curve over seeds with its min-max band.
fn curve(runs: &[RunMetrics], f: fn(&run::EpochMetrics) -> f64) -> (Pairs, Pairs) {
    let epochs = runs.iter().map(|r| r.history.len()).min().unwrap_or(0);
    let mut points = Vec::new();
    let mut band = Vec::new();
    for e in 0..epochs {
        let v: Vec<f64> = runs.iter().map(|r| f(&r.history[e])).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        points.push(((e + 1) as f64, mean));
        band.push((lo, hi));
    }
    (points, band)
}

fn charts(settings: &[SettingRuns], summary: &Summary) -> html::Sections {
    let series = |f: fn(&run::EpochMetrics) -> f64| -> Vec<lines::Series> {
        settings
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (points, band) = curve(&s.runs, f);
                lines::Series {
                    name: s.name.clone(),
                    color: lines::PALETTE[i % lines::PALETTE.len()].into(),
                    points,
                    band: Some(band),
                }
            })
            .collect()
    };
    let curves = vec![
        lines::svg(
            "Test accuracy (mean, band = range over seeds)",
            "epoch",
            "test accuracy",
            &series(|h| h.test_accuracy),
        ),
        lines::svg(
            "Test NLL (mean, band = range over seeds)",
            "epoch",
            "test negative log-likelihood",
            &series(|h| h.test_nll),
        ),
        lines::svg(
            "Training loss (the smoothed objective)",
            "epoch",
            "training loss",
            &series(|h| h.train_loss),
        ),
        lines::svg("Test ECE (15 bins)", "epoch", "test ECE", &series(|h| h.test_ece)),
    ];
    let reliability: Vec<String> = settings
        .iter()
        .zip(&summary.settings)
        .map(|(s, st)| {
            let mut p = pooled(&s.reports);
            // The pooled predictions' own bandwidth; a 95% band of CURVE_BOOTSTRAP resamples, seed 0.
            let curve = (!s.rows.is_empty())
                .then(|| {
                    let sigma = smooth_ece(&s.rows.confidence, &s.rows.correct).bandwidth;
                    let config = BootstrapConfig::default().with_resamples(CURVE_BOOTSTRAP);
                    reliability::smooth_curve(&s.rows, sigma, Some(&config)).ok()
                })
                .flatten();
            if let Some(c) = &curve {
                p.smooth_ece_bandwidth = c.bandwidth;
            }
            reliability::svg_with_curve(
                &p,
                &format!(
                    "{}: ECE {:.2}% (after T: {:.2}%)",
                    s.name,
                    100.0 * st.test_ece.mean,
                    100.0 * st.test_ece_scaled.mean
                ),
                curve.as_ref(),
            )
        })
        .collect();
    let projections: Vec<String> = settings
        .iter()
        .filter_map(|s| {
            s.projection.as_ref().map(|p| {
                let names = p.classes.map(|c| format!("class {c}"));
                projection::svg(
                    p,
                    &format!("{}: penultimate layer", s.name),
                    [&names[0], &names[1], &names[2]],
                )
            })
        })
        .collect();
    html::Sections {
        curves,
        reliability,
        projections,
        grid: grid_charts(settings, summary),
    }
}

/// Resamples of the band around the pooled smoothed reliability curve.
const CURVE_BOOTSTRAP: usize = 100;

/// Per metric, one chart against the strength with one line per grid (mean over seeds, band = range).
fn grid_charts(settings: &[SettingRuns], summary: &Summary) -> Vec<String> {
    if summary.grid.is_empty() {
        return Vec::new();
    }
    type Metric = (&'static str, &'static str, fn(&RunMetrics) -> f64);
    let metrics: [Metric; 4] = [
        ("Test accuracy against the strength", "test accuracy", |m| {
            m.test_accuracy
        }),
        ("Test NLL against the strength", "test NLL", |m| m.test_nll),
        ("Test ECE (15 bins) against the strength", "test ECE", |m| m.test_ece),
        (
            "Fitted temperature against the strength",
            "T (fitted on validation)",
            |m| m.temperature,
        ),
    ];
    metrics
        .iter()
        .map(|&(title, y_label, f)| {
            let series: Vec<lines::Series> = summary
                .grid
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let (mut points, mut band) = (Vec::new(), Vec::new());
                    for (&x, name) in g.strengths.iter().zip(&g.settings) {
                        let runs = &settings
                            .iter()
                            .find(|s| &s.name == name)
                            .expect("grid settings ran")
                            .runs;
                        let v: Vec<f64> = runs.iter().map(f).collect();
                        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        points.push((x, v.iter().sum::<f64>() / v.len() as f64));
                        band.push((lo, hi));
                    }
                    // Drawn in increasing strength whatever order the grid was given in.
                    let mut order: Vec<usize> = (0..points.len()).collect();
                    order.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
                    lines::Series {
                        name: g.kind.to_string(),
                        color: lines::PALETTE[i % lines::PALETTE.len()].into(),
                        points: order.iter().map(|&j| points[j]).collect(),
                        band: Some(order.iter().map(|&j| band[j]).collect()),
                    }
                })
                .collect();
            lines::svg(
                title,
                "smoothing strength (eps, or alpha for adaptive)",
                y_label,
                &series,
            )
        })
        .collect()
}

/// What a sweep runs: its settings in order (name and setting, the distillation settings once per
/// temperature), and for each grid the indices of its points among them.
struct Plan {
    specs: Vec<(String, Setting)>,
    grids: Vec<(Grid, Vec<usize>)>,
}

/// The sweep's plan from the flags: the settings of `--settings` (or the defaults without `--grid`), then the
/// grids' points not already among them. Every flag is checked here, before anything is trained.
fn plan(args: &CompareArgs) -> Result<Plan, CliError> {
    let grids: Vec<Grid> = args.grid.iter().map(|g| parse_grid(g)).collect::<Result<_, _>>()?;
    let names: Vec<String> = match (&args.settings, grids.is_empty()) {
        (Some(s), _) => s.clone(),
        (None, true) => DEFAULT_SETTINGS.iter().map(|s| s.to_string()).collect(),
        (None, false) => Vec::new(),
    };
    if (names.is_empty() && grids.is_empty()) || args.seeds.is_empty() {
        return Err(CliError::Usage(
            "--settings and --seeds need at least one value each".into(),
        ));
    }
    if args.temperature.is_empty() || args.temperature.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(CliError::Usage(format!(
            "--temperature needs positive values, got {:?}",
            args.temperature
        )));
    }
    if args.student_hidden.is_some() && args.flags.model != ModelChoice::Mlp {
        return Err(CliError::Usage("--student-hidden needs --model mlp".into()));
    }
    if let Some(seed) = args
        .seeds
        .iter()
        .enumerate()
        .find_map(|(i, s)| args.seeds[..i].contains(s).then_some(s))
    {
        return Err(CliError::Usage(format!(
            "--seeds lists {seed} twice (each seed is one run: a repeated seed would train the same run again and \
             count it twice in the statistics)"
        )));
    }
    let mut specs: Vec<(String, Setting)> = Vec::new();
    for name in &names {
        push_setting(args, &mut specs, name, parse_full_setting(name)?);
    }
    if let Some(name) = specs
        .iter()
        .enumerate()
        .find_map(|(i, (n, _))| specs[..i].iter().any(|(m, _)| m == n).then_some(n))
    {
        return Err(CliError::Usage(format!("--settings lists {name:?} twice")));
    }
    let grids = grids
        .into_iter()
        .map(|g| {
            let indices = g
                .points()
                .into_iter()
                .map(|(name, loss)| match specs.iter().position(|(n, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        specs.push((name, Setting::of(loss)));
                        specs.len() - 1
                    }
                })
                .collect();
            (g, indices)
        })
        .collect();
    for (i, (name, spec)) in specs.iter().enumerate() {
        if let Some(t) = &spec.teacher {
            if !specs[..i].iter().any(|(n, _)| n == t) {
                return Err(CliError::Usage(format!(
                    "setting {name:?}: the teacher {t:?} must be an earlier setting of --settings"
                )));
            }
        }
    }
    Ok(Plan { specs, grids })
}

/// Adds the setting `name` to `specs`: once, or for `distill:SETTING` once per `--temperature`.
fn push_setting(args: &CompareArgs, specs: &mut Vec<(String, Setting)>, name: &str, mut spec: Setting) {
    if spec.teacher.is_none() {
        specs.push((name.to_string(), spec));
        return;
    }
    spec.student_hidden = args.student_hidden.clone();
    spec.beta = Some(args.beta);
    for &t in &args.temperature {
        spec.temperature = Some(t);
        let name = if args.temperature.len() > 1 {
            format!("{name}@T{t}")
        } else {
            name.to_string()
        };
        specs.push((name, spec.clone()));
    }
}

/// Trains one setting on every seed and gathers what the report draws of it; prints a line per run unless
/// `--quiet`.
fn train_setting(
    args: &CompareArgs,
    (name, spec): &(String, Setting),
    classes: [usize; 3],
    bar: &indicatif::ProgressBar,
    out: &mut dyn Write,
) -> Result<SettingRuns, CliError> {
    let mut s = SettingRuns {
        name: name.clone(),
        runs: Vec::new(),
        reports: Vec::new(),
        rows: RowScores::default(),
        projection: None,
    };
    for &seed in &args.seeds {
        let run_dir = |name: &str| args.out.join("runs").join(format!("{}-seed{seed}", dir_name(name)));
        let objective = match (&spec.teacher, spec.temperature, spec.beta) {
            (Some(t), Some(temperature), Some(beta)) => Some(Objective::Distill {
                teacher: run_dir(t),
                temperature,
                beta,
            }),
            _ => spec.objective.clone(),
        };
        let mut cfg = config(&args.flags, spec.loss.clone(), objective, seed);
        if let Some(hidden) = &spec.student_hidden {
            cfg.model = ModelKind::Mlp { hidden: hidden.clone() };
        }
        let t = Instant::now();
        bar.set_message(format!("{name} seed {seed}"));
        let outcome = run::train(&cfg, &run_dir(name), false, Verbosity::Quiet, &mut std::io::sink())?;
        bar.inc(1);
        let m = &outcome.metrics;
        if !(args.quiet || args.json) {
            bar.suspend(|| {
                let _ = writeln!(
                    out,
                    "{name:>20} seed {seed}: test accuracy {:.2}%, NLL {:.4}, ECE {:.2}%, gap {:.2} points ({:.1} s)",
                    100.0 * m.test_accuracy,
                    m.test_nll,
                    100.0 * m.test_ece,
                    100.0 * m.train_test_gap,
                    t.elapsed().as_secs_f64()
                );
                let _ = out.flush();
            });
        }
        if s.projection.is_none() {
            let data = &outcome.dataset;
            let (features, d) = features_of(&outcome.model, &data.test, data.rows * data.cols)?;
            let labels: Vec<i64> = data.test.labels.iter().map(|&y| y as i64).collect();
            let w = outcome
                .model
                .head_weight_values()
                .map_err(|e| CliError::Train(e.to_string()))?;
            let p = crate::analysis::project(&features, d, &labels, &w, data.classes, classes)
                .map_err(|e| CliError::Usage(format!("--project-classes: {e}")))?;
            s.projection = Some(p);
        }
        s.rows.append(outcome.test_rows);
        s.runs.push(outcome.metrics);
        s.reports.push(outcome.test_report);
    }
    Ok(s)
}

/// A progress bar over the sweep's runs on stderr: drawn only when stderr is a terminal (as `train`'s), and not
/// at all with `--quiet` or `--json`.
fn progress_bar(args: &CompareArgs, runs: u64) -> indicatif::ProgressBar {
    if args.quiet || args.json {
        return indicatif::ProgressBar::hidden();
    }
    crate::progress::stderr_bar(
        Some(runs),
        "[{bar:30}] {pos}/{len} runs ({elapsed}, about {eta} left): {msg}",
    )
}

/// Writes `summary.json`, `report.md` and `report.html` into `--out`.
/// Stages `summary.json`, `report.md` and `report.html` (committed together, after the print).
fn stage_report(args: &CompareArgs, summary: &Summary, settings: &[SettingRuns]) -> Result<Outputs, CliError> {
    std::fs::create_dir_all(&args.out).map_err(|e| CliError::input(&args.out, e.to_string()))?;
    let mut outputs = Outputs::new();
    let summary_json = serde_json::to_string_pretty(summary).expect("serialisable");
    outputs.add(&args.out.join("summary.json"), summary_json.as_bytes())?;
    outputs.add(
        &args.out.join("report.md"),
        markdown::page(summary, &args.seeds).as_bytes(),
    )?;
    let sections = charts(settings, summary);
    let page = html::page(summary, &args.seeds, &html_columns(), &sections);
    outputs.add(&args.out.join("report.html"), page.as_bytes())?;
    Ok(outputs)
}

/// Runs the command.
pub fn run(args: &CompareArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Plan { specs, grids } = plan(args)?;
    let classes = parse_classes(&args.project_classes)?;
    // The data, loaded once before any run trains, so that what depends on it fails first: its flags, and the
    // classes of the projection.
    let data = crate::run::load_data(&config(&args.flags, specs[0].1.loss.clone(), None, args.seeds[0]))?;
    if let Some(&c) = classes.iter().find(|&&c| c >= data.classes) {
        return Err(CliError::Usage(format!(
            "--project-classes: class {c} is not one of the data's {} classes",
            data.classes
        )));
    }
    drop(data);
    let started = Instant::now();
    let bar = progress_bar(args, (specs.len() * args.seeds.len()) as u64);
    let settings: Vec<SettingRuns> = specs
        .iter()
        .map(|spec| train_setting(args, spec, classes, &bar, out))
        .collect::<Result<_, _>>()?;
    bar.finish_and_clear();
    let summaries: Vec<SettingSummary> = settings
        .iter()
        .zip(&specs)
        .map(|(s, (_, spec))| summarise(s, spec, &args.seeds))
        .collect();
    let grid = grids
        .iter()
        .map(|(g, indices)| grid::summarise(g, &indices.iter().map(|&i| &summaries[i]).collect::<Vec<_>>()))
        .collect();
    let summary = Summary {
        grid,
        settings: summaries,
        model: settings[0].runs[0].model.clone(),
        base: config(&args.flags, specs[0].1.loss.clone(), None, args.seeds[0]),
        seconds: started.elapsed().as_secs_f64(),
        made_by: run::Provenance::here(),
    };
    let outputs = stage_report(args, &summary, &settings)?;
    super::print_then_commit(outputs, || print_summary(args, &summary, specs.len(), out))
}

/// The summary on stdout: one JSON object with `--json`, else the table and where the report is.
fn print_summary(args: &CompareArgs, summary: &Summary, settings: usize, out: &mut dyn Write) -> Result<(), CliError> {
    if args.json {
        let line =
            serde_json::to_string(summary).map_err(|e| CliError::Runtime(format!("encoding the JSON output: {e}")))?;
        return writeln!(out, "{line}").map_err(CliError::Stdout);
    }
    let mut table = text_table(summary);
    for g in &summary.grid {
        table.push('\n');
        table.push_str(&grid::describe(g));
    }
    writeln!(
        out,
        "\n{}\n{} settings x {} seeds in {:.0} s; report: {}",
        table,
        settings,
        args.seeds.len(),
        summary.seconds,
        args.out.join("report.html").display()
    )
    .map_err(CliError::Stdout)
}

/// The table's columns for the HTML page: header and formatted cells per setting.
fn html_columns() -> Vec<HtmlColumn> {
    COLUMNS
        .iter()
        .map(|c| {
            let c = *c;
            let g: Box<dyn Fn(&SettingSummary) -> String> = Box::new(move |s| cell_of(s, &c));
            (c.header, g)
        })
        .collect()
}

/// A setting's directory name: `others:0.1+mixup:0.2` becomes `others-0.1+mixup-0.2`.
pub fn dir_name(setting: &str) -> String {
    setting.replace(':', "-")
}

/// Parses `a,b,c`.
pub fn parse_classes(v: &[usize]) -> Result<[usize; 3], CliError> {
    match v {
        [a, b, c] => Ok([*a, *b, *c]),
        _ => Err(CliError::Usage(format!(
            "--project-classes needs three classes, got {}",
            v.len()
        ))),
    }
}
