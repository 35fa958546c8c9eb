//! Training a classifier with candle on the CPU, with the label-smoothed loss of the candle adapter, evaluated
//! every epoch; checkpoints that let an interrupted run continue to the same numbers.
//!
//! A run is fixed by its [`TrainConfig`]: the data split does not depend on the seed; the seed fixes the
//! initialisation, the label noise and each epoch's batch order (drawn from `(seed, epoch)`, so a resumed run
//! sees the same batches).

pub mod model;
pub mod optim;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use label_smoothing::calibration::{calibration, fit_temperature, softmax_rows, CalibrationReport};
use label_smoothing::online::OnlineLabelSmoothing;
use label_smoothing::{LabelSmoothingConfig, Reduction, Spread};
use label_smoothing_candle::LabelSmoothingCrossEntropy;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Source, Split};
use crate::io::atomic;
use crate::rng::SplitMix64;
use crate::CliError;
pub use model::{Model, ModelKind};
pub use optim::{Optimizer, OptimizerKind};

/// Bins of the reported ECE.
pub const ECE_BINS: usize = 15;

/// The loss of a run, as on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossSpec {
    /// Fixed smoothing (ignored when `adaptive` is set).
    pub smoothing: f32,
    /// Adaptive smoothing `alpha * p(label)`.
    pub adaptive: Option<f32>,
    /// `others` or `uniform`.
    pub spread: String,
    /// `sum`, `mean` or `mean-nonzero`.
    pub reduction: String,
}

impl LossSpec {
    /// The core configuration; `none` is refused (training needs a scalar).
    pub fn config(&self) -> Result<LabelSmoothingConfig, CliError> {
        let spread: Spread = self.spread.parse().map_err(CliError::Usage)?;
        let reduction: Reduction = self.reduction.parse().map_err(CliError::Usage)?;
        if reduction == Reduction::None {
            return Err(CliError::Usage(
                "--reduction none gives a loss per row; training needs sum, mean or mean-nonzero".into(),
            ));
        }
        let c = LabelSmoothingConfig::new()
            .with_spread(spread)
            .with_reduction(reduction);
        Ok(match self.adaptive {
            Some(alpha) => c.with_adaptive(alpha),
            None => c.with_smoothing(self.smoothing),
        })
    }

    /// A short name: `plain`, `others-0.1`, `uniform-0.1`, `adaptive-0.2`.
    pub fn describe(&self) -> String {
        match self.adaptive {
            Some(a) => format!("adaptive-{a}"),
            None if self.smoothing == 0.0 => "plain".into(),
            None => format!("{}-{}", self.spread, self.smoothing),
        }
    }
}

/// A training objective beyond plain (smoothed) cross-entropy, from the core crate's related losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Regularizer {
    /// mixup: inputs mixed with `lambda ~ Beta(alpha, alpha)`, targets mixed alike (smoothed by the loss).
    Mixup {
        /// Beta's parameter.
        alpha: f64,
    },
    /// CutMix: a box pasted from another image, `lambda` from its area.
    Cutmix {
        /// Beta's parameter.
        alpha: f64,
    },
    /// Online label smoothing (0.5 hard CE + 0.5 CE against the learnt soft labels).
    Ols,
    /// The confidence penalty `CE - beta * H(p)`.
    ConfidencePenalty {
        /// Weight of the entropy.
        beta: f32,
    },
    /// Label relaxation with parameter `alpha` (replaces the cross-entropy).
    LabelRelaxation {
        /// The accepted probability mass off the label.
        alpha: f32,
    },
    /// Knowledge distillation from a trained run's model.
    Distill {
        /// The teacher's run directory (`run.json`, `model.safetensors`).
        teacher: PathBuf,
        /// Softmax temperature.
        temperature: f32,
        /// Weight of the distillation term.
        beta: f32,
    },
}

