//! Calibration metrics (placeholder registration; filled in below).

use pyo3::prelude::*;

/// Adds the calibration functions to the module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
