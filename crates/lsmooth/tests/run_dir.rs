//! A run directory belongs to one run: a second process training into it is refused while the first lives (and
//! admitted once it is gone, however it ended); a checkpoint that was changed, or that belongs to another
//! configuration, is refused by `--resume` with advice; and `--resume` refuses flags that would change the saved
//! configuration.

mod common;
use common::{fails, lsmooth, ok, Dir};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A short run on the UCI digits into `dir`, with extra flags.
fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    let d = dir.to_str().unwrap();
    lsmooth(
        &[
            &["train", "--dataset", "digits", "--epochs", "1", "--quiet", "--out", d][..],
            extra,
        ]
        .concat(),
    )
}

#[test]
fn a_second_process_cannot_train_into_a_live_runs_directory() {
    let d = Dir::new();
    let dir = d.p("run");
    let mut first = Command::new(env!("CARGO_BIN_EXE_lsmooth"))
        .args(["train", "--dataset", "digits", "--epochs", "10000", "--quiet", "--out"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // run.json is written after the lock is taken.
    let start = Instant::now();
    while !dir.join("run.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the first run did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let e = fails(&train(&dir, &[]));
    assert!(
        e.contains("another lsmooth process is training into this directory"),
        "{e}"
    );
    let e = fails(&lsmooth(&["train", "--resume", dir.to_str().unwrap(), "--quiet"]));
    assert!(e.contains("another lsmooth process"), "{e}");
    // Killed, the first run's lock is gone with it: the directory can be trained into again.
    first.kill().unwrap();
    first.wait().unwrap();
    ok(&train(&dir, &[]));
}

#[test]
fn a_changed_checkpoint_is_refused_by_resume() {
    let d = Dir::new();
    let dir = d.p("run");
    ok(&train(&dir, &[]));
    let ckpt = dir.join("checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    let resume = || lsmooth(&["train", "--resume", dir.to_str().unwrap(), "--epochs", "2", "--quiet"]);
    // One bit of a tensor (the data section ends the file).
    let mut bad = good.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x10;
    std::fs::write(&ckpt, &bad).unwrap();
    let e = fails(&resume());
    assert!(
        e.contains("checksum does not match") && e.contains("checkpoint.safetensors"),
        "{e}"
    );
    // One digit of the history in the metadata (the header keeps its length).
    let mut bad = good.clone();
    let at = bad.windows(10).position(|w| w == b"train_loss").unwrap();
    let digit = at + bad[at..].iter().position(u8::is_ascii_digit).unwrap();
    bad[digit] = if bad[digit] == b'7' { b'8' } else { b'7' };
    std::fs::write(&ckpt, &bad).unwrap();
    let e = fails(&resume());
    assert!(e.contains("checksum does not match"), "{e}");
    // The checkpoint as written resumes.
    std::fs::write(&ckpt, &good).unwrap();
    ok(&resume());
}

#[test]
fn a_checkpoint_of_another_configuration_is_refused_by_resume() {
    let d = Dir::new();
    let (a, b) = (d.p("a"), d.p("b"));
    ok(&train(&a, &["--lr", "0.001"]));
    ok(&train(&b, &["--lr", "0.002"]));
    std::fs::copy(a.join("checkpoint.safetensors"), b.join("checkpoint.safetensors")).unwrap();
    let e = fails(&lsmooth(&[
        "train",
        "--resume",
        b.to_str().unwrap(),
        "--epochs",
        "2",
        "--quiet",
    ]));
    assert!(e.contains("another configuration") && e.contains("start afresh"), "{e}");
    // Extending a run is not another configuration.
    ok(&lsmooth(&[
        "train",
        "--resume",
        a.to_str().unwrap(),
        "--epochs",
        "2",
        "--quiet",
    ]));
}

#[test]
fn resume_refuses_flags_that_would_change_the_saved_configuration() {
    for (flag, value) in [
        ("--lr", "0.1"),
        ("--smoothing", "0.2"),
        ("--seed", "3"),
        ("--dataset", "mnist"),
    ] {
        let e = fails(&lsmooth(&["train", "--resume", "/nonexistent/run", flag, value]));
        assert!(e.contains(&format!("{flag} cannot change it")), "{e}");
    }
}