impl Regularizer {
    /// A short name: `mixup-0.2`, `ols`, `distill`...
    pub fn describe(&self) -> String {
        match self {
            Regularizer::Mixup { alpha } => format!("mixup-{alpha}"),
            Regularizer::Cutmix { alpha } => format!("cutmix-{alpha}"),
            Regularizer::Ols => "ols".into(),
            Regularizer::ConfidencePenalty { beta } => format!("confidence-penalty-{beta}"),
            Regularizer::LabelRelaxation { alpha } => format!("label-relaxation-{alpha}"),
            Regularizer::Distill { temperature, beta, .. } => format!("distill-t{temperature}-b{beta}"),
        }
    }
}

/// Everything that determines a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The data.
    pub data: Source,
    /// Keep only this many training examples.
    pub train_size: Option<usize>,
    /// Fraction of training labels flipped to another class.
    pub label_noise: f64,
    /// The network.
    pub model: ModelKind,
    /// The optimiser.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay (decoupled for AdamW, L2 for SGD).
    pub weight_decay: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: usize,
    /// The seed of initialisation, label noise and batch order.
    pub seed: u64,
    /// The loss.
    pub loss: LossSpec,
    /// mixup, CutMix, online label smoothing, a penalty, relaxation or distillation, if any.
    #[serde(default)]
    pub regularizer: Option<Regularizer>,
}

impl TrainConfig {
    /// A short name of the objective: the loss, and the regulariser if any.
    pub fn describe(&self) -> String {
        match &self.regularizer {
            // These replace the cross-entropy: the smoothing flags do not apply.
            Some(r @ (Regularizer::Ols | Regularizer::LabelRelaxation { .. })) => r.describe(),
            Some(r) => format!("{}+{}", self.loss.describe(), r.describe()),
            None => self.loss.describe(),
        }
    }
}

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (the smoothed objective).
    pub train_loss: f64,
    /// Accuracy on the training set (against its possibly noisy labels), after the epoch.
    pub train_accuracy: f64,
    /// Validation accuracy.
    pub validation_accuracy: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Test negative log-likelihood (unsmoothed).
    pub test_nll: f64,
    /// Test ECE, 15 equal-width bins.
    pub test_ece: f64,
    /// Test Brier score.
    pub test_brier: f64,
    /// Wall-clock seconds of the epoch's training and evaluation.
    pub seconds: f64,
}

/// The contents of `metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Model description.
    pub model: String,
    /// Epochs completed.
    pub epochs: usize,
    /// Final test accuracy.
    pub test_accuracy: f64,
    /// Final test NLL.
    pub test_nll: f64,
    /// Final test ECE (15 bins).
    pub test_ece: f64,
    /// Final test Brier score.
    pub test_brier: f64,
    /// Final test MCE.
    pub test_mce: f64,
    /// Final test adaptive ECE.
    pub test_adaptive_ece: f64,
    /// Final training accuracy.
    pub train_accuracy: f64,
    /// `train_accuracy - test_accuracy`: over-fitting.
    pub train_test_gap: f64,
    /// The best test accuracy of any epoch.
    pub best_test_accuracy: f64,
    /// The first epoch whose test accuracy is within 0.5 points of the best.
    pub convergence_epoch: usize,
    /// The temperature fitted on the validation split.
    pub temperature: f64,
    /// Test ECE after temperature scaling.
    pub test_ece_scaled: f64,
    /// Test NLL after temperature scaling.
    pub test_nll_scaled: f64,
    /// Test Brier score after temperature scaling.
    pub test_brier_scaled: f64,
    /// Per-epoch history.
    pub history: Vec<EpochMetrics>,
}

/// A finished run, with what the reports draw.
#[derive(Debug)]
pub struct Outcome {
    /// The metrics (as in `metrics.json`).
    pub metrics: RunMetrics,
    /// The final test calibration (reliability bins).
    pub test_report: CalibrationReport,
    /// The same after temperature scaling.
    pub test_report_scaled: CalibrationReport,
    /// The trained network.
    pub model: Model,
    /// The data it was trained on.
    pub dataset: Dataset,
}

/// The resumable state written after every epoch, in `checkpoint.safetensors`'s metadata (and, for people,
/// copied to `state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    epochs_done: usize,
    step: u64,
    history: Vec<EpochMetrics>,
}

