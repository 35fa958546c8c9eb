//! Files in and out: arrays in the formats users have ([`npy`], with its header's Python literals in
//! `npy::pyliteral`; [`npz`]; [`safetensors`]; [`torch`] for `torch.save` files), decoded by one streaming
//! decoder ([`values`]); IDX datasets, plain or gzipped ([`idx`]); atomic output files ([`atomic`]); and the typed
//! readers the commands share, which recognise a file's format ([`arrays`]).
//!
//! Every reader accepts what the format's reference reader accepts (numpy, the `safetensors` crate, torch),
//! refuses the rest with the file and byte offset at fault, and allocates no more than the file's size
//! justifies.

pub mod arrays;
pub mod atomic;
pub mod idx;
pub mod npy;
pub mod npz;
pub mod safetensors;
pub mod torch;
pub mod values;
pub mod zipped;

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

/// `file:name`, the path that names an array inside an archive or a dict in messages.
pub fn member_path(file: &Path, name: &str) -> std::path::PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(":");
    s.push(name);
    s.into()
}

/// The first few of `names` for a message, quoted, escaped and sorted, as `tensors 'a', 'b', ... and 12 more`;
/// `no tensors` when there are none.
pub fn list_some<S: AsRef<str>>(what: &str, names: impl IntoIterator<Item = S>) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<String> = names
        .into_iter()
        .map(|n| format!("'{}'", escape_controls(n.as_ref())))
        .collect();
    if names.is_empty() {
        return format!("no {what}");
    }
    names.sort();
    let more = names.len().saturating_sub(SHOWN);
    names.truncate(SHOWN);
    let mut s = format!("{what}: {}", names.join(", "));
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}
