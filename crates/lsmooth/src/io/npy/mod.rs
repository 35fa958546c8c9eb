//! Reading and writing NumPy `.npy` files (format versions 1.0, 2.0 and 3.0).
//!
//! Reads C-order arrays of `f4`, `f8` and every integer dtype (`i1`..`i8`, `u1`..`u8`), little- or big-endian.
//! Writes little-endian `f4` arrays, atomically ([`super::atomic`]). Every error names the file and, where it
//! applies, the byte offset.
//!
//! Hand-written rather than taken from a crate: numpy reads the header with `ast.literal_eval`, and accepting
//! exactly what it accepts needs a real Python-literal parser ([`pyliteral`]); the general-purpose readers
//! match the header loosely, and their errors do not say where a file is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

mod header;
pub mod pyliteral;

use header::{check_header, Header};
pub use header::{dtype_of_descr, escape, MAX_HEADER_CHARS};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why a `.npy` file could not be read or written. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", crate::io::show_path(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a valid `.npy` file.
    #[error("{}: byte offset {offset}: {what}", crate::io::show_path(path))]
    Format {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        offset: usize,
        /// What is wrong there.
        what: String,
    },
    /// A valid file whose dtype or shape is not what the caller needs.
    #[error("{}: {what}", crate::io::show_path(path))]
    Content {
        /// The file.
        path: PathBuf,
        /// What was expected and found.
        what: String,
    },
}

/// The element type of an array as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 16-bit float (read widened to f32, exactly).
    F16,
    /// Signed integer of this many bytes.
    Int(usize),
    /// Unsigned integer of this many bytes.
    UInt(usize),
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
            DType::F64 => 8,
            DType::Int(b) | DType::UInt(b) => b,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::F32 => write!(f, "float32"),
            DType::F64 => write!(f, "float64"),
            DType::F16 => write!(f, "float16"),
            DType::Int(b) => write!(f, "int{}", b * 8),
            DType::UInt(b) => write!(f, "uint{}", b * 8),
        }
    }
}

/// The values of an array, widened to one of three types.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// `f4` values (and `f2` values, widened exactly).
    F32(Vec<f32>),
    /// `f8` values.
    F64(Vec<f64>),
    /// Integer values of any width (unsigned values above `i64::MAX` are rejected when read).
    Int(Vec<i64>),
}

/// An array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The file it came from.
    pub path: PathBuf,
    /// The dtype as stored.
    pub dtype: DType,
    /// The shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// The values, in C order.
    pub data: Data,
}

fn format_err(path: &Path, offset: usize, what: impl Into<String>) -> NpyError {
    NpyError::Format {
        path: path.to_path_buf(),
        offset,
        what: what.into(),
    }
}

