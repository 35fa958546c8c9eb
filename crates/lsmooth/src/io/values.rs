//! What every array reader resolves a file to (a [`Layout`]: dtype, shape, byte order, element order) and the one
//! streaming decoder that turns the stored bytes into the values a command needs ([`read_values`]), with the
//! error type they share ([`ArrayError`]).
//!
//! The decoder reads the values in blocks of [`BLOCK`] bytes straight into the output vector: memory is the
//! output (plus one block), never a second copy of the file. Only arrays whose elements are not stored in C order
//! (numpy's `fortran_order`, a non-contiguous torch tensor) are read whole first and then reordered.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes decoded per block.
pub const BLOCK: usize = 1 << 20;

/// Why an array could not be read or written. The message names the file (with `:name` for an array inside an
/// archive or a dict) and, for a malformed file, the byte offset at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", crate::io::show_path(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a valid file of its format.
    #[error("{}: byte offset {offset}: {what}", crate::io::show_path(path))]
    Format {
        /// The file (`file:name` inside an archive, where the offset counts from the start of that member).
        path: PathBuf,
        /// Where in the file.
        offset: u64,
        /// What is wrong there.
        what: String,
    },
    /// A valid file whose content is not what the caller needs (dtype, shape, a missing or ambiguous name).
    #[error("{}: {what}", crate::io::show_path(path))]
    Content {
        /// The file.
        path: PathBuf,
        /// What was expected and found.
        what: String,
    },
}

impl ArrayError {
    /// A format error at `offset` of `path`.
    pub fn format(path: &Path, offset: u64, what: impl Into<String>) -> Self {
        ArrayError::Format {
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        }
    }

    /// A content error about `path`.
    pub fn content(path: &Path, what: impl Into<String>) -> Self {
        ArrayError::Content {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    /// An input/output error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ArrayError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
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
    /// bfloat16 (read widened to f32, exactly).
    BF16,
    /// Signed integer of this many bytes.
    Int(usize),
    /// Unsigned integer of this many bytes.
    UInt(usize),
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 => 4,
            DType::F64 => 8,
            DType::Int(b) | DType::UInt(b) => b,
        }
    }

    /// Whether it is a floating-point type.
    pub fn is_float(self) -> bool {
        !matches!(self, DType::Int(_) | DType::UInt(_))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::F32 => write!(f, "float32"),
            DType::F64 => write!(f, "float64"),
            DType::F16 => write!(f, "float16"),
            DType::BF16 => write!(f, "bfloat16"),
            DType::Int(b) => write!(f, "int{}", b * 8),
            DType::UInt(b) => write!(f, "uint{}", b * 8),
        }
    }
}

/// How the elements follow each other in the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// C order (row-major), starting at the first stored element.
    C,
    /// Fortran order (column-major).
    Fortran,
    /// Element `[i0, i1, ...]` at `offset + sum(i_d * strides[d])` (in elements): a torch tensor viewing its
    /// storage.
    Strided {
        /// The first element's index in the storage.
        offset: usize,
        /// The step of each dimension, in elements.
        strides: Vec<usize>,
    },
}

/// What a reader found about an array before reading its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The element type as stored.
    pub dtype: DType,
    /// The shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Whether the stored elements are big-endian.
    pub big_endian: bool,
    /// The element order.
    pub order: Order,
}

impl Layout {
    /// The number of elements, or `None` when it overflows (or its bytes do).
    pub fn count(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|c| c.checked_mul(self.dtype.size()).is_some())
    }

    /// How many stored elements the values span: `count` for C and Fortran order, for a strided view the
    /// distance to its last element plus one (past `offset`, which the caller skips). `None` on overflow.
    pub fn span(&self) -> Option<usize> {
        let count = self.count()?;
        match &self.order {
            Order::Strided { strides, .. } if count > 0 => self
                .shape
                .iter()
                .zip(strides)
                .try_fold(1usize, |a, (&d, &s)| {
                    (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
                })
                .filter(|c| c.checked_mul(self.dtype.size()).is_some()),
            _ => Some(count),
        }
    }
}

