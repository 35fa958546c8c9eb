//! Arrays from `.safetensors` files: `file.safetensors:name`, or the only tensor of the file.
//!
//! The header is read and validated by the `safetensors` crate's own `Metadata` (the offsets must tile the data
//! in order, each tensor's bytes must match its dtype and shape), with the checks its `read_metadata` adds
//! around it (the header size limit, UTF-8, the data ending exactly at the end of the file); then only the chosen
//! tensor's bytes are read, block by block.

use crate::io::values::{decode_array, Array, ArrayError, DType, Layout, Order, Want};
use safetensors::tensor::{Dtype, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The `safetensors` crate's limit on the header's size.
const MAX_HEADER: u64 = 100_000_000;

/// Reads tensor `name` (or the only one) of the safetensors file `path`, checked against `expected` for `want`.
pub fn read(path: &Path, name: Option<&str>, want: Want, expected: &str) -> Result<Array, ArrayError> {
    let mut file = std::fs::File::open(path).map_err(|e| ArrayError::io(path, e))?;
    let len = file.metadata().map_err(|e| ArrayError::io(path, e))?.len();
    let (header_len, metadata) = read_metadata(path, &mut file, len)?;
    let tensors = metadata.tensors();
    let (chosen, info) = match name {
        Some(n) => match tensors.get(n) {
            Some(info) => (n.to_string(), *info),
            None => {
                return Err(ArrayError::content(
                    path,
                    format!(
                        "no tensor named '{}' ({})",
                        crate::io::escape_controls(n),
                        listing(&metadata)
                    ),
                ))
            }
        },
        None if tensors.len() == 1 => {
            let (n, info) = tensors.into_iter().next().expect("one tensor");
            (n, info)
        }
        None => {
            return Err(ArrayError::content(
                path,
                format!(
                    "holds {} tensors: name one as FILE:NAME ({})",
                    tensors.len(),
                    listing(&metadata)
                ),
            ))
        }
    };
    let shown = crate::io::member_path(path, &chosen);
    let dtype = dtype(info.dtype).ok_or_else(|| {
        ArrayError::content(
            &shown,
            format!(
                "unsupported dtype {:?} (supported: F16, BF16, F32, F64 and the integer types)",
                info.dtype
            ),
        )
    })?;
    let layout = Layout {
        dtype,
        shape: info.shape.clone(),
        big_endian: false,
        order: Order::C,
    };
    let start = 8 + header_len + info.data_offsets.0 as u64;
    file.seek(SeekFrom::Start(start)).map_err(|e| ArrayError::io(path, e))?;
    decode_array(
        &shown,
        &mut std::io::BufReader::new(file),
        layout,
        want,
        expected,
        start,
    )
}

/// The header of a safetensors file of `len` bytes, checked as `SafeTensors::read_metadata` checks it: returns
/// its length and the validated metadata.
fn read_metadata(path: &Path, file: &mut std::fs::File, len: u64) -> Result<(u64, Metadata), ArrayError> {
    let mut n = [0u8; 8];
    if len < 8 {
        return Err(ArrayError::format(
            path,
            len,
            format!("file of {len} bytes is too short for a safetensors header"),
        ));
    }
    file.read_exact(&mut n).map_err(|e| ArrayError::io(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Err(ArrayError::format(
            path,
            0,
            format!("header length {n} exceeds the safetensors limit of {MAX_HEADER} bytes"),
        ));
    }
    if 8 + n > len {
        return Err(ArrayError::format(
            path,
            len,
            format!(
                "the header declares {n} bytes; the file ends {} bytes after the length",
                len - 8
            ),
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| ArrayError::io(path, e))?;
    let text = std::str::from_utf8(&header)
        .map_err(|e| ArrayError::format(path, 8 + e.valid_up_to() as u64, "the header is not valid UTF-8"))?;
    let metadata: Metadata = serde_json::from_str(text).map_err(|e| {
        ArrayError::format(
            path,
            8,
            format!(
                "invalid safetensors header: {}",
                crate::io::escape_controls(&e.to_string())
            ),
        )
    })?;
    let data_end = 8 + n + metadata.data_len() as u64;
    if data_end != len {
        return Err(ArrayError::format(
            path,
            len.min(data_end),
            format!("the header's tensors end at byte {data_end}, the file at byte {len} (a truncated or padded file)"),
        ));
    }
    Ok((n, metadata))
}

/// The tensor names of `metadata`, for an error message: sorted, the first few.
fn listing(metadata: &Metadata) -> String {
    crate::io::list_some("tensors", metadata.tensors().into_keys())
}

/// The dtype this reader decodes, for a safetensors dtype.
fn dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I8 => DType::Int(1),
        Dtype::I16 => DType::Int(2),
        Dtype::I32 => DType::Int(4),
        Dtype::I64 => DType::Int(8),
        Dtype::U8 => DType::UInt(1),
        Dtype::U16 => DType::UInt(2),
        Dtype::U32 => DType::UInt(4),
        Dtype::U64 => DType::UInt(8),
        _ => return None,
    })
}
