//! `VocabShard`: one rank's part of the class-sharded loss (the core's [`ShardPlan`]), for the Python package's
//! `torch.distributed` transport: local statistics, then (after the caller's all-gather of every rank's record)
//! the combine, the same on every rank, then the rank's slice of the gradient.

use crate::arrays::{readonly, readwrite, slice, slice_mut};
use crate::errors::value_error;
use crate::linear::{GradArrays, LinearArrays};
use crate::loss::{config, loss_to_python};
use crate::threads::detached;
use label_smoothing::linear::{LinearInputs, LinearShard};
use label_smoothing::shard::{ShardCombined, ShardLayout, ShardPlan};
use label_smoothing::GradOutput;
use numpy::PyReadonlyArrayDyn;
use pyo3::prelude::*;

/// The Python names of the linear variant's weight and bias.
const NAMES: (&str, &str) = ("weight_shard", "bias_shard");

/// One rank of a vocabulary-parallel loss: the classes `ranges[rank]` of `k`, every rank's `(start, len)` given
/// in rank order (they must tile `[0, k)`), and the loss's options as for `cross_entropy` (`weight` over all `k`
/// classes).
#[pyclass(module = "label_smoothing._native", frozen)]
pub struct VocabShard {
    plan: ShardPlan,
}

/// What `VocabShard.combine` returns: every row's statistics (the same on every rank), from which each rank
/// writes its slice of the gradient.
#[pyclass(module = "label_smoothing._native", frozen)]
pub struct ShardState {
    combined: ShardCombined,
}

#[pymethods]
impl ShardState {
    /// The loss: a float, or a `float32` array `[N]` for reduction `none`.
    fn loss<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        loss_to_python(py, self.combined.loss().clone())
    }

    /// The z-loss term alone, reduced like the loss.
    fn z_loss<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        loss_to_python(py, self.combined.z_loss().clone())
    }
}