/// The values a command needs: floats or integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Floats, computed in f32 (float64 rounded to nearest); an integer array is an error.
    F32,
    /// Integers (labels); a float array is an error, as is an unsigned value above `i64::MAX`.
    I64,
}

/// Decoded values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Floats.
    F32(Vec<f32>),
    /// Integers.
    Int(Vec<i64>),
}

impl Values {
    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::Int(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks that `layout`'s dtype can give `want`; `expected` describes the array, as in `logits of shape [N, K]`.
pub fn check_kind(path: &Path, layout: &Layout, want: Want, expected: &str) -> Result<(), ArrayError> {
    match (want, layout.dtype.is_float()) {
        (Want::F32, true) | (Want::I64, false) => Ok(()),
        _ => Err(kind_error(path, layout.dtype, &layout.shape, want, expected)),
    }
}

/// The error of an array of `dtype` where `want` was needed.
fn kind_error(path: &Path, dtype: DType, shape: &[usize], want: Want, expected: &str) -> ArrayError {
    let needed = match want {
        Want::F32 => "dtype float16, bfloat16, float32 or float64",
        Want::I64 => "an integer dtype",
    };
    ArrayError::content(
        path,
        format!("expected {expected} of {needed}, found {dtype} of shape {shape:?}"),
    )
}

/// An array read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The file it came from (`file:name` for an array inside an archive or a dict).
    pub path: PathBuf,
    /// The dtype as stored.
    pub dtype: DType,
    /// The shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// The values, in C order: floats as f32, integers as i64.
    pub data: Values,
}

impl Array {
    /// The shape, checked to have `ndim` dimensions; `expected` describes it for the error.
    pub fn expect_ndim(&self, ndim: usize, expected: &str) -> Result<&[usize], ArrayError> {
        if self.shape.len() == ndim {
            Ok(&self.shape)
        } else {
            Err(ArrayError::content(
                &self.path,
                format!("expected {expected}, found shape {:?}", self.shape),
            ))
        }
    }

    /// The values as f32; integer arrays are an error.
    pub fn into_f32(self, expected: &str) -> Result<Vec<f32>, ArrayError> {
        match self.data {
            Values::F32(v) => Ok(v),
            Values::Int(_) => Err(kind_error(&self.path, self.dtype, &self.shape, Want::F32, expected)),
        }
    }

