//! Reading and writing NumPy `.npy` files (format versions 1.0, 2.0 and 3.0).
//!
//! Reads C-order arrays of `f4`, `f8` and every integer dtype (`i1`..`i8`, `u1`..`u8`), little- or big-endian.
//! Writes little-endian `f4` arrays, atomically (a temporary file in the destination's folder, renamed into
//! place). Every error names the file and, where it applies, the byte offset.
//!
//! Hand-written rather than taken from a crate: the format is small, and the errors here say where a file is
//! wrong (offset, expected and found), which the general-purpose readers do not.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why a `.npy` file could not be read or written. The message names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a valid `.npy` file.
    #[error("{path}: byte offset {offset}: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Where in the file.
        offset: usize,
        /// What is wrong there.
        what: String,
    },
    /// A valid file whose dtype or shape is not what the caller needs.
    #[error("{path}: {what}")]
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
    /// Signed integer of this many bytes.
    Int(usize),
    /// Unsigned integer of this many bytes.
    UInt(usize),
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::F32 => write!(f, "float32"),
            DType::F64 => write!(f, "float64"),
            DType::Int(b) => write!(f, "int{}", b * 8),
            DType::UInt(b) => write!(f, "uint{}", b * 8),
        }
    }
}

/// The values of an array, widened to one of three types.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// `f4` values.
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
                "expected {expected} of dtype float32 or float64, found {}",
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

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<Array, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &bytes)
}

/// Parses the bytes of a `.npy` file; `path` is used in errors only.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array, NpyError> {
    if bytes.len() < 10 {
        return Err(format_err(
            path,
            bytes.len(),
            format!(
                "file too short for a .npy header ({} bytes; at least 10 needed)",
                bytes.len()
            ),
        ));
    }
    if &bytes[..6] != MAGIC {
        return Err(format_err(path, 0, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(format_err(path, bytes.len(), "file ends inside the header length"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format_err(path, 6, format!("unsupported .npy format version {v}"))),
    };
    let header_end = header_start + header_len;
    if bytes.len() < header_end {
        return Err(format_err(
            path,
            bytes.len(),
            format!("file ends inside the header (header declares {header_len} bytes ending at offset {header_end})"),
        ));
    }
    let header = std::str::from_utf8(&bytes[header_start..header_end])
        .map_err(|e| format_err(path, header_start + e.valid_up_to(), "header is not text"))?;
    let hdr_err = |what: String| format_err(path, header_start, format!("{what} in header {:?}", header.trim_end()));

    let descr = dict_value(header, "descr").ok_or_else(|| hdr_err("no 'descr' key".into()))?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let (big_endian, dtype) = parse_descr(descr).ok_or_else(|| hdr_err(format!("unsupported dtype '{descr}'")))?;
    let fortran = dict_value(header, "fortran_order").ok_or_else(|| hdr_err("no 'fortran_order' key".into()))?;
    if fortran.trim() == "True" {
        return Err(hdr_err(
            "Fortran-order arrays are not supported (save a C-contiguous array, e.g. np.ascontiguousarray)".into(),
        ));
    }
    let shape_text = dict_value(header, "shape").ok_or_else(|| hdr_err("no 'shape' key".into()))?;
    let shape = parse_shape(shape_text).ok_or_else(|| hdr_err(format!("malformed shape {shape_text}")))?;

    let item = match dtype {
        DType::F32 => 4,
        DType::F64 => 8,
        DType::Int(b) | DType::UInt(b) => b,
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| hdr_err("shape too large".into()))?;
    let data_len = count
        .checked_mul(item)
        .ok_or_else(|| hdr_err("shape too large".into()))?;
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
    if body.len() > data_len {
        return Err(format_err(
            path,
            header_end + data_len,
            format!(
                "{} unexpected bytes after the data of shape {shape:?}",
                body.len() - data_len
            ),
        ));
    }
    let chunks = body.chunks_exact(item.max(1));
    let data = match dtype {
        DType::F32 => Data::F32(
            chunks
                .map(|c| {
                    let a: [u8; 4] = c.try_into().unwrap_or_default();
                    if big_endian {
                        f32::from_be_bytes(a)
                    } else {
                        f32::from_le_bytes(a)
                    }
                })
                .collect(),
        ),
        DType::F64 => Data::F64(
            chunks
                .map(|c| {
                    let a: [u8; 8] = c.try_into().unwrap_or_default();
                    if big_endian {
                        f64::from_be_bytes(a)
                    } else {
                        f64::from_le_bytes(a)
                    }
                })
                .collect(),
        ),
        DType::Int(b) | DType::UInt(b) => {
            let signed = matches!(dtype, DType::Int(_));
            let mut out = Vec::with_capacity(count);
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
                        header_end + i * b,
                        format!("element {i} = {raw} does not fit in int64"),
                    ));
                } else {
                    raw as i64
                };
                out.push(v);
            }
            Data::Int(out)
        }
    };
    Ok(Array {
        path: path.to_path_buf(),
        dtype,
        shape,
        data,
    })
}

