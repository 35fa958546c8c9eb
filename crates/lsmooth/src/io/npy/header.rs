//! The header dict of a `.npy` file, checked as `numpy.lib.format` checks it after `literal_eval`, and the
//! `descr` strings `numpy.dtype` reads as the supported dtypes.

use super::pyliteral::Value;
use super::DType;

/// numpy's default `max_header_size`: `numpy.load` refuses longer headers unless pickles are allowed.
pub const MAX_HEADER_CHARS: usize = 10_000;

/// The dtype of a `descr` string, exactly as `numpy.dtype` reads it, for the dtypes this reader supports:
/// `(big_endian, dtype)`, `None` for every other string. Native order is this machine's.
pub fn dtype_of_descr(d: &str) -> Option<(bool, DType)> {
    let native_big = cfg!(target_endian = "big");
    // Names without a byte-order prefix.
    let named = match d {
        "byte" | "int8" => Some(DType::Int(1)),
        "ubyte" | "uint8" => Some(DType::UInt(1)),
        "short" | "int16" => Some(DType::Int(2)),
        "ushort" | "uint16" => Some(DType::UInt(2)),
        "intc" | "int32" => Some(DType::Int(4)),
        "uintc" | "uint32" => Some(DType::UInt(4)),
        "int" | "int_" | "intp" | "long" | "longlong" | "int64" => Some(DType::Int(8)),
        "uint" | "uintp" | "ulong" | "ulonglong" | "uint64" => Some(DType::UInt(8)),
        "half" | "float16" => Some(DType::F16),
        "single" | "float32" => Some(DType::F32),
        "float" | "double" | "float64" => Some(DType::F64),
        _ => None,
    };
    if let Some(t) = named {
        return Some((native_big, t));
    }
    let (big, rest) = match d.as_bytes().first()? {
        b'<' => (false, &d[1..]),
        b'>' => (true, &d[1..]),
        b'|' | b'=' => (native_big, &d[1..]),
        _ => (native_big, d),
    };
    // Type characters, and numpy's type numbers written as one control character (`'\x05'` is int32).
    let t = match rest {
        "b" | "\x01" => DType::Int(1),
        "B" | "\x02" => DType::UInt(1),
        "h" | "\x03" => DType::Int(2),
        "H" | "\x04" => DType::UInt(2),
        "i" | "\x05" => DType::Int(4),
        "I" | "\x06" => DType::UInt(4),
        "l" | "q" | "p" | "n" | "\x07" | "\x09" => DType::Int(8),
        "L" | "Q" | "P" | "N" | "\x08" | "\x0a" => DType::UInt(8),
        "e" | "\x17" => DType::F16,
        "f" | "\x0b" => DType::F32,
        "d" | "\x0c" => DType::F64,
        _ => {
            // A kind and a size in bytes. numpy reads the size with C's strtol: leading C whitespace, an optional
            // '+', then decimal digits (leading zeros allowed) to the end of the string.
            let kind = rest.chars().next()?;
            let size = rest[kind.len_utf8()..].trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
            let size = size.strip_prefix('+').unwrap_or(size);
            if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let size: usize = match size.trim_start_matches('0') {
                "" => 0,
                d if d.len() > 2 => return None,
                d => d.parse().ok()?,
            };
            match (kind, size) {
                ('i', 1 | 2 | 4 | 8) => DType::Int(size),
                ('u', 1 | 2 | 4 | 8) => DType::UInt(size),
                ('f', 2) => DType::F16,
                ('f', 4) => DType::F32,
                ('f', 8) => DType::F64,
                _ => return None,
            }
        }
    };
    Some((big, t))
}

/// Escapes a string read from a file for an error message: control characters, quotes and backslashes as
/// Rust escapes, so that a message stays one line and cannot drive the terminal; cut after `max` characters.
pub fn escape(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// The parsed header: dtype, byte order, shape, order.
pub(super) struct Header {
    pub(super) big_endian: bool,
    pub(super) dtype: DType,
    pub(super) shape: Vec<usize>,
    pub(super) fortran_order: bool,
}

/// Checks the header dict as `numpy.lib.format` does after `literal_eval`.
pub(super) fn check_header(value: Value) -> Result<Header, String> {
    let Value::Dict(entries) = value else {
        return Err(format!("the header is a {}, not a dict", value.type_name()));
    };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    let mut extra = Vec::new();
    for (k, v) in entries {
        // The last of duplicate keys wins, as in a Python dict display.
        match &k {
            Value::Str(s) if s == "descr" => descr = Some(v),
            Value::Str(s) if s == "fortran_order" => fortran = Some(v),
            Value::Str(s) if s == "shape" => shape = Some(v),
            Value::Str(s) => extra.push(format!("'{}'", escape(s, 40))),
            other => extra.push(format!("a {} key", other.type_name())),
        }
    }
    let missing: Vec<&str> = [
        ("descr", descr.is_none()),
        ("fortran_order", fortran.is_none()),
        ("shape", shape.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(n, _)| *n)
    .collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut what = Vec::new();
        if !missing.is_empty() {
            what.push(format!("missing {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            extra.dedup();
            what.push(format!("unexpected {}", extra.join(", ")));
        }
        return Err(format!(
            "the header must have exactly the keys 'descr', 'fortran_order' and 'shape' ({})",
            what.join("; ")
        ));
    }
    let (descr, fortran, shape) = (
        descr.unwrap_or(Value::None),
        fortran.unwrap_or(Value::None),
        shape.unwrap_or(Value::None),
    );
    let dims = match &shape {
        Value::Tuple(items) => items
            .iter()
            .map(|d| match d {
                Value::Int(n) if *n >= 0 && *n <= u64::MAX as i128 => usize::try_from(*n).map_err(|_| ()),
                _ => Err(()),
            })
            .collect::<Result<Vec<usize>, ()>>()
            .map_err(|_| "shape must be a tuple of non-negative integers".to_string())?,
        other => {
            return Err(format!(
                "shape must be a tuple of integers, not a {}",
                other.type_name()
            ))
        }
    };
    let Value::Bool(fortran_order) = fortran else {
        return Err(format!(
            "fortran_order must be True or False, not a {}",
            fortran.type_name()
        ));
    };
    let (big_endian, dtype) = match &descr {
        Value::Str(s) => dtype_of_descr(s).ok_or_else(|| {
            format!(
                "unsupported dtype '{}' (supported: float16/32/64 and the integer types, either byte order)",
                escape(s, 40)
            )
        })?,
        Value::List(_) | Value::Tuple(_) => {
            return Err("structured and subarray dtypes are not supported (save a plain numeric array)".into())
        }
        other => return Err(format!("descr must be a dtype string, not a {}", other.type_name())),
    };
    Ok(Header {
        big_endian,
        dtype,
        shape: dims,
        fortran_order,
    })
}
