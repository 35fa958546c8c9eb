//! `linear_cross_entropy`: the loss of `x W^T + b` through the core's fused linear loss, never holding the
//! `[N, K]` logits.

use crate::arrays::{readonly, readwrite, slice, slice_mut};
use crate::errors::value_error;
use crate::loss::{config, report_to_python};
use crate::threads::detached;
use label_smoothing::linear::{LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::GradOutput;
use numpy::{PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

fn writable<'py>(obj: Option<&Bound<'py, PyAny>>, what: &str) -> PyResult<Option<PyReadwriteArrayDyn<'py, f32>>> {
    obj.map(|o| readwrite(o, what, "float32")).transpose()
}

/// A linear layer's inputs as `float32` numpy arrays: hidden states, classifier weight and bias, with the
/// names of the Python call's arguments for the weight and the bias (for errors).
pub struct LinearArrays<'py> {
    x: PyReadonlyArrayDyn<'py, f32>,
    w: PyReadonlyArrayDyn<'py, f32>,
    b: Option<PyReadonlyArrayDyn<'py, f32>>,
    names: (&'static str, &'static str),
}

impl<'py> LinearArrays<'py> {
    /// Reads `x` (named `input`), `w` and `b` (named by `names`).
    pub fn extract(
        x: &Bound<'py, PyAny>,
        w: &Bound<'py, PyAny>,
        b: Option<&Bound<'py, PyAny>>,
        names: (&'static str, &'static str),
    ) -> PyResult<Self> {
        Ok(Self {
            x: readonly(x, "input", "float32")?,
            w: readonly(w, names.0, "float32")?,
            b: b.map(|b| readonly(b, names.1, "float32")).transpose()?,
            names,
        })
    }

    /// The weight's shape.
    pub fn weight_shape(&self) -> &[usize] {
        self.w.shape()
    }

    /// The core's view of the arrays.
    pub fn inputs(&self) -> PyResult<LinearInputs<'_>> {
        Ok(LinearInputs {
            x: slice(&self.x, "input")?,
            weight: slice(&self.w, self.names.0)?,
            bias: self.b.as_ref().map(|b| slice(b, self.names.1)).transpose()?,
        })
    }
}

/// The gradient buffers of a linear layer's call, each given or not: `grad_input`, `grad_weight`, `grad_bias`.
pub struct GradArrays<'py>([Option<PyReadwriteArrayDyn<'py, f32>>; 3]);

impl<'py> GradArrays<'py> {
    /// Reads the buffers given.
    pub fn extract(
        x: Option<&Bound<'py, PyAny>>,
        w: Option<&Bound<'py, PyAny>>,
        b: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Self> {
        Ok(Self([
            writable(x, "grad_input")?,
            writable(w, "grad_weight")?,
            writable(b, "grad_bias")?,
        ]))
    }

    /// The core's view of the buffers.
    pub fn grads(&mut self) -> PyResult<LinearGrads<'_>> {
        let [x, w, b] = &mut self.0;
        Ok(LinearGrads {
            x: x.as_mut().map(|g| slice_mut(g, "grad_input")).transpose()?,
            weight: w.as_mut().map(|g| slice_mut(g, "grad_weight")).transpose()?,
            bias: b.as_mut().map(|g| slice_mut(g, "grad_bias")).transpose()?,
        })
    }
}

/// The label-smoothed cross-entropy of `input [N, D] @ linear_weight[K, D]^T (+ linear_bias [K])` against
/// `int64` labels `[N]`, all `float32` and C-contiguous; the gradients are written into `grad_input`,
/// `grad_weight` and `grad_bias` when given. Returns a float, or a `float32` array `[N]` for reduction `none`;
/// with `report`, the tuple of `cross_entropy` (`(loss, z_loss, predicted, correct, counted)`).
#[pyfunction]
#[pyo3(signature = (input, linear_weight, target, *, linear_bias=None, weight=None, ignore_index=None,
    reduction="mean", smoothing=0.0, spread="uniform", adaptive=None, z_loss=0.0, softcap=None, grad_input=None,
    grad_weight=None, grad_bias=None, grad_scale=1.0, grad_rows=None, block_rows=None, threads=0, report=false,
    predictions=false))]
#[allow(clippy::too_many_arguments)] // One argument per option of `F.linear_cross_entropy`, called by keyword.
pub fn linear_cross_entropy<'py>(
    py: Python<'py>,
    input: &Bound<'py, PyAny>,
    linear_weight: &Bound<'py, PyAny>,
    target: &Bound<'py, PyAny>,
    linear_bias: Option<&Bound<'py, PyAny>>,
    weight: Option<PyReadonlyArrayDyn<'py, f32>>,
    ignore_index: Option<i64>,
    reduction: &str,
    smoothing: f32,
    spread: &str,
    adaptive: Option<f32>,
    z_loss: f32,
    softcap: Option<f32>,
    grad_input: Option<&Bound<'py, PyAny>>,
    grad_weight: Option<&Bound<'py, PyAny>>,
    grad_bias: Option<&Bound<'py, PyAny>>,
    grad_scale: f32,
    grad_rows: Option<PyReadonlyArrayDyn<'py, f32>>,
    block_rows: Option<usize>,
    threads: usize,
    report: bool,
    predictions: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let arrays = LinearArrays::extract(input, linear_weight, linear_bias, ("linear_weight", "linear_bias"))?;
    let labels = readonly::<i64>(target, "target", "int64")?;
    let (k, d) = match arrays.weight_shape() {
        [k, d] => (*k, *d),
        s => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "linear_weight: expected shape [K, D], got {s:?}"
            )))
        }
    };
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
    let mut lce = LinearCrossEntropy::new(loss_fn, d).map_err(value_error)?;
    if let Some(rows) = block_rows {
        lce = lce.with_block_rows(rows).map_err(value_error)?;
    }
    let mut grad_arrays = GradArrays::extract(grad_input, grad_weight, grad_bias)?;
    let inputs = arrays.inputs()?;
    let labels = slice(&labels, "target")?;
    let rows = grad_rows.as_ref().map(|r| slice(r, "grad_output")).transpose()?;
    let grad_output = rows.map_or(GradOutput::Scalar(grad_scale), GradOutput::PerRow);
    let grads = grad_arrays.grads()?;
    let wants_grad = grads.x.is_some() || grads.weight.is_some() || grads.bias.is_some();
    let work = inputs.x.len().saturating_mul(k);
    let out = detached(py, threads, work, || {
        if wants_grad {
            lce.report_and_grad(inputs, labels, grad_output, grads, predictions)
        } else {
            lce.report(inputs, labels, predictions)
        }
    })?
    .map_err(value_error)?;
    report_to_python(py, out, report)
}
