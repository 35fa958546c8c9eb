//! Label-smoothed cross-entropy for [burn](https://burn.dev), the whole family of the `label-smoothing` crate:
//! both spreads (`others`: `e/(K-1)`, fast-reid; `uniform`: `e/K`, PyTorch), fixed or adaptive smoothing (the
//! adaptive term detached from the graph), class weights with PyTorch's mean, an ignore index whose rows are left
//! out of the mean's denominator, soft targets, and the reductions `none`, `sum`, `mean`, `mean-nonzero`.
//!
//! On burn's CPU backends (Flex and NdArray, f32) the loss runs the core's fused kernel as a custom autodiff
//! operation; on every other backend it is a composition of burn tensor operations, which backpropagates through
//! burn's autodiff. Configuration mistakes and bad inputs (a label out of range, mismatched shapes) are a
//! [`LossError`], never a panic.
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use label_smoothing_burn::LabelSmoothingCrossEntropyConfig;
//!
//! let device = Device::default();
//! let logits = Tensor::<2>::from_floats([[2.0, 0.5, -1.0, 0.0, 1.0, -0.5]], &device);
//! let labels = Tensor::<1, Int>::from_ints([0], &device);
//!
//! // fast-reid's cross_entropy_loss(pred, gt, eps=0.1, alpha=0.2)
//! let loss_fn = LabelSmoothingCrossEntropyConfig::fast_reid(0.1, 0.2).init(6, &device)?;
//! let loss: f32 = loss_fn.forward(logits, labels)?.into_scalar();
//! assert!((loss - 0.8196174).abs() < 1e-5);
//! # Ok::<(), label_smoothing_burn::LossError>(())
//! ```
#![warn(missing_docs)]

/// This crate's README, whose examples run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod fused;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
pub use label_smoothing::{LabelSmoothingConfig, LossError, Reduction, Smoothing, Spread};

/// Configuration of [`LabelSmoothingCrossEntropy`]: a burn [`Config`] (serde, so it can sit inside a training
/// configuration that is saved and loaded), holding the core crate's [`LabelSmoothingConfig`] with every option of
/// the loss, with `with_*` builders for each option and an [`init`](Self::init) that validates it for a device.
///
/// The default (`new()`) is cross-entropy with no smoothing, spread `others`, reduction `mean`, no weights, no
/// ignore index.
///
/// ```
/// use burn::config::Config;
/// use label_smoothing_burn::{LabelSmoothingCrossEntropyConfig, Spread};
///
/// let config = LabelSmoothingCrossEntropyConfig::new().with_smoothing(0.1).with_spread(Spread::Uniform);
/// let json = burn::config::config_to_json(&config);
/// let back = LabelSmoothingCrossEntropyConfig::load_binary(json.as_bytes()).unwrap();
/// assert_eq!(back, config);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct LabelSmoothingCrossEntropyConfig {
    /// The loss: spread, smoothing (fixed or adaptive), reduction, ignore index, class weights. Rows whose label
    /// equals the ignore index are left out of the mean's denominator (unlike burn's own `CrossEntropyLoss`,
    /// which zeroes padded rows but still divides by the whole batch).
    #[config(default = "LabelSmoothingConfig::new()")]
    pub loss: LabelSmoothingConfig,
}

impl Default for LabelSmoothingCrossEntropyConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Builders that set one option of the core configuration, documented there.
macro_rules! builders {
    ($($name:ident($arg:ident: $t:ty)),* $(,)?) => {$(
        #[doc = concat!("[`LabelSmoothingConfig::", stringify!($name), "`].")]
        pub fn $name(self, $arg: $t) -> Self {
            Self { loss: self.loss.$name($arg) }
        }
    )*};
}

impl LabelSmoothingCrossEntropyConfig {
    /// fast-reid's `cross_entropy_loss(pred, gt, eps, alpha)`: spread `others`, fixed `eps` when `eps >= 0`,
    /// adaptive `alpha * p(label)` when `eps < 0`, reduction `mean-nonzero`.
    pub fn fast_reid(eps: f32, alpha: f32) -> Self {
        Self::from(LabelSmoothingConfig::fast_reid(eps, alpha))
    }

    /// PyTorch's `F.cross_entropy(..., label_smoothing=eps)`: spread `uniform`, ignore index `-100`, mean.
    pub fn pytorch(label_smoothing: f32) -> Self {
        Self::from(LabelSmoothingConfig::pytorch(label_smoothing))
    }

