//! Arrays from PyTorch's `torch.save` files (`.pt`, `.pth`): a saved tensor, or `file.pt:key` of a saved dict or
//! state dict (the only tensor of the dict without a key).
//!
//! `torch.save` writes a zip archive: `<name>/data.pkl`, a pickle that rebuilds the saved object, refers to each
//! tensor's storage by key, and `<name>/data/<key>` holds the storage's bytes (in the order `<name>/byteorder`
//! names, little-endian when absent). The pickle is evaluated by [`pickle`], which runs nothing; only the chosen
//! tensor's elements are read, block by block, and its storage member is read to its end so that the archive's
//! CRC-32 is checked. A tensor that is a non-contiguous view (a transpose, a slice with steps) is read through
//! its strides, which needs its storage span in memory once more. The legacy format (`torch.save` with
//! `_use_new_zipfile_serialization=False`) is refused with advice.

pub mod pickle;

use crate::io::values::{decode_array, Array, ArrayError, DType, Layout, Order, Want};
use crate::io::zipped::{self, Archive};
use pickle::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads tensor `name` (or the saved tensor, or the only tensor of a saved dict) of the `torch.save` file
/// `path`, opened as `archive`, whose pickle is the member `pkl` ([`zipped::torch_pickle`]), checked against
/// `expected` for `want`.
pub fn read(
    path: &Path,
    mut archive: Archive,
    pkl: &str,
    name: Option<&str>,
    want: Want,
    expected: &str,
) -> Result<Array, ArrayError> {
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let root = load_pickle(path, &mut archive, pkl)?;
    let (shown, tensor) = select(path, &root, name)?;
    let (layout, key, skip) = layout(&shown, &tensor, &byteorder(path, &mut archive, &prefix)?)?;
    let mut member = archive
        .by_name(&format!("{prefix}data/{key}"))
        .map_err(|e| zipped::zip_error(&shown, e))?;
    // The storage must be what its tensor type says, before anything is allocated for it.
    let needed = tensor.numel.checked_mul(layout.dtype.size() as u64);
    if needed != Some(member.size()) {
        return Err(ArrayError::content(
            &shown,
            format!(
                "storage '{}' holds {} bytes; {} elements of {} need {}",
                crate::io::escape_controls(&key),
                member.size(),
                tensor.numel,
                layout.dtype,
                needed.map_or("more than 2^64".to_string(), |n| n.to_string())
            ),
        ));
    }
    let stored = member.compression() == zip::CompressionMethod::Stored;
    zipped::check_size(&shown, member.size(), member.compressed_size(), stored)?;
    std::io::copy(&mut member.by_ref().take(skip), &mut std::io::sink()).map_err(|e| ArrayError::io(path, e))?;
    let array = decode_array(&shown, &mut member, layout, want, expected, skip)?;
    zipped::finish(&shown, &mut member)?;
    Ok(array)
}

/// Evaluates the archive's pickle (its size bounded by the file's).
fn load_pickle(path: &Path, archive: &mut Archive, pkl: &str) -> Result<std::rc::Rc<Value>, ArrayError> {
    let shown = crate::io::member_path(path, pkl);
    let mut member = archive.by_name(pkl).map_err(|e| zipped::zip_error(&shown, e))?;
    let stored = member.compression() == zip::CompressionMethod::Stored;
    let size = member.size();
    zipped::check_size(&shown, size, member.compressed_size(), stored)?;
    let mut bytes = Vec::with_capacity(size as usize);
    member
        .read_to_end(&mut bytes)
        .map_err(|e| ArrayError::content(&shown, format!("the archive member is damaged: {e}")))?;
    pickle::load(&bytes).map_err(|e| ArrayError::format(&shown, e.offset as u64, e.what))
}

/// The storages' byte order, from `<prefix>byteorder` (`little` when absent, as torch reads it).
fn byteorder(path: &Path, archive: &mut Archive, prefix: &str) -> Result<bool, ArrayError> {
    let name = format!("{prefix}byteorder");
    let Ok(mut member) = archive.by_name(&name) else {
        return Ok(false);
    };
    let mut text = String::new();
    member.by_ref().take(16).read_to_string(&mut text).ok();
    match text.as_str() {
        "little" => Ok(false),
        "big" => Ok(true),
        other => Err(ArrayError::content(
            &crate::io::member_path(path, &name),
            format!(
                "byte order '{}', not 'little' or 'big'",
                crate::io::escape_controls(other)
            ),
        )),
    }
}

