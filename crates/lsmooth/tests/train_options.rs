//! `lsmooth train`'s options: bad values are usage errors before anything is written, combinations that cannot
//! train are refused before the run starts, and label noise flips what it says it flips.

mod common;
use common::{fails, lsmooth};

use lsmooth::data::{Dataset, Source};

#[test]
fn bad_training_options_are_usage_errors() {
    for (args, needle) in [
        (vec!["train", "--reduction", "none"], "training needs"),
        (vec!["train", "--train-size", "0"], "--train-size 0"),
        (vec!["train", "--label-noise", "1.5"], "--label-noise 1.5"),
        (vec!["train", "--smoothing", "2"], "smoothing"),
        (vec!["train", "--z-loss", "-1"], "--z-loss -1"),
        (vec!["train", "--softcap", "0"], "--softcap 0"),
        (
            vec!["train", "--z-loss", "1e-4", "--mixup", "0.2"],
            "--z-loss and --softcap",
        ),
        (vec!["train", "--lr", "-1"], "--lr"),
        (
            vec!["train", "--resume", "/nonexistent/run"],
            "/nonexistent/run/run.json",
        ),
        (vec!["compare", "--settings", "others:x"], "setting \"others:x\""),
        (vec!["compare", "--project-classes", "1,2"], "three classes"),
    ] {
        let e = fails(&lsmooth(&args));
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

/// mixup and CutMix with adaptive smoothing are refused before the run starts: no run directory, no checkpoint
/// advice (the first batch used to fail with a message about the last good checkpoint).
#[test]
fn mixup_with_adaptive_smoothing_is_refused_before_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for regulariser in ["--mixup", "--cutmix"] {
        let args = [
            "train",
            "--dataset",
            "digits",
            "--adaptive",
            "0.2",
            regulariser,
            "0.2",
            "--out",
        ];
        let e = fails(&lsmooth(&[&args[..], &[out.to_str().unwrap()]].concat()));
        assert!(e.contains("--adaptive") && e.contains(regulariser), "{e}");
        assert!(!e.contains("checkpoint"), "{e}");
        assert!(!out.exists(), "nothing written");
    }
}

/// `--z-loss` and `--softcap` reach the loss of a run and its `run.json` (and so its resume and its name).
#[test]
fn z_loss_and_softcap_train_and_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = [
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--quiet",
        "--z-loss",
        "0.001",
        "--softcap",
        "30",
        "--smoothing",
        "0.1",
        "--out",
    ];
    let o = lsmooth(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let text = run.to_string();
    assert!(
        text.contains("\"z_loss\":0.001") && text.contains("\"softcap\":30.0"),
        "{text}"
    );
}

#[test]
fn label_noise_flips_the_requested_fraction_to_other_classes() {
    let clean = Dataset::load(&Source::EmbeddedMnist).unwrap();
    let mut noisy = clean.clone();
    let flipped = noisy.add_label_noise(0.2, 3);
    assert_eq!(flipped, 1400);
    let differ = clean
        .train
        .labels
        .iter()
        .zip(&noisy.train.labels)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differ, 1400);
    assert!(noisy.train.labels.iter().all(|&y| y < 10));
    assert_eq!(clean.test.labels, noisy.test.labels);
}