impl Array {
    fn content_err(&self, what: impl Into<String>) -> NpyError {
        NpyError::Content {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn shape_str(&self) -> String {
        format!("{:?}", self.shape)
    }

    /// The shape, checked to have `ndim` dimensions; `expected` describes it for the error.
    pub fn expect_ndim(&self, ndim: usize, expected: &str) -> Result<&[usize], NpyError> {
        if self.shape.len() == ndim {
            Ok(&self.shape)
        } else {
            Err(self.content_err(format!("expected {expected}, found shape {}", self.shape_str())))
        }
    }

    /// The values as f32 (f64 rounded to nearest); integer arrays are an error.
    pub fn to_f32(&self, expected: &str) -> Result<Vec<f32>, NpyError> {
        match &self.data {
            Data::F32(v) => Ok(v.clone()),
            Data::F64(v) => Ok(v.iter().map(|&x| x as f32).collect()),
            Data::Int(_) => Err(self.content_err(format!(
                "expected {expected} of dtype float16, float32 or float64, found {}",
                self.dtype
            ))),
        }
    }

    /// The values as i64; float arrays are an error.
    pub fn to_i64(&self, expected: &str) -> Result<Vec<i64>, NpyError> {
        match &self.data {
            Data::Int(v) => Ok(v.clone()),
            _ => Err(self.content_err(format!("expected {expected} of an integer dtype, found {}", self.dtype))),
        }
    }
}

/// Reads a `.npy` file. Memory: the file's bytes, then the values (at most 8 bytes each).
pub fn read(path: &Path) -> Result<Array, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

/// Parses the bytes of a `.npy` file; `path` is used in errors only. Accepts what `numpy.load` accepts
/// (format 1.0, 2.0, 3.0; the header as `ast.literal_eval` reads it; bytes after the data ignored, as numpy
/// ignores them) for the supported dtypes, and refuses everything else with the offset at fault.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array, NpyError> {
    let (major, header_start, header_end) = preamble(path, bytes)?;
    let h = header(path, major, bytes, header_start..header_end)?;
    let (dtype, shape, big_endian) = (h.dtype, h.shape, h.big_endian);

    let item = dtype.size();
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c.checked_mul(item).is_some())
        .ok_or_else(|| format_err(path, header_start, format!("shape {shape:?} is too large")))?;
    let data_len = count * item;
    let body = &bytes[header_end..];
    if body.len() < data_len {
        return Err(format_err(
            path,
            bytes.len(),
            format!(
                "truncated: shape {shape:?} of {dtype} needs {data_len} data bytes after the header \
                 (which ends at offset {header_end}); the file holds {}",
                body.len()
            ),
        ));
    }
    // numpy reads `count` items and ignores what follows.
    let body = &body[..data_len];
    let mut data = decode(path, header_end, dtype, big_endian, body)?;
    if h.fortran_order && shape.len() > 1 {
        data = match data {
            Data::F32(v) => Data::F32(fortran_to_c(&v, &shape)),
            Data::F64(v) => Data::F64(fortran_to_c(&v, &shape)),
            Data::Int(v) => Data::Int(fortran_to_c(&v, &shape)),
        };
    }
    Ok(Array {
        path: path.to_path_buf(),
        dtype,
        shape,
        data,
    })
}

/// The magic, the format version and the header length: returns the major version and where the header
/// starts and ends.
fn preamble(path: &Path, bytes: &[u8]) -> Result<(u8, usize, usize), NpyError> {
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        if bytes.len() >= 6 && &bytes[..6] != MAGIC || bytes.len() < 6 && !MAGIC.starts_with(bytes) {
            return Err(format_err(path, 0, "not a .npy file (missing the \\x93NUMPY magic)"));
        }
        return Err(format_err(
            path,
            bytes.len(),
            format!("file too short for a .npy header ({} bytes)", bytes.len()),
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(format_err(
                path,
                6,
                format!("unsupported .npy format version {major}.{minor} (numpy reads 1.0, 2.0 and 3.0)"),
            ))
        }
    };
    let header_start = 8 + len_bytes;
    if bytes.len() < header_start {
        return Err(format_err(path, bytes.len(), "file ends inside the header length"));
    }
    let header_len = if len_bytes == 2 {
        u16::from_le_bytes([bytes[8], bytes[9]]) as usize
    } else {
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
    };
    let header_end = header_start + header_len;
    if bytes.len() < header_end {
        return Err(format_err(
            path,
            bytes.len(),
            format!("file ends inside the header (header declares {header_len} bytes ending at offset {header_end})"),
        ));
    }
    Ok((major, header_start, header_end))
}

