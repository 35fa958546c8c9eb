//! `lsmooth compare` end to end: strength grids and their validation picks, regularisers and distillation
//! settings, distillation temperatures with smaller students.

mod common;
use common::{fails, json, lsmooth, ok};

#[test]
fn compare_grid_sweeps_the_strength_and_names_the_validation_picks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("grid");
    let stdout = ok(&lsmooth(&[
        "compare",
        "--grid",
        "others:0,0.1",
        "--grid",
        "uniform:0.2,0",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--train-size",
        "800",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("others grid: lowest validation NLL at"), "{stdout}");
    let summary = json(&out.join("summary.json"));
    // Only the grid's settings (no default settings when --grid is given alone), in order.
    let names: Vec<&str> = summary["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["others:0", "others:0.1", "uniform:0.2", "uniform:0"]);
    let grid = summary["grid"].as_array().unwrap();
    assert_eq!(grid.len(), 2);
    for g in grid {
        let settings: Vec<&str> = g["settings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        // The pick is the grid point of the lowest mean validation NLL (ECE), recomputed here from the settings.
        for (pick, key) in [
            ("best_validation_nll", "validation_nll"),
            ("best_validation_ece", "validation_ece"),
        ] {
            let best = settings
                .iter()
                .map(|n| {
                    let s = summary["settings"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|s| s["name"] == *n)
                        .unwrap();
                    (s[key]["mean"].as_f64().unwrap(), *n)
                })
                .fold((f64::INFINITY, ""), |a, b| if b.0 < a.0 { b } else { a });
            assert_eq!(g[pick]["setting"].as_str().unwrap(), best.1, "{g}");
            assert_eq!(g[pick]["criterion"].as_f64().unwrap(), best.0);
            assert!(g[pick]["test_accuracy"].as_f64().unwrap() > 0.3);
        }
    }
    // A run's metrics carry the validation metrics the picks are made from.
    let m = json(&out.join("runs/others-0.1-seed0/metrics.json"));
    assert!(m["validation_nll"].as_f64().unwrap() > 0.0 && m["validation_ece"].as_f64().unwrap() >= 0.0);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Smoothing strength") && html.contains("Fitted temperature against the strength"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("- uniform grid: lowest validation ECE at"), "{md}");

    for (grid, want) in [
        ("others:0.1", "at least two strengths"),
        ("soft:0,0.1", "not others, uniform or adaptive"),
        ("others:0,x", "\"x\" is not a number"),
        ("others:0,1.5", "outside [0, 1)"),
        ("others:0,0", "given twice"),
    ] {
        let e = fails(&lsmooth(&[
            "compare",
            "--grid",
            grid,
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]));
        assert!(e.contains(&format!("--grid {grid}")) && e.contains(want), "{grid}: {e}");
    }
}

#[test]
fn compare_accepts_regularisers_and_distillation_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let stdout = ok(&lsmooth(&[
        "compare",
        "--settings",
        "plain,others:0.1+mixup:0.2,ols,distill:plain",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--train-size",
        "800",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(stdout.contains("distill:plain"), "{stdout}");
    let summary = json(&out.join("summary.json"));
    let s = summary["settings"].as_array().unwrap();
    assert_eq!(s[1]["objective"]["kind"], "mixup");
    assert_eq!(s[2]["objective"]["kind"], "ols");
    assert_eq!(s[3]["teacher"], "plain");
    let student = json(&out.join("runs/distill-plain-seed0/metrics.json"));
    let teacher = student["config"]["objective"]["teacher"].as_str().unwrap().to_string();
    assert!(teacher.ends_with("runs/plain-seed0"), "{teacher}");
    let e = fails(&lsmooth(&[
        "compare",
        "--settings",
        "distill:plain,plain",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("must be an earlier setting"), "{e}");
    let e = fails(&lsmooth(&[
        "compare",
        "--settings",
        "plain+mixup:0.2+ols",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("at most one regulariser"), "{e}");
    // A repeated seed or setting would train one run directory twice and count it twice; refused before training.
    let fresh = out.join("duplicates");
    let dir = fresh.to_str().unwrap();
    let e = fails(&lsmooth(&[
        "compare",
        "--settings",
        "plain",
        "--seeds",
        "3,3",
        "--out",
        dir,
    ]));
    assert!(e.contains("--seeds lists 3 twice"), "{e}");
    let e = fails(&lsmooth(&[
        "compare",
        "--settings",
        "plain,others:0.1,plain",
        "--out",
        dir,
    ]));
    assert!(e.contains("--settings lists \"plain\" twice"), "{e}");
    // Flags that depend on the data, and grid strengths float32 cannot hold, are refused before anything trains.
    let e = fails(&lsmooth(&["compare", "--project-classes", "3,5,99", "--out", dir]));
    assert!(e.contains("class 99 is not one of the data's 10 classes"), "{e}");
    let e = fails(&lsmooth(&["compare", "--grid", "others:0,1e-300", "--out", dir]));
    assert!(e.contains("1e-300 is 0 in float32"), "{e}");
    let e = fails(&lsmooth(&[
        "compare",
        "--grid",
        "others:0.1,0.10000000001",
        "--out",
        dir,
    ]));
    assert!(e.contains("given twice (in float32)"), "{e}");
    assert!(!fresh.exists(), "nothing trained");
}

/// Run directories are named with the shortest spelling of their numbers: `1e-30`, not 32 characters of zeros.
#[test]
fn run_directory_names_use_the_shortest_spelling_of_their_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("grid");
    let args = [
        "compare",
        "--dataset",
        "digits",
        "--grid",
        "others:0,1e-30",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--quiet",
    ];
    ok(&lsmooth(&[&args[..], &["--out", out.to_str().unwrap()]].concat()));
    let mut names: Vec<String> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["others-0-seed0", "others-1e-30-seed0"]);
    // What made the results is recorded with them: run.json, metrics.json, summary.json and the report.
    let isa = label_smoothing::instruction_set();
    for file in [
        "runs/others-0-seed0/run.json",
        "runs/others-0-seed0/metrics.json",
        "summary.json",
    ] {
        let v = json(&out.join(file));
        assert_eq!(v["made_by"]["instruction_set"], isa, "{file}");
        assert_eq!(v["made_by"]["lsmooth"], env!("CARGO_PKG_VERSION"), "{file}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("instruction set {isa}")), "{md}");
}

#[test]
fn compare_sweeps_distillation_temperatures_with_smaller_students() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    ok(&lsmooth(&[
        "compare",
        "--settings",
        "plain,distill:plain",
        "--temperature",
        "1,3",
        "--beta",
        "0.7",
        "--student-hidden",
        "16",
        "--hidden",
        "32",
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--train-size",
        "500",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]));
    let summary = json(&out.join("summary.json"));
    let s = summary["settings"].as_array().unwrap();
    let names: Vec<&str> = s.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["plain", "distill:plain@T1", "distill:plain@T3"]);
    assert_eq!(s[2]["distill_temperature"], 3.0);
    assert_eq!(s[2]["student_hidden"][0], 16);
    assert!(s[0]["distill_temperature"].is_null());
    for (dir, t) in [("distill-plain@T1", 1.0), ("distill-plain@T3", 3.0)] {
        let cfg = &json(&out.join("runs").join(format!("{dir}-seed0/metrics.json")))["config"];
        assert_eq!(cfg["objective"]["temperature"], t, "{dir}");
        assert_eq!(cfg["objective"]["beta"].as_f64().unwrap() as f32, 0.7);
        assert_eq!(cfg["model"]["hidden"][0], 16, "{dir}: {cfg}");
    }
    let teacher = &json(&out.join("runs/plain-seed0/metrics.json"))["config"];
    assert_eq!(teacher["model"]["hidden"][0], 32);
    for report in ["report.html", "report.md"] {
        let text = std::fs::read_to_string(out.join(report)).unwrap();
        assert!(text.contains("distilled students: hidden 16"), "{report}");
    }
    let e = fails(&lsmooth(&[
        "compare",
        "--settings",
        "plain,distill:plain",
        "--temperature",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("--temperature"), "{e}");
}

/// `--json` prints the summary (compare) or the final metrics (train) as one JSON object, the same as the file
/// written beside it, and nothing else on stdout.
#[test]
fn json_output_is_the_file_written_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let o = out.to_str().unwrap();
    let quick = ["--dataset", "digits", "--epochs", "1", "--train-size", "300"];
    let mut args = vec![
        "compare",
        "--settings",
        "plain,others:0.1",
        "--seeds",
        "0",
        "--json",
        "--out",
        o,
    ];
    args.extend(quick);
    let printed: serde_json::Value = serde_json::from_str(&ok(&lsmooth(&args))).unwrap();
    assert_eq!(printed, json(&out.join("summary.json")));
    assert_eq!(printed["settings"].as_array().unwrap().len(), 2);

    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let mut args = vec!["train", "--smoothing", "0.1", "--json", "--out", r];
    args.extend(quick);
    let printed: serde_json::Value = serde_json::from_str(&ok(&lsmooth(&args))).unwrap();
    assert_eq!(printed, json(&run.join("metrics.json")));
    assert_eq!(printed["epochs"], 1);
}
