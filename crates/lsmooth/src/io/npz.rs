//! Arrays from `.npz` files (`numpy.savez`, `numpy.savez_compressed`): `file.npz:name`, or the only array of
//! the file. Each member is a `.npy` file, read by [`super::npy`]'s header reader and the shared decoder
//! straight from the (possibly deflated) member, and read to its end so that its CRC-32 is checked.

use crate::io::npy;
use crate::io::values::{decode_array, Array, ArrayError, Want};
use crate::io::zipped::{self, Archive};
use std::path::Path;

/// Reads array `name` (or the only one) of the `.npz` file `path`, opened as `archive` with its `members`,
/// checked against `expected` for `want`.
pub fn read(
    path: &Path,
    (mut archive, members): (Archive, Vec<String>),
    name: Option<&str>,
    want: Want,
    expected: &str,
) -> Result<Array, ArrayError> {
    // numpy names member `x.npy` for keyword `x`, and `np.load` gives it as `x`.
    let arrays: Vec<&str> = members.iter().map(|m| m.strip_suffix(".npy").unwrap_or(m)).collect();
    let index = match name {
        Some(n) => arrays
            .iter()
            .position(|a| *a == n)
            .or_else(|| members.iter().position(|m| m == n)),
        None if members.len() == 1 => Some(0),
        None => {
            return Err(ArrayError::content(
                path,
                format!(
                    "holds {} arrays: name one as FILE:NAME ({})",
                    members.len(),
                    listing(&arrays)
                ),
            ))
        }
    };
    let Some(index) = index else {
        let n = name.unwrap_or_default();
        return Err(ArrayError::content(
            path,
            format!(
                "no array named '{}' ({})",
                crate::io::escape_controls(n),
                listing(&arrays)
            ),
        ));
    };
    let shown = crate::io::member_path(path, arrays[index]);
    let mut member = archive
        .by_name(&members[index])
        .map_err(|e| zipped::zip_error(&shown, e))?;
    let stored = member.compression() == zip::CompressionMethod::Stored;
    zipped::check_size(&shown, member.size(), member.compressed_size(), stored)?;
    let size = member.size();
    let l = npy::read_layout(&shown, &mut member, size)?;
    let array = decode_array(&shown, &mut member, l.layout, want, expected, l.header_end as u64)?;
    zipped::finish(&shown, &mut member)?;
    Ok(array)
}

fn listing(arrays: &[&str]) -> String {
    crate::io::list_some("arrays", arrays)
}
