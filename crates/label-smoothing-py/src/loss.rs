//! `cross_entropy`: the fused loss (and its gradient) on numpy arrays.

use crate::arrays::{readonly, slice, FloatArray, FloatArrayMut, Floats, FloatsMut};
use crate::errors::value_error;
use crate::threads::detached;
use label_smoothing::{
    GradOutput, LabelSmoothingConfig, LabelSmoothingLoss, Loss, LossError, LossReport, Reduction, Smoothing, Spread,
    Targets,
};
use numpy::{PyArray1, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// The configuration from the Python call's options (validated by `init`).
#[allow(clippy::too_many_arguments)] // One argument per option of the loss.
pub fn config(
    reduction: &str,
    smoothing: f32,
    spread: &str,
    adaptive: Option<f32>,
    weight: Option<PyReadonlyArrayDyn<'_, f32>>,
    ignore_index: Option<i64>,
    z_loss: f32,
    softcap: Option<f32>,
) -> PyResult<LabelSmoothingConfig> {
    let reduction: Reduction = reduction
        .parse()
        .map_err(|e: String| PyValueError::new_err(format!("reduction: {e}")))?;
    let spread: Spread = spread
        .parse()
        .map_err(|e: String| PyValueError::new_err(format!("spread: {e}")))?;
    let weights = match weight {
        Some(w) => Some(slice(&w, "weight")?.to_vec()),
        None => None,
    };
    Ok(LabelSmoothingConfig {
        spread,
        smoothing: match adaptive {
            Some(alpha) => Smoothing::Adaptive { alpha },
            None => Smoothing::Fixed(smoothing),
        },
        reduction,
        ignore_index,
        weights,
        z_loss,
        softcap,
    })
}

/// The targets: `int64` labels `[N]`, or `float32` probabilities `[N, K]` when `soft`.
pub enum TargetArray<'py> {
    /// Class indices.
    Labels(PyReadonlyArrayDyn<'py, i64>),
    /// Probability rows.
    Soft(PyReadonlyArrayDyn<'py, f32>),
}

impl<'py> TargetArray<'py> {
    fn extract(obj: &Bound<'py, PyAny>, soft: bool) -> PyResult<Self> {
        Ok(if soft {
            TargetArray::Soft(readonly(obj, "target", "float32")?)
        } else {
            TargetArray::Labels(readonly(obj, "target", "int64")?)
        })
    }

    fn targets(&self) -> PyResult<Targets<'_>> {
        Ok(match self {
            TargetArray::Labels(a) => Targets::Labels(slice(a, "target")?),
            TargetArray::Soft(a) => Targets::Soft(slice(a, "target")?),
        })
    }
}

/// The loss report (predictions when `predictions`), and the gradient into `grad` when given, for logits and
/// gradient of the same element type.
fn compute(
    loss_fn: &LabelSmoothingLoss,
    logits: Floats<'_>,
    targets: Targets<'_>,
    grad_output: GradOutput<'_>,
    grad: Option<FloatsMut<'_>>,
    predictions: bool,
) -> Result<Result<LossReport, LossError>, &'static str> {
    let p = predictions;
    Ok(match (logits, grad) {
        (Floats::F32(z), None) => loss_fn.report(z, targets, p),
        (Floats::F16(z), None) => loss_fn.report(z, targets, p),
        (Floats::Bf16(z), None) => loss_fn.report(z, targets, p),
        (Floats::F32(z), Some(FloatsMut::F32(g))) => loss_fn.report_and_grad(z, targets, grad_output, g, p),
        (Floats::F16(z), Some(FloatsMut::F16(g))) => loss_fn.report_and_grad(z, targets, grad_output, g, p),
        (Floats::Bf16(z), Some(FloatsMut::Bf16(g))) => loss_fn.report_and_grad(z, targets, grad_output, g, p),
        _ => return Err("grad: the gradient buffer must have the dtype of the input"),
    })
}

