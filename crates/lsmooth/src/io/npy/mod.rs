//! Reading and writing NumPy `.npy` files (format versions 1.0, 2.0 and 3.0).
//!
//! Reads C-order arrays of `f4`, `f8` and every integer dtype (`i1`..`i8`, `u1`..`u8`), little- or big-endian.
//! Writes little-endian `f4` arrays, atomically ([`super::atomic`]). Every error names the file and, where it
//! applies, the byte offset.
//!
//! Hand-written rather than taken from a crate: numpy reads the header with `ast.literal_eval`, and accepting
//! exactly what it accepts needs a real Python-literal parser ([`pyliteral`]); the general-purpose readers
//! match the header loosely, and their errors do not say where a file is wrong.

use crate::io::values::{decode_array, Layout, Order, Want};
pub use crate::io::values::{Array, ArrayError, DType, Values as Data};
use std::io::Read;
use std::path::Path;

mod header;
pub mod pyliteral;

use header::{check_header, Header};
pub use header::{dtype_of_descr, escape, MAX_HEADER_CHARS};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

fn format_err(path: &Path, offset: usize, what: impl Into<String>) -> ArrayError {
    ArrayError::format(path, offset as u64, what)
}

/// Reads a `.npy` file whole, floats as f32 and integers as i64. Memory: the values (at most 8 bytes each).
pub fn read(path: &Path) -> Result<Array, ArrayError> {
    read_as(path, None, "an array")
}

/// Reads a `.npy` file as `want` (or, without, as its dtype's kind), streamed into its values; `expected`
/// describes the array for errors.
pub fn read_as(path: &Path, want: Option<Want>, expected: &str) -> Result<Array, ArrayError> {
    let file = std::fs::File::open(path).map_err(|e| ArrayError::io(path, e))?;
    let len = file.metadata().map_err(|e| ArrayError::io(path, e))?.len();
    let mut r = std::io::BufReader::new(file);
    let l = read_layout(path, &mut r, len)?;
    let want = want.unwrap_or_else(|| kind_of(&l.layout));
    decode_array(path, &mut r, l.layout, want, expected, l.header_end as u64)
}

/// Parses the bytes of a `.npy` file; `path` is used in errors only. Accepts what `numpy.load` accepts
/// (format 1.0, 2.0, 3.0; the header as `ast.literal_eval` reads it; bytes after the data ignored, as numpy
/// ignores them) for the supported dtypes, and refuses everything else with the offset at fault.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array, ArrayError> {
    let mut r = bytes;
    let l = read_layout(path, &mut r, bytes.len() as u64)?;
    let want = kind_of(&l.layout);
    decode_array(path, &mut r, l.layout, want, "an array", l.header_end as u64)
}

/// Floats for a float dtype, integers for an integer one.
fn kind_of(layout: &Layout) -> Want {
    if layout.dtype.is_float() {
        Want::F32
    } else {
        Want::I64
    }
}

/// A `.npy` file's header from `r` (at the file's start; `len` bytes long), and the checks that the data it
/// declares is there: on success `r` is at the first element. Reads no more than the header.
pub fn read_layout(path: &Path, r: &mut impl Read, len: u64) -> Result<NpyLayout, ArrayError> {
    // The fixed preamble, then the header it declares.
    let mut prefix = Vec::with_capacity(12);
    r.by_ref()
        .take(12)
        .read_to_end(&mut prefix)
        .map_err(|e| ArrayError::io(path, e))?;
    let (major, header_start, header_end) = preamble(path, &prefix, len)?;
    r.by_ref()
        .take((header_end - prefix.len().min(header_end)) as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| ArrayError::io(path, e))?;
    if prefix.len() < header_end {
        return Err(format_err(
            path,
            prefix.len(),
            "the file ended while its header was read",
        ));
    }
    let h = header(path, major, &prefix, header_start..header_end)?;
    let layout = Layout {
        dtype: h.dtype,
        shape: h.shape,
        big_endian: h.big_endian,
        order: if h.fortran_order { Order::Fortran } else { Order::C },
    };
    let item = layout.dtype.size();
    let count = layout
        .count()
        .ok_or_else(|| format_err(path, header_start, format!("shape {:?} is too large", layout.shape)))?;
    let data_len = count * item;
    let body = len.saturating_sub(header_end as u64);
    if body < data_len as u64 {
        return Err(format_err(
            path,
            len as usize,
            format!(
                "truncated: shape {:?} of {} needs {data_len} data bytes after the header \
                 (which ends at offset {header_end}); the file holds {body}",
                layout.shape, layout.dtype
            ),
        ));
    }
    Ok(NpyLayout { layout, header_end })
}

/// A checked `.npy` header: the layout and where the data starts.
#[derive(Debug, Clone)]
pub struct NpyLayout {
    /// The array's layout.
    pub layout: Layout,
    /// The byte offset of the first element.
    pub header_end: usize,
}

/// The magic, the format version and the header length, from the first bytes of a file of `total` bytes (at
/// least its first 12, or all of a shorter file): returns the major version and where the header starts and
/// ends.
fn preamble(path: &Path, bytes: &[u8], total: u64) -> Result<(u8, usize, usize), ArrayError> {
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
    if total < header_end as u64 {
        return Err(format_err(
            path,
            total as usize,
            format!("file ends inside the header (header declares {header_len} bytes ending at offset {header_end})"),
        ));
    }
    Ok((major, header_start, header_end))
}

/// The header at `range` of `bytes` in format version `major`: decoded (latin-1, or UTF-8 for 3.0), parsed as
/// a Python literal and checked. Errors carry the byte offset at fault.
fn header(path: &Path, major: u8, bytes: &[u8], range: std::ops::Range<usize>) -> Result<Header, ArrayError> {
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

/// Writes a little-endian f32 `.npy` file to `w`, the values converted block by block (no copy of the data).
pub fn write_f32_to(w: &mut dyn std::io::Write, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    w.write_all(&encode_f32(shape, &[]))?;
    let mut block = Vec::with_capacity(1 << 16);
    for chunk in data.chunks(1 << 14) {
        block.clear();
        block.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        w.write_all(&block)?;
    }
    Ok(())
}

/// Writes a little-endian f32 `.npy` file atomically.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), crate::io::atomic::WriteError> {
    crate::io::atomic::write(path, &encode_f32(shape, data))
}

#[cfg(test)]
mod tests;
