//! Bad input of every kind, end to end: a one-line error naming the file and where, exit status 2, no panic, no
//! abort, no output replaced; and the readers fuzzed (random bytes and mutated valid files), with their memory
//! measured against what the input justifies.

use std::path::Path;

mod common;
use common::{fails, gz, idx_bytes, lsmooth, Dir};
#[path = "common/meter.rs"]
mod meter;
use meter::peak_bytes;

use lsmooth::io::{idx, npy};
use proptest::prelude::*;

fn header_file(path: &Path, version: u8, header: &str, body: &[u8]) {
    let h = header.as_bytes();
    let mut v = b"\x93NUMPY".to_vec();
    v.extend([version, 0]);
    if version == 1 {
        v.extend((h.len() as u16).to_le_bytes());
    } else {
        v.extend((h.len() as u32).to_le_bytes());
    }
    v.extend(h);
    v.extend(body);
    std::fs::write(path, v).unwrap();
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_f32(path: &Path, shape: &str, v: &[f32]) {
    header_file(
        path,
        1,
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
        &f32s(v),
    );
}

fn write_labels(path: &Path, v: &[i64]) {
    let body: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    header_file(
        path,
        1,
        &format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}", v.len()),
        &body,
    );
}

// ---- Regressions, one per kind of input that misbehaved. ----

#[test]
fn a_non_ascii_or_control_character_in_the_dtype_is_a_one_line_error_in_every_command() {
    let d = Dir::new();
    write_labels(&d.p("y.npy"), &[0, 0]);
    write_f32(&d.p("w.npy"), "(3, 2)", &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    // Raw characters, and escapes that put a newline and an ESC sequence into the dtype string.
    for (name, descr) in [
        ("utf8", "<f\u{e9}4"),
        ("escapes", "<f4\\n\\x1b[31m"),
        ("cjk", "\u{6d6e}\u{70b9}"),
    ] {
        let bad = d.p(&format!("{name}.npy"));
        header_file(
            &bad,
            3,
            &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2, 3), }}"),
            &[0; 24],
        );
        let b = bad.to_str().unwrap();
        for args in [
            vec!["loss", "--logits", b, "--targets", &d.s("y.npy")],
            vec!["calibrate", "--logits", b, "--labels", &d.s("y.npy")],
            vec![
                "project",
                "--features",
                b,
                "--labels",
                &d.s("y.npy"),
                "--weights",
                &d.s("w.npy"),
                "--classes",
                "0,1,2",
            ],
        ] {
            let e = fails(&lsmooth(&args));
            assert!(e.contains(b) && e.contains("unsupported dtype"), "{e}");
        }
    }
}

#[test]
fn every_numeric_flag_is_range_checked_by_the_parser() {
    for args in [
        vec![
            "calibrate",
            "--logits",
            "l.npy",
            "--labels",
            "y.npy",
            "--bins",
            "18446744073709551615",
        ],
        vec!["calibrate", "--logits", "l.npy", "--labels", "y.npy", "--bins", "0"],
        vec!["bench", "--shape", "4x4", "--threads", "4294967296"],
        vec!["bench", "--shape", "4x4", "--repeat", "0"],
        vec!["bench", "--shape", "100000000x100000000"],
        vec!["targets", "--classes", "1000000000000", "--smoothing", "0.1"],
        vec!["targets", "--classes", "6", "--smoothing", "nan"],
        vec!["train", "--hidden", "100000000"],
        vec!["train", "--batch-size", "0"],
        vec!["train", "--lr", "inf"],
        vec!["train", "--epochs", "99999999999"],
        vec!["train", "--distill-from", "x", "--temperature", "0"],
        vec!["compare", "--student-hidden", "0"],
    ] {
        let e = fails(&lsmooth(&args));
        assert!(e.starts_with("lsmooth: "), "{args:?}: {e}");
    }
    // Floats used in f32, and margins that would overflow the f32 logits, are refused naming their flag.
    for (flag, value) in [("--filter", "1e39"), ("--peaked", "1e39"), ("--peaked", "2000")] {
        let e = fails(&lsmooth(&["bench", "--linear", "8x8x8", flag, value]));
        assert!(e.contains(flag) && e.contains(value), "{e}");
    }
}