    /// The values as i64; float arrays are an error.
    pub fn into_i64(self, expected: &str) -> Result<Vec<i64>, ArrayError> {
        match self.data {
            Values::Int(v) => Ok(v),
            Values::F32(_) => Err(kind_error(&self.path, self.dtype, &self.shape, Want::I64, expected)),
        }
    }
}

/// What every format's reader ends with: the kind checked against `want`, then the values of `layout` read
/// from `r` ([`read_values`], with its `at`), as the array of `path`.
pub fn decode_array(
    path: &Path,
    r: &mut impl Read,
    layout: Layout,
    want: Want,
    expected: &str,
    at: u64,
) -> Result<Array, ArrayError> {
    check_kind(path, &layout, want, expected)?;
    let data = read_values(path, r, &layout, want, at)?;
    Ok(Array {
        path: path.to_path_buf(),
        dtype: layout.dtype,
        shape: layout.shape,
        data,
    })
}

/// Reads the values of `layout` from `r`, which is positioned at the first stored element (for a strided view: at
/// element `offset` of the storage) and holds at least `span` elements; `at` is the byte offset of that position
/// for errors, `path` names the file. The caller has checked the kind with [`check_kind`] and that the stored
/// bytes exist, so the allocation is bounded by the input.
pub fn read_values(path: &Path, r: &mut impl Read, layout: &Layout, want: Want, at: u64) -> Result<Values, ArrayError> {
    let count = layout.count().ok_or_else(|| too_large(path, layout))?;
    match &layout.order {
        Order::C => read_run(path, r, layout, want, count, at),
        _ if count <= 1 || layout.shape.len() < 2 && matches!(layout.order, Order::Fortran) => {
            read_run(path, r, layout, want, count, at)
        }
        Order::Fortran => {
            let stored = read_run(path, r, layout, want, count, at)?;
            let strides = fortran_strides(&layout.shape);
            Ok(gather(stored, &layout.shape, &strides))
        }
        Order::Strided { strides, .. } => {
            let span = layout.span().ok_or_else(|| too_large(path, layout))?;
            let stored = read_run(path, r, layout, want, span, at)?;
            Ok(gather(stored, &layout.shape, strides))
        }
    }
}

fn too_large(path: &Path, layout: &Layout) -> ArrayError {
    ArrayError::content(path, format!("shape {:?} is too large", layout.shape))
}

/// Reads `count` consecutive stored elements, converted to `want`.
fn read_run(
    path: &Path,
    r: &mut impl Read,
    layout: &Layout,
    want: Want,
    count: usize,
    at: u64,
) -> Result<Values, ArrayError> {
    let item = layout.dtype.size();
    let mut out = match want {
        Want::F32 => Values::F32(Vec::with_capacity(count)),
        Want::I64 => Values::Int(Vec::with_capacity(count)),
    };
    let mut buf = vec![0u8; BLOCK.min(count * item).max(item)];
    let mut done = 0usize;
    while done < count {
        let take = (count - done).min(BLOCK / item);
        let bytes = &mut buf[..take * item];
        r.read_exact(bytes).map_err(|e| {
            let offset = at + (done * item) as u64;
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ArrayError::format(
                    path,
                    offset,
                    format!(
                        "truncated: {count} elements of {} expected, the data ends before element {done} + {take}",
                        layout.dtype
                    ),
                )
            } else {
                ArrayError::format(path, offset, format!("cannot read the data: {e}"))
            }
        })?;
        decode(path, layout, bytes, at + (done * item) as u64, &mut out)?;
        done += take;
    }
    Ok(out)
}

/// Appends the values of `bytes` (whole elements of `layout.dtype`) to `out`.
fn decode(path: &Path, layout: &Layout, bytes: &[u8], at: u64, out: &mut Values) -> Result<(), ArrayError> {
    let (dtype, big) = (layout.dtype, layout.big_endian);
    let item = dtype.size();
    fn arr<const N: usize>(c: &[u8], big: bool) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        if big {
            a.reverse();
        }
        a
    }
    let chunks = bytes.chunks_exact(item);
    match out {
        Values::F32(v) => match dtype {
            DType::F16 => v.extend(chunks.map(|c| half::f16::from_bits(u16::from_le_bytes(arr(c, big))).to_f32())),
            DType::BF16 => v.extend(chunks.map(|c| half::bf16::from_bits(u16::from_le_bytes(arr(c, big))).to_f32())),
            DType::F32 => v.extend(chunks.map(|c| f32::from_le_bytes(arr(c, big)))),
            DType::F64 => v.extend(chunks.map(|c| f64::from_le_bytes(arr(c, big)) as f32)),
            DType::Int(_) | DType::UInt(_) => unreachable!("check_kind refuses integers as floats"),
        },
        Values::Int(v) => {
            let signed = matches!(dtype, DType::Int(_));
            let first = v.len();
            for (i, c) in chunks.enumerate() {
                let mut buf = [0u8; 8];
                if big {
                    buf[8 - item..].copy_from_slice(c);
                    buf.reverse();
                } else {
                    buf[..item].copy_from_slice(c);
                }
                let raw = u64::from_le_bytes(buf);
                let value = if signed {
                    // Sign-extend from `item` bytes.
                    let shift = 64 - 8 * item as u32;
                    ((raw << shift) as i64) >> shift
                } else if raw > i64::MAX as u64 {
                    return Err(ArrayError::format(
                        path,
                        at + (i * item) as u64,
                        format!("element {} = {raw} does not fit in int64", first + i),
                    ));
                } else {
                    raw as i64
                };
                v.push(value);
            }
        }
    }
    Ok(())
}