/// The tensor `name` picks from the saved object, with the path that names it in messages.
fn select(path: &Path, root: &Value, name: Option<&str>) -> Result<(PathBuf, Tensor), ArrayError> {
    match (root, name) {
        (Value::Tensor { .. }, None) => Ok((path.to_path_buf(), Tensor::of(root))),
        (Value::Tensor { .. }, Some(n)) => Err(ArrayError::content(
            path,
            format!(
                "holds a single tensor, not a dict: read it without ':{}'",
                crate::io::escape_controls(n)
            ),
        )),
        (Value::Dict(items), _) => {
            let items = items.borrow();
            let keyed: Vec<(String, &Value)> = items
                .iter()
                .filter_map(|(k, v)| match &**k {
                    Value::Str(k) => Some((k.clone(), &**v)),
                    _ => None,
                })
                .collect();
            let tensors: Vec<&(String, &Value)> = keyed
                .iter()
                .filter(|(_, v)| matches!(v, Value::Tensor { .. }))
                .collect();
            let listing = || crate::io::list_some("tensors", tensors.iter().map(|(k, _)| k));
            let (key, value) = match name {
                // The last of duplicate keys wins, as in the dict Python rebuilds.
                Some(n) => match keyed.iter().rev().find(|(k, _)| k == n) {
                    Some((k, v)) => (k.clone(), *v),
                    None => {
                        return Err(ArrayError::content(
                            path,
                            format!(
                                "no key '{}' in the saved dict ({})",
                                crate::io::escape_controls(n),
                                listing()
                            ),
                        ))
                    }
                },
                None if tensors.len() == 1 => (tensors[0].0.clone(), tensors[0].1),
                None => {
                    return Err(ArrayError::content(
                        path,
                        format!(
                            "holds a dict of {} tensors: name one as FILE:KEY ({})",
                            tensors.len(),
                            listing()
                        ),
                    ))
                }
            };
            let shown = crate::io::member_path(path, &key);
            match value {
                Value::Tensor { .. } => Ok((shown, Tensor::of(value))),
                other => Err(ArrayError::content(
                    &shown,
                    format!("is {}, not a tensor", other.kind()),
                )),
            }
        }
        (other, _) => Err(ArrayError::content(
            path,
            format!(
                "holds {}; lsmooth reads a saved tensor or a dict of tensors",
                other.kind()
            ),
        )),
    }
}

/// A tensor of the pickle, copied out of it.
struct Tensor {
    class: String,
    key: String,
    numel: u64,
    offset: u64,
    size: Vec<u64>,
    stride: Vec<u64>,
}

impl Tensor {
    fn of(v: &Value) -> Tensor {
        let Value::Tensor {
            storage,
            offset,
            size,
            stride,
        } = v
        else {
            unreachable!("checked to be a tensor")
        };
        let Value::Storage { class, key, numel } = &**storage else {
            unreachable!("the pickle machine builds tensors on storages only")
        };
        Tensor {
            class: class.clone(),
            key: key.clone(),
            numel: *numel,
            offset: *offset,
            size: size.clone(),
            stride: stride.clone(),
        }
    }
}

/// The tensor's layout, its storage key and the bytes to skip to its first element; checks that the view lies
/// inside its storage.
fn layout(shown: &Path, t: &Tensor, big_endian: &bool) -> Result<(Layout, String, u64), ArrayError> {
    let dtype = match t.class.as_str() {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::Int(8),
        "IntStorage" => DType::Int(4),
        "ShortStorage" => DType::Int(2),
        "CharStorage" => DType::Int(1),
        "ByteStorage" => DType::UInt(1),
        other => {
            return Err(ArrayError::content(
                shown,
                format!("unsupported tensor type torch.{other} (supported: float16, bfloat16, float32, float64 and the integer types)"),
            ))
        }
    };
    let too_large = || ArrayError::content(shown, format!("a tensor of size {:?} is too large", t.size));
    let shape: Vec<usize> = t
        .size
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| too_large())?;
    let strides: Vec<usize> = t
        .stride
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| too_large())?;
    let offset = usize::try_from(t.offset).map_err(|_| too_large())?;
    let order = if is_contiguous(&shape, &strides) {
        Order::C
    } else {
        Order::Strided { offset, strides }
    };
    let layout = Layout {
        dtype,
        shape,
        big_endian: *big_endian,
        order,
    };
    let span = layout.span().ok_or_else(too_large)?;
    let end = offset.checked_add(span).ok_or_else(too_large)?;
    let count = layout.count().ok_or_else(too_large)?;
    if count > 0 && end as u64 > t.numel {
        return Err(ArrayError::content(
            shown,
            format!(
                "a tensor of size {:?} (stride {:?}, offset {offset}) reaches element {end} of a storage of {} elements",
                t.size, t.stride, t.numel
            ),
        ));
    }
    let skip = if count > 0 {
        offset as u64 * dtype.size() as u64
    } else {
        0
    };
    Ok((layout, t.key.clone(), skip))
}

/// Whether `strides` are C order's for `shape` (the strides of dimensions of size 1 do not matter).
fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}