/// The text after `'key':` up to the next top-level comma or the closing brace.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat_single = format!("'{key}'");
    let pat_double = format!("\"{key}\"");
    let start = header
        .find(&pat_single)
        .map(|i| i + pat_single.len())
        .or_else(|| header.find(&pat_double).map(|i| i + pat_double.len()))?;
    let rest = header[start..].trim_start().strip_prefix(':')?;
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth < 0 {
                    return Some(rest[..i].trim());
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

fn parse_descr(d: &str) -> Option<(bool, DType)> {
    let (order, rest) = match d.chars().next()? {
        c @ ('<' | '>' | '|' | '=') => (c, &d[1..]),
        _ => ('=', d),
    };
    let big = order == '>' || (order == '=' && cfg!(target_endian = "big"));
    let kind = rest.chars().next()?;
    let size: usize = rest[1..].parse().ok()?;
    let dtype = match (kind, size) {
        ('f', 4) => DType::F32,
        ('f', 8) => DType::F64,
        ('i', 1 | 2 | 4 | 8) => DType::Int(size),
        ('u', 1 | 2 | 4 | 8) => DType::UInt(size),
        _ => return None,
    };
    Some((big, dtype))
}

fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_end_matches('L').parse().ok())
        .collect()
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

/// A file being written: the bytes go to a temporary file beside the destination, which
/// [`commit`](PendingFile::commit) renames into place. Dropped uncommitted, it leaves nothing behind.
pub struct PendingFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl PendingFile {
    /// Writes `bytes` to a temporary file in `dest`'s folder.
    pub fn new(dest: &Path, bytes: &[u8]) -> Result<Self, NpyError> {
        let io = |source| NpyError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".lsmooth-").suffix(".tmp");
        // A temporary file is private (0600) by default; the result is an ordinary output file.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let mut tmp = builder.tempfile_in(dir).map_err(io)?;
        tmp.write_all(bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Renames the temporary file over the destination.
    pub fn commit(self) -> Result<(), NpyError> {
        let dest = self.dest;
        self.tmp.persist(&dest).map_err(|e| NpyError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// Writes a little-endian f32 `.npy` file atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    PendingFile::new(path, &encode_f32(shape, data))?.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.npy")
    }

    #[test]
    fn round_trip_f32() {
        let bytes = encode_f32(&[2, 3], &[1.0, -2.5, 3.0, 0.0, 1e-8, f32::INFINITY]);
        assert_eq!(
            bytes.len(),
            128 + 24,
            "a header padded to 128 bytes, as numpy writes it, then 6 f32 values"
        );
        let a = parse(p(), &bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, Data::F32(vec![1.0, -2.5, 3.0, 0.0, 1e-8, f32::INFINITY]));
        let s = parse(p(), &encode_f32(&[], &[4.0])).unwrap();
        assert_eq!(s.shape, Vec::<usize>::new());
        let v = parse(p(), &encode_f32(&[1], &[4.0])).unwrap();
        assert_eq!(v.shape, vec![1]);
    }

    #[test]
    fn integer_dtypes_and_endianness() {
        let le = encode("{'descr': '<i2', 'fortran_order': False, 'shape': (3,), }", |o| {
            for v in [-1i16, 300, 7] {
                o.extend_from_slice(&v.to_le_bytes());
            }
        });
        assert_eq!(parse(p(), &le).unwrap().data, Data::Int(vec![-1, 300, 7]));
        let be = encode("{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", |o| {
            for v in [-5i64, 1 << 40] {
                o.extend_from_slice(&v.to_be_bytes());
            }
        });
        assert_eq!(parse(p(), &be).unwrap().data, Data::Int(vec![-5, 1 << 40]));
        let u8s = encode("{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", |o| {
            o.extend([0, 255])
        });
        assert_eq!(parse(p(), &u8s).unwrap().data, Data::Int(vec![0, 255]));
        let big = encode("{'descr': '<u8', 'fortran_order': False, 'shape': (1,), }", |o| {
            o.extend_from_slice(&u64::MAX.to_le_bytes())
        });
        let e = parse(p(), &big).unwrap_err().to_string();
        assert!(e.contains("does not fit in int64") && e.contains("offset 128"), "{e}");
    }

    #[test]
    fn truncated_and_malformed_files_name_the_offset() {
        let good = encode_f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let e = parse(p(), &good[..good.len() - 3]).unwrap_err().to_string();
        assert!(
            e.starts_with("x.npy: byte offset 141: truncated") && e.contains("needs 16 data bytes"),
            "{e}"
        );
        let e = parse(p(), &good[..5]).unwrap_err().to_string();
        assert!(e.contains("too short") && e.contains("offset 5"), "{e}");
        let e = parse(p(), &good[..40]).unwrap_err().to_string();
        assert!(e.contains("ends inside the header"), "{e}");
        let mut bad = good.clone();
        bad[0] = b'P';
        let e = parse(p(), &bad).unwrap_err().to_string();
        assert!(e.contains("magic") && e.contains("offset 0"), "{e}");
        let mut extra = good.clone();
        extra.push(0);
        let e = parse(p(), &extra).unwrap_err().to_string();
        assert!(e.contains("1 unexpected bytes") && e.contains("offset 144"), "{e}");
        let f = encode("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", |o| {
            o.extend([0; 4])
        });
        assert!(parse(p(), &f).unwrap_err().to_string().contains("Fortran"));
        let c = encode("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", |o| {
            o.extend([0; 8])
        });
        assert!(parse(p(), &c)
            .unwrap_err()
            .to_string()
            .contains("unsupported dtype '<c8'"));
    }
}
