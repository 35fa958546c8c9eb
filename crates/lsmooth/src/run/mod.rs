//! Training a classifier with candle on the CPU, with the label-smoothed loss of the candle adapter, evaluated
//! every epoch; checkpoints that let an interrupted run continue to the same numbers.
//!
//! A run is fixed by its [`TrainConfig`]: the data split does not depend on the seed; the seed fixes the
//! initialisation, the label noise and each epoch's batch order (drawn from `(seed, epoch)`, so a resumed run
//! sees the same batches).

mod checkpoint;
mod config;
mod metrics;
pub mod model;
pub mod optim;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use label_smoothing::calibration::fit_temperature;
use label_smoothing::online::OnlineLabelSmoothing;
use label_smoothing_candle::LabelSmoothingCrossEntropy;

use crate::data::{Dataset, Split};
use crate::io::atomic;
use crate::CliError;
use checkpoint::{save_tensors, write_atomic};
pub use config::{read_config, short, LossSpec, Objective, Provenance, RunFile, TrainConfig, ECE_BINS};
use label_smoothing::rng::SplitMix64;
use metrics::{accuracy, epochs_csv, report};
pub use metrics::{EpochMetrics, Outcome, RunMetrics};
pub use model::{Model, ModelKind};
pub use optim::{Optimizer, OptimizerKind};

/// How a run reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// A line per epoch (and a progress bar on a terminal).
    Epochs,
    /// Nothing.
    Quiet,
}

pub(super) fn io_err(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::input(path, e.to_string())
}

pub(super) fn candle_err(e: candle_core::Error) -> CliError {
    CliError::Train(e.to_string())
}

/// Loads the data of a configuration: split, truncated, noised.
pub fn load_data(config: &TrainConfig) -> Result<Dataset, CliError> {
    let mut data = Dataset::load(&config.data)?;
    if let Some(n) = config.train_size {
        if n == 0 || n > data.train.len() {
            return Err(CliError::Usage(format!(
                "--train-size {n}: the training split has {} examples",
                data.train.len()
            )));
        }
        data.truncate_train(n);
    }
    if !(0.0..=1.0).contains(&config.label_noise) {
        return Err(CliError::Usage(format!(
            "--label-noise {} is not in [0, 1]",
            config.label_noise
        )));
    }
    data.add_label_noise(config.label_noise, config.seed);
    Ok(data)
}

fn batch(split: &Split, indices: &[usize], pixels: usize, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(indices.len() * pixels);
    for &i in indices {
        x.extend_from_slice(&split.images[i * pixels..(i + 1) * pixels]);
    }
    let y: Vec<u32> = indices.iter().map(|&i| split.labels[i]).collect();
    Ok((
        Tensor::from_vec(x, (indices.len(), pixels), device)?,
        Tensor::from_vec(y, indices.len(), device)?,
    ))
}

