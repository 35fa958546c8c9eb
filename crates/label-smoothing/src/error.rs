//! The typed error every fallible call of this crate returns.

use thiserror::Error;

/// What was wrong with the input of a loss call or a configuration.
///
/// Every variant names the culprit: the option and its value, the row and the label, the buffer and the
/// lengths that were expected and found. No call of this crate panics on bad input; it returns one of these.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum LossError {
    /// A parameter of one of the related losses (mixup, distillation, penalties) out of its range.
    #[error("{name} = {value} is outside {expected}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The accepted range.
        expected: &'static str,
    },
    /// A configuration option a related loss does not support (for instance class weights with mixup).
    #[error("{loss} does not support {option}")]
    Unsupported {
        /// The loss.
        loss: &'static str,
        /// The option.
        option: &'static str,
    },
    /// Fewer than two classes: smoothing needs somewhere to put the mass.
    #[error("num_classes must be at least 2, got {k}")]
    TooFewClasses {
        /// The number of classes given.
        k: usize,
    },
    /// A fixed smoothing outside `[0, 1]`.
    #[error(
        "smoothing eps = {eps} is outside [0, 1]; for fast-reid's adaptive smoothing (written there as eps < 0) \
         use adaptive smoothing with alpha instead (`LabelSmoothingConfig::with_adaptive`)"
    )]
    InvalidSmoothing {
        /// The value given.
        eps: f64,
    },
    /// An adaptive-smoothing factor outside `[0, 1]`.
    #[error("adaptive smoothing alpha = {alpha} is outside [0, 1]")]
    InvalidAlpha {
        /// The value given.
        alpha: f64,
    },
    /// A hard label that is neither in `[0, K)` nor the ignore index.
    #[error("label {label} at row {row} is out of range [0, {k}){ignore}", ignore = match .ignore_index {
        Some(i) => format!(" and is not the ignore index {i}"),
        None => String::new(),
    })]
    LabelOutOfRange {
        /// The row holding the label.
        row: usize,
        /// The label found there.
        label: i64,
        /// The number of classes.
        k: usize,
        /// The configured ignore index, if any.
        ignore_index: Option<i64>,
    },
    /// A buffer whose length does not fit the `[N, K]` problem.
    #[error("{what}: expected {expected} values, got {got}")]
    Length {
        /// Which buffer (`logits`, `labels`, `soft targets`, `weights`, `grad_output`, `grad`).
        what: &'static str,
        /// The length it must have.
        expected: String,
        /// The length it has.
        got: usize,
    },
    /// A class weight that is negative, NaN or infinite.
    #[error("class weight {value} for class {class} is not a finite non-negative number")]
    InvalidWeight {
        /// The class.
        class: usize,
        /// The weight found.
        value: f64,
    },
    /// A soft-target entry that is negative or not finite.
    #[error("soft target at row {row}, class {class} is {value}; entries must be finite and non-negative")]
    SoftTargetEntry {
        /// The row.
        row: usize,
        /// The class.
        class: usize,
        /// The value found.
        value: f64,
    },
    /// A soft-target row that does not sum to one (within `1e-4`).
    #[error("soft-target row {row} sums to {sum}, not 1 (tolerance 1e-4)")]
    SoftTargetSum {
        /// The row.
        row: usize,
        /// Its sum.
        sum: f64,
    },
    /// Adaptive smoothing asks for `p[label]`, which soft targets do not have.
    #[error("adaptive smoothing needs hard labels; it is not defined for soft targets")]
    AdaptiveWithSoftTargets,
    /// Class shards that do not tile `[0, K)` in order, or a shard that does not belong to its layout.
    #[error("bad class-shard layout: {reason}")]
    ShardLayout {
        /// What is wrong, naming the shard.
        reason: String,
    },
    /// A per-row upstream gradient given for a reduction that produces a scalar.
    #[error("a per-row grad_output ({got} values) needs reduction `none`; reduction `{reduction}` gives a scalar, so pass a scalar")]
    GradOutputShape {
        /// The reduction configured.
        reduction: &'static str,
        /// The length of the per-row gradient given.
        got: usize,
    },
}

/// `Result` with [`LossError`].
pub type Result<T, E = LossError> = std::result::Result<T, E>;
