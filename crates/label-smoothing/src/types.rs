//! The values a loss call takes and returns: targets, the upstream gradient, the loss.

/// The targets of a batch of `N` rows.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// One hard label per row, `[N]`: a class in `[0, K)` or the configured ignore index.
    Labels(&'a [i64]),
    /// One probability row per row, `[N, K]` row-major: entries non-negative, each row summing to 1 (within
    /// `1e-4`). Smoothed by the configured spread like a hard label's one-hot row.
    Soft(&'a [f32]),
}

impl<'a> From<&'a [i64]> for Targets<'a> {
    fn from(labels: &'a [i64]) -> Self {
        Targets::Labels(labels)
    }
}

impl<'a> From<&'a Vec<i64>> for Targets<'a> {
    fn from(labels: &'a Vec<i64>) -> Self {
        Targets::Labels(labels)
    }
}

/// The upstream gradient `dOut/dLoss` by which the gradient is multiplied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradOutput<'a> {
    /// One scalar for every row (for reduction `none` it is broadcast to every row).
    Scalar(f32),
    /// One value per row, `[N]`; only with reduction `none`.
    PerRow(&'a [f32]),
}

impl GradOutput<'_> {
    /// The upstream gradient of a loss that is the final objective: `1`.
    pub const ONE: GradOutput<'static> = GradOutput::Scalar(1.0);
}

impl Default for GradOutput<'_> {
    fn default() -> Self {
        GradOutput::ONE
    }
}

/// The value of the loss: a scalar, or one value per row for reduction `none`. With the `serde` feature it
/// serialises as the number or the array itself, a non-finite value as the `json_float` module writes it.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(untagged))]
pub enum Loss {
    /// The reduced loss (`sum`, `mean`, `mean-nonzero`).
    Scalar(#[cfg_attr(feature = "serde", serde(with = "crate::json_float"))] f32),
    /// The per-row losses (`none`); ignored rows are 0.
    PerRow(#[cfg_attr(feature = "serde", serde(with = "crate::json_float"))] Vec<f32>),
}

impl Loss {
    /// The scalar, or `None` for per-row losses.
    pub fn scalar(&self) -> Option<f32> {
        match self {
            Loss::Scalar(v) => Some(*v),
            Loss::PerRow(_) => None,
        }
    }

    /// The values as a slice (one value for a scalar).
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Loss::Scalar(v) => std::slice::from_ref(v),
            Loss::PerRow(v) => v,
        }
    }
}

/// Everything a loss call computes besides the gradient ([`LabelSmoothingLoss::report`](crate::LabelSmoothingLoss::report)
/// and its `_and_grad` variants): the loss, its z-loss term, and on request the predicted class of every row and
/// the token accuracy.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LossReport {
    /// The loss, the z-loss term included: what [`LabelSmoothingLoss::loss`](crate::LabelSmoothingLoss::loss) returns.
    pub loss: Loss,
    /// The z-loss term alone (Liger-Kernel's `return_z_loss`), reduced as SPEC.md, "z-loss", says: a scalar, or
    /// one value per row for reduction `none`. Zero without z-loss.
    pub z_loss: Loss,
    /// Per row, the class of its largest logit (the first of equal ones; a NaN counts as the largest), `-1` for
    /// an ignored row; when asked for (Liger-Kernel's `return_predicted_tokens`).
    pub predicted: Option<Vec<i64>>,
    /// The share of hard-label rows not ignored whose predicted class is the label (Liger-Kernel's
    /// `return_token_accuracy`); when predictions were asked for and the targets are hard labels.
    pub accuracy: Option<TokenAccuracy>,
}

/// How many counted rows (hard labels, not ignored) predicted their label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TokenAccuracy {
    /// Rows whose predicted class is their label.
    pub correct: usize,
    /// Rows counted: hard labels that are not the ignore index.
    pub counted: usize,
}

impl TokenAccuracy {
    /// `correct / counted`, and 0 when no row is counted (a NaN would poison a running mean).
    pub fn value(&self) -> f64 {
        if self.counted == 0 {
            0.0
        } else {
            self.correct as f64 / self.counted as f64
        }
    }
}