/// A float for a reduced loss, a `float32` array `[N]` for reduction `none`.
pub fn loss_to_python<'py>(py: Python<'py>, loss: Loss) -> PyResult<Bound<'py, PyAny>> {
    Ok(match loss {
        Loss::Scalar(v) => v.into_pyobject(py)?.into_any(),
        Loss::PerRow(v) => PyArray1::from_vec(py, v).into_any(),
    })
}

/// The label-smoothed cross-entropy of `input` (`[N, K]` logits, C-contiguous, of element type `dtype`), with
/// its gradient written into `grad` (same shape and type) when given. Returns a float, or a `float32` array
/// `[N]` for reduction `none`; with `report`, the tuple `(loss, z_loss, predicted, correct, counted)` (the z-loss
/// term like the loss; with `predictions`, the `int64` predicted classes `[N]` and the accuracy's counts, else
/// `None, 0, 0`). `grad_rows` (`[N]`, reduction `none` only) or `grad_scale` is the upstream gradient.
#[pyfunction]
#[pyo3(signature = (input, dtype, k, target, soft, *, weight=None, ignore_index=None, reduction="mean",
    smoothing=0.0, spread="uniform", adaptive=None, z_loss=0.0, softcap=None, grad=None, grad_scale=1.0,
    grad_rows=None, threads=0, report=false, predictions=false))]
#[allow(clippy::too_many_arguments)] // One argument per option of `F.cross_entropy`, called from Python by keyword.
pub fn cross_entropy<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    dtype: &str,
    k: usize,
    target: &Bound<'py, PyAny>,
    soft: bool,
    weight: Option<PyReadonlyArrayDyn<'py, f32>>,
    ignore_index: Option<i64>,
    reduction: &str,
    smoothing: f32,
    spread: &str,
    adaptive: Option<f32>,
    z_loss: f32,
    softcap: Option<f32>,
    grad: Option<&Bound<'py, PyAny>>,
    grad_scale: f32,
    grad_rows: Option<PyReadonlyArrayDyn<'py, f32>>,
    threads: usize,
    report: bool,
    predictions: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let loss_fn = config(
        reduction,
        smoothing,
        spread,
        adaptive,
        weight,
        ignore_index,
        z_loss,
        softcap,
    )?
    .init(k)
    .map_err(value_error)?;
    let logits = FloatArray::extract(input, dtype, "input")?;
    let targets = TargetArray::extract(target, soft)?;
    let mut grad = match grad {
        Some(g) => Some(FloatArrayMut::extract(g, dtype, "grad")?),
        None => None,
    };
    let z = logits.floats("input")?;
    let t = targets.targets()?;
    let g = match &mut grad {
        Some(g) => Some(g.floats_mut("grad")?),
        None => None,
    };
    let rows = match &grad_rows {
        Some(r) => Some(slice(r, "grad_output")?),
        None => None,
    };
    let grad_output = match rows {
        Some(r) => GradOutput::PerRow(r),
        None => GradOutput::Scalar(grad_scale),
    };
    let out = detached(py, threads, z.len(), || {
        compute(&loss_fn, z, t, grad_output, g, predictions)
    })?
    .map_err(PyTypeError::new_err)?
    .map_err(value_error)?;
    report_to_python(py, out, report)
}

/// A call's outputs for Python: the loss alone, or with `report` the tuple `(loss, z_loss, predicted, correct,
/// counted)` (`predicted` an `int64` array `[N]` when predictions were computed, else `None`, with counts 0).
pub fn report_to_python(py: Python<'_>, out: LossReport, report: bool) -> PyResult<Bound<'_, PyAny>> {
    if !report {
        return loss_to_python(py, out.loss);
    }
    let predicted = match out.predicted {
        Some(p) => PyArray1::from_vec(py, p).into_any(),
        None => py.None().into_bound(py),
    };
    let (correct, counted) = out.accuracy.map_or((0, 0), |a| (a.correct, a.counted));
    let items = [
        loss_to_python(py, out.loss)?,
        loss_to_python(py, out.z_loss)?,
        predicted,
        correct.into_pyobject(py)?.into_any(),
        counted.into_pyobject(py)?.into_any(),
    ];
    Ok(pyo3::types::PyTuple::new(py, items)?.into_any())
}
