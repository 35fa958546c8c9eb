//! `label_smoothing._native`: the Rust half of the `label_smoothing` Python package.
//!
//! Thin bindings over the core crate on numpy arrays (torch tensors arrive as zero-copy `Tensor.numpy()` views,
//! bfloat16 ones as their `int16` bit pattern). Every call checks its inputs, releases the GIL for the kernel and
//! runs it on a rayon pool of the requested size; every bad input is a Python `ValueError` or `TypeError` naming
//! the argument. The public, documented API is the Python package (`python/label_smoothing`); this module is its
//! private engine.

mod arrays;
mod calibration;
mod errors;
mod linear;
mod loss;
mod shard;
mod threads;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("INSTRUCTION_SET", label_smoothing::instruction_set())?;
    m.add("CHUNK", label_smoothing::shard::CHUNK)?;
    m.add_function(wrap_pyfunction!(loss::cross_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(linear::linear_cross_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(threads::default_num_threads, m)?)?;
    m.add_class::<shard::VocabShard>()?;
    m.add_class::<shard::ShardState>()?;
    calibration::register(m)?;
    Ok(())
}