/// A benchmark whose buffers exceed the memory available is refused before it allocates (it aborted, or was
/// killed, when the allocation failed). Only asserted where the machine indeed lacks that memory: elsewhere the
/// command would run the benchmark.
#[test]
fn a_benchmark_larger_than_the_available_memory_is_refused() {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        let line = t.lines().find(|l| l.starts_with("MemAvailable:"))?.to_string();
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    });
    // 2^31 logits: 8.6 GB each for the problem, the logits and the gradient. The linear shape: [K, D] of 2^31
    // (three buffers) and [N, K] of 2^31 (two), 51 GB.
    let needed = 3 * 4 * (1u64 << 31);
    match available {
        Some(a) if a < needed => {
            let e = fails(&lsmooth(&["bench", "--shape", "32768x65536"]));
            assert!(e.contains("--shape 32768x65536") && e.contains("GB available"), "{e}");
            let e = fails(&lsmooth(&["bench", "--linear", "32768x32768x65536"]));
            assert!(
                e.contains("--linear 32768x32768x65536") && e.contains("GB available"),
                "{e}"
            );
        }
        _ => eprintln!("skipped: this machine has more than {needed} bytes available"),
    }
}

#[test]
fn a_duplicate_descr_is_read_as_numpy_reads_it_the_last_one() {
    let d = Dir::new();
    // The first 'descr' says little-endian; the last, which numpy uses, big-endian, and so are the bytes.
    let logits = [2.0f32, 0.5, -1.0, 0.0, 1.0, -0.5];
    let be: Vec<u8> = logits.iter().flat_map(|x| x.to_be_bytes()).collect();
    header_file(
        &d.p("dup.npy"),
        1,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 6), 'descr': '>f4'}",
        &be,
    );
    write_f32(&d.p("plain.npy"), "(1, 6)", &logits);
    write_labels(&d.p("y.npy"), &[0]);
    let run = |l: &str| {
        let o = lsmooth(&[
            "loss",
            "--logits",
            &d.s(l),
            "--targets",
            &d.s("y.npy"),
            "--smoothing",
            "0.1",
        ]);
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(run("dup.npy"), run("plain.npy"));
}

#[test]
fn non_finite_validation_logits_are_refused_with_file_and_row() {
    let d = Dir::new();
    let logits = [2.0f32, 0.0, 0.0, 0.0, 3.0, 0.0];
    write_f32(&d.p("l.npy"), "(2, 3)", &logits);
    write_labels(&d.p("y.npy"), &[0, 1]);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut v = logits;
        v[4] = bad;
        write_f32(&d.p("vl.npy"), "(2, 3)", &v);
        let e = fails(&lsmooth(&[
            "calibrate",
            "--logits",
            &d.s("l.npy"),
            "--labels",
            &d.s("y.npy"),
            "--fit-temperature",
            &d.s("vl.npy"),
            &d.s("y.npy"),
        ]));
        assert!(
            e.contains(&d.s("vl.npy")) && e.contains("row 1, class 1") && e.contains("not finite"),
            "{e}"
        );
    }
}

#[test]
fn project_refuses_non_finite_inputs_and_names_the_weights_of_coinciding_templates() {
    let d = Dir::new();
    write_labels(&d.p("y.npy"), &[0, 1, 2]);
    let f = [1.0f32, 0.0, 0.0, 1.0, 0.5, f32::NAN];
    write_f32(&d.p("f.npy"), "(3, 2)", &f);
    write_f32(&d.p("w.npy"), "(3, 2)", &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let args = |feat: &str, w: &str| {
        lsmooth(&[
            "project",
            "--features",
            &d.s(feat),
            "--labels",
            &d.s("y.npy"),
            "--weights",
            &d.s(w),
            "--classes",
            "0,1,2",
        ])
    };
    let e = fails(&args("f.npy", "w.npy"));
    assert!(e.contains(&d.s("f.npy")) && e.contains("row 2, column 1"), "{e}");
    write_f32(&d.p("ok.npy"), "(3, 2)", &[1.0, 0.0, 0.0, 1.0, 0.5, 0.5]);
    write_f32(&d.p("same.npy"), "(3, 2)", &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
    let e = fails(&args("ok.npy", "same.npy"));
    assert!(e.contains(&d.s("same.npy")) && e.contains("coincide"), "{e}");
}

#[test]
fn a_failed_output_leaves_every_existing_output_unchanged() {
    let d = Dir::new();
    write_f32(&d.p("l.npy"), "(1, 3)", &[1.0, 2.0, 3.0]);
    write_labels(&d.p("y.npy"), &[0]);
    std::fs::write(d.p("grad.npy"), "previous gradient").unwrap();
    std::fs::create_dir(d.p("a-directory")).unwrap();
    let (l, y, g) = (d.s("l.npy"), d.s("y.npy"), d.s("grad.npy"));
    let e = fails(&lsmooth(&[
        "loss",
        "--logits",
        &l,
        "--targets",
        &y,
        "--grad-out",
        &g,
        "--loss-out",
        &d.s("a-directory"),
    ]));
    assert!(e.contains("a-directory") && e.contains("directory"), "{e}");
    assert_eq!(std::fs::read_to_string(d.p("grad.npy")).unwrap(), "previous gradient");
    let e = fails(&lsmooth(&[
        "loss",
        "--logits",
        &l,
        "--targets",
        &y,
        "--grad-out",
        &g,
        "--loss-out",
        &g,
    ]));
    assert!(e.contains("same file"), "{e}");
    assert_eq!(std::fs::read_to_string(d.p("grad.npy")).unwrap(), "previous gradient");
    let names: Vec<String> = std::fs::read_dir(d.0.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".lsmooth-")), "{names:?}");
}