/// How a run reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// A line per epoch (and a progress bar on a terminal).
    Epochs,
    /// Nothing.
    Quiet,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::input(path, e.to_string())
}

fn candle_err(e: candle_core::Error) -> CliError {
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

fn accuracy(logits: &[f32], labels: &[u32], k: usize) -> f64 {
    let correct = logits
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, &y)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (c, &v)| if v > row[b] { c } else { b });
            best == y as usize
        })
        .count();
    correct as f64 / labels.len().max(1) as f64
}

fn report(logits: &[f32], labels: &[u32], k: usize, temperature: f64) -> Result<CalibrationReport, CliError> {
    let labels: Vec<i64> = labels.iter().map(|&y| y as i64).collect();
    let probs = softmax_rows(logits, k, temperature).map_err(|e| CliError::Train(e.to_string()))?;
    calibration(&probs, &labels, k, ECE_BINS).map_err(|e| CliError::Train(e.to_string()))
}

/// Writes `bytes` to `path` atomically.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    atomic::write(path, bytes)?;
    Ok(())
}

/// Saves named tensors as safetensors, with string metadata, atomically (flushed, then renamed into place).
fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), CliError> {
    let bytes = safetensors::serialize(tensors, metadata).map_err(|e| io_err(path, e))?;
    write_atomic(path, &bytes)
}

/// The key of the training state in the checkpoint's safetensors metadata.
const STATE_KEY: &str = "lsmooth.state";

fn epochs_csv(history: &[EpochMetrics]) -> String {
    let mut s = String::from(
        "epoch,train_loss,train_accuracy,validation_accuracy,test_accuracy,test_nll,test_ece,test_brier,seconds\n",
    );
    for h in history {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3}\n",
            h.epoch,
            h.train_loss,
            h.train_accuracy,
            h.validation_accuracy,
            h.test_accuracy,
            h.test_nll,
            h.test_ece,
            h.test_brier,
            h.seconds
        ));
    }
    s
}

