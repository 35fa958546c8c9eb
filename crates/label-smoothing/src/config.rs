//! The loss configuration: spread, smoothing, weights, ignore index, reduction, and the presets.

use crate::error::{LossError, Result};
use std::fmt;
use std::str::FromStr;

/// How the smoothing mass `e` is spread over the classes (SPEC.md, "The loss family").
///
/// | spread | target for hard label `y` | used by |
/// |---|---|---|
/// | [`Spread::Others`] | `1-e` at `y`, `e/(K-1)` elsewhere | fast-reid, the seed, Megatron/NeMo |
/// | [`Spread::Uniform`] | `(1-e)[c=y] + e/K` | PyTorch `label_smoothing`, Keras, timm |
///
/// The two agree when `e_uniform = e_others * K / (K-1)`; see [`Spread::convert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Spread {
    /// `1-e` on the label, `e/(K-1)` on every other class (the default).
    #[default]
    Others,
    /// PyTorch's convention: `1-e` on the label plus `e/K` on every class.
    Uniform,
}

impl Spread {
    /// The name used on the command line and in JSON: `others` or `uniform`.
    pub fn name(self) -> &'static str {
        match self {
            Spread::Others => "others",
            Spread::Uniform => "uniform",
        }
    }

    /// Converts a smoothing `eps` given in spread `self` to the `eps` that gives the same targets in `to`,
    /// for `k` classes: `others -> uniform` multiplies by `K/(K-1)`, `uniform -> others` by `(K-1)/K`.
    ///
    /// ```
    /// use label_smoothing::Spread;
    /// let e = Spread::Uniform.convert(0.1, Spread::Others, 10);
    /// assert!((e - 0.09).abs() < 1e-12);
    /// ```
    pub fn convert(self, eps: f64, to: Spread, k: usize) -> f64 {
        let k = k as f64;
        match (self, to) {
            (Spread::Others, Spread::Uniform) => eps * k / (k - 1.0),
            (Spread::Uniform, Spread::Others) => eps * (k - 1.0) / k,
            _ => eps,
        }
    }

    /// `(off, on)`: the target mass of every class other than the label, and of the label, for smoothing `e`.
    pub(crate) fn hard_target(self, e: f64, k: usize) -> (f64, f64) {
        let k = k as f64;
        match self {
            Spread::Others => (e / (k - 1.0), 1.0 - e),
            Spread::Uniform => (e / k, 1.0 - e + e / k),
        }
    }

    /// `(scale, offset)` such that the smoothed soft target is `scale * t + offset`.
    pub(crate) fn soft_target(self, e: f64, k: usize) -> (f64, f64) {
        let k = k as f64;
        match self {
            // (1-e) t + e (1-t)/(K-1) = (1 - e - e/(K-1)) t + e/(K-1)
            Spread::Others => (1.0 - e - e / (k - 1.0), e / (k - 1.0)),
            Spread::Uniform => (1.0 - e, e / k),
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Spread {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "others" => Ok(Spread::Others),
            "uniform" => Ok(Spread::Uniform),
            _ => Err(format!("unknown spread `{s}`; expected `others` or `uniform`")),
        }
    }
}

/// How much mass is moved off the label.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Smoothing {
    /// A fixed `eps` in `[0, 1]` for every row.
    Fixed(f32),
    /// fast-reid's adaptive smoothing: `e_i = alpha * p_i[y_i]`, computed from the current logits and held
    /// constant for the gradient. `alpha` in `[0, 1]`; hard labels only.
    Adaptive {
        /// The factor applied to the probability of the label.
        alpha: f32,
    },
}

impl Smoothing {
    /// The smoothing if its `eps` or `alpha` is in `[0, 1]`: [`LossError::InvalidSmoothing`] /
    /// [`LossError::InvalidAlpha`] otherwise (NaN included). [`LabelSmoothingConfig::init`] runs this check.
    ///
    /// ```
    /// use label_smoothing::{LossError, Smoothing};
    /// assert!(Smoothing::Fixed(0.1).validate().is_ok());
    /// assert!(matches!(Smoothing::Adaptive { alpha: 1.5 }.validate(), Err(LossError::InvalidAlpha { .. })));
    /// ```
    pub fn validate(self) -> Result<Self> {
        match self {
            Smoothing::Fixed(eps) if !(0.0..=1.0).contains(&eps) => {
                Err(LossError::InvalidSmoothing { eps: eps as f64 })
            }
            Smoothing::Adaptive { alpha } if !(0.0..=1.0).contains(&alpha) => {
                Err(LossError::InvalidAlpha { alpha: alpha as f64 })
            }
            s => Ok(s),
        }
    }
}

impl Default for Smoothing {
    fn default() -> Self {
        Smoothing::Fixed(0.0)
    }
}

