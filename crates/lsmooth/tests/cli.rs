//! `lsmooth` end to end: golden cases through `lsmooth loss`, the seed's targets, and every kind of bad input
//! (exit status 2, a one-line message naming the file or option, no partial output left behind).

use lsmooth::io::npy;
use serde_json::Value;

mod common;
use common::{lsmooth, read_f32, stderr, write_f64, write_i32, Dir};

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The `lsmooth loss` call of a golden case, its inputs written into `d`.
fn golden_call(d: &Dir, case: &Value) -> Vec<String> {
    let (n, k) = (
        case["n"].as_u64().unwrap() as usize,
        case["k"].as_u64().unwrap() as usize,
    );
    write_f64(&d.p("logits.npy"), &[n, k], &f64s(&case["logits"]));
    let mut args: Vec<String> = vec!["loss".into(), "--logits".into(), d.s("logits.npy")];
    if case["targets"].is_array() {
        let y: Vec<i64> = case["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        write_i32(&d.p("labels.npy"), &y);
        args.extend(["--targets".into(), d.s("labels.npy")]);
    } else {
        write_f64(&d.p("soft.npy"), &[n, k], &f64s(&case["soft_targets"]));
        args.extend(["--soft-targets".into(), d.s("soft.npy")]);
    }
    let o = &case["options"];
    match o["alpha"].as_f64() {
        Some(a) => args.extend(["--adaptive".into(), a.to_string()]),
        None => args.extend(["--smoothing".into(), o["eps"].as_f64().unwrap().to_string()]),
    }
    args.extend(["--spread".into(), o["spread"].as_str().unwrap().into()]);
    args.extend(["--reduction".into(), o["reduction"].as_str().unwrap().into()]);
    if let Some(ig) = o["ignore_index"].as_i64() {
        args.extend(["--ignore-index".into(), ig.to_string()]);
    }
    if o["weights"].is_array() {
        write_f64(&d.p("w.npy"), &[k], &f64s(&o["weights"]));
        args.extend(["--weights".into(), d.s("w.npy")]);
    }
    if case["grad_output"].is_array() {
        write_f64(&d.p("go.npy"), &[n], &f64s(&case["grad_output"]));
        args.extend(["--grad-output".into(), d.s("go.npy")]);
    }
    args.extend([
        "--grad-out".into(),
        d.s("grad.npy"),
        "--loss-out".into(),
        d.s("loss.npy"),
    ]);
    args
}

/// The printed JSON and the written loss and gradient of a golden case, against its expected values.
fn check_golden(d: &Dir, case: &Value, out: &std::process::Output) {
    let name = case["name"].as_str().unwrap();
    let (n, k) = (
        case["n"].as_u64().unwrap() as usize,
        case["k"].as_u64().unwrap() as usize,
    );
    let o = &case["options"];
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["n"], n);
    assert_eq!(report["k"], k);

    let want_loss: Vec<f64> = match &case["expected_loss"] {
        Value::Array(_) => f64s(&case["expected_loss"]),
        v => vec![v.as_f64().unwrap()],
    };
    let got_json: Vec<f64> = match &report["loss"] {
        Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap()).collect(),
        v => vec![v.as_f64().unwrap()],
    };
    let (loss_shape, got_file) = read_f32(&d.p("loss.npy"));
    assert_eq!(
        loss_shape,
        if want_loss.len() > 1 || o["reduction"] == "none" {
            vec![n]
        } else {
            vec![]
        }
    );
    for ((&g, &f), &w) in got_json.iter().zip(&got_file).zip(&want_loss) {
        assert!(
            (g - w).abs() <= 1e-6_f64.max(1e-5 * w.abs()),
            "{name}: loss {g} want {w}"
        );
        assert_eq!(g as f32, f, "{name}: JSON and .npy loss agree");
    }
    let (gshape, grad) = read_f32(&d.p("grad.npy"));
    assert_eq!(gshape, vec![n, k]);
    for (i, (&g, &w)) in grad.iter().zip(&f64s(&case["expected_grad"])).enumerate() {
        assert!((g as f64 - w).abs() <= 1e-6, "{name}: grad[{i}] {g} want {w}");
    }
}