/// Runs `f` over a split in batches of 1,000 without gradients and concatenates the rows it returns.
fn map_split(
    split: &Split,
    pixels: usize,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Vec<f32>, usize)> {
    let device = Device::Cpu;
    let mut out = Vec::new();
    let mut width = 0;
    let all: Vec<usize> = (0..split.len()).collect();
    for chunk in all.chunks(1000) {
        let (x, _) = batch(split, chunk, pixels, &device)?;
        let y = f(&x)?.detach();
        width = y.dim(1)?;
        out.extend(y.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((out, width))
}

/// Logits `[n, K]` of a split.
pub fn logits_of(model: &Model, split: &Split, pixels: usize) -> Result<Vec<f32>, CliError> {
    Ok(map_split(split, pixels, |x| model.forward(x)).map_err(candle_err)?.0)
}

/// Penultimate activations `[n, D]` of a split, and `D`.
pub fn features_of(model: &Model, split: &Split, pixels: usize) -> Result<(Vec<f32>, usize), CliError> {
    map_split(split, pixels, |x| model.features(x)).map_err(candle_err)
}

/// A run in progress: its data, network, optimiser and history.
struct Run {
    config: TrainConfig,
    data: Dataset,
    model: Model,
    optimizer: Optimizer,
    loss: LabelSmoothingCrossEntropy,
    history: Vec<EpochMetrics>,
    /// Online label smoothing's state, with `Objective::Ols`.
    ols: Option<OnlineLabelSmoothing>,
    /// The teacher network, with `Objective::Distill`.
    teacher: Option<Model>,
}

impl Run {
    fn new(config: &TrainConfig) -> Result<Self, CliError> {
        if config.batch_size == 0 {
            return Err(CliError::Usage("--batch-size must be at least 1".into()));
        }
        if !(config.lr > 0.0 && config.lr.is_finite()) {
            return Err(CliError::Usage(format!("--lr {} must be positive", config.lr)));
        }
        if !(config.weight_decay >= 0.0 && config.weight_decay.is_finite()) {
            return Err(CliError::Usage(format!(
                "--weight-decay {} must be 0 or positive",
                config.weight_decay
            )));
        }
        if let OptimizerKind::Sgd { momentum } = config.optimizer {
            if !(0.0..1.0).contains(&momentum) {
                return Err(CliError::Usage(format!("--momentum {momentum} is not in [0, 1)")));
            }
        }
        if matches!(
            config.objective,
            Some(Objective::Mixup { .. } | Objective::Cutmix { .. })
        ) && matches!(config.loss.smoothing, label_smoothing::Smoothing::Adaptive { .. })
        {
            // Refused before anything is loaded or written: the first batch would fail on it.
            return Err(CliError::Usage(
                "--mixup and --cutmix take a fixed --smoothing, not --adaptive: a mixed target has no single \
                 label for alpha * p(label)"
                    .into(),
            ));
        }
        if (config.loss.z_loss != 0.0 || config.loss.softcap.is_some()) && config.objective.is_some() {
            // The related objectives compute their own loss of the logits, without these options.
            return Err(CliError::Usage(
                "--z-loss and --softcap apply to the (smoothed) cross-entropy alone, not with --mixup, --cutmix, \
                 --ols, --confidence-penalty, --label-relaxation or --distill-from"
                    .into(),
            ));
        }
        let data = load_data(config)?;
        let loss = LabelSmoothingCrossEntropy::new(config.loss.config()?, data.classes)
            .map_err(|e| CliError::Train(e.to_string()))?;
        let model = model_for(config, &data)?;
        let optimizer =
            Optimizer::new(config.optimizer, config.lr, config.weight_decay, model.params()).map_err(candle_err)?;
        let ols = match config.objective {
            Some(Objective::Ols) => {
                Some(OnlineLabelSmoothing::new(data.classes).map_err(|e| CliError::Train(e.to_string()))?)
            }
            _ => None,
        };
        let teacher = match &config.objective {
            Some(Objective::Distill {
                teacher,
                temperature,
                beta,
            }) => {
                if !(*temperature > 0.0 && temperature.is_finite() && (0.0..=1.0).contains(beta)) {
                    return Err(CliError::Usage(format!(
                        "--temperature {temperature} must be positive and --beta {beta} in [0, 1]"
                    )));
                }
                Some(load_teacher(teacher, &data)?)
            }
            _ => None,
        };
        Ok(Self {
            config: config.clone(),
            data,
            model,
            optimizer,
            loss,
            history: Vec::new(),
            ols,
            teacher,
        })
    }

    fn pixels(&self) -> usize {
        self.data.rows * self.data.cols
    }

    /// One epoch of training; `Err` on a non-finite loss.
    fn train_epoch(&mut self, epoch: usize, bar: &indicatif::ProgressBar) -> Result<f64, CliError> {
        let pixels = self.pixels();
        let mut order: Vec<usize> = (0..self.data.train.len()).collect();
        SplitMix64::new(self.config.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut order);
        let (mut total, mut count) = (0.0f64, 0usize);
        for (b, indices) in order.chunks(self.config.batch_size).enumerate() {
            let (x, y) = batch(&self.data.train, indices, pixels, &Device::Cpu).map_err(candle_err)?;
            let loss = self.batch_loss(x, &y, indices, epoch, b)?;
            let value = loss.to_scalar::<f32>().map_err(candle_err)?;
            // Divergence injection for the tests (debug builds only): `LSMOOTH_NAN_LOSS_AT_EPOCH=n` makes epoch
            // n's first loss NaN.
            #[cfg(debug_assertions)]
            let value = match std::env::var("LSMOOTH_NAN_LOSS_AT_EPOCH") {
                Ok(e) if e == epoch.to_string() => f32::NAN,
                _ => value,
            };
            if !value.is_finite() {
                return Err(CliError::Train(format!(
                    "epoch {epoch}, batch {}: the training loss is {value}; training stopped",
                    b + 1
                )));
            }
            let grads = loss.backward().map_err(candle_err)?;
            self.optimizer.step(self.model.params(), &grads).map_err(candle_err)?;
            total += value as f64 * indices.len() as f64;
            count += indices.len();
            bar.inc(1);
        }
        if let Some(ols) = &mut self.ols {
            ols.finish_epoch();
        }
        Ok(total / count.max(1) as f64)
    }

    /// The objective of one batch (images `x`, labels `y` of the training rows `indices`).
    fn batch_loss(
        &mut self,
        x: Tensor,
        y: &Tensor,
        indices: &[usize],
        epoch: usize,
        b: usize,
    ) -> Result<Tensor, CliError> {
        let loss_err = |e: label_smoothing_candle::Error| CliError::Train(e.to_string());
        let core = self.loss.loss().clone();
        // mixup and CutMix draw from (seed, epoch, batch), so a resumed run mixes identically.
        let mut rng = SplitMix64::new(
            self.config.seed
                ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407)
                ^ (b as u64).wrapping_mul(0x9FB2_1C65_1E98_DF25),
        );
        let labels: Vec<i64> = indices.iter().map(|&i| self.data.train.labels[i] as i64).collect();
        let mixed = |x: Vec<f32>, mix: label_smoothing::mixup::Mix, model: &Model| -> Result<Tensor, CliError> {
            let n = indices.len();
            let x = Tensor::from_vec(x, (n, self.pixels()), &Device::Cpu).map_err(candle_err)?;
            let logits = model.forward(&x).map_err(candle_err)?;
            let a = Tensor::from_vec(mix.labels_a.clone(), n, &Device::Cpu).map_err(candle_err)?;
            let bl = Tensor::from_vec(mix.labels_b.clone(), n, &Device::Cpu).map_err(candle_err)?;
            label_smoothing_candle::related::mixed_cross_entropy(&logits, &a, &bl, mix.lambda, &core).map_err(loss_err)
        };
        match &self.config.objective {
            None => {
                let logits = self.model.forward(&x).map_err(candle_err)?;
                self.loss.forward(&logits, y).map_err(loss_err)
            }
            Some(Objective::Mixup { alpha }) => {
                let mut host = x.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(candle_err)?;
                let mix = label_smoothing::mixup::mixup(&mut host, indices.len(), &labels, *alpha, &mut rng)
                    .map_err(|e| CliError::Usage(format!("--mixup: {e}")))?;
                mixed(host, mix, &self.model)
            }
            Some(Objective::Cutmix { alpha }) => {
                let mut host = x.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(candle_err)?;
                let shape = [indices.len(), 1, self.data.rows, self.data.cols];
                let (mix, _) = label_smoothing::mixup::cutmix(&mut host, shape, &labels, *alpha, &mut rng)
                    .map_err(|e| CliError::Usage(format!("--cutmix: {e}")))?;
                mixed(host, mix, &self.model)
            }
            Some(Objective::Ols) => {
                let logits = self.model.forward(&x).map_err(candle_err)?;
                let ols = self.ols.as_mut().expect("created with the run");
                let loss =
                    label_smoothing_candle::related::online_label_smoothing(&logits, y, ols).map_err(loss_err)?;
                let values = logits
                    .detach()
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(candle_err)?;
                ols.observe(&values, &labels)
                    .map_err(|e| CliError::Train(e.to_string()))?;
                Ok(loss)
            }
            Some(Objective::ConfidencePenalty { beta }) => {
                let logits = self.model.forward(&x).map_err(candle_err)?;
                label_smoothing_candle::related::confidence_penalty(&logits, y, &core, *beta).map_err(loss_err)
            }
            Some(Objective::LabelRelaxation { alpha }) => {
                let logits = self.model.forward(&x).map_err(candle_err)?;
                label_smoothing_candle::related::label_relaxation(&logits, y, *alpha).map_err(loss_err)
            }
            Some(Objective::Distill { temperature, beta, .. }) => {
                let logits = self.model.forward(&x).map_err(candle_err)?;
                let teacher = self.teacher.as_ref().expect("loaded with the run");
                let t = teacher.forward(&x).map_err(candle_err)?.detach();
                let cfg = label_smoothing::distillation::DistillationConfig::new(*beta, *temperature);
                label_smoothing_candle::related::distillation(&logits, &t, y, &core, cfg).map_err(loss_err)
            }
        }
    }

    fn evaluate(&self, epoch: usize, train_loss: f64, seconds: f64) -> Result<EpochMetrics, CliError> {
        let (pixels, k) = (self.pixels(), self.data.classes);
        let train = logits_of(&self.model, &self.data.train, pixels)?;
        let val = logits_of(&self.model, &self.data.validation, pixels)?;
        let test = logits_of(&self.model, &self.data.test, pixels)?;
        let (r, _) = report(&test, &self.data.test.labels, k, 1.0)?;
        Ok(EpochMetrics {
            epoch,
            train_loss,
            train_accuracy: accuracy(&train, &self.data.train.labels, k),
            validation_accuracy: accuracy(&val, &self.data.validation.labels, k),
            test_accuracy: r.accuracy,
            test_nll: r.nll,
            test_ece: r.ece,
            test_brier: r.brier,
            seconds,
        })
    }
}

fn progress_bar(batches: u64, verbosity: Verbosity, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if verbosity == Verbosity::Quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = crate::progress::stderr_bar(Some(batches), "epoch {msg} [{bar:30}] {pos}/{len} batches");
    bar.set_message(format!("{epoch}/{epochs}"));
    bar
}

/// Trains (or, with `resume`, continues) a run, writing into `out_dir`: `run.json`, after each epoch
/// `checkpoint.safetensors`, `state.json` and `epochs.csv`, and at the end `metrics.json` and
/// `model.safetensors`. Every file is written to a temporary name and renamed into place.
pub fn train(
    config: &TrainConfig,
    out_dir: &Path,
    resume: bool,
    verbosity: Verbosity,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let mut run = Run::new(config)?;
    std::fs::create_dir_all(out_dir).map_err(|e| io_err(out_dir, e))?;
    let _lock = lock_run_dir(out_dir)?;
    // The run directory is this process's own (it holds the lock): temporary files there are from writes a
    // crash interrupted.
    atomic::remove_stale_temporaries(out_dir);
    if resume {
        run.load_checkpoint(out_dir)?;
    }
    let file = RunFile {
        config,
        made_by: Provenance::here(),
    };
    write_atomic(
        &out_dir.join("run.json"),
        serde_json::to_string_pretty(&file).expect("serialisable").as_bytes(),
    )?;
    let batches = run.data.train.len().div_ceil(config.batch_size) as u64;
    let say = |out: &mut dyn Write, line: String| -> Result<(), CliError> {
        if verbosity == Verbosity::Epochs {
            writeln!(out, "{line}").map_err(CliError::Stdout)?;
        }
        Ok(())
    };
    if resume {
        say(
            out,
            format!("resuming {} after epoch {}", out_dir.display(), run.history.len()),
        )?;
    }
    for epoch in run.history.len() + 1..=config.epochs {
        let start = Instant::now();
        let bar = progress_bar(batches, verbosity, epoch, config.epochs);
        let train_loss = run.train_epoch(epoch, &bar).map_err(|e| match e {
            CliError::Train(m) if epoch == 1 => {
                CliError::Train(format!("{m}; no epoch finished: train with a lower --lr"))
            }
            // The same configuration diverges again from the same checkpoint, and --resume cannot change it.
            CliError::Train(m) => CliError::Train(format!(
                "{m}; the last good checkpoint (after epoch {}) is in {}; train anew with a lower --lr",
                epoch - 1,
                out_dir.display()
            )),
            other => other,
        })?;
        bar.finish_and_clear();
        let m = run.evaluate(epoch, train_loss, start.elapsed().as_secs_f64())?;
        say(
            out,
            format!(
                "epoch {:>3}/{}  train loss {:.4}  train acc {:.2}%  test acc {:.2}%  NLL {:.4}  ECE {:.4}  Brier {:.4}  ({:.1} s)",
                epoch,
                config.epochs,
                m.train_loss,
                100.0 * m.train_accuracy,
                100.0 * m.test_accuracy,
                m.test_nll,
                m.test_ece,
                m.test_brier,
                m.seconds
            ),
        )?;
        run.history.push(m);
        run.save_checkpoint(out_dir)?;
    }
    finish(run, out_dir)
}

/// The name of the lock file in a run directory.
pub const LOCK_FILE: &str = ".lsmooth.lock";

/// Takes the run directory's advisory lock (an exclusive `flock` on `DIR/.lsmooth.lock`), held until the
/// returned file is dropped; the system releases it when the process ends, however it ends. A second process
/// training into the same directory is refused.
fn lock_run_dir(dir: &Path) -> Result<std::fs::File, CliError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(CliError::Usage(format!(
            "{}: another lsmooth process is training into this directory (it holds {LOCK_FILE}); wait for it to \
             end, or train into another --out",
            crate::io::show_path(dir)
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path, e)),
    }
}