    builders!(
        with_spread(spread: Spread),
        with_smoothing(eps: f32),
        with_adaptive(alpha: f32),
        with_reduction(reduction: Reduction),
        with_ignore_index(ignore_index: Option<i64>),
        with_weights(weights: Option<Vec<f32>>),
        with_z_loss(scale: f32),
        with_softcap(cap: f32),
    );

    /// Validates the configuration for `num_classes` classes (the core crate's [`LabelSmoothingConfig::init`])
    /// and builds the loss on `device`.
    pub fn init(&self, num_classes: usize, device: &Device) -> Result<LabelSmoothingCrossEntropy, LossError> {
        let core = self.loss.clone().init(num_classes)?;
        Ok(LabelSmoothingCrossEntropy {
            config: self.clone(),
            core,
            k: num_classes,
            weights: self
                .loss
                .weights
                .as_ref()
                .map(|w| Tensor::<1>::from_floats(w.as_slice(), device).reshape([1, num_classes])),
        })
    }
}

impl From<LabelSmoothingConfig> for LabelSmoothingCrossEntropyConfig {
    fn from(loss: LabelSmoothingConfig) -> Self {
        Self { loss }
    }
}

/// The label-smoothed cross-entropy on burn tensors; build it with [`LabelSmoothingCrossEntropyConfig::init`].
///
/// A burn [`Module`], like burn's own losses, so a model can hold it as a field; its
/// configuration is skipped (not a parameter), the class weights are a constant tensor.
#[derive(Module, Debug)]
pub struct LabelSmoothingCrossEntropy {
    #[module(skip)]
    config: LabelSmoothingCrossEntropyConfig,
    /// The core crate's loss of the same configuration: its validation of the labels.
    #[module(skip)]
    core: label_smoothing::LabelSmoothingLoss,
    #[module(skip)]
    k: usize,
    /// The class weights as a `[1, K]` row.
    weights: Option<Tensor<2>>,
}

/// Frees the gradient buffer the fused path keeps between calls.
///
/// On Flex and NdArray with autodiff, a tracked call writes the logits' gradient into the buffer of the previous call of the
/// same shape once burn has let go of it, rather than into new memory (whose page faults cost more than the kernel
/// at large shapes). That keeps one `[N, K]` f32 buffer alive between steps; call this to free it, for example
/// before evaluation at another shape.
pub fn empty_gradient_cache() {
    fused::empty_gradient_cache()
}

/// Per-row target mass off the label and on it, for smoothing `e` (a scalar or a `[N, 1]` column).
fn hard_target_masses(spread: Spread, e: Tensor<2>, k: usize) -> (Tensor<2>, Tensor<2>) {
    let kf = k as f32;
    match spread {
        Spread::Others => (e.clone().div_scalar(kf - 1.0), e.neg().add_scalar(1.0)),
        Spread::Uniform => (
            e.clone().div_scalar(kf),
            e.clone().neg().add_scalar(1.0) + e.div_scalar(kf),
        ),
    }
}

