//! Atomic output files: every output is written to a temporary file in its destination's folder, flushed to
//! disk, and renamed into place, so a reader sees the old file or the new one, never a part.
//!
//! [`Outputs`] does the same for several files that belong together: all are written first, then all renamed;
//! if a rename fails, those already renamed are put back, so a failed command leaves every existing output as
//! it was.
//!
//! Temporary files are named `.lsmooth-*.tmp`; [`remove_stale_temporaries`] removes those a crash left behind.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An output file that could not be written. The message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}: {source}", super::show_path(path))]
pub struct WriteError {
    /// The destination.
    pub path: PathBuf,
    /// What was being done.
    pub what: &'static str,
    /// The operating system's error.
    pub source: std::io::Error,
}

const PREFIX: &str = ".lsmooth-";
const SUFFIX: &str = ".tmp";

fn folder(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a folder's entries (a rename is durable once its folder is); best effort where unsupported.
fn sync_folder(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Crash injection for the crash tests: with `LSMOOTH_ABORT_AT_WRITE_EVENT=n` set, the process aborts at the
/// n-th write event (a temporary file written and flushed; a rename done). Compiled into debug builds only (the
/// test binaries), never into a release build.
#[cfg(debug_assertions)]
fn write_event() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let at = *AT.get_or_init(|| {
        std::env::var("LSMOOTH_ABORT_AT_WRITE_EVENT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(at) = at {
        if COUNT.fetch_add(1, Ordering::SeqCst) + 1 == at {
            std::process::abort();
        }
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn write_event() {}

/// A file written to a temporary name beside its destination, not yet renamed.
struct Staged {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

fn refuse_directory(dest: &Path) -> Result<(), WriteError> {
    if dest.is_dir() {
        return Err(WriteError {
            path: dest.to_path_buf(),
            what: "cannot write the output",
            source: std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
        });
    }
    Ok(())
}

fn stage(dest: &Path, bytes: &[u8]) -> Result<Staged, WriteError> {
    stage_with(dest, &mut |w| w.write_all(bytes))
}

/// A file's content, written by a closure (so that a large output need not exist in memory first).
pub type Content<'a> = &'a mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>;

fn stage_with(dest: &Path, content: Content<'_>) -> Result<Staged, WriteError> {
    refuse_directory(dest)?;
    let err = |what, source| WriteError {
        path: dest.to_path_buf(),
        what,
        source,
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(PREFIX).suffix(SUFFIX);
    // A temporary file is private (0600) by default; the result is an ordinary output file.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder
        .tempfile_in(folder(dest))
        .map_err(|e| err("cannot create a temporary file beside it", e))?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        content(&mut w)
            .and_then(|()| w.flush())
            .map_err(|e| err("cannot write", e))?;
    }
    tmp.as_file().sync_all().map_err(|e| err("cannot flush to disk", e))?;
    write_event();
    Ok(Staged {
        tmp,
        dest: dest.to_path_buf(),
    })
}

fn rename(staged: Staged) -> Result<(), WriteError> {
    let Staged { tmp, dest } = staged;
    // On failure the temporary file is dropped with the error, which deletes it.
    tmp.persist(&dest).map_err(|e| WriteError {
        path: dest.clone(),
        what: "cannot rename the output into place",
        source: e.error,
    })?;
    sync_folder(folder(&dest));
    write_event();
    Ok(())
}

/// Writes `bytes` to `dest` atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let staged = stage(dest, bytes)?;
    rename(staged)
}

/// Several output files committed together: [`Outputs::add`] writes each to its temporary file, and
/// [`Outputs::commit`] renames them all, or, if one fails, none: the earlier ones are restored.
/// Dropped uncommitted, it leaves nothing behind.
#[derive(Default)]
pub struct Outputs {
    staged: Vec<Staged>,
}

impl Outputs {
    /// No outputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `bytes` to a temporary file beside `dest` (which must not be a directory or already added).
    pub fn add(&mut self, dest: &Path, bytes: &[u8]) -> Result<(), WriteError> {
        self.add_with(dest, &mut |w| w.write_all(bytes))
    }

    /// As [`Outputs::add`], the content written by `content` through a buffer.
    pub fn add_with(&mut self, dest: &Path, content: Content<'_>) -> Result<(), WriteError> {
        if self.staged.iter().any(|s| same_file(&s.dest, dest)) {
            return Err(WriteError {
                path: dest.to_path_buf(),
                what: "cannot write the output",
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "given as two outputs"),
            });
        }
        self.staged.push(stage_with(dest, content)?);
        Ok(())
    }

    /// Renames every output into place; if one rename fails, the outputs renamed before it get their previous
    /// content back (or are removed if they did not exist), and the error is returned.
    pub fn commit(self) -> Result<(), WriteError> {
        let dests: Vec<PathBuf> = self.staged.iter().map(|s| s.dest.clone()).collect();
        // Keep the old content of each destination under a hard link, to put back on failure.
        let backups: Vec<Backup> = dests.iter().map(|d| backup(d)).collect();
        let mut renamed = 0;
        let result = self.staged.into_iter().try_for_each(|s| {
            refuse_directory(&s.dest)?;
            rename(s)?;
            renamed += 1;
            Ok(())
        });
        if result.is_err() {
            for (dest, b) in dests.iter().zip(&backups).take(renamed) {
                let _ = match b {
                    Backup::Linked(b) => std::fs::rename(b, dest),
                    Backup::Absent => std::fs::remove_file(dest),
                    Backup::Unavailable => Ok(()),
                };
            }
        }
        // The backups not used to restore an output are no longer needed.
        for b in backups.iter().skip(if result.is_err() { renamed } else { 0 }) {
            if let Backup::Linked(b) = b {
                let _ = std::fs::remove_file(b);
            }
        }
        result
    }
}

/// Whether two paths name the same file (the same path, or both existing and the same inode).
pub fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => match (
            a.parent().map(std::fs::canonicalize),
            b.parent().map(std::fs::canonicalize),
        ) {
            (Some(Ok(pa)), Some(Ok(pb))) => pa == pb && a.file_name() == b.file_name(),
            _ => false,
        },
    }
}

/// What a destination held before a commit.
enum Backup {
    /// Nothing: a failed commit removes the new file.
    Absent,
    /// Its old content, hard-linked under this name beside it.
    Linked(PathBuf),
    /// A file that could not be linked (a file system without hard links): left as the commit made it.
    Unavailable,
}

/// Links `dest`'s current content to `.lsmooth-<name>.<nonce>.bak` beside it.
fn backup(dest: &Path) -> Backup {
    if !dest.is_file() {
        return Backup::Absent;
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for attempt in 0..16u64 {
        let nonce = u64::from(std::process::id()) * 1_000_003 + attempt + nanos();
        let b = folder(dest).join(format!("{PREFIX}{name}.{nonce:x}.bak"));
        if std::fs::hard_link(dest, &b).is_ok() {
            return Backup::Linked(b);
        }
    }
    Backup::Unavailable
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

/// Removes the temporary files (`.lsmooth-*.tmp`, `.lsmooth-*.bak`) that an interrupted run left in `dir`;
/// returns how many.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(PREFIX)
            && (name.ends_with(SUFFIX) || name.ends_with(".bak"))
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_rename_restores_the_earlier_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.txt"), dir.path().join("b"));
        std::fs::write(&a, "old a").unwrap();
        let mut out = Outputs::new();
        out.add(&a, b"new a").unwrap();
        out.add(&b, b"new b").unwrap();
        // b becomes a directory after staging: its rename fails, and a must keep its old content.
        std::fs::create_dir(&b).unwrap();
        let e = out.commit().unwrap_err().to_string();
        assert!(e.contains("is a directory") || e.contains("rename"), "{e}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "only a.txt and the directory b: {left:?}");
    }

    #[test]
    fn the_same_destination_twice_and_a_directory_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.npy");
        let mut out = Outputs::new();
        out.add(&a, b"1").unwrap();
        let e = out
            .add(&dir.path().join(".").join("a.npy"), b"2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("two outputs"), "{e}");
        assert!(write(dir.path(), b"x")
            .unwrap_err()
            .to_string()
            .contains("is a directory"));
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".lsmooth-abc.tmp"), "x").unwrap();
        std::fs::write(dir.path().join(".lsmooth-m.json.1f.bak"), "x").unwrap();
        std::fs::write(dir.path().join("keep.tmp"), "x").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()), 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