/// How per-row losses are combined (SPEC.md, "Reductions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Reduction {
    /// The per-row losses, one per row (ignored rows are 0).
    None,
    /// Their sum.
    Sum,
    /// Their mean: over the rows not ignored, or over `sum w[y_i]` with class weights (PyTorch's rule);
    /// over all `N` rows for soft targets. A mean over no rows is 0.
    #[default]
    Mean,
    /// fast-reid's mean over the rows whose loss is non-zero: `sum l_i / max(#{l_i != 0}, 1)`.
    #[cfg_attr(feature = "serde", serde(rename = "mean-nonzero", alias = "mean_nonzero"))]
    MeanNonZero,
}

impl Reduction {
    /// The name used on the command line and in JSON: `none`, `sum`, `mean`, `mean-nonzero`.
    pub fn name(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
            Reduction::MeanNonZero => "mean-nonzero",
        }
    }
}

impl fmt::Display for Reduction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Reduction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Reduction::None),
            "sum" => Ok(Reduction::Sum),
            "mean" => Ok(Reduction::Mean),
            "mean-nonzero" | "mean_nonzero" => Ok(Reduction::MeanNonZero),
            _ => Err(format!(
                "unknown reduction `{s}`; expected `none`, `sum`, `mean` or `mean-nonzero`"
            )),
        }
    }
}

/// Configuration of the label-smoothed cross-entropy; [`init`](Self::init) validates it for a number of
/// classes and returns the loss.
///
/// The default is plain cross-entropy: spread [`Spread::Others`], `eps = 0`, no weights, no ignore
/// index, reduction [`Reduction::Mean`].
///
/// ```
/// use label_smoothing::{LabelSmoothingConfig, Reduction, Spread};
/// let loss = LabelSmoothingConfig::new()
///     .with_smoothing(0.1)
///     .with_spread(Spread::Uniform)
///     .with_ignore_index(Some(-100))
///     .with_reduction(Reduction::Sum)
///     .init(1000)?;
/// assert_eq!(loss.num_classes(), 1000);
/// # Ok::<(), label_smoothing::LossError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LabelSmoothingConfig {
    /// How the smoothing mass is spread: `others` (`e/(K-1)`, default) or `uniform` (`e/K`, PyTorch).
    pub spread: Spread,
    /// Fixed `eps` (default 0) or adaptive `alpha * p(label)`.
    pub smoothing: Smoothing,
    /// How per-row losses are combined (default: mean).
    pub reduction: Reduction,
    /// Hard labels equal to this value are ignored: loss 0, zero gradient, not counted by the mean.
    pub ignore_index: Option<i64>,
    /// Per-class weights `w` (length `K`, finite, non-negative); `None` means all ones.
    pub weights: Option<Vec<f32>>,
    /// The z-loss scale `s >= 0` (PaLM; Liger-Kernel's `lse_square_scale`): `s * lse_i^2` is added to the loss
    /// of every row not ignored, `lse_i` the log-sum-exp of its (capped) logits. 0 (the default) turns it off.
    /// SPEC.md, "z-loss", says how it is reduced.
    #[cfg_attr(feature = "serde", serde(default))]
    pub z_loss: f32,
    /// Logit soft-capping (Gemma 2; Liger-Kernel's and Cut Cross-Entropy's `softcap`): the logits are replaced
    /// by `cap * tanh(z / cap)` before everything else, the gradient taken through it. `None` (the default): no
    /// cap.
    #[cfg_attr(feature = "serde", serde(default))]
    pub softcap: Option<f32>,
}

impl LabelSmoothingConfig {
    /// The default configuration (no smoothing, spread `others`, mean).
    pub fn new() -> Self {
        Self::default()
    }

    /// fast-reid's `cross_entropy_loss(pred, gt, eps, alpha)`: spread `others`, fixed `eps` when `eps >= 0`,
    /// adaptive smoothing `alpha * p(label)` when `eps < 0`, reduction `mean-nonzero`.
    ///
    /// ```
    /// use label_smoothing::{LabelSmoothingConfig, Smoothing};
    /// assert_eq!(LabelSmoothingConfig::fast_reid(-1.0, 0.2).smoothing, Smoothing::Adaptive { alpha: 0.2 });
    /// assert_eq!(LabelSmoothingConfig::fast_reid(0.1, 0.2).smoothing, Smoothing::Fixed(0.1));
    /// ```
    pub fn fast_reid(eps: f32, alpha: f32) -> Self {
        let smoothing = if eps >= 0.0 {
            Smoothing::Fixed(eps)
        } else {
            Smoothing::Adaptive { alpha }
        };
        Self {
            spread: Spread::Others,
            smoothing,
            reduction: Reduction::MeanNonZero,
            ignore_index: None,
            weights: None,
            z_loss: 0.0,
            softcap: None,
        }
    }

    /// PyTorch's `F.cross_entropy(x, y, label_smoothing=eps)` with its defaults: spread `uniform`,
    /// ignore index `-100`, reduction `mean`. Chain [`with_weights`](Self::with_weights),
    /// [`with_reduction`](Self::with_reduction), [`with_ignore_index`](Self::with_ignore_index) for the rest.
    pub fn pytorch(label_smoothing: f32) -> Self {
        Self {
            spread: Spread::Uniform,
            smoothing: Smoothing::Fixed(label_smoothing),
            reduction: Reduction::Mean,
            ignore_index: Some(-100),
            weights: None,
            z_loss: 0.0,
            softcap: None,
        }
    }

