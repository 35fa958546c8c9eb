//! IDX files (MNIST's format), plain or gzipped.
//!
//! An IDX file is a big-endian header (two zero bytes, a type byte `0x08` for u8, the number of dimensions, then
//! each dimension as a u32) followed by `product(dims)` bytes of data. A gzipped file (any number of gzip members,
//! as `gzip` writes and reads them) is inflated only as far as its header says: at most `header + product(dims)`
//! bytes and one more to notice trailing data, so a small file cannot inflate into a large allocation. Bytes after
//! the data, in the file or after the last gzip member, are refused. Errors name the file and the byte offset.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::show_path;

/// An IDX file that cannot be read or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be opened or read.
    #[error("{}: {source}", show_path(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The content is not what the format says.
    #[error("{}: at byte {offset}{}: {message}", show_path(path), if *gzipped { " of the decompressed data" } else { "" })]
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset where the problem is (in the decompressed data for gzipped files).
        offset: u64,
        /// Whether the offset is in the decompressed data.
        gzipped: bool,
        /// What is wrong.
        message: String,
    },
}

/// An IDX array of bytes: its dimensions and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    /// The dimensions from the header.
    pub dims: Vec<usize>,
    /// The data, `product(dims)` bytes.
    pub data: Vec<u8>,
}

/// Reads bytes of an IDX stream, plain or inflated, keeping count for error offsets.
struct Stream<'a> {
    path: &'a Path,
    gzipped: bool,
    reader: Box<dyn Read + 'a>,
    pos: u64,
}

impl Stream<'_> {
    fn err(&self, offset: u64, message: impl Into<String>) -> IdxError {
        IdxError::Format {
            path: self.path.to_path_buf(),
            offset,
            gzipped: self.gzipped,
            message: message.into(),
        }
    }

    /// Reads up to `n` bytes into `out` (fewer only at the end of the stream); returns how many.
    fn read_up_to(&mut self, n: u64, out: &mut Vec<u8>) -> Result<u64, IdxError> {
        let mut got = 0u64;
        let mut buf = [0u8; 1 << 16];
        while got < n {
            let want = (n - got).min(buf.len() as u64) as usize;
            match self.reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(k) => {
                    out.extend_from_slice(&buf[..k]);
                    got += k as u64;
                    self.pos += k as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(self.err(
                        self.pos,
                        if self.gzipped {
                            format!("corrupt gzip data after {} decompressed bytes: {e}", self.pos)
                        } else {
                            e.to_string()
                        },
                    ))
                }
            }
        }
        Ok(got)
    }
}

/// Parses an IDX file (`bytes`, plain or gzipped) whose number of dimensions must be `ndim`.
pub fn parse_idx(path: &Path, bytes: &[u8], ndim: usize) -> Result<Idx, IdxError> {
    let gzipped = bytes.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::bufread::MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut s = Stream {
        path,
        gzipped,
        reader,
        pos: 0,
    };
    let mut head = Vec::with_capacity(4 + 4 * 255);
    if s.read_up_to(4, &mut head)? < 4 {
        return Err(s.err(
            head.len() as u64,
            format!(
                "file ends after {} bytes, inside the 4-byte IDX magic number",
                head.len()
            ),
        ));
    }
    if head[0] != 0 || head[1] != 0 {
        return Err(s.err(
            0,
            format!(
                "not an IDX file: magic number starts {:#04x} {:#04x}, expected 0x00 0x00",
                head[0], head[1]
            ),
        ));
    }
    if head[2] != 0x08 {
        return Err(s.err(
            2,
            format!("IDX element type {:#04x}, expected 0x08 (unsigned byte)", head[2]),
        ));
    }
    if head[3] as usize != ndim {
        return Err(s.err(3, format!("{} dimensions, expected {ndim}", head[3])));
    }
    let header = 4 + 4 * ndim as u64;
    if s.read_up_to(header - 4, &mut head)? < header - 4 {
        return Err(s.err(
            head.len() as u64,
            format!("file ends after {} bytes, inside the {header}-byte header", head.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes([head[4 + 4 * d], head[5 + 4 * d], head[6 + 4 * d], head[7 + 4 * d]]) as usize)
        .collect();
    let Some(len) = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)) else {
        return Err(s.err(4, format!("dimensions {dims:?} overflow")));
    };
    // The data, and one byte more to notice trailing data; never more than the header justifies.
    let mut data = Vec::with_capacity(if gzipped {
        0
    } else {
        len.min(bytes.len() as u64) as usize
    });
    let got = s.read_up_to(len.saturating_add(1), &mut data)?;
    if got < len {
        return Err(s.err(
            header + got,
            format!("truncated: the header {dims:?} says {len} data bytes, the file has {got}"),
        ));
    }
    if got > len {
        return Err(s.err(
            header + len,
            format!("trailing bytes: the header {dims:?} says {len} data bytes, and more follow"),
        ));
    }
    data.truncate(len as usize);
    Ok(Idx { dims, data })
}

/// Reads an IDX file from disk.
pub fn read_idx(path: &Path, ndim: usize) -> Result<Idx, IdxError> {
    let bytes = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_idx(path, &bytes, ndim)
}