#[pymethods]
impl VocabShard {
    #[new]
    #[pyo3(signature = (ranges, rank, k, *, weight=None, ignore_index=None, reduction="mean", smoothing=0.0,
        spread="uniform", adaptive=None, z_loss=0.0, softcap=None))]
    #[allow(clippy::too_many_arguments)] // One argument per option of the loss, called by keyword.
    fn new(
        ranges: Vec<(usize, usize)>,
        rank: usize,
        k: usize,
        weight: Option<PyReadonlyArrayDyn<'_, f32>>,
        ignore_index: Option<i64>,
        reduction: &str,
        smoothing: f32,
        spread: &str,
        adaptive: Option<f32>,
        z_loss: f32,
        softcap: Option<f32>,
    ) -> PyResult<Self> {
        let loss = config(
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
        let layout = ShardLayout::from_ranges(&ranges, k).map_err(value_error)?;
        let plan = ShardPlan::new(loss, layout, rank).map_err(value_error)?;
        Ok(Self { plan })
    }

    /// The length of rank `rank`'s record per row (`f64` values).
    fn record_len(&self, rank: usize) -> usize {
        self.plan.record_len(rank)
    }

    /// Whether every shard boundary is a multiple of the kernel's chunk (then the result is bit-identical to one
    /// process).
    fn chunk_aligned(&self) -> bool {
        self.plan.layout().chunk_aligned()
    }

    /// Checks the rank's logits (`float32` `[N, K_r]`) and the labels (`int64` `[N]`) without computing anything;
    /// returns `N`.
    fn check(&self, logits: &Bound<'_, PyAny>, target: &Bound<'_, PyAny>) -> PyResult<usize> {
        let z = readonly::<f32>(logits, "input", "float32")?;
        let y = readonly::<i64>(target, "target", "int64")?;
        let (z, y) = (slice(&z, "input")?, slice(&y, "target")?);
        self.plan.check(z.len(), y, GradOutput::ONE).map_err(value_error)
    }

    /// Step 1: the rank's record (`float64` `[N * record_len(rank)]`, overwritten) from its logits.
    #[pyo3(signature = (logits, target, record, threads=0))]
    fn local_stats(
        &self,
        py: Python<'_>,
        logits: &Bound<'_, PyAny>,
        target: &Bound<'_, PyAny>,
        record: &Bound<'_, PyAny>,
        threads: usize,
    ) -> PyResult<()> {
        let z = readonly::<f32>(logits, "input", "float32")?;
        let y = readonly::<i64>(target, "target", "int64")?;
        let mut rec = readwrite::<f64>(record, "record", "float64")?;
        let (z, y, rec) = (
            slice(&z, "input")?,
            slice(&y, "target")?,
            slice_mut(&mut rec, "record")?,
        );
        detached(py, threads, z.len(), || self.plan.local_stats(z, y, rec))?.map_err(value_error)
    }

    /// Step 3a: every row's statistics from every rank's record (`records[r]`, `float64`), with the upstream
    /// gradient `grad_rows` (`float32` `[N]`, reduction `none`) or `grad_scale`.
    #[pyo3(signature = (target, records, grad_rows=None, grad_scale=1.0, threads=0))]
    fn combine(
        &self,
        py: Python<'_>,
        target: &Bound<'_, PyAny>,
        records: Vec<Bound<'_, PyAny>>,
        grad_rows: Option<PyReadonlyArrayDyn<'_, f32>>,
        grad_scale: f32,
        threads: usize,
    ) -> PyResult<ShardState> {
        let y = readonly::<i64>(target, "target", "int64")?;
        let recs = records
            .iter()
            .map(|r| readonly::<f64>(r, "records", "float64"))
            .collect::<PyResult<Vec<_>>>()?;
        let recs: Vec<&[f64]> = recs.iter().map(|r| slice(r, "records")).collect::<PyResult<_>>()?;
        let y = slice(&y, "target")?;
        let rows = grad_rows.as_ref().map(|r| slice(r, "grad_output")).transpose()?;
        let grad_output = rows.map_or(GradOutput::Scalar(grad_scale), GradOutput::PerRow);
        let work = recs.iter().map(|r| r.len()).sum();
        let combined =
            detached(py, threads, work, || self.plan.combine(y, grad_output, &recs))?.map_err(value_error)?;
        Ok(ShardState { combined })
    }

    /// Step 3b: the rank's slice of the gradient (`float32` `[N, K_r]`, overwritten) from its logits.
    #[pyo3(signature = (state, logits, grad, threads=0))]
    fn local_grad(
        &self,
        py: Python<'_>,
        state: &ShardState,
        logits: &Bound<'_, PyAny>,
        grad: &Bound<'_, PyAny>,
        threads: usize,
    ) -> PyResult<()> {
        let z = readonly::<f32>(logits, "input", "float32")?;
        let mut g = readwrite::<f32>(grad, "grad", "float32")?;
        let (z, g) = (slice(&z, "input")?, slice_mut(&mut g, "grad")?);
        detached(py, threads, z.len(), || self.plan.local_grad(&state.combined, z, g))?.map_err(value_error)
    }

    /// Step 1 of the linear loss: the rank's record from the hidden states `x` (`float32` `[N, D]`), the rank's
    /// rows of the classifier `w` (`[K_r, D]`) and bias `b` (`[K_r]` or `None`), without holding its logits.
    #[pyo3(signature = (x, w, b, target, record, threads=0))]
    #[allow(clippy::too_many_arguments)] // the linear inputs, the labels, the output and the threads
    fn linear_local_stats(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        w: &Bound<'_, PyAny>,
        b: Option<&Bound<'_, PyAny>>,
        target: &Bound<'_, PyAny>,
        record: &Bound<'_, PyAny>,
        threads: usize,
    ) -> PyResult<()> {
        let arrays = LinearArrays::extract(x, w, b, NAMES)?;
        let y = readonly::<i64>(target, "target", "int64")?;
        let mut rec = readwrite::<f64>(record, "record", "float64")?;
        let inputs = arrays.inputs()?;
        let shard = self.linear(inputs)?;
        let (y, rec) = (slice(&y, "target")?, slice_mut(&mut rec, "record")?);
        let work = inputs.x.len().saturating_mul(self.plan.classes().len());
        detached(py, threads, work, || shard.local_stats(inputs, y, rec))?.map_err(value_error)
    }

    /// Step 3b of the linear loss: this rank's `grad_input` part (`[N, D]`, to be summed over the ranks), and its
    /// `grad_weight` (`[K_r, D]`) and `grad_bias` (`[K_r]`) when given.
    #[pyo3(signature = (state, x, w, b, target, grad_input, grad_weight=None, grad_bias=None, threads=0))]
    #[allow(clippy::too_many_arguments)] // the combined state, the linear inputs, the labels and the outputs
    fn linear_local_grads(
        &self,
        py: Python<'_>,
        state: &ShardState,
        x: &Bound<'_, PyAny>,
        w: &Bound<'_, PyAny>,
        b: Option<&Bound<'_, PyAny>>,
        target: &Bound<'_, PyAny>,
        grad_input: Option<&Bound<'_, PyAny>>,
        grad_weight: Option<&Bound<'_, PyAny>>,
        grad_bias: Option<&Bound<'_, PyAny>>,
        threads: usize,
    ) -> PyResult<()> {
        let arrays = LinearArrays::extract(x, w, b, NAMES)?;
        let y = readonly::<i64>(target, "target", "int64")?;
        let mut grad_arrays = GradArrays::extract(grad_input, grad_weight, grad_bias)?;
        let inputs = arrays.inputs()?;
        let shard = self.linear(inputs)?;
        let grads = grad_arrays.grads()?;
        let y = slice(&y, "target")?;
        let work = inputs.x.len().saturating_mul(self.plan.classes().len());
        detached(py, threads, work, || {
            shard.local_grads(&state.combined, inputs, y, grads)
        })?
        .map_err(value_error)
    }
}

impl VocabShard {
    /// The linear loss of this shard for hidden states of the inputs' width (`D` from the weight's length).
    fn linear(&self, inputs: LinearInputs<'_>) -> PyResult<LinearShard> {
        let kr = self.plan.classes().len();
        if kr == 0 || !inputs.weight.len().is_multiple_of(kr) || inputs.weight.is_empty() {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "weight_shard: expected [K_r, D] with K_r = {kr}, got {} values",
                inputs.weight.len()
            )));
        }
        LinearShard::new(self.plan.clone(), inputs.weight.len() / kr).map_err(value_error)
    }
}