/// A run in progress: its data, network, optimiser and history.
struct Run {
    config: TrainConfig,
    data: Dataset,
    model: Model,
    optimizer: Optimizer,
    loss: LabelSmoothingCrossEntropy,
    history: Vec<EpochMetrics>,
    /// Online label smoothing's state, with `Regularizer::Ols`.
    ols: Option<OnlineLabelSmoothing>,
    /// The teacher network, with `Regularizer::Distill`.
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
        let data = load_data(config)?;
        let loss = LabelSmoothingCrossEntropy::new(config.loss.config()?, data.classes)
            .map_err(|e| CliError::Train(e.to_string()))?;
        let model = model_for(config, &data)?;
        let optimizer =
            Optimizer::new(config.optimizer, config.lr, config.weight_decay, model.params()).map_err(candle_err)?;
        let ols = match config.regularizer {
            Some(Regularizer::Ols) => {
                Some(OnlineLabelSmoothing::new(data.classes).map_err(|e| CliError::Train(e.to_string()))?)
            }
            _ => None,
        };
        let teacher = match &config.regularizer {
            Some(Regularizer::Distill {
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
        match &self.config.regularizer {
            None => {
                let logits = self.model.forward(&x).map_err(candle_err)?;
                self.loss.forward(&logits, y).map_err(loss_err)
            }
            Some(Regularizer::Mixup { alpha }) => {
                let mut host = x.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(candle_err)?;
                let mix = label_smoothing::mixup::mixup(&mut host, indices.len(), &labels, *alpha, &mut rng)
                    .map_err(|e| CliError::Usage(format!("--mixup: {e}")))?;
                mixed(host, mix, &self.model)
            }
            Some(Regularizer::Cutmix { alpha }) => {
                let mut host = x.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(candle_err)?;
                let shape = [indices.len(), 1, self.data.rows, self.data.cols];
                let (mix, _) = label_smoothing::mixup::cutmix(&mut host, shape, &labels, *alpha, &mut rng)
                    .map_err(|e| CliError::Usage(format!("--cutmix: {e}")))?;
                mixed(host, mix, &self.model)
            }
            Some(Regularizer::Ols) => {
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
            Some(Regularizer::ConfidencePenalty { beta }) => {
                let logits = self.model.forward(&x).map_err(candle_err)?;
                label_smoothing_candle::related::confidence_penalty(&logits, y, &core, *beta).map_err(loss_err)
            }
            Some(Regularizer::LabelRelaxation { alpha }) => {
                let logits = self.model.forward(&x).map_err(candle_err)?;
                label_smoothing_candle::related::label_relaxation(&logits, y, *alpha).map_err(loss_err)
            }
            Some(Regularizer::Distill { temperature, beta, .. }) => {
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
        let r = report(&test, &self.data.test.labels, k, 1.0)?;
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

    fn tensors(&self) -> HashMap<String, Tensor> {
        let mut map = HashMap::new();
        for ((name, var), state) in self.model.params().iter().zip(&self.optimizer.state) {
            map.insert(format!("param.{name}"), var.as_tensor().clone());
            for (sname, t) in self.optimizer.state_names(name).into_iter().zip(state) {
                map.insert(sname, t.clone());
            }
        }
        map
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<(), CliError> {
        let mut tensors = self.tensors();
        let epochs = Tensor::new(&[self.history.len() as u32], &Device::Cpu).map_err(candle_err)?;
        tensors.insert("meta.epochs_done".into(), epochs);
        if let Some(ols) = &self.ols {
            let st = ols.state();
            let k = st.k;
            let counts: Vec<f64> = st.counts.iter().map(|&c| c as f64).collect();
            for (name, data, shape) in [
                ("ols.matrix", st.matrix.clone(), vec![k, k]),
                ("ols.sums", st.sums.clone(), vec![k, k]),
                ("ols.counts", counts, vec![k]),
            ] {
                tensors.insert(
                    name.into(),
                    Tensor::from_vec(data, shape, &Device::Cpu).map_err(candle_err)?,
                );
            }
        }
        let state = State {
            epochs_done: self.history.len(),
            step: self.optimizer.step,
            history: self.history.clone(),
        };
        let state_json = serde_json::to_string_pretty(&state).expect("serialisable");
        // The checkpoint holds its own training state: its rename is the one commit point of an epoch, and
        // state.json and epochs.csv, written after it, are copies for people (resume never reads them).
        let metadata = HashMap::from([(STATE_KEY.to_string(), state_json.clone())]);
        save_tensors(&dir.join("checkpoint.safetensors"), &tensors, Some(metadata))?;
        write_atomic(&dir.join("state.json"), state_json.as_bytes())?;
        write_atomic(&dir.join("epochs.csv"), epochs_csv(&self.history).as_bytes())
    }

    /// Restores the state of `dir/checkpoint.safetensors`; returns false when there is none yet (a run
    /// interrupted before its first epoch ended starts from the beginning).
    fn load_checkpoint(&mut self, dir: &Path) -> Result<bool, CliError> {
        let ckpt = dir.join("checkpoint.safetensors");
        let bytes = match std::fs::read(&ckpt) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&ckpt, e)),
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| io_err(&ckpt, e))?;
        let text = meta.metadata().as_ref().and_then(|m| m.get(STATE_KEY)).ok_or_else(|| {
            io_err(
                &ckpt,
                format!("no training state ({STATE_KEY}) in the metadata: not a checkpoint of lsmooth train"),
            )
        })?;
        let state: State = serde_json::from_str(text).map_err(|e| io_err(&ckpt, format!("its training state: {e}")))?;
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| io_err(&ckpt, e))?;
        let saved_epochs = tensors
            .get("meta.epochs_done")
            .and_then(|t| t.to_vec1::<u32>().ok())
            .and_then(|v| v.first().copied());
        if saved_epochs != Some(state.epochs_done as u32) || state.history.len() != state.epochs_done {
            return Err(io_err(
                &ckpt,
                format!(
                    "holds epoch {saved_epochs:?}, its state says {} ({} epochs of history): a damaged checkpoint",
                    state.epochs_done,
                    state.history.len()
                ),
            ));
        }
        self.model
            .load(|name| tensors.remove(&format!("param.{name}")))
            .map_err(|e| io_err(&ckpt, e))?;
        let names: Vec<Vec<String>> = self
            .model
            .params()
            .iter()
            .map(|(n, _)| self.optimizer.state_names(n))
            .collect();
        for (snames, state_tensors) in names.into_iter().zip(&mut self.optimizer.state) {
            for (sname, slot) in snames.into_iter().zip(state_tensors.iter_mut()) {
                let t = tensors
                    .remove(&sname)
                    .ok_or_else(|| io_err(&ckpt, format!("no tensor {sname}")))?;
                if t.dims() != slot.dims() {
                    return Err(io_err(
                        &ckpt,
                        format!("{sname}: shape {:?}, expected {:?}", t.dims(), slot.dims()),
                    ));
                }
                *slot = t;
            }
        }
        if let Some(ols) = &mut self.ols {
            let mut get = |name: &str| -> Result<Vec<f64>, CliError> {
                tensors
                    .remove(name)
                    .and_then(|t| t.flatten_all().ok())
                    .and_then(|t| t.to_vec1::<f64>().ok())
                    .ok_or_else(|| io_err(&ckpt, format!("no f64 tensor {name} (online label smoothing state)")))
            };
            let mut st = ols.state().clone();
            st.matrix = get("ols.matrix")?;
            st.sums = get("ols.sums")?;
            st.counts = get("ols.counts")?.iter().map(|&c| c as u64).collect();
            *ols = OnlineLabelSmoothing::from_state(st).map_err(|e| io_err(&ckpt, e.to_string()))?;
        }
        self.optimizer.step = state.step;
        self.history = state.history;
        Ok(true)
    }
}

fn progress_bar(batches: u64, verbosity: Verbosity, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if verbosity == Verbosity::Quiet {
        return indicatif::ProgressBar::hidden();
    }
    // Drawn only when stderr is a terminal; hidden otherwise.
    let bar = indicatif::ProgressBar::with_draw_target(Some(batches), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} batches")
            .expect("valid template")
            .progress_chars("=> "),
    );
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
    // The run directory is the run's own: temporary files there are from writes a crash interrupted.
    atomic::remove_stale_temporaries(out_dir);
    if resume {
        run.load_checkpoint(out_dir)?;
    }
    write_atomic(
        &out_dir.join("run.json"),
        serde_json::to_string_pretty(config).expect("serialisable").as_bytes(),
    )?;
    let batches = run.data.train.len().div_ceil(config.batch_size) as u64;
    let say = |out: &mut dyn Write, line: String| -> Result<(), CliError> {
        if verbosity == Verbosity::Epochs {
            writeln!(out, "{line}").map_err(|e| CliError::Train(format!("writing the report: {e}")))?;
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
            CliError::Train(m) => CliError::Train(format!(
                "{m}; the last good checkpoint (after epoch {}) is in {}; lower --lr, or continue with --resume",
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

fn finish(run: Run, out_dir: &Path) -> Result<Outcome, CliError> {
    let (pixels, k) = (run.pixels(), run.data.classes);
    let val = logits_of(&run.model, &run.data.validation, pixels)?;
    let val_labels: Vec<i64> = run.data.validation.labels.iter().map(|&y| y as i64).collect();
    let temperature = fit_temperature(&val, &val_labels, k).map_err(|e| CliError::Train(e.to_string()))?;
    let test = logits_of(&run.model, &run.data.test, pixels)?;
    let test_report = report(&test, &run.data.test.labels, k, 1.0)?;
    let test_report_scaled = report(&test, &run.data.test.labels, k, temperature)?;
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

/// Reads the configuration of an existing run directory (`run.json`).
pub fn read_config(dir: &Path) -> Result<TrainConfig, CliError> {
    let path: PathBuf = dir.join("run.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(&path, e))
}