impl LabelSmoothingCrossEntropy {
    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.k
    }

    /// The configuration.
    pub fn config(&self) -> &LabelSmoothingCrossEntropyConfig {
        &self.config
    }

    /// Whether [`forward`](Self::forward) and [`forward_soft`](Self::forward_soft) run the core's fused kernel on
    /// these logits: f32 tensors of burn's CPU backends Flex and NdArray, with burn's default autodiff (no gradient
    /// checkpointing) or without autodiff. Other backends and element types take the composition.
    pub fn uses_fused_kernel(&self, logits: &Tensor<2>) -> bool {
        fused::supports(logits)
    }

    fn check_logits(&self, logits: &Tensor<2>) -> Result<usize, LossError> {
        let [n, k] = logits.dims();
        if k != self.k {
            return Err(LossError::Length {
                what: "logits",
                expected: format!("[N, {}] (K = {} classes)", self.k, self.k),
                got: k,
            });
        }
        Ok(n)
    }

    /// The loss for hard labels.
    ///
    /// - `logits`: `[N, K]` float;
    /// - `targets`: `[N]` int, each in `[0, K)` or the ignore index (read back to check: a device sync on GPUs).
    ///
    /// Returns `[1]` for `sum`, `mean`, `mean-nonzero`, and `[N]` for `none`.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Result<Tensor<1>, LossError> {
        let labels = self.check_labels(&logits, &targets)?;
        if let Some(out) = fused::try_forward(&self.core, &logits, label_smoothing::Targets::Labels(&labels)) {
            return out;
        }
        self.composed(logits, labels)
    }

    /// As [`forward`](Self::forward), always composed of burn operations, on any backend (the fused kernel is
    /// not used even on Flex or NdArray): for tests and comparisons.
    pub fn forward_composed(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Result<Tensor<1>, LossError> {
        let labels = self.check_labels(&logits, &targets)?;
        self.composed(logits, labels)
    }

    /// The labels on the host, checked against `[N, K]` logits and the configuration by the core crate: one per
    /// row, each in `[0, K)` or the ignore index (the first that is not is named by row).
    fn check_labels(&self, logits: &Tensor<2>, targets: &Tensor<1, Int>) -> Result<Vec<i64>, LossError> {
        let n = self.check_logits(logits)?;
        let [tn] = targets.dims();
        if tn != n {
            return Err(LossError::Length {
                what: "labels",
                expected: format!("{n} (one per row of [{n}, {}] logits)", self.k),
                got: tn,
            });
        }
        let labels: Vec<i64> = targets.to_data().iter::<i64>().collect();
        self.core
            .validate(n * self.k, label_smoothing::Targets::Labels(&labels))?;
        Ok(labels)
    }

    /// The composition for hard labels (checked, on the host).
    fn composed(&self, logits: Tensor<2>, labels: Vec<i64>) -> Result<Tensor<1>, LossError> {
        let [n, _] = logits.dims();
        let ignore = self.config.loss.ignore_index;
        let device = logits.device();
        let kept: Vec<f32> = labels
            .iter()
            .map(|&y| if Some(y) == ignore { 0.0 } else { 1.0 })
            .collect();
        let safe: Vec<i64> = labels.iter().map(|&y| if Some(y) == ignore { 0 } else { y }).collect();
        let kept = Tensor::<1>::from_floats(kept.as_slice(), &device).reshape([n, 1]);
        let safe = Tensor::<1, Int>::from_ints(safe.as_slice(), &device);
        let one_hot: Tensor<2> = safe.clone().one_hot::<2>(self.k).float();

        let logits = self.capped(logits);
        let log_p = log_softmax(logits.clone(), 1);
        let e: Tensor<2> = match self.config.loss.smoothing {
            Smoothing::Fixed(eps) => Tensor::<2>::ones([n, 1], &device).mul_scalar(eps),
            Smoothing::Adaptive { alpha } => {
                // alpha * p(label), held constant: no gradient flows through the smoothing.
                let p_y = log_p.clone().detach().gather(1, safe.clone().reshape([n, 1])).exp();
                p_y.mul_scalar(alpha)
            }
        };
        let (off, on) = hard_target_masses(self.config.loss.spread, e, self.k);
        let q = one_hot.clone() * (on - off.clone()) + off;
        let weighted = match &self.weights {
            Some(w) => q * w.clone(),
            None => q,
        };
        // Ignored rows: zero target, so zero loss and zero gradient.
        let per_row: Tensor<2> = (weighted * log_p).sum_dim(1).neg() * kept.clone();
        let per_row: Tensor<1> = per_row.reshape([n]);

        let denominator = || -> Tensor<1> {
            match &self.weights {
                // PyTorch's rule: the sum of the label weights over the rows not ignored.
                Some(w) => (one_hot.clone() * w.clone() * kept.clone()).sum(),
                None => kept.clone().sum(),
            }
        };
        if self.config.loss.z_loss == 0.0 {
            return Ok(self.reduce(per_row, denominator));
        }
        let z = self.z_rows(logits) * kept.clone();
        let rows = kept.clone().sum();
        Ok(self.reduce_with_z(per_row, z.reshape([n]), denominator, || rows))
    }

    /// The soft-capped logits `cap * tanh(z / cap)` (SPEC.md), or the logits without a cap.
    fn capped(&self, logits: Tensor<2>) -> Tensor<2> {
        match self.config.loss.softcap {
            Some(cap) => logits.div_scalar(cap).tanh().mul_scalar(cap),
            None => logits,
        }
    }

    /// `s * lse^2` per row `[N, 1]` of (capped) logits, the max held constant (its gradient cancels exactly).
    fn z_rows(&self, logits: Tensor<2>) -> Tensor<2> {
        let m = logits.clone().max_dim(1).detach();
        let lse = (logits - m.clone()).exp().sum_dim(1).log() + m;
        lse.powf_scalar(2.0).mul_scalar(self.config.loss.z_loss)
    }

    /// The reduction of the cross-entropy rows `per_row` plus the z-loss rows `z` (SPEC.md, "z-loss"): a mean
    /// divides the z-loss by the rows counted (`rows`), the cross-entropy by `denominator`; both are 0 when the
    /// latter is.
    fn reduce_with_z(
        &self,
        per_row: Tensor<1>,
        z: Tensor<1>,
        denominator: impl FnOnce() -> Tensor<1>,
        rows: impl FnOnce() -> Tensor<1>,
    ) -> Tensor<1> {
        if self.config.loss.reduction != Reduction::Mean {
            return self.reduce(per_row + z, denominator);
        }
        let d = denominator().detach();
        let on = d.clone().greater_elem(0.0).float();
        let ce = per_row.sum() / d.clamp_min(f32::MIN_POSITIVE);
        ce + z.sum() * on / rows().detach().clamp_min(1.0)
    }

    /// The loss for soft targets `[N, K]` (probability rows, read back to the host to check them), smoothed with
    /// the configured spread. Adaptive smoothing is an error here, as in the core crate.
    pub fn forward_soft(&self, logits: Tensor<2>, soft_targets: Tensor<2>) -> Result<Tensor<1>, LossError> {
        let host = self.check_soft(&logits, &soft_targets)?;
        if let Some(out) = fused::try_forward(&self.core, &logits, label_smoothing::Targets::Soft(&host)) {
            return out;
        }
        self.composed_soft(logits, soft_targets)
    }

    /// As [`forward_soft`](Self::forward_soft), always composed of burn operations.
    pub fn forward_soft_composed(&self, logits: Tensor<2>, soft_targets: Tensor<2>) -> Result<Tensor<1>, LossError> {
        self.check_soft(&logits, &soft_targets)?;
        self.composed_soft(logits, soft_targets)
    }

    /// The soft targets on the host, checked against `[N, K]` logits and the configuration by the core crate.
    fn check_soft(&self, logits: &Tensor<2>, soft_targets: &Tensor<2>) -> Result<Vec<f32>, LossError> {
        let n = self.check_logits(logits)?;
        if soft_targets.dims() != [n, self.k] {
            return Err(LossError::Length {
                what: "soft targets",
                expected: format!("[{n}, {}] like the logits", self.k),
                got: soft_targets.dims().iter().product(),
            });
        }
        let host: Vec<f32> = soft_targets.to_data().convert::<f32>().iter::<f32>().collect();
        self.core.validate(n * self.k, label_smoothing::Targets::Soft(&host))?;
        Ok(host)
    }

    /// The composition for soft targets (checked).
    fn composed_soft(&self, logits: Tensor<2>, soft_targets: Tensor<2>) -> Result<Tensor<1>, LossError> {
        let [n, _] = logits.dims();
        let eps = match self.config.loss.smoothing {
            Smoothing::Fixed(e) => e,
            Smoothing::Adaptive { .. } => return Err(LossError::AdaptiveWithSoftTargets),
        };
        let kf = self.k as f32;
        let q = match self.config.loss.spread {
            // (1-e) t + e (1-t)/(K-1)
            Spread::Others => soft_targets
                .clone()
                .mul_scalar(1.0 - eps)
                .add(soft_targets.neg().add_scalar(1.0).mul_scalar(eps / (kf - 1.0))),
            Spread::Uniform => soft_targets.mul_scalar(1.0 - eps).add_scalar(eps / kf),
        };
        let q = match &self.weights {
            Some(w) => q * w.clone(),
            None => q,
        };
        let logits = self.capped(logits);
        let per_row: Tensor<1> = (q * log_softmax(logits.clone(), 1)).sum_dim(1).neg().reshape([n]);
        let device = logits.device();
        let rows = || Tensor::<1>::from_floats([n as f32], &device);
        if self.config.loss.z_loss == 0.0 {
            return Ok(self.reduce(per_row, rows));
        }
        let z = self.z_rows(logits).reshape([n]);
        Ok(self.reduce_with_z(per_row, z, rows, rows))
    }

    fn reduce(&self, per_row: Tensor<1>, denominator: impl FnOnce() -> Tensor<1>) -> Tensor<1> {
        match self.config.loss.reduction {
            Reduction::None => per_row,
            Reduction::Sum => per_row.sum(),
            // A mean over nothing is 0 (PyTorch gives NaN): the numerator is 0 then, and the clamp keeps 0/0 away.
            Reduction::Mean => per_row.sum() / denominator().detach().clamp_min(f32::MIN_POSITIVE),
            Reduction::MeanNonZero => {
                // fast-reid: the count of non-zero rows is a constant for the gradient, at least 1.
                let count = per_row
                    .clone()
                    .detach()
                    .not_equal_elem(0.0)
                    .float()
                    .sum()
                    .clamp_min(1.0);
                per_row.sum() / count
            }
        }
    }
}