#[test]
fn golden_cases_end_to_end() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/cross_entropy_cases.json"
    ))
    .unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let cases = file["cases"].as_array().unwrap();
    let mut ran = 0;
    for (idx, case) in cases.iter().enumerate() {
        // The first seven (the hand-written edge cases) and a spread sample of the rest.
        if idx >= 7 && idx % 6 != 0 {
            continue;
        }
        let name = case["name"].as_str().unwrap();
        let d = Dir::new();
        let args = golden_call(&d, case);
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = lsmooth(&argv);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        check_golden(&d, case, &out);
        ran += 1;
    }
    assert!(ran >= 25, "ran {ran} golden cases");
}

#[test]
fn z_loss_softcap_and_accuracy_end_to_end() {
    // The golden cases of scripts/gen_logit_option_cases.py (float64, Liger-Kernel's formulas and SPEC.md) of
    // at most 40 classes, through `lsmooth loss --z-loss S --softcap C --accuracy`.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/logit_option_cases.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let cases = file["cases"].as_array().unwrap();
    let mut ran = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let o = &case["options"];
        let d = Dir::new();
        let mut args = golden_call(&d, case);
        args.extend(["--z-loss".into(), o["z_loss"].as_f64().unwrap().to_string()]);
        if let Some(c) = o["softcap"].as_f64() {
            args.extend(["--softcap".into(), c.to_string()]);
        }
        let hard = case["targets"].is_array();
        if hard {
            args.push("--accuracy".into());
        }
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = lsmooth(&argv);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        check_golden(&d, case, &out);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let want_z: Vec<f64> = match &case["expected_z_loss"] {
            Value::Array(_) => f64s(&case["expected_z_loss"]),
            v => vec![v.as_f64().unwrap()],
        };
        if o["z_loss"].as_f64().unwrap() != 0.0 {
            let got_z: Vec<f64> = match &report["z_loss"] {
                Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap()).collect(),
                v => vec![v.as_f64().expect("z_loss in the report")],
            };
            for (&g, &w) in got_z.iter().zip(&want_z) {
                assert!(
                    (g - w).abs() <= 1e-6_f64.max(1e-5 * w.abs()),
                    "{name}: z-loss {g} want {w}"
                );
            }
        } else {
            assert!(report.get("z_loss").is_none(), "{name}");
        }
        assert_eq!(report["softcap"].as_f64(), o["softcap"].as_f64(), "{name}");
        if hard {
            assert_eq!(report["correct"], case["expected_correct"], "{name}");
            assert_eq!(report["counted"], case["expected_counted"], "{name}");
        }
        ran += 1;
    }
    assert_eq!(ran, 39, "every case of at most 40 classes");
}