    /// Sets the spread.
    pub fn with_spread(mut self, spread: Spread) -> Self {
        self.spread = spread;
        self
    }

    /// Sets a fixed smoothing `eps` (validated by [`init`](Self::init): `0 <= eps <= 1`).
    pub fn with_smoothing(mut self, eps: f32) -> Self {
        self.smoothing = Smoothing::Fixed(eps);
        self
    }

    /// Sets adaptive smoothing `e_i = alpha * p_i[y_i]` (validated by [`init`](Self::init): `0 <= alpha <= 1`).
    pub fn with_adaptive(mut self, alpha: f32) -> Self {
        self.smoothing = Smoothing::Adaptive { alpha };
        self
    }

    /// Sets the reduction.
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Sets (or clears) the ignore index.
    pub fn with_ignore_index(mut self, ignore_index: Option<i64>) -> Self {
        self.ignore_index = ignore_index;
        self
    }

    /// Sets (or clears) the class weights (length `K`).
    pub fn with_weights(mut self, weights: Option<Vec<f32>>) -> Self {
        self.weights = weights;
        self
    }

    /// Sets the z-loss scale `s` (validated by [`init`](Self::init): finite, `s >= 0`; 0 turns it off):
    /// `s * lse_i^2` is added to each row's loss.
    ///
    /// ```
    /// use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
    /// // Liger-Kernel: LigerCrossEntropyLoss(lse_square_scale=1e-4)
    /// let loss_fn = LabelSmoothingConfig::pytorch(0.0).with_z_loss(1e-4).init(3)?;
    /// let out = loss_fn.report(&[1.0f32, 2.0, 0.5], Targets::Labels(&[1]), false)?;
    /// let lse = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln();
    /// assert!((out.z_loss.scalar().unwrap() as f64 - 1e-4 * lse * lse).abs() < 1e-9);
    /// # Ok::<(), label_smoothing::LossError>(())
    /// ```
    pub fn with_z_loss(mut self, scale: f32) -> Self {
        self.z_loss = scale;
        self
    }

    /// Sets logit soft-capping at `cap` (validated by [`init`](Self::init): finite, `cap > 0`): the loss sees
    /// `cap * tanh(z / cap)`.
    pub fn with_softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }

    /// Whether the z-loss, the soft-capping or both are configured (the options the few-classes kernel leaves to
    /// the row kernel).
    pub(crate) fn has_logit_options(&self) -> bool {
        self.z_loss != 0.0 || self.softcap.is_some()
    }

    /// Checks the configuration for `num_classes` classes (the checks of [`init`](Self::init)).
    pub(crate) fn check(&self, num_classes: usize) -> Result<()> {
        if num_classes < 2 {
            return Err(LossError::TooFewClasses { k: num_classes });
        }
        self.smoothing.validate()?;
        if !(self.z_loss.is_finite() && self.z_loss >= 0.0) {
            return Err(LossError::InvalidParameter {
                name: "z_loss",
                value: self.z_loss as f64,
                expected: "[0, inf) (a finite scale)",
            });
        }
        if let Some(cap) = self.softcap {
            if !(cap.is_finite() && cap > 0.0) {
                return Err(LossError::InvalidParameter {
                    name: "softcap",
                    value: cap as f64,
                    expected: "(0, inf) (a finite cap)",
                });
            }
        }
        if let Some(w) = &self.weights {
            if w.len() != num_classes {
                return Err(LossError::Length {
                    what: "weights",
                    expected: format!("{num_classes} (one per class)"),
                    got: w.len(),
                });
            }
            if let Some((class, &value)) = w.iter().enumerate().find(|(_, v)| !(v.is_finite() && **v >= 0.0)) {
                return Err(LossError::InvalidWeight {
                    class,
                    value: value as f64,
                });
            }
        }
        Ok(())
    }
}

/// The smoothed target distribution of one hard label, computed in f64.
///
/// `num_classes` classes, `label` in `[0, K)`, smoothing `eps` in `[0, 1]`.
///
/// ```
/// use label_smoothing::{target_distribution, Spread};
/// let t = target_distribution(6, 0, 0.1, Spread::Others)?;
/// assert_eq!(t, vec![0.9, 0.02, 0.02, 0.02, 0.02, 0.02]);
/// # Ok::<(), label_smoothing::LossError>(())
/// ```
pub fn target_distribution(num_classes: usize, label: usize, eps: f64, spread: Spread) -> Result<Vec<f64>> {
    if num_classes < 2 {
        return Err(LossError::TooFewClasses { k: num_classes });
    }
    if !(0.0..=1.0).contains(&eps) {
        return Err(LossError::InvalidSmoothing { eps });
    }
    if label >= num_classes {
        return Err(LossError::LabelOutOfRange {
            row: 0,
            label: label as i64,
            k: num_classes,
            ignore_index: None,
        });
    }
    let (off, on) = spread.hard_target(eps, num_classes);
    let mut t = vec![off; num_classes];
    t[label] = on;
    Ok(t)
}