#[test]
fn a_gzip_bomb_is_refused_without_inflating_it() {
    // 240 images of 28x28 declared, then 256 MiB of zeros more: about 256 KB of gzip.
    let declared = 240 * 784;
    let mut raw = idx_bytes(&[240, 28, 28], &vec![7u8; declared]);
    raw.resize(raw.len() + (256 << 20), 0);
    let bomb = gz(&raw);
    drop(raw);
    assert!(bomb.len() < 2 << 20, "{} bytes of gzip", bomb.len());
    let (r, peak) = peak_bytes(|| idx::parse_idx(Path::new("bomb.gz"), &bomb, 3));
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("trailing bytes") && e.contains(&format!("at byte {}", 16 + declared)),
        "{e}"
    );
    // The data and the decoder's buffers, not the 256 MiB.
    assert!(peak < declared + (4 << 20), "peak {peak} bytes while reading");
}

#[test]
fn every_gzip_member_is_read_and_trailing_garbage_is_refused() {
    let p = Path::new("x-idx1-ubyte.gz");
    let whole = idx_bytes(&[6], &[1, 2, 3, 4, 5, 6]);
    let mut members = gz(&whole[..7]);
    members.extend(gz(&whole[7..]));
    assert_eq!(idx::parse_idx(p, &members, 1).unwrap().data, vec![1, 2, 3, 4, 5, 6]);
    let mut garbage = gz(&whole);
    garbage.extend(b"garbage");
    let e = idx::parse_idx(p, &garbage, 1).unwrap_err().to_string();
    assert!(e.contains("gzip"), "{e}");
}

#[test]
fn empty_splits_are_refused_at_load_time_naming_the_file_and_split() {
    let tmp = tempfile::tempdir().unwrap();
    let put = |dir: &Path, name: &str, dims: &[u32], data: &[u8]| {
        std::fs::write(dir.join(name), idx_bytes(dims, data)).unwrap()
    };
    for (n_train, n_test, file, split) in [
        (1, 5, "train-images-idx3-ubyte", "training"),
        (20, 0, "t10k-images-idx3-ubyte", "test split"),
    ] {
        let dir = tmp.path().join(format!("d{n_train}-{n_test}"));
        std::fs::create_dir(&dir).unwrap();
        put(
            &dir,
            "train-images-idx3-ubyte",
            &[n_train, 2, 2],
            &vec![9; n_train as usize * 4],
        );
        put(&dir, "train-labels-idx1-ubyte", &[n_train], &vec![1; n_train as usize]);
        put(
            &dir,
            "t10k-images-idx3-ubyte",
            &[n_test, 2, 2],
            &vec![9; n_test as usize * 4],
        );
        put(&dir, "t10k-labels-idx1-ubyte", &[n_test], &vec![1; n_test as usize]);
        let out = tmp.path().join(format!("run{n_train}"));
        let e = fails(&lsmooth(&[
            "train",
            "--data",
            dir.to_str().unwrap(),
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]));
        assert!(e.contains(file) && e.contains(split), "{e}");
        assert!(!out.join("checkpoint.safetensors").exists(), "nothing trained");
    }
}

// ---- Fuzzing: random and mutated inputs never panic, and allocate what the input justifies. ----

fn valid_npy() -> Vec<u8> {
    npy::encode("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", |o| {
        o.extend(f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    })
}

fn mutate(mut v: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, kind, byte) in edits {
        let i = if v.is_empty() { 0 } else { at % (v.len() + 1) };
        match kind % 4 {
            0 if i < v.len() => v[i] = byte,
            1 => v.insert(i, byte),
            2 if i < v.len() => {
                v.remove(i);
            }
            _ => v.truncate(i),
        }
    }
    v
}