/// The strides (in elements) of Fortran order: the first index moves fastest.
fn fortran_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for d in 1..shape.len() {
        strides[d] = strides[d - 1] * shape[d - 1];
    }
    strides
}

/// The C-order values of `shape` whose element `[i0, i1, ...]` is `stored[sum(i_d * strides[d])]`.
fn gather(stored: Values, shape: &[usize], strides: &[usize]) -> Values {
    fn pick<T: Copy>(v: &[T], shape: &[usize], strides: &[usize]) -> Vec<T> {
        let count: usize = shape.iter().product();
        let mut out = Vec::with_capacity(count);
        let mut idx = vec![0usize; shape.len()];
        let mut at = 0usize;
        for _ in 0..count {
            out.push(v[at]);
            // Advance the C-order index (the last index fastest), moving `at` along.
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                at += strides[d];
                if idx[d] < shape[d] {
                    break;
                }
                at -= strides[d] * shape[d];
                idx[d] = 0;
            }
        }
        out
    }
    match stored {
        Values::F32(v) => Values::F32(pick(&v, shape, strides)),
        Values::Int(v) => Values::Int(pick(&v, shape, strides)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(dtype: DType, shape: &[usize], order: Order) -> Layout {
        Layout {
            dtype,
            shape: shape.to_vec(),
            big_endian: false,
            order,
        }
    }

    #[test]
    fn fortran_and_strided_orders_give_c_order() {
        // The [2, 3] array 0..6 stored column-major: 0 3 1 4 2 5.
        let bytes: Vec<u8> = [0i32, 3, 1, 4, 2, 5].iter().flat_map(|x| x.to_le_bytes()).collect();
        let l = layout(DType::Int(4), &[2, 3], Order::Fortran);
        let v = read_values(Path::new("f"), &mut &bytes[..], &l, Want::I64, 0).unwrap();
        assert_eq!(v, Values::Int(vec![0, 1, 2, 3, 4, 5]));
        // A transposed view (torch's `x.t()` of a [3, 2] C-order storage 0..6): [2, 3] with strides (1, 2).
        let bytes: Vec<u8> = (0..6).flat_map(|x: i64| x.to_le_bytes()).collect();
        let l = layout(
            DType::Int(8),
            &[2, 3],
            Order::Strided {
                offset: 0,
                strides: vec![1, 2],
            },
        );
        assert_eq!(l.span(), Some(6));
        let v = read_values(Path::new("t"), &mut &bytes[..], &l, Want::I64, 0).unwrap();
        assert_eq!(v, Values::Int(vec![0, 2, 4, 1, 3, 5]));
        // A broadcast view (stride 0) reads one element per row.
        let l = layout(
            DType::Int(8),
            &[2, 3],
            Order::Strided {
                offset: 0,
                strides: vec![1, 0],
            },
        );
        assert_eq!(l.span(), Some(2));
        let v = read_values(Path::new("b"), &mut &bytes[..], &l, Want::I64, 0).unwrap();
        assert_eq!(v, Values::Int(vec![0, 0, 0, 1, 1, 1]));
    }

    #[test]
    fn blocks_and_truncation() {
        // More than one block, big-endian float64 rounded to f32.
        let n = BLOCK / 8 + 3;
        let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f64 + 0.1).to_be_bytes()).collect();
        let mut l = layout(DType::F64, &[n], Order::C);
        l.big_endian = true;
        let Values::F32(v) = read_values(Path::new("x"), &mut &bytes[..], &l, Want::F32, 0).unwrap() else {
            panic!("floats")
        };
        assert_eq!(v.len(), n);
        assert!(v.iter().enumerate().all(|(i, &x)| x == (i as f64 + 0.1) as f32));
        let err = read_values(Path::new("x"), &mut &bytes[..bytes.len() - 1], &l, Want::F32, 100).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        // bfloat16 1.5 is 0x3fc0.
        let l = layout(DType::BF16, &[1], Order::C);
        let v = read_values(Path::new("h"), &mut &[0xc0u8, 0x3f][..], &l, Want::F32, 0).unwrap();
        assert_eq!(v, Values::F32(vec![1.5]));
    }
}
