//! The typed readers the commands share: each opens an array file in any supported format (recognised by its
//! first bytes), checks its rank and dtype, converts its values and checks its length against what the command
//! already knows, with errors that name the file and both shapes.
//!
//! A path names a file, or an array inside one as `FILE:NAME` (an `.npz` array, a safetensors tensor, a key of
//! a dict saved with `torch.save`); a path that exists as a file is always the file, even with a colon in it.

use super::npy;
use super::values::{Array, ArrayError, Want};
use super::{npz, safetensors, torch, zipped};
use crate::CliError;
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// The formats an array file can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// NumPy's `.npy`.
    Npy,
    /// A zip archive: NumPy's `.npz` (a zip of `.npy` files), or PyTorch's `torch.save` (a zip holding a
    /// pickle and the storages), told apart by its members.
    Zip,
    /// Hugging Face's safetensors.
    Safetensors,
}

/// The file and array name a path argument means: the path itself when it is a file, else `FILE:NAME` split at
/// the last colon when `FILE` is a file.
pub fn split_name(arg: &Path) -> (PathBuf, Option<String>) {
    if arg.is_file() {
        return (arg.to_path_buf(), None);
    }
    if let Some(s) = arg.to_str() {
        if let Some((file, name)) = s.rsplit_once(':') {
            if !file.is_empty() && Path::new(file).is_file() {
                return (PathBuf::from(file), Some(name.to_string()));
            }
        }
    }
    (arg.to_path_buf(), None)
}

/// The format of `path` from its first bytes (and, for an unrecognised file, its extension: a `.npy` file then
/// gets the `.npy` reader's own error).
pub fn sniff(path: &Path) -> Result<Format, ArrayError> {
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)
        .and_then(|f| f.take(9).read_to_end(&mut head))
        .map_err(|e| ArrayError::io(path, e))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if head.starts_with(b"\x93NUMPY") {
        Ok(Format::Npy)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Ok(Format::Zip)
    } else if head.starts_with(b"\x80\x02\x8a\x0a") {
        Err(ArrayError::content(
            path,
            "a torch.save file in the legacy format (_use_new_zipfile_serialization=False); save it again with \
             torch.save's default format",
        ))
    } else if head.len() == 9 && head[8] == b'{' || ext == "safetensors" {
        Ok(Format::Safetensors)
    } else if ext == "npy" || head.len() < 6 && b"\x93NUMPY".starts_with(&head) {
        Ok(Format::Npy)
    } else {
        Err(ArrayError::format(
            path,
            0,
            "not an array file: expected .npy, .npz, .safetensors or a torch.save file (.pt, .pth)",
        ))
    }
}

/// Reads the array `arg` names (`FILE` or `FILE:NAME`) as `want`; `expected` describes it for errors.
pub fn read_array(arg: &Path, want: Want, expected: &str) -> Result<Array, ArrayError> {
    let (path, name) = split_name(arg);
    match (sniff(&path)?, name.as_deref()) {
        (Format::Npy, None) => npy::read_as(&path, Some(want), expected),
        (Format::Npy, Some(n)) => Err(ArrayError::content(
            &path,
            format!(
                "a .npy file holds one array: read it without ':{}'",
                super::escape_controls(n)
            ),
        )),
        (Format::Zip, name) => {
            let (archive, members) = zipped::open(&path)?;
            match zipped::torch_pickle(&members).map(str::to_string) {
                Some(pkl) => torch::read(&path, archive, &pkl, name, want, expected),
                None => npz::read(&path, (archive, members), name, want, expected),
            }
        }
        (Format::Safetensors, name) => safetensors::read(&path, name, want, expected),
    }
}

/// Reads a 2-D float array (float16, bfloat16, float32 or float64, computed in f32); `what` names it in errors
/// with its shape, as in `logits of shape [N, K]`.
pub fn read_matrix(path: &Path, what: &str, shape: &str) -> Result<Matrix, CliError> {
    let expected = format!("{what} of shape {shape}");
    let a = read_array(path, Want::F32, &expected)?;
    let (rows, cols) = match *a.expect_ndim(2, &expected)? {
        [rows, cols] => (rows, cols),
        _ => unreachable!("checked to be 2-D"),
    };
    Ok(Matrix {
        rows,
        cols,
        values: a.into_f32(&expected)?,
    })
}

/// Reads `n` labels (any integer dtype), one per row of `of` (as in `the logits`).
pub fn read_labels(path: &Path, n: usize, of: &str) -> Result<Vec<i64>, CliError> {
    let expected = format!("labels of shape [{n}]");
    let a = read_array(path, Want::I64, &expected)?;
    a.expect_ndim(1, &expected)?;
    if a.shape != [n] {
        return Err(CliError::input(
            path,
            format!(
                "expected {n} labels for the {n} rows of {of}, found shape {:?}",
                a.shape
            ),
        ));
    }
    Ok(a.into_i64(&expected)?)
}

/// Reads `len` float `what` (as in `weights`), `per` saying what they are for (as in `one per class`).
pub fn read_vector(path: &Path, len: usize, what: &str, per: &str) -> Result<Vec<f32>, CliError> {
    let expected = format!("{what} of shape [{len}] ({per})");
    let a = read_array(path, Want::F32, &expected)?;
    a.expect_ndim(1, &expected)?;
    if a.shape != [len] {
        return Err(CliError::input(
            path,
            format!("expected {len} {what} ({per}), found shape {:?}", a.shape),
        ));
    }
    Ok(a.into_f32(&expected)?)
}
