//! The core's typed errors as Python exceptions that name the argument of the Python call.

use label_smoothing::LossError;
use pyo3::exceptions::PyValueError;
use pyo3::PyErr;

/// The Python argument a [`LossError`] is about (the names of `F.cross_entropy`).
fn argument(e: &LossError) -> &'static str {
    match e {
        LossError::LabelOutOfRange { .. }
        | LossError::SoftTargetEntry { .. }
        | LossError::SoftTargetSum { .. }
        | LossError::AdaptiveWithSoftTargets => "target",
        LossError::InvalidWeight { .. } => "weight",
        LossError::InvalidSmoothing { .. } => "label_smoothing",
        LossError::InvalidAlpha { .. } => "adaptive",
        LossError::TooFewClasses { .. } => "input",
        LossError::GradOutputShape { .. } => "grad_output",
        LossError::Length { what, .. } => match *what {
            "logits" => "input",
            "labels" | "soft targets" => "target",
            "weights" => "weight",
            other => other,
        },
        LossError::InvalidParameter { name, .. } => name,
        _ => "arguments",
    }
}

/// A `ValueError` whose message starts with the argument's name.
pub fn value_error(e: LossError) -> PyErr {
    let message = match &e {
        // The core's message also names its Rust and CLI spellings; the Python one is `adaptive=alpha`.
        LossError::InvalidSmoothing { eps } => {
            format!("label_smoothing = {eps} is outside [0, 1]; for fast-reid's adaptive smoothing use adaptive=alpha")
        }
        other => format!("{}: {other}", argument(other)),
    };
    PyValueError::new_err(message)
}
