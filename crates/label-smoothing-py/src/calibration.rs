//! Calibration: the metrics, intervals, scalings and reliability diagram of `lsmooth calibrate`, computed by the
//! same code (`lsmooth::commands::calibrate::compute`) so that both give the same numbers.

use crate::arrays::{readonly, slice};
use crate::threads::detached;
use label_smoothing::calibration::{fit_temperature, fit_vector_scaling, BootstrapConfig, CalibrationError};
use lsmooth::commands::calibrate::{compute, Culprit, HeldOut, Inputs};
use lsmooth::report::png::encode_for;
use numpy::{PyArray1, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;

fn culprit_name(c: Culprit) -> &'static str {
    match c {
        Culprit::Values => "the predictions",
        Culprit::Labels => "labels",
        Culprit::TemperatureLogits => "fit_temperature (logits)",
        Culprit::TemperatureLabels => "fit_temperature (labels)",
        Culprit::VectorLogits => "fit_vector (logits)",
        Culprit::VectorLabels => "fit_vector (labels)",
    }
}

fn value_error(what: &str, e: CalibrationError) -> PyErr {
    PyValueError::new_err(format!("{what}: {e}"))
}

type HeldArrays<'py> = (PyReadonlyArrayDyn<'py, f32>, PyReadonlyArrayDyn<'py, i64>);

fn held<'a>(arrays: &'a Option<HeldArrays<'_>>, what: &str) -> PyResult<Option<HeldOut<'a>>> {
    arrays
        .as_ref()
        .map(|(l, y)| {
            Ok(HeldOut {
                logits: slice(l, what)?,
                labels: slice(y, what)?,
            })
        })
        .transpose()
}

/// Every calibration metric of `values` (`[N, K]` float32 logits, or probabilities when `probs`) against
/// `labels` (`[N]` int64), as the JSON object `lsmooth calibrate --json` prints; with a reliability diagram
/// written to `plot` (`.svg` or `.png`, atomically) when given.
#[pyfunction]
#[pyo3(signature = (values, labels, k, *, probs=false, bins=15, bootstrap=None, bootstrap_seed=0, level=0.95,
    fit_temperature=None, fit_vector=None, plot=None, threads=0))]
#[allow(clippy::too_many_arguments)] // One argument per option of `lsmooth calibrate`, called by keyword.
fn calibrate<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    k: usize,
    probs: bool,
    bins: usize,
    bootstrap: Option<usize>,
    bootstrap_seed: u64,
    level: f64,
    fit_temperature: Option<HeldArrays<'py>>,
    fit_vector: Option<HeldArrays<'py>>,
    plot: Option<PathBuf>,
    threads: usize,
) -> PyResult<String> {
    let values = readonly::<f32>(values, "the predictions", "float32")?;
    let labels = readonly::<i64>(labels, "labels", "int64")?;
    let boot = bootstrap.map(|r| {
        BootstrapConfig::default()
            .with_resamples(r)
            .with_seed(bootstrap_seed)
            .with_level(level)
    });
    if let Some(b) = &boot {
        b.validate().map_err(|e| value_error("bootstrap", e))?;
    }
    let inputs = Inputs {
        values: slice(&values, "the predictions")?,
        probs,
        labels: slice(&labels, "labels")?,
        k,
        bins,
        bootstrap: boot,
        fit_temperature: held(&fit_temperature, "fit_temperature")?,
        fit_vector: held(&fit_vector, "fit_vector")?,
    };
    let result = detached(py, threads, usize::MAX, || {
        let c = compute(&inputs).map_err(|f| value_error(culprit_name(f.culprit), f.error))?;
        let chart = match &plot {
            Some(path) => {
                let svg = c.reliability_svg().map_err(|e| value_error("plot", e))?;
                Some(encode_for(path, &svg).map_err(|e| PyValueError::new_err(format!("plot: {e}")))?)
            }
            None => None,
        };
        let json = serde_json::to_string(&c.output).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok::<_, PyErr>((json, chart))
    })??;
    let (json, chart) = result;
    if let (Some(path), Some(bytes)) = (&plot, chart) {
        lsmooth::io::atomic::write(path, &bytes)
            .map_err(|e| PyOSError::new_err(format!("plot: {}: {e}", path.display())))?;
    }
    Ok(json)
}

/// The temperature `T > 0` minimising the NLL of `softmax(logits / T)` (float32 `[N, K]`, int64 labels `[N]`).
#[pyfunction(name = "fit_temperature")]
#[pyo3(signature = (logits, labels, k, threads=0))]
fn fit_temperature_py(
    py: Python<'_>,
    logits: PyReadonlyArrayDyn<'_, f32>,
    labels: PyReadonlyArrayDyn<'_, i64>,
    k: usize,
    threads: usize,
) -> PyResult<f64> {
    let (z, y) = (slice(&logits, "logits")?, slice(&labels, "labels")?);
    detached(py, threads, usize::MAX, || fit_temperature(z, y, k))?.map_err(|e| value_error("logits", e))
}

/// Vector scaling fitted on `logits`/`labels`: `(weights [K], biases [K], nll, iterations)`.
#[pyfunction(name = "fit_vector_scaling")]
#[pyo3(signature = (logits, labels, k, threads=0))]
#[allow(clippy::type_complexity)] // The tuple is unpacked into a Python class at once.
fn fit_vector_scaling_py<'py>(
    py: Python<'py>,
    logits: PyReadonlyArrayDyn<'py, f32>,
    labels: PyReadonlyArrayDyn<'py, i64>,
    k: usize,
    threads: usize,
) -> PyResult<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>, f64, usize)> {
    let (z, y) = (slice(&logits, "logits")?, slice(&labels, "labels")?);
    let v = detached(py, threads, usize::MAX, || fit_vector_scaling(z, y, k))?.map_err(|e| value_error("logits", e))?;
    Ok((
        PyArray1::from_vec(py, v.weights),
        PyArray1::from_vec(py, v.biases),
        v.nll,
        v.iterations,
    ))
}

/// Adds the calibration functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(calibrate, m)?)?;
    m.add_function(wrap_pyfunction!(fit_temperature_py, m)?)?;
    m.add_function(wrap_pyfunction!(fit_vector_scaling_py, m)?)?;
    Ok(())
}
