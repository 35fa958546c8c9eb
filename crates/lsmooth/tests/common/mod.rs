//! Helpers shared by the integration tests: running the binary, its one-line errors, scratch folders, and IDX and
//! gzip files written by hand (independently of the readers under test).
#![allow(dead_code)] // each test crate uses its own part

use lsmooth::io::npy;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `lsmooth` binary of this build.
pub fn lsmooth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsmooth"))
        .args(args)
        .output()
        .expect("run lsmooth")
}

/// The standard output of a command that must succeed.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "lsmooth failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The error of a command that must fail: exit status 2, one line without control characters, no panic.
pub fn fails(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "expected exit 2, got {:?}: {e}", o.status);
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e:?}");
    assert!(
        !e.trim_end().chars().any(char::is_control),
        "no control characters: {e:?}"
    );
    e
}

/// A temporary folder.
pub struct Dir(pub tempfile::TempDir);

impl Dir {
    pub fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    pub fn p(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    pub fn s(&self, name: &str) -> String {
        self.p(name).display().to_string()
    }
}

/// An IDX file of u8.
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// One gzip member.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The process's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a float64 `.npy` file of shape `[n]` or `[n, k]` by hand.
pub fn write_f64(path: &Path, shape: &[usize], v: &[f64]) {
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({}, {})", shape[0], shape[1]),
    };
    let bytes = npy::encode(
        &format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape_text}, }}"),
        |o| v.iter().for_each(|x| o.extend_from_slice(&x.to_le_bytes())),
    );
    std::fs::write(path, bytes).unwrap();
}

/// Writes an int32 `.npy` file of labels by hand.
pub fn write_i32(path: &Path, v: &[i64]) {
    let bytes = npy::encode(
        &format!("{{'descr': '<i4', 'fortran_order': False, 'shape': ({},), }}", v.len()),
        |o| v.iter().for_each(|&x| o.extend_from_slice(&(x as i32).to_le_bytes())),
    );
    std::fs::write(path, bytes).unwrap();
}

/// Reads a `.npy` file as f32 values with its shape.
pub fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(path).unwrap();
    (a.shape.clone(), a.into_f32("test").unwrap())
}

/// A JSON file, parsed.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