#[test]
fn targets_prints_the_seed_example() {
    let out = lsmooth(&["targets", "--classes", "6", "--smoothing", "0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[0.9, 0.02, 0.02, 0.02, 0.02, 0.02]\n"
    );
    // PyTorch's convention: 1 - e + e/K on the label, e/K elsewhere.
    let out = lsmooth(&[
        "targets",
        "--classes",
        "4",
        "--smoothing",
        "0.2",
        "--spread",
        "uniform",
        "--label",
        "2",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[0.05, 0.05, 0.8500000000000001, 0.05]\n"
    );
    for (args, needle) in [
        (
            vec!["targets", "--classes", "6", "--smoothing", "1.5"],
            "--smoothing 1.5",
        ),
        (
            vec!["targets", "--classes", "6", "--smoothing", "0.1", "--label", "6"],
            "--label 6",
        ),
        (vec!["targets", "--classes", "1", "--smoothing", "0.1"], "--classes"),
    ] {
        let out = lsmooth(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

/// A valid 3x4 problem in `d`: logits.npy, labels.npy.
fn valid(d: &Dir) {
    npy::write_f32(
        &d.p("logits.npy"),
        &[3, 4],
        &[0.1, 0.2, 0.3, 0.4, 1.0, -1.0, 0.0, 2.0, 0.5, 0.5, 0.5, 0.5],
    )
    .unwrap();
    write_i32(&d.p("labels.npy"), &[0, 3, 1]);
}

/// One refused call: its arguments and what its one-line message must contain.
type Refused<'a> = (Vec<String>, Vec<&'a str>);

/// The inputs the refused calls read, next to [`valid`]'s, and an earlier `grad.npy` that must survive them.
fn bad_files(d: &Dir) {
    std::fs::write(d.p("grad.npy"), b"precious").unwrap();
    let good = std::fs::read(d.p("logits.npy")).unwrap();
    std::fs::write(d.p("truncated.npy"), &good[..good.len() - 5]).unwrap();
    std::fs::write(d.p("garbage.npy"), b"this is not numpy at all").unwrap();
    npy::write_f32(&d.p("float_labels.npy"), &[3], &[0.0, 1.0, 2.0]).unwrap();
    write_i32(&d.p("short_labels.npy"), &[0, 1]);
    write_i32(&d.p("bad_label.npy"), &[0, 4, 1]);
    npy::write_f32(&d.p("w3.npy"), &[3], &[1.0, 1.0, 1.0]).unwrap();
    npy::write_f32(&d.p("wneg.npy"), &[4], &[1.0, -1.0, 1.0, 1.0]).unwrap();
    npy::write_f32(&d.p("soft_bad.npy"), &[3, 4], &[0.25; 12].map(|x| x * 1.1)).unwrap();
    npy::write_f32(&d.p("go2.npy"), &[2], &[1.0, 1.0]).unwrap();
}

/// `lsmooth loss --logits LOGITS --targets TARGETS [extra...]`, writing `grad.npy` and, unless `grad_only`,
/// `loss.npy`.
fn loss_call(d: &Dir, (logits, targets): (&str, &str), extra: &[&str], grad_only: bool) -> Vec<String> {
    let mut v = vec![
        "loss".to_string(),
        "--logits".into(),
        d.s(logits),
        "--targets".into(),
        d.s(targets),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(["--grad-out".into(), d.s("grad.npy")]);
    if !grad_only {
        v.extend(["--loss-out".into(), d.s("loss.npy")]);
    }
    v
}

/// Files that are missing, damaged or of the wrong shape or type.
fn bad_file_calls(d: &Dir) -> Vec<Refused<'static>> {
    let with_logits = |p: &str| loss_call(d, (p, "labels.npy"), &[], true);
    let with_targets = |p: &str, extra: &[&str]| loss_call(d, ("logits.npy", p), extra, false);
    vec![
        (with_logits("missing.npy"), vec!["missing.npy", "No such file"]),
        (
            with_logits("truncated.npy"),
            vec!["truncated.npy", "truncated", "offset"],
        ),
        (
            with_logits("garbage.npy"),
            vec!["garbage.npy", "not a .npy file", "offset 0"],
        ),
        (with_logits("labels.npy"), vec!["labels.npy", "[N, K]", "[3]"]),
        (
            with_targets("float_labels.npy", &[]),
            vec!["float_labels.npy", "integer dtype", "float32"],
        ),
        (
            with_targets("short_labels.npy", &[]),
            vec!["short_labels.npy", "expected 3 labels", "[2]"],
        ),
        (
            with_targets("bad_label.npy", &[]),
            vec!["bad_label.npy", "label 4 at row 1", "[0, 4)"],
        ),
    ]
}

/// Flags out of range, and inputs that do not go together.
fn bad_flag_calls(d: &Dir) -> Vec<Refused<'static>> {
    let base = |extra: &[&str]| loss_call(d, ("logits.npy", "labels.npy"), extra, false);
    vec![
        (base(&["--smoothing", "1.5"]), vec!["--smoothing 1.5", "--adaptive"]),
        (base(&["--smoothing", "-0.1"]), vec!["--smoothing -0.1", "--adaptive"]),
        (base(&["--adaptive", "2"]), vec!["--adaptive 2"]),
        (
            base(&["--weights", &d.s("w3.npy")]),
            vec!["w3.npy", "expected 4 weights"],
        ),
        (
            base(&["--weights", &d.s("wneg.npy")]),
            vec!["wneg.npy", "class 1", "-1"],
        ),
        (base(&["--spread", "sideways"]), vec!["sideways", "others"]),
        (base(&["--reduction", "median"]), vec!["median", "mean-nonzero"]),
        (base(&["--z-loss", "-0.5"]), vec!["--z-loss -0.5", ">= 0"]),
        (base(&["--z-loss", "inf"]), vec!["--z-loss", "inf"]),
        (base(&["--softcap", "0"]), vec!["--softcap 0", "> 0"]),
        (base(&["--softcap", "-3"]), vec!["--softcap -3"]),
        (base(&["--grad-output", &d.s("go2.npy")]), vec!["go2.npy", "scalar"]),
        (
            vec![
                "loss".into(),
                "--logits".into(),
                d.s("logits.npy"),
                "--soft-targets".into(),
                d.s("soft_bad.npy"),
                "--grad-out".into(),
                d.s("grad.npy"),
            ],
            vec!["soft_bad.npy", "row 0", "sums to 1.1"],
        ),
        (
            vec![
                "loss".into(),
                "--logits".into(),
                d.s("logits.npy"),
                "--soft-targets".into(),
                d.s("logits.npy"),
                "--adaptive".into(),
                "0.2".into(),
            ],
            vec!["--adaptive needs hard labels"],
        ),
        (
            vec!["loss".into(), "--logits".into(), d.s("logits.npy")],
            vec!["--targets"],
        ),
    ]
}

/// Each call exits 2 with a one-line message containing its needles, prints nothing, keeps the earlier
/// `grad.npy` and writes no `loss.npy`.
fn assert_refused(d: &Dir, cases: Vec<Refused<'_>>) {
    for (args, needles) in cases {
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = lsmooth(&argv);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert!(out.stdout.is_empty(), "{argv:?}");
        for needle in needles {
            assert!(err.contains(needle), "{argv:?}: message {err:?} lacks {needle:?}");
        }
        assert_eq!(err.trim_end().lines().count(), 1, "{argv:?}: one line: {err:?}");
        assert_eq!(
            std::fs::read(d.p("grad.npy")).unwrap(),
            b"precious",
            "{argv:?}: earlier output kept"
        );
        assert!(!d.p("loss.npy").exists(), "{argv:?}: no partial loss file");
    }
}

#[test]
fn bad_input_exits_2_with_a_one_line_message_and_no_output_file() {
    let d = Dir::new();
    valid(&d);
    bad_files(&d);
    assert_refused(&d, bad_file_calls(&d));
    assert_refused(&d, bad_flag_calls(&d));
    let leftovers: Vec<_> = std::fs::read_dir(d.0.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn per_row_loss_scalar_output_and_help() {
    let d = Dir::new();
    valid(&d);
    let out = lsmooth(&[
        "loss",
        "--logits",
        &d.s("logits.npy"),
        "--targets",
        &d.s("labels.npy"),
        "--reduction",
        "none",
        "--loss-out",
        &d.s("l.npy"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_row: Vec<f64> = report["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // Row 2 has equal logits: -log(1/4).
    assert!((per_row[2] - 4f64.ln()).abs() < 1e-6, "{per_row:?}");
    assert_eq!(read_f32(&d.p("l.npy")).0, vec![3]);
    for cmd in ["loss", "targets"] {
        let out = lsmooth(&[cmd, "--help"]);
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Example"), "{cmd} --help: {help}");
    }
}

#[test]
fn bench_reports_json_with_the_copy_bandwidth() {
    for extra in [
        &[][..],
        &["--forward-only"][..],
        &["--in-place", "--dtype", "bf16"][..],
        &["--adaptive", "0.2"][..],
        &["--z-loss", "1e-4", "--softcap", "30", "--versus-plain"][..],
    ] {
        let mut args = vec![
            "bench",
            "--shape",
            "3x5000",
            "--threads",
            "2",
            "--repeat",
            "3",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = lsmooth(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        for key in ["median_s", "gbps", "copy_gbps", "read_median_s", "ns_per_row"] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{args:?}: {key} in {r}");
        }
        assert_eq!(
            (r["n"].as_u64(), r["k"].as_u64(), r["threads"].as_u64()),
            (Some(3), Some(5000), Some(2))
        );
        // The fraction is the median of per-round ratios, between its quartiles, and near the ratio of the
        // medians (the same rounds); with 3 rounds, within the spread of the per-round ratios.
        let frac = r["fraction_of_copy"].as_f64().unwrap();
        let q = &r["fraction_of_copy_quartiles"];
        let (q1, q3) = (q[0].as_f64().unwrap(), q[1].as_f64().unwrap());
        assert!(0.0 < q1 && q1 <= frac && frac <= q3, "{args:?}: {r}");
        assert_eq!(r["repeat"].as_u64(), Some(3));
        let elem = if extra.contains(&"bf16") { 2 } else { 4 };
        let per = if extra.contains(&"--forward-only") { 1 } else { 2 };
        assert_eq!(r["bytes"].as_u64(), Some(per * elem * 3 * 5000));
        if extra.contains(&"--versus-plain") {
            assert!(r["plain_median_s"].as_f64().unwrap() > 0.0 && r["ratio_to_plain"].as_f64().unwrap() > 0.0);
            assert_eq!(r["options"], serde_json::json!([1e-4, 30.0]), "{r}");
        } else {
            assert!(r.get("ratio_to_plain").is_none(), "{r}");
        }
    }
    let human = lsmooth(&["bench", "--shape", "64x751", "--repeat", "2"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("GB/s"));
    let zero = lsmooth(&["bench", "--shape", "4x10", "--repeat", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(stderr(&zero).contains("--repeat"), "{}", stderr(&zero));
    for bad in ["64", "0x10", "10x1", "axb"] {
        let out = lsmooth(&["bench", "--shape", bad]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(&format!("--shape {bad}")), "{}", stderr(&out));
    }
}

#[test]
fn bench_linear_times_fused_unfused_and_products_on_the_same_loss() {
    // 37 rows in blocks of 16: two full blocks and a partial one; K = 300 is not a multiple of the products' grid.
    let args = [
        "bench",
        "--linear",
        "37x24x300",
        "--block-rows",
        "16",
        "--threads",
        "2",
        "--repeat",
        "2",
        "--json",
    ];
    let out = lsmooth(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            r["n"].as_u64(),
            r["d"].as_u64(),
            r["k"].as_u64(),
            r["block_rows"].as_u64()
        ),
        (Some(37), Some(24), Some(300), Some(16))
    );
    for key in [
        "median_s",
        "unfused_median_s",
        "gemm_median_s",
        "ratio_to_gemm",
        "copy_gbps",
    ] {
        assert!(r[key].as_f64().unwrap() > 0.0, "{key} in {r}");
    }
    for key in ["peak_rss_bytes", "unfused_peak_rss_bytes"] {
        assert!(r.get(key).is_some(), "{key} missing in {r}");
    }
    // The two schedules compute the same mean loss within SPEC.md's 1e-5 relative tolerance; a random
    // classifier on 300 classes gives about ln 300.
    let (fused, unfused) = (r["loss"].as_f64().unwrap(), r["unfused_loss"].as_f64().unwrap());
    assert!((fused - unfused).abs() <= 1e-5 * unfused.abs(), "{r}");
    assert!(fused > 1.0 && fused < 20.0, "{r}");
    assert_eq!(r["block_classes"].as_u64(), Some(300), "{r}");
    // Blocks of 128 classes: the same loss within the tolerance, and the block reported.
    let mut blocked_args = args.to_vec();
    blocked_args.extend(["--block-classes", "128"]);
    let out = lsmooth(&blocked_args);
    assert!(out.status.success(), "{}", stderr(&out));
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["block_classes"].as_u64(), Some(128), "{b}");
    let blocked = b["loss"].as_f64().unwrap();
    assert!((blocked - unfused).abs() <= 1e-5 * unfused.abs(), "{b}");
    // z-loss and soft-capping: the fused loss (rows, and blocks of classes) equals the unfused composition's
    // (the fused kernel on the materialised logits) and differs from the loss without them.
    for extra in [&[][..], &["--block-classes", "128"][..]] {
        let mut option_args = args.to_vec();
        option_args.extend(["--z-loss", "1e-2", "--softcap", "2"]);
        option_args.extend(extra);
        let out = lsmooth(&option_args);
        assert!(out.status.success(), "{}", stderr(&out));
        let o: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (fused, unfused_o) = (o["loss"].as_f64().unwrap(), o["unfused_loss"].as_f64().unwrap());
        assert!((fused - unfused_o).abs() <= 1e-5 * unfused_o.abs(), "{o}");
        assert!((fused - unfused).abs() > 1e-3, "the options change the loss: {o}");
    }
    // The gradient filter on peaked logits: timed in the same rounds, the same loss, grad_x barely changed.
    let mut filtered_args = args.to_vec();
    filtered_args.extend(["--filter", "1e-7", "--peaked", "20"]);
    let out = lsmooth(&filtered_args);
    assert!(out.status.success(), "{}", stderr(&out));
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(f["filtered_median_s"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["ratio_filtered_to_fused"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["filtered_grad_x_rel_diff"].as_f64().unwrap() < 1e-3, "{f}");
    assert_eq!(f["peaked"].as_f64(), Some(20.0), "{f}");
    for flag in ["--block-rows", "--block-classes", "--filter", "--peaked"] {
        let out = lsmooth(&["bench", "--shape", "4x10", flag, "3"]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            stderr(&out).contains(&format!("{flag} applies to --linear only")),
            "{}",
            stderr(&out)
        );
    }
    for bad in ["64x8", "0x8x10", "4x8x1", "axbxc"] {
        let out = lsmooth(&["bench", "--linear", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(stderr(&out).contains(&format!("--linear {bad}")), "{}", stderr(&out));
    }
}

/// `lsmooth completions SHELL` prints a script that knows the commands and their flags; `lsmooth man` prints the
/// manual page, or writes one page per command.
#[test]
fn completions_and_manual_pages() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = lsmooth(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["calibrate", "compare", "smoothing", "grad-out"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
    }
    let out = lsmooth(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tcsh"), "{}", stderr(&out));

    let page = String::from_utf8(lsmooth(&["man"]).stdout).unwrap();
    assert!(page.contains(".TH lsmooth 1") && page.contains("calibrate"), "{page}");
    let d = Dir::new();
    let out = lsmooth(&["man", "--out-dir", &d.s("man1")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8(lsmooth(&["--help"]).stdout).unwrap();
    for command in [
        "loss",
        "targets",
        "bench",
        "calibrate",
        "train",
        "compare",
        "project",
        "completions",
        "man",
    ] {
        assert!(help.contains(command), "--help lists {command}");
        let text = std::fs::read_to_string(d.p(&format!("man1/lsmooth-{command}.1"))).unwrap();
        assert!(text.contains(&format!(".TH lsmooth-{command} 1")), "{command}: {text}");
    }
    let loss_page = std::fs::read_to_string(d.p("man1/lsmooth-loss.1")).unwrap();
    assert!(loss_page.contains("grad\\-out"), "the loss page documents --grad-out");
}