/// A parsed `.npy` array is consistent with its header, and memory stays within a small multiple of the file.
fn check_npy(bytes: &[u8]) {
    let (r, peak) = peak_bytes(|| npy::parse(Path::new("f.npy"), bytes));
    if let Ok(a) = &r {
        let n: usize = a.shape.iter().product();
        let len = match &a.data {
            npy::Data::F32(v) => v.len(),
            npy::Data::Int(v) => v.len(),
        };
        assert_eq!(len, n, "{:?}", a.shape);
    }
    // Values widen to at most 8 bytes from at least 1; the header is decoded to chars (4 bytes each).
    assert!(
        peak <= 16 * bytes.len() + 64 * 1024,
        "peak {peak} bytes for a {}-byte file",
        bytes.len()
    );
}

fn check_idx(bytes: &[u8]) {
    let (r, peak) = peak_bytes(|| idx::parse_idx(Path::new("f-idx3-ubyte"), bytes, 3));
    let kept = r.as_ref().map_or(0, |a| a.data.len());
    if let Ok(a) = &r {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
    }
    // The file, the inflater's state and window, and at most what the header declared plus one byte.
    assert!(
        peak <= 2 * kept + 2 * bytes.len() + (1 << 20),
        "peak {peak} for {} bytes (kept {kept})",
        bytes.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn npy_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_npy(&bytes);
        let mut with_magic = b"\x93NUMPY\x01\x00".to_vec();
        with_magic.extend(&bytes);
        check_npy(&with_magic);
    }

    #[test]
    fn npy_mutated(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)) {
        check_npy(&mutate(valid_npy(), &edits));
    }

    #[test]
    fn npy_header_mutated(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), prop::sample::select(b"'\"(),:{}[]\\ \n#0123456789-+.eLjxTrueFalsNn\x00\t\x0c\r".to_vec())), 1..6)) {
        // Mutations of the header's text only, with the characters that matter to a Python literal.
        let header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }".to_vec();
        let h = mutate(header, &edits);
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend((h.len() as u16).to_le_bytes());
        v.extend(&h);
        v.extend(f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        check_npy(&v);
    }

    #[test]
    fn idx_random_and_mutated(bytes in proptest::collection::vec(any::<u8>(), 0..200), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..5)) {
        check_idx(&bytes);
        let valid = idx_bytes(&[3, 4, 4], &[5; 48]);
        check_idx(&mutate(valid.clone(), &edits));
        // Gzip: the stream and its header mutated (a flipped byte in the deflate data, the trailer, the sizes).
        check_idx(&mutate(gz(&valid), &edits));
        let mut gzip_magic = vec![0x1f, 0x8b];
        gzip_magic.extend(&bytes);
        check_idx(&gzip_magic);
    }
}

/// `lsmooth ... | head`: the reader closing the pipe ends the command quietly (exit 0, nothing on stderr), and the
/// files it writes are complete, since every output file is written before anything is printed.
#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    use std::process::{Command, Stdio};
    let d = Dir::new();
    let bin = env!("CARGO_BIN_EXE_lsmooth");
    // A target row of 200000 classes is about 2 MB of text, far more than a pipe holds: with the reading end
    // closed before the first write, the write fails with a broken pipe.
    let run = |args: &[&str]| {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    };
    let out = run(&["targets", "--classes", "200000", "--smoothing", "0.1"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // `loss --grad-out` writes its file, then prints: the file is whole though nobody reads the line.
    let (n, k) = (4000, 100);
    let logits: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.3).collect();
    write_f32(&d.p("logits.npy"), &format!("({n}, {k})"), &logits);
    write_labels(
        &d.p("labels.npy"),
        &(0..n as i64).map(|i| i % k as i64).collect::<Vec<_>>(),
    );
    let out = run(&[
        "loss",
        "--logits",
        &d.s("logits.npy"),
        "--targets",
        &d.s("labels.npy"),
        "--reduction",
        "none",
        "--grad-out",
        &d.s("grad.npy"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty());
    let grad = npy::read(&d.p("grad.npy")).unwrap();
    assert_eq!(grad.shape, vec![n, k]);
}

/// With stderr closed or full, an error still exits 2 (it does not panic while printing its message).
#[test]
fn an_error_with_stderr_unwritable_still_exits_2() {
    use std::process::{Command, Stdio};
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(full) = full else {
        eprintln!("skipped: no /dev/full on this machine");
        return;
    };
    let bin = env!("CARGO_BIN_EXE_lsmooth");
    for args in [
        &["loss", "--logits", "/nonexistent.npy", "--targets", "/nonexistent.npy"][..],
        &["--bogus"][..],
    ] {
        let status = Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(full.try_clone().unwrap()))
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}");
        let closed = Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(closed.code(), Some(2), "{args:?}");
    }
}