fn finish(run: Run, out_dir: &Path) -> Result<Outcome, CliError> {
    let (pixels, k) = (run.pixels(), run.data.classes);
    let val = logits_of(&run.model, &run.data.validation, pixels)?;
    let val_labels: Vec<i64> = run.data.validation.labels.iter().map(|&y| y as i64).collect();
    let temperature = fit_temperature(&val, &val_labels, k).map_err(|e| CliError::Train(e.to_string()))?;
    let (val_report, _) = report(&val, &run.data.validation.labels, k, 1.0)?;
    let test = logits_of(&run.model, &run.data.test, pixels)?;
    let (test_report, test_rows) = report(&test, &run.data.test.labels, k, 1.0)?;
    let (test_report_scaled, _) = report(&test, &run.data.test.labels, k, temperature)?;
    let train = logits_of(&run.model, &run.data.train, pixels)?;
    let train_accuracy = accuracy(&train, &run.data.train.labels, k);
    let best = run.history.iter().map(|h| h.test_accuracy).fold(0.0, f64::max);
    let convergence_epoch = run
        .history
        .iter()
        .find(|h| h.test_accuracy >= best - 0.005)
        .map_or(0, |h| h.epoch);
    let metrics = RunMetrics {
        config: run.config.clone(),
        made_by: Provenance::here(),
        model: run.config.model.describe(pixels, k),
        epochs: run.history.len(),
        test_accuracy: test_report.accuracy,
        test_nll: test_report.nll,
        test_ece: test_report.ece,
        test_brier: test_report.brier,
        test_mce: test_report.mce,
        test_adaptive_ece: test_report.adaptive_ece,
        train_accuracy,
        train_test_gap: train_accuracy - test_report.accuracy,
        best_test_accuracy: best,
        convergence_epoch,
        temperature,
        validation_nll: val_report.nll,
        validation_ece: val_report.ece,
        test_ece_scaled: test_report_scaled.ece,
        test_nll_scaled: test_report_scaled.nll,
        test_brier_scaled: test_report_scaled.brier,
        history: run.history.clone(),
    };
    let params: HashMap<String, Tensor> = run
        .model
        .params()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    save_tensors(&out_dir.join("model.safetensors"), &params, None)?;
    write_atomic(
        &out_dir.join("metrics.json"),
        serde_json::to_string_pretty(&metrics).expect("serialisable").as_bytes(),
    )?;
    write_atomic(&out_dir.join("epochs.csv"), epochs_csv(&run.history).as_bytes())?;
    Ok(Outcome {
        metrics,
        test_report,
        test_report_scaled,
        test_rows,
        model: run.model,
        dataset: run.data,
    })
}

/// A freshly initialised network of `config`'s architecture and seed for `data`.
fn model_for(config: &TrainConfig, data: &Dataset) -> Result<Model, CliError> {
    Model::new(
        &config.model,
        data.rows,
        data.cols,
        data.classes,
        config.seed,
        &Device::Cpu,
    )
    .map_err(candle_err)
}

/// Loads a trained run's network (its `run.json` and `model.safetensors`) as a teacher for `data`.
fn load_teacher(dir: &Path, data: &Dataset) -> Result<Model, CliError> {
    let model = model_for(&read_config(dir)?, data)?;
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| io_err(&path, e))?;
    model
        .load(|name| tensors.remove(name))
        .map_err(|e| io_err(&path, format!("not a teacher for this data: {e}")))?;
    Ok(model)
}
