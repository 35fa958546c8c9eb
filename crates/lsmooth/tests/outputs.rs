//! A command whose report cannot be printed (stdout full) fails with exit 2 and leaves its earlier output files
//! as they were: `compare`'s summary and report pages, `calibrate --plot`, `loss --grad-out`; they are renamed
//! into place only after the print. (A reader that closes the pipe still gets every output: robustness.rs.)

mod common;
use common::{fails, lsmooth, ok, Dir};
use lsmooth::io::npy;
use std::process::{Command, Stdio};

/// Runs `lsmooth args` with its standard output on `/dev/full`.
fn to_full_stdout(args: &[&str]) -> std::process::Output {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    Command::new(env!("CARGO_BIN_EXE_lsmooth"))
        .args(args)
        .stdout(Stdio::from(full))
        .output()
        .unwrap()
}

#[test]
fn a_failed_print_leaves_the_earlier_outputs_unchanged() {
    let d = Dir::new();
    let out = d.s("cmp");
    let sweep = |setting: &str| {
        [
            "compare",
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--seeds",
            "0",
            "--settings",
            setting,
            "--out",
            &out,
        ]
        .map(String::from)
    };
    let first = sweep("plain");
    ok(&lsmooth(&first.iter().map(String::as_str).collect::<Vec<_>>()));
    let files = ["summary.json", "report.md", "report.html"].map(|f| d.p("cmp").join(f));
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let second = sweep("others:0.1");
    let e = fails(&to_full_stdout(&second.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(e.contains("cannot write to stdout"), "{e}");
    for (f, b) in files.iter().zip(&before) {
        assert!(&std::fs::read(f).unwrap() == b, "{} replaced", f.display());
    }

    // calibrate --plot and loss --grad-out.
    let (logits, labels) = (d.p("z.npy"), d.p("y.npy"));
    npy::write_f32(
        &logits,
        &[4, 3],
        &[1.0, 0.0, -1.0, 0.5, 2.0, 0.0, 0.0, 0.0, 3.0, 1.0, 1.0, 1.0],
    )
    .unwrap();
    common::write_i32(&labels, &[0, 1, 2, 0]);
    for (args, output) in [
        (
            vec![
                "calibrate",
                "--logits",
                &d.s("z.npy"),
                "--labels",
                &d.s("y.npy"),
                "--plot",
                &d.s("rel.svg"),
            ],
            "rel.svg",
        ),
        (
            vec![
                "loss",
                "--logits",
                &d.s("z.npy"),
                "--targets",
                &d.s("y.npy"),
                "--grad-out",
                &d.s("g.npy"),
            ],
            "g.npy",
        ),
    ] {
        std::fs::write(d.p(output), b"earlier").unwrap();
        fails(&to_full_stdout(&args));
        assert_eq!(std::fs::read(d.p(output)).unwrap(), b"earlier", "{output} replaced");
        ok(&lsmooth(&args));
        assert_ne!(std::fs::read(d.p(output)).unwrap(), b"earlier", "{output} written");
    }
}
