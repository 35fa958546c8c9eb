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
