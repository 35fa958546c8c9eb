//! The zip archives behind `.npz` and `torch.save` files: opening one with errors that name the file, reading a
//! member to its end so that its CRC-32 is verified, and the bound on what a compressed member may claim.

use crate::io::values::ArrayError;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use zip::ZipArchive;

/// An archive read from a file.
pub type Archive = ZipArchive<BufReader<File>>;

/// The most a deflate stream can expand: 1032 to 1 (each 258-byte match costs at least two bits).
const MAX_RATIO: u64 = 1032;

/// Opens the zip archive `path`: the archive and the names of its members (directories left out), in the
/// archive's order. Memory: its central directory, bounded by the file's size.
pub fn open(path: &Path) -> Result<(Archive, Vec<String>), ArrayError> {
    let file = File::open(path).map_err(|e| ArrayError::io(path, e))?;
    let archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_error(path, e))?;
    let names = names(path, &archive)?;
    Ok((archive, names))
}

/// The member holding a `torch.save` file's pickle (`<name>/data.pkl`), if the archive is one.
pub fn torch_pickle(names: &[String]) -> Option<&str> {
    names
        .iter()
        .find(|m| m.ends_with("/data.pkl") && m.matches('/').count() == 1)
        .map(String::as_str)
}

/// A zip library error about `path`, as a one-line message.
pub fn zip_error(path: &Path, e: zip::result::ZipError) -> ArrayError {
    match e {
        zip::result::ZipError::Io(io) => ArrayError::io(path, io),
        other => ArrayError::content(
            path,
            format!(
                "invalid zip archive: {}",
                crate::io::escape_controls(&other.to_string())
            ),
        ),
    }
}

/// The names of the archive's members (directories left out), in the archive's order. A name that is not UTF-8
/// is an error.
fn names(path: &Path, archive: &Archive) -> Result<Vec<String>, ArrayError> {
    archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()).map_err(|e| zip_error(path, e)))
        .filter(|n| !matches!(n, Ok(n) if n.ends_with('/')))
        .collect()
}

/// Checks that a member's declared size is one its compressed bytes can hold, so that what is allocated from
/// the declared size stays bounded by the file: at most `MAX_RATIO` (1032) times the compressed size.
pub fn check_size(path: &Path, size: u64, compressed: u64, stored: bool) -> Result<(), ArrayError> {
    let limit = if stored {
        compressed
    } else {
        compressed.saturating_mul(MAX_RATIO).saturating_add(64)
    };
    if size > limit {
        return Err(ArrayError::content(
            path,
            format!("the archive declares {size} bytes for a member of {compressed} compressed bytes, more than they can hold"),
        ));
    }
    Ok(())
}

/// Reads what is left of a member, so that the zip reader checks its CRC-32 against the bytes read.
pub fn finish(path: &Path, member: &mut impl Read) -> Result<(), ArrayError> {
    std::io::copy(member, &mut std::io::sink())
        .map(drop)
        .map_err(|e| ArrayError::content(path, format!("the archive member is damaged: {e}")))
}
