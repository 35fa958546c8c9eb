//! A training run killed at every file write resumes to the same bytes.
//!
//! The debug build of `lsmooth` (the one `cargo test` runs) aborts at the n-th write event when
//! `LSMOOTH_ABORT_AT_WRITE_EVENT=n` is set: a temporary file written and flushed, or a rename done. For every n
//! until a run finishes untouched, the run is killed there and then continued (`--resume`, or the same command
//! again when the crash came before `run.json` existed); the result must equal an uninterrupted run's,
//! `model.safetensors` byte for byte and `metrics.json` apart from its wall-clock times.

use std::path::Path;
use std::process::{Command, Output};

const TRAIN: &[&str] = &[
    "train",
    "--train-size",
    "200",
    "--epochs",
    "2",
    "--batch-size",
    "50",
    "--hidden",
    "16",
    "--ols",
    "--quiet",
];

fn lsmooth(args: &[&str], abort_at: Option<u64>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lsmooth"));
    c.args(args);
    match abort_at {
        Some(n) => c.env("LSMOOTH_ABORT_AT_WRITE_EVENT", n.to_string()),
        None => c.env_remove("LSMOOTH_ABORT_AT_WRITE_EVENT"),
    };
    c.output().expect("run lsmooth")
}

fn train(out: &Path, abort_at: Option<u64>) -> Output {
    let mut args = TRAIN.to_vec();
    args.extend(["--out", out.to_str().unwrap()]);
    lsmooth(&args, abort_at)
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what}: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `metrics.json` without the per-epoch wall-clock seconds, as text (so floats compare bit for bit).
fn metrics_without_times(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("\"seconds\""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn killed_at_every_write_the_run_resumes_to_identical_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    assert_ok(&train(&reference, None), "the uninterrupted run");
    let model = std::fs::read(reference.join("model.safetensors")).unwrap();
    let metrics = metrics_without_times(&reference);

    let mut crash_points = 0;
    for n in 1.. {
        let dir = tmp.path().join(format!("killed-{n}"));
        let o = train(&dir, Some(n));
        if o.status.success() {
            // Past the last write event: the run finished untouched.
            assert!(n > 10, "a run writes more than 10 times ({n})");
            break;
        }
        assert_eq!(
            o.status.code(),
            None,
            "killed at write {n} by SIGABRT, not an error exit: {o:?}"
        );
        crash_points += 1;
        let again = if dir.join("run.json").exists() {
            lsmooth(&["train", "--resume", dir.to_str().unwrap(), "--quiet"], None)
        } else {
            train(&dir, None)
        };
        assert_ok(&again, &format!("continuing after the crash at write {n}"));
        assert_eq!(
            std::fs::read(dir.join("model.safetensors")).unwrap(),
            model,
            "model after the crash at write {n}"
        );
        assert_eq!(
            metrics_without_times(&dir),
            metrics,
            "metrics after the crash at write {n}"
        );
        let stale: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with(".lsmooth-") || f.ends_with(".tmp"))
            .collect();
        assert!(
            stale.is_empty(),
            "temporary files left after the crash at write {n}: {stale:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert!(crash_points > 10, "{crash_points} crash points");
}
