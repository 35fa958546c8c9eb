//! Files in and out: `.npy` arrays ([`npy`], with its header's Python literals in `npy::pyliteral`), IDX datasets,
//! plain or gzipped ([`idx`]), atomic output files ([`atomic`]), and the typed readers the commands share
//! ([`arrays`]).
//!
//! Every reader accepts what the format's reference reader accepts (numpy for `.npy`), refuses the rest with the
//! file and byte offset at fault, and allocates no more than the file's size justifies.

pub mod arrays;
pub mod atomic;
pub mod idx;
pub mod npy;

use std::path::Path;

/// `s` with its control characters escaped (`\n`, `\u{1b}`), everything else as it is: a message stays one line.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// A path for a message: as `Path::display`, with control characters escaped so that the message stays one line.
pub fn show_path(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().any(char::is_control) {
        s.chars().flat_map(char::escape_debug).collect()
    } else {
        s
    }
}