/// The header at `range` of `bytes` in format version `major`: decoded (latin-1, or UTF-8 for 3.0), parsed as
/// a Python literal and checked. Errors carry the byte offset at fault.
fn header(path: &Path, major: u8, bytes: &[u8], range: std::ops::Range<usize>) -> Result<Header, NpyError> {
    let header_start = range.start;
    let raw = &bytes[range];
    // Versions 1.0 and 2.0 are latin-1 (every byte is a character), 3.0 is UTF-8.
    let header: String = if major == 3 {
        std::str::from_utf8(raw)
            .map_err(|e| format_err(path, header_start + e.valid_up_to(), "header is not valid UTF-8"))?
            .to_string()
    } else {
        raw.iter().map(|&b| b as char).collect()
    };
    // Parser offsets count characters; in a latin-1 header they are bytes, in UTF-8 they are converted.
    let byte_offset = |char_offset: usize| -> usize {
        let within = if major == 3 {
            header.char_indices().nth(char_offset).map_or(header.len(), |(i, _)| i)
        } else {
            char_offset.min(raw.len())
        };
        header_start + within
    };
    let chars = header.chars().count();
    if chars > MAX_HEADER_CHARS {
        return Err(format_err(
            path,
            header_start,
            format!("header of {chars} characters; numpy.load refuses more than {MAX_HEADER_CHARS}"),
        ));
    }
    let shown = || escape(header.trim_end(), 120);
    let value = pyliteral::parse(&header, major < 3).map_err(|e| {
        format_err(
            path,
            byte_offset(e.offset),
            format!(
                "header is not a Python literal: {} (header: \"{}\")",
                e.message,
                shown()
            ),
        )
    })?;
    check_header(value).map_err(|what| format_err(path, header_start, format!("{what} (header: \"{}\")", shown())))
}

/// The values of `body` (exactly `count * size` bytes of `dtype`).
fn decode(path: &Path, data_start: usize, dtype: DType, big_endian: bool, body: &[u8]) -> Result<Data, NpyError> {
    fn arr<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        if big {
            a.reverse();
        }
        a
    }
    let item = dtype.size();
    let chunks = body.chunks_exact(item);
    Ok(match dtype {
        DType::F16 => Data::F32(
            chunks
                .map(|c| half::f16::from_bits(u16::from_le_bytes(arr(c, big_endian))).to_f32())
                .collect(),
        ),
        DType::F32 => Data::F32(chunks.map(|c| f32::from_le_bytes(arr(c, big_endian))).collect()),
        DType::F64 => Data::F64(chunks.map(|c| f64::from_le_bytes(arr(c, big_endian))).collect()),
        DType::Int(b) | DType::UInt(b) => {
            let signed = matches!(dtype, DType::Int(_));
            let mut out = Vec::with_capacity(body.len() / b);
            for (i, c) in chunks.enumerate() {
                let mut buf = [0u8; 8];
                if big_endian {
                    buf[8 - b..].copy_from_slice(c);
                    buf.reverse();
                } else {
                    buf[..b].copy_from_slice(c);
                }
                let raw = u64::from_le_bytes(buf);
                let v = if signed {
                    // Sign-extend from b bytes.
                    let shift = 64 - 8 * b as u32;
                    ((raw << shift) as i64) >> shift
                } else if raw > i64::MAX as u64 {
                    return Err(format_err(
                        path,
                        data_start + i * b,
                        format!("element {i} = {raw} does not fit in int64"),
                    ));
                } else {
                    raw as i64
                };
                out.push(v);
            }
            Data::Int(out)
        }
    })
}

/// The C-order copy of Fortran-order (column-major) values of `shape`.
fn fortran_to_c<T: Copy>(v: &[T], shape: &[usize]) -> Vec<T> {
    let n = shape.len();
    let mut out = Vec::with_capacity(v.len());
    let mut idx = vec![0usize; n];
    // Fortran strides: the first index moves fastest.
    let mut strides = vec![1usize; n];
    for d in 1..n {
        strides[d] = strides[d - 1] * shape[d - 1];
    }
    for _ in 0..v.len() {
        out.push(v[idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()]);
        // Advance the C-order index (the last index fastest).
        for d in (0..n).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// The bytes of a version-1.0 `.npy` file holding a little-endian f32 array.
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let shape_text = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    encode(
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}"),
        |out| {
            for v in data {
                out.extend_from_slice(&v.to_le_bytes());
            }
        },
    )
}

/// The bytes of a version-1.0 `.npy` file with the given header dict; `body` appends the data.
pub fn encode(dict: &str, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut header = dict.to_string();
    // Pad so that the data starts at a multiple of 64 bytes, the header ending in '\n'.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    body(&mut out);
    out
}

/// Writes a little-endian f32 `.npy` file atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), crate::io::atomic::WriteError> {
    crate::io::atomic::write(path, &encode_f32(shape, data))
}

#[cfg(test)]
mod tests;
