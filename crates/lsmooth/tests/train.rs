//! `lsmooth train` and its data: IDX readers on real, truncated and corrupt files, a short run that must learn,
//! determinism, resumption to the same numbers, and a non-finite loss that stops without losing the checkpoint.

use std::path::Path;

mod common;
use common::{fails, gz, idx_bytes, json, lsmooth, ok};

use lsmooth::data::{parse_idx, read_idx, Dataset, IdxError, Source};
use serde_json::Value;

const EMBEDDED_LABELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist10k-labels-idx1-ubyte.gz");
const EMBEDDED_IMAGES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist10k-images-idx3-ubyte.gz");

#[test]
fn idx_reader_on_the_real_files() {
    let labels = read_idx(Path::new(EMBEDDED_LABELS), 1).unwrap();
    assert_eq!(labels.dims, vec![10_000]);
    // The class counts published with the data (data/README.md).
    let mut counts = [0usize; 10];
    for &y in &labels.data {
        counts[y as usize] += 1;
    }
    assert_eq!(counts, [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
    let images = read_idx(Path::new(EMBEDDED_IMAGES), 3).unwrap();
    assert_eq!(images.dims, vec![10_000, 28, 28]);
    // MNIST pixels span the full byte range; the border is blank.
    assert_eq!(images.data.iter().max(), Some(&255));
    assert_eq!(images.data[0], 0);

    let d = Dataset::load(&Source::EmbeddedMnist).unwrap();
    assert_eq!((d.train.len(), d.validation.len(), d.test.len()), (7000, 1000, 2000));
    assert_eq!((d.rows, d.cols), (28, 28));
    let digits = Dataset::load(&Source::Digits).unwrap();
    assert_eq!((digits.rows, digits.cols), (8, 8));
    assert_eq!(digits.train.len() + digits.validation.len() + digits.test.len(), 1797);
}

#[test]
fn truncated_and_corrupt_files_name_the_file_and_offset() {
    let p = Path::new("x-idx3-ubyte");
    let good = idx_bytes(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(parse_idx(p, &good, 3).unwrap().data, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(parse_idx(p, &gz(&good), 3).unwrap().dims, vec![2, 2, 2]);

    let err = |bytes: &[u8]| match parse_idx(p, bytes, 3) {
        Err(IdxError::Format {
            path, offset, message, ..
        }) => {
            assert_eq!(path, p);
            (offset, message)
        }
        other => panic!("expected a format error, got {other:?}"),
    };
    // Data cut short: the offset is where the file ends.
    let (offset, message) = err(&good[..good.len() - 3]);
    assert_eq!(offset, good.len() as u64 - 3);
    assert!(
        message.contains("truncated") && message.contains("8 data bytes") && message.contains("has 5"),
        "{message}"
    );
    // Cut inside the header.
    let (offset, message) = err(&good[..9]);
    assert_eq!(offset, 9);
    assert!(message.contains("header"), "{message}");
    // Wrong magic, element type, dimensions.
    assert_eq!(err(&[1, 0, 8, 3, 0, 0, 0, 0]).0, 0);
    let mut ints = good.clone();
    ints[2] = 0x0c;
    let (offset, message) = err(&ints);
    assert_eq!(offset, 2);
    assert!(message.contains("0x0c"), "{message}");
    let mut two = good.clone();
    two[3] = 2;
    assert_eq!(err(&two).0, 3);
    // A gzip stream cut short, or with its body corrupted.
    let z = gz(&idx_bytes(&[200, 28, 28], &vec![7u8; 200 * 784]));
    let (_, message) = err(&z[..z.len() / 2]);
    assert!(message.contains("gzip"), "{message}");
    let mut bad = z.clone();
    for b in &mut bad[20..60] {
        *b ^= 0x5a;
    }
    let (_, message) = err(&bad);
    assert!(message.contains("gzip"), "{message}");
}

/// Writes a small MNIST-format directory (from the embedded data) and returns its path.
fn mnist_dir(dir: &Path, n_train: usize, n_test: usize, gzip: bool) {
    let images = read_idx(Path::new(EMBEDDED_IMAGES), 3).unwrap();
    let labels = read_idx(Path::new(EMBEDDED_LABELS), 1).unwrap();
    let put = |name: &str, bytes: Vec<u8>| {
        let (name, bytes) = if gzip {
            (format!("{name}.gz"), gz(&bytes))
        } else {
            (name.to_string(), bytes)
        };
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    put(
        "train-images-idx3-ubyte",
        idx_bytes(&[n_train as u32, 28, 28], &images.data[..n_train * 784]),
    );
    put(
        "train-labels-idx1-ubyte",
        idx_bytes(&[n_train as u32], &labels.data[..n_train]),
    );
    let test = n_train..n_train + n_test;
    put(
        "t10k-images-idx3-ubyte",
        idx_bytes(&[n_test as u32, 28, 28], &images.data[test.start * 784..test.end * 784]),
    );
    put(
        "t10k-labels-idx1-ubyte",
        idx_bytes(&[n_test as u32], &labels.data[test]),
    );
}

#[test]
fn data_dir_in_mnist_layout_plain_or_gzipped_and_its_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for gzip in [false, true] {
        let dir = tmp.path().join(if gzip { "gz" } else { "plain" });
        std::fs::create_dir(&dir).unwrap();
        mnist_dir(&dir, 1000, 300, gzip);
        let d = Dataset::load(&Source::Dir(dir.clone())).unwrap();
        assert_eq!((d.train.len(), d.validation.len(), d.test.len()), (900, 100, 300));
    }
    let plain = tmp.path().join("plain");
    let out = tmp.path().join("run");
    let o = lsmooth(&[
        "train",
        "--data",
        plain.to_str().unwrap(),
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    assert_eq!(json(&out.join("metrics.json"))["epochs"], 1);

    // A missing directory, a missing file, a truncated file, labels that disagree with the images.
    let e = fails(&lsmooth(&["train", "--data", "/nonexistent/mnist", "--epochs", "1"]));
    assert!(e.contains("/nonexistent/mnist") && e.contains("not a directory"), "{e}");
    std::fs::remove_file(plain.join("t10k-labels-idx1-ubyte")).unwrap();
    let e = fails(&lsmooth(&["train", "--data", plain.to_str().unwrap(), "--epochs", "1"]));
    assert!(e.contains("t10k-labels-idx1-ubyte"), "{e}");
    let images = plain.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 100]).unwrap();
    let e = fails(&lsmooth(&["train", "--data", plain.to_str().unwrap(), "--epochs", "1"]));
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated") && e.contains("at byte"),
        "{e}"
    );
    let gzdir = tmp.path().join("gz");
    let labels = gzdir.join("train-labels-idx1-ubyte.gz");
    std::fs::write(&labels, gz(&idx_bytes(&[999], &vec![1u8; 999]))).unwrap();
    let e = fails(&lsmooth(&["train", "--data", gzdir.to_str().unwrap(), "--epochs", "1"]));
    assert!(e.contains("999 labels for the 1000 images"), "{e}");
    std::fs::write(&labels, gz(&idx_bytes(&[1000], &[11u8; 1000]))).unwrap();
    let e = fails(&lsmooth(&["train", "--data", gzdir.to_str().unwrap(), "--epochs", "1"]));
    assert!(e.contains("at byte 8") && e.contains("label 11"), "{e}");
}

#[test]
fn a_short_run_learns_mnist() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let stdout = ok(&lsmooth(&[
        "train",
        "--epochs",
        "3",
        "--preset",
        "fast-reid",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("epoch")).count(), 3, "{stdout}");
    let m = json(&out.join("metrics.json"));
    let acc = m["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.90, "test accuracy {acc} after 3 epochs");
    for key in ["test_nll", "test_ece", "test_brier", "temperature", "test_ece_scaled"] {
        assert!(m[key].as_f64().unwrap().is_finite(), "{key}");
    }
    assert_eq!(m["history"].as_array().unwrap().len(), 3);
    assert_eq!(m["config"]["loss"]["reduction"], "mean-nonzero");
    let csv = std::fs::read_to_string(out.join("epochs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("epoch,train_loss,train_accuracy"));
    // The model file is a safetensors file holding every layer.
    let tensors = candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(tensors["fc1.weight"].dims(), &[256, 784]);
    assert_eq!(tensors["head.weight"].dims(), &[10, 256]);
    // Nothing temporary left behind.
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains("tmp"), "{name}");
    }
}

/// Everything of a run's metrics except wall-clock times.
fn without_times(mut m: Value) -> Value {
    for h in m["history"].as_array_mut().unwrap() {
        h.as_object_mut().unwrap().remove("seconds");
    }
    m
}

#[test]
fn same_seed_same_numbers_and_resume_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let run_seed = |name: &str, epochs: &str, seed: &str| {
        let out = tmp.path().join(name);
        let common = [
            "--train-size",
            "1500",
            "--adaptive",
            "0.2",
            "--quiet",
            "--batch-size",
            "100",
        ];
        let mut args = vec![
            "train",
            "--epochs",
            epochs,
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(common);
        ok(&lsmooth(&args));
        out
    };
    let run = |name: &str, epochs: &str| run_seed(name, epochs, "7");
    let a = run("a", "3");
    let b = run("b", "3");
    assert_eq!(
        without_times(json(&a.join("metrics.json"))),
        without_times(json(&b.join("metrics.json")))
    );
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    // A different seed is a different run.
    let c = run_seed("c", "3", "8");
    assert_ne!(
        json(&a.join("metrics.json"))["test_nll"],
        json(&c.join("metrics.json"))["test_nll"]
    );

    // Interrupted after 1 epoch, resumed to 3.
    let r = run("r", "1");
    let stdout = ok(&lsmooth(&["train", "--resume", r.to_str().unwrap(), "--epochs", "3"]));
    assert!(
        stdout.contains("resuming") && stdout.contains("after epoch 1"),
        "{stdout}"
    );
    let mut resumed = without_times(json(&r.join("metrics.json")));
    let mut whole = without_times(json(&a.join("metrics.json")));
    assert_eq!(resumed["config"]["epochs"], 3);
    resumed["config"].as_object_mut().unwrap().remove("epochs");
    whole["config"].as_object_mut().unwrap().remove("epochs");
    assert_eq!(resumed, whole);
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(r.join("model.safetensors")).unwrap()
    );
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(&lsmooth(&[
        "train",
        "--optimizer",
        "sgd",
        "--train-size",
        "1000",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]));
    let checkpoint = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    // Continue, with epoch 2 diverging (the debug build's injection: the loss of its first batch is NaN).
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lsmooth"))
        .args(["train", "--resume", out.to_str().unwrap(), "--epochs", "3"])
        .env("LSMOOTH_NAN_LOSS_AT_EPOCH", "2")
        .output()
        .unwrap();
    let e = fails(&o);
    assert!(
        e.contains("epoch 2") && e.contains("training loss is") && e.contains("after epoch 1"),
        "{e}"
    );
    assert_eq!(std::fs::read(out.join("checkpoint.safetensors")).unwrap(), checkpoint);
    assert_eq!(json(&out.join("state.json"))["epochs_done"], 1);
}

#[test]
fn saved_features_feed_project_and_calibrate() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    ok(&lsmooth(&[
        "train",
        "--epochs",
        "1",
        "--train-size",
        "1000",
        "--smoothing",
        "0.1",
        "--quiet",
        "--save-features",
        "--out",
        o,
    ]));
    let metrics = json(&out.join("metrics.json"));
    let f = |name: &str| out.join(name).to_str().unwrap().to_string();
    calibrate_reproduces_the_run(&f, &metrics);
    project_draws_each_class(&f, &out);
    project_refuses_what_does_not_fit(&f);
}

/// `calibrate` on the saved test logits reproduces the run's own test metrics (`f` names a file of the run).
fn calibrate_reproduces_the_run(f: &dyn Fn(&str) -> String, metrics: &Value) {
    let c: Value = serde_json::from_str(&ok(&lsmooth(&[
        "calibrate",
        "--logits",
        &f("test_logits.npy"),
        "--labels",
        &f("test_labels.npy"),
        "--fit-temperature",
        &f("validation_logits.npy"),
        &f("validation_labels.npy"),
        "--json",
    ])))
    .unwrap();
    assert_eq!(c["accuracy"], metrics["test_accuracy"]);
    for (key, theirs) in [("nll", "test_nll"), ("ece", "test_ece"), ("brier", "test_brier")] {
        let (a, b) = (c[key].as_f64().unwrap(), metrics[theirs].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{key}: {a} vs {b}");
    }
    assert!((c["temperature"].as_f64().unwrap() - metrics["temperature"].as_f64().unwrap()).abs() < 1e-9);
}

/// `project` on the saved features: one cluster per class with every test example of it, as SVG and PNG.
fn project_draws_each_class(f: &dyn Fn(&str) -> String, out: &Path) {
    let labels = lsmooth::io::npy::read(&out.join("test_labels.npy"))
        .unwrap()
        .into_i64("labels")
        .unwrap();
    let p: Value = serde_json::from_str(&ok(&lsmooth(&[
        "project",
        "--features",
        &f("test_features.npy"),
        "--labels",
        &f("test_labels.npy"),
        "--weights",
        &f("head_weight.npy"),
        "--classes",
        "3,5,8",
        "--plot",
        &f("proj.svg"),
        "--json",
    ])))
    .unwrap();
    let clusters = p["clusters"].as_array().unwrap();
    for (cluster, class) in clusters.iter().zip([3i64, 5, 8]) {
        assert_eq!(cluster["class"], class);
        assert_eq!(
            cluster["count"].as_u64().unwrap() as usize,
            labels.iter().filter(|&&y| y == class).count()
        );
        assert!(cluster["spread"].as_f64().unwrap() > 0.0);
    }
    let total: usize = labels.iter().filter(|&&y| [3, 5, 8].contains(&y)).count();
    let svg = std::fs::read_to_string(out.join("proj.svg")).unwrap();
    assert_eq!(svg.matches(r#"class="point""#).count(), total);
    assert_eq!(svg.matches(r#"class="template""#).count(), 3);
    ok(&lsmooth(&[
        "project",
        "--features",
        &f("test_features.npy"),
        "--labels",
        &f("test_labels.npy"),
        "--weights",
        &f("head_weight.npy"),
        "--classes",
        "0,1,2",
        "--plot",
        &f("proj.png"),
    ]));
    let png = resvg::tiny_skia::Pixmap::load_png(out.join("proj.png")).expect("the PNG decodes");
    assert!(png.width() > 500 && png.height() > 500);
}

/// Bad input: features and weights of different widths, a class out of range, two classes, wrong lengths.
fn project_refuses_what_does_not_fit(f: &dyn Fn(&str) -> String) {
    for (args, needle) in [
        (
            vec!["--weights", "test_logits.npy", "--classes", "3,5,8"],
            "head_weight.npy",
        ),
        (
            vec!["--weights", "head_weight.npy", "--classes", "3,5,10"],
            "class 10 is out of range",
        ),
        (
            vec!["--weights", "head_weight.npy", "--classes", "3,5"],
            "three classes",
        ),
    ] {
        let mut argv = vec![
            "project".to_string(),
            "--features".into(),
            f("test_features.npy"),
            "--labels".into(),
            f("test_labels.npy"),
        ];
        for a in args {
            argv.push(if a.ends_with(".npy") { f(a) } else { a.to_string() });
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let e = fails(&lsmooth(&argv));
        let needle = if needle == "head_weight.npy" {
            "test_logits.npy"
        } else {
            needle
        };
        assert!(e.contains(needle), "{argv:?}: {e}");
    }
    let e = fails(&lsmooth(&[
        "project",
        "--features",
        &f("test_features.npy"),
        "--labels",
        &f("validation_labels.npy"),
        "--weights",
        &f("head_weight.npy"),
        "--classes",
        "3,5,8",
    ]));
    assert!(e.contains("labels for the 2000 rows"), "{e}");
}

#[test]
fn the_cnn_learns_the_embedded_uci_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cnn");
    ok(&lsmooth(&[
        "train",
        "--model",
        "cnn",
        "--dataset",
        "digits",
        "--epochs",
        "5",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]));
    let m = json(&out.join("metrics.json"));
    assert_eq!(m["model"], "cnn conv16-conv32-fc128");
    // Ten classes: chance is 10%; five epochs of 10 batches reach well above it.
    let acc = m["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.6, "test accuracy {acc}");
    let tensors = candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(tensors["conv1.weight"].dims(), &[16, 1, 3, 3]);
    assert_eq!(tensors["fc1.weight"].dims(), &[128, 32 * 2 * 2]);
}

#[test]
fn every_regulariser_trains_and_resumes_to_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = tmp.path().join("teacher");
    ok(&lsmooth(&[
        "train",
        "--epochs",
        "1",
        "--train-size",
        "1000",
        "--quiet",
        "--out",
        teacher.to_str().unwrap(),
    ]));
    let regularisers: [(&[&str], &str); 6] = [
        (&["--mixup", "0.2"], "mixup"),
        (&["--cutmix", "1.0"], "cutmix"),
        (&["--ols"], "ols"),
        (&["--confidence-penalty", "0.1"], "confidence-penalty"),
        (&["--label-relaxation", "0.1"], "label-relaxation"),
        (
            &[
                "--distill-from",
                teacher.to_str().unwrap(),
                "--temperature",
                "2",
                "--beta",
                "0.7",
            ],
            "distill",
        ),
    ];
    for (flags, kind) in regularisers {
        let run = |name: &str, epochs: &str| {
            let out = tmp.path().join(format!("{kind}-{name}"));
            let mut args = vec![
                "train",
                "--epochs",
                epochs,
                "--train-size",
                "1000",
                "--smoothing",
                "0.1",
                "--quiet",
            ];
            args.extend(flags);
            args.extend(["--out", out.to_str().unwrap()]);
            ok(&lsmooth(&args));
            out
        };
        let whole = run("whole", "2");
        let m = json(&whole.join("metrics.json"));
        assert_eq!(m["config"]["objective"]["kind"], kind);
        let acc = m["test_accuracy"].as_f64().unwrap();
        assert!(acc > 0.5, "{kind}: test accuracy {acc} after 2 epochs of 1000 examples");
        // Interrupted after one epoch and resumed: the same numbers (mixup/CutMix draws and the OLS matrix are
        // part of the state).
        let part = run("part", "1");
        ok(&lsmooth(&[
            "train",
            "--resume",
            part.to_str().unwrap(),
            "--epochs",
            "2",
            "--quiet",
        ]));
        let mut a = without_times(json(&whole.join("metrics.json")));
        let mut b = without_times(json(&part.join("metrics.json")));
        for v in [&mut a, &mut b] {
            v["config"].as_object_mut().unwrap().remove("epochs");
        }
        assert_eq!(a, b, "{kind}: resumed run differs");
    }
    let e = fails(&lsmooth(&[
        "train",
        "--distill-from",
        "/nonexistent/teacher",
        "--epochs",
        "1",
    ]));
    assert!(e.contains("/nonexistent/teacher/run.json"), "{e}");
}
