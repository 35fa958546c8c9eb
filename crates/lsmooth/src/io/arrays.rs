//! The typed readers the commands share: each reads a `.npy` file, checks its rank, converts its values and
//! checks its length against what the command already knows, with errors that name the file and both shapes.

use super::npy;
use crate::CliError;
use std::path::Path;

/// A 2-D float array, `[rows, cols]` row-major, in f32.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// The first dimension (`N`, or `K` for a weight matrix).
    pub rows: usize,
    /// The second dimension.
    pub cols: usize,
    /// The values, row-major.
    pub values: Vec<f32>,
}

/// Reads a 2-D float array (float16, float32 or float64, computed in f32); `what` names it in errors with its
/// shape, as in `logits of shape [N, K]`.
pub fn read_matrix(path: &Path, what: &str, shape: &str) -> Result<Matrix, CliError> {
    let a = npy::read(path)?;
    let (rows, cols) = match *a.expect_ndim(2, &format!("{what} of shape {shape}"))? {
        [rows, cols] => (rows, cols),
        _ => unreachable!("checked to be 2-D"),
    };
    Ok(Matrix {
        rows,
        cols,
        values: a.to_f32(what)?,
    })
}

/// Reads `n` labels (any integer dtype), one per row of `of` (as in `the logits`).
pub fn read_labels(path: &Path, n: usize, of: &str) -> Result<Vec<i64>, CliError> {
    let a = npy::read(path)?;
    a.expect_ndim(1, &format!("labels of shape [{n}]"))?;
    let y = a.to_i64("labels")?;
    if y.len() != n {
        return Err(CliError::input(
            path,
            format!(
                "expected {n} labels for the {n} rows of {of}, found shape {:?}",
                a.shape
            ),
        ));
    }
    Ok(y)
}

/// Reads `len` float `what` (as in `weights`), `per` saying what they are for (as in `one per class`).
pub fn read_vector(path: &Path, len: usize, what: &str, per: &str) -> Result<Vec<f32>, CliError> {
    let a = npy::read(path)?;
    a.expect_ndim(1, &format!("{what} of shape [{len}] ({per})"))?;
    let v = a.to_f32(what)?;
    if v.len() != len {
        return Err(CliError::input(
            path,
            format!("expected {len} {what} ({per}), found shape {:?}", a.shape),
        ));
    }
    Ok(v)
}
