//! `lsmooth calibrate` end to end: the metrics, bootstrap intervals, temperature and vector scaling, and the
//! reliability diagram, against independent computations.

use serde_json::Value;

mod common;
use common::{lsmooth, stderr, write_i32, Dir};
use lsmooth::io::npy;

/// `2 n` rows of `k` classes whose labels follow `softmax(base)` with `base` uniform in `[-2, 2)`, and whose logits
/// are `scale[c] * base[c]`: a test split (the first `n` rows) and a validation split, written as `test.npy`,
/// `test_y.npy`, `val.npy` and `val_y.npy` in a new folder.
fn split(seed: u64, n: usize, scale: &[f64]) -> (Dir, Vec<f32>, Vec<i64>) {
    let k = scale.len();
    let d = Dir::new();
    let mut s = seed;
    let mut u = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut logits, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..2 * n {
        let base: Vec<f64> = (0..k).map(|_| u() * 4.0 - 2.0).collect();
        let e: Vec<f64> = base.iter().map(|b| b.exp()).collect();
        let mut r = u() * e.iter().sum::<f64>();
        let mut y = k - 1;
        for (c, v) in e.iter().enumerate() {
            if r < *v {
                y = c;
                break;
            }
            r -= v;
        }
        labels.push(y as i64);
        logits.extend((0..k).map(|c| (scale[c] * base[c]) as f32));
    }
    npy::write_f32(&d.p("test.npy"), &[n, k], &logits[..n * k]).unwrap();
    write_i32(&d.p("test_y.npy"), &labels[..n]);
    npy::write_f32(&d.p("val.npy"), &[n, k], &logits[n * k..]).unwrap();
    write_i32(&d.p("val_y.npy"), &labels[n..]);
    (d, logits, labels)
}

/// Labels follow softmax(base); the file holds class c's logit times a per-class factor, so one temperature cannot
/// undo it and vector scaling can.
const FACTOR: [f64; 5] = [3.0, 1.0, 0.5, 2.0, 1.0];

/// Over-confident logits: labels follow softmax(base), the file holds 3 * base.
const OVERCONFIDENT: [f64; 5] = [3.0; 5];

fn paths(d: &Dir) -> (String, String, String, String) {
    (d.s("test.npy"), d.s("test_y.npy"), d.s("val.npy"), d.s("val_y.npy"))
}

#[test]
fn calibrate_bootstraps_intervals_and_fits_vector_scaling() {
    let (d, _, _) = split(23, 600, &FACTOR);
    let k = FACTOR.len();
    let (test, test_y, val, val_y) = paths(&d);
    let args = |seed: &'static str| {
        vec![
            "calibrate",
            "--logits",
            &test,
            "--labels",
            &test_y,
            "--fit-temperature",
            &val,
            &val_y,
            "--fit-vector",
            &val,
            &val_y,
            "--bootstrap",
            "40",
            "--bootstrap-seed",
            seed,
            "--json",
        ]
    };
    let out = lsmooth(&args("5"));
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = |v: &Value, key: &str| v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"));
    for key in ["smooth_ece", "smooth_ece_bandwidth", "debiased_l2_ce"] {
        assert!((0.0..=1.0).contains(&f(&r, key)), "{key}: {r}");
    }
    for key in [
        "accuracy_ci",
        "nll_ci",
        "brier_ci",
        "ece_ci",
        "smooth_ece_ci",
        "debiased_l2_ce_ci",
    ] {
        let ci = r[key].as_array().unwrap_or_else(|| panic!("{key} in {r}"));
        let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
        assert!(lo <= hi && lo >= 0.0, "{key}: {r}");
        assert!(
            r["calibrated_ci"][key].is_array() && r["vector_calibrated_ci"][key].is_array(),
            "{key}"
        );
    }
    let acc = r["accuracy_ci"].as_array().unwrap();
    assert!(acc[0].as_f64().unwrap() <= f(&r, "accuracy") && f(&r, "accuracy") <= acc[1].as_f64().unwrap());
    assert_eq!(r["bootstrap"]["resamples"].as_u64(), Some(40));
    // Vector scaling: five weights, biases of mean zero, the largest factor (class 0) given the smallest weight,
    // and a lower test NLL than the logits as given.
    let v = &r["vector_scaling"];
    let weights: Vec<f64> = v["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let biases: Vec<f64> = v["biases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!((weights.len(), biases.len()), (k, k));
    assert!(biases.iter().sum::<f64>().abs() < 1e-9, "{v}");
    assert!(weights[0] < weights[1] && weights[2] > weights[1], "{v}");
    assert!(f(&r["vector_calibrated"], "nll") < f(&r, "nll"), "{r}");
    // The same seed gives the same bytes; another seed other intervals.
    assert_eq!(lsmooth(&args("5")).stdout, out.stdout);
    let other: Value = serde_json::from_slice(&lsmooth(&args("6")).stdout).unwrap();
    assert_ne!(other["ece_ci"], r["ece_ci"]);
}

#[test]
fn calibrate_plots_the_vector_scaled_curve_with_its_bootstrap_band() {
    let (d, _, _) = split(23, 600, &FACTOR);
    let (test, test_y, val, val_y) = paths(&d);
    let plot = d.s("band.svg");
    let human = lsmooth(&[
        "calibrate",
        "--logits",
        &test,
        "--labels",
        &test_y,
        "--fit-vector",
        &val,
        &val_y,
        "--bootstrap",
        "20",
        "--plot",
        &plot,
    ]);
    // The diagram shows the smoothed curve of the vector-scaled predictions with its bootstrap band.
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("Reliability after vector scaling"), "{svg}");
    assert_eq!(svg.matches("class=\"smooth-curve\"").count(), 1);
    assert_eq!(svg.matches("class=\"smooth-band\"").count(), 1);
    assert!(svg.contains("95% bootstrap band"));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{}", stderr(&human));
    assert!(
        text.contains("smooth ECE") && text.contains("vector") && text.contains("95% bootstrap"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("ECE") && l.matches('[').count() == 2),
        "{text}"
    );
}

#[test]
fn calibrate_refuses_bootstrap_and_vector_options_that_do_not_fit() {
    let (d, _, _) = split(23, 600, &FACTOR);
    let (test, test_y, val, val_y) = paths(&d);
    for (extra, want) in [
        (&["--bootstrap", "1"][..], "--bootstrap"),
        (&["--bootstrap", "10", "--level", "1.5"][..], "--level"),
        (&["--level", "0.9"][..], "--bootstrap"),
    ] {
        let mut a = vec!["calibrate", "--logits", &test, "--labels", &test_y];
        a.extend_from_slice(extra);
        let out = lsmooth(&a);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(stderr(&out).contains(want), "{extra:?}: {}", stderr(&out));
    }
    let out = lsmooth(&[
        "calibrate",
        "--probs",
        &test,
        "--labels",
        &test_y,
        "--fit-vector",
        &val,
        &val_y,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--fit-vector needs --logits"), "{}", stderr(&out));
}

/// The reliability diagram of `calibrate_reports_metrics_temperature_and_a_reliability_diagram`'s call.
fn reliability_svg(d: &Dir) -> String {
    std::fs::read_to_string(d.p("rel.svg")).unwrap()
}

#[test]
fn calibrate_reports_metrics_temperature_and_a_reliability_diagram() {
    let (d, logits, labels) = split(11, 400, &OVERCONFIDENT);
    let (n, k) = (400, OVERCONFIDENT.len());
    let out = lsmooth(&[
        "calibrate",
        "--logits",
        &d.s("test.npy"),
        "--labels",
        &d.s("test_y.npy"),
        "--fit-temperature",
        &d.s("val.npy"),
        &d.s("val_y.npy"),
        "--plot",
        &d.s("rel.svg"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Accuracy by argmax, computed here.
    let correct = (0..n)
        .filter(|&i| {
            let row = &logits[i * k..(i + 1) * k];
            let arg = (0..k).fold(0, |a, c| if row[c] > row[a] { c } else { a });
            arg as i64 == labels[i]
        })
        .count();
    assert!(
        (r["accuracy"].as_f64().unwrap() - correct as f64 / n as f64).abs() < 1e-12,
        "{r}"
    );
    for key in ["nll", "brier", "ece", "mce", "adaptive_ece", "classwise_ece"] {
        assert!(r[key].as_f64().unwrap() >= 0.0, "{key}: {r}");
    }
    let t = r["temperature"].as_f64().unwrap();
    assert!(t > 1.5 && t < 6.0, "temperature {t} should undo the factor 3");
    let cal = &r["calibrated"];
    assert!(cal["nll"].as_f64().unwrap() < r["nll"].as_f64().unwrap(), "{r}");
    assert!(cal["ece"].as_f64().unwrap() < r["ece"].as_f64().unwrap(), "{r}");
    assert_eq!(cal["accuracy"], r["accuracy"], "temperature keeps the argmax");

    let svg = std::fs::read_to_string(d.p("rel.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("class=\"hist-bar\"").count(), 15);
    // One accuracy bar per non-empty bin of the temperature-scaled confidences: at least a few.
    let bars = svg.matches("class=\"acc-bar\"").count();
    assert!((3..=15).contains(&bars), "{bars} bars");
    assert_eq!(bars, svg.matches("class=\"gap\"").count());
    // The smoothed curve, without a band when there is no bootstrap.
    assert_eq!(svg.matches("class=\"smooth-curve\"").count(), 1);
    assert_eq!(svg.matches("class=\"smooth-band\"").count(), 0);
}

#[test]
fn calibrate_renders_the_diagram_as_png() {
    let (d, _, _) = split(11, 400, &OVERCONFIDENT);
    let out = lsmooth(&[
        "calibrate",
        "--logits",
        &d.s("test.npy"),
        "--labels",
        &d.s("test_y.npy"),
        "--fit-temperature",
        &d.s("val.npy"),
        &d.s("val_y.npy"),
        "--plot",
        &d.s("rel.svg"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svg = reliability_svg(&d);
    // The same diagram as PNG: it decodes, at twice the SVG's size, and shows the bars' blue and the text's black.
    let out = lsmooth(&[
        "calibrate",
        "--logits",
        &d.s("test.npy"),
        "--labels",
        &d.s("test_y.npy"),
        "--plot",
        &d.s("rel.png"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let png = resvg::tiny_skia::Pixmap::load_png(d.p("rel.png")).expect("the PNG decodes");
    let size = |attr: &str| -> u32 {
        let at = svg.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
        svg[at..].split('"').next().unwrap().parse::<f64>().unwrap() as u32
    };
    assert_eq!((png.width(), png.height()), (2 * size("width"), 2 * size("height")));
    let pixels = png.pixels();
    let count = |f: &dyn Fn(u8, u8, u8) -> bool| pixels.iter().filter(|p| f(p.red(), p.green(), p.blue())).count();
    let blue = count(&|r, g, b| r < 80 && (90..140).contains(&g) && b > 160);
    let dark = count(&|r, g, b| r < 40 && g < 40 && b < 40);
    assert!(blue > 1000, "{blue} bar pixels");
    assert!(dark > 500, "{dark} text and axis pixels");
}

#[test]
fn calibrate_prints_a_table_and_refuses_bad_input_on_one_line() {
    let (d, _, _) = split(11, 400, &OVERCONFIDENT);
    let n = 400;
    let plain = lsmooth(&[
        "calibrate",
        "--logits",
        &d.s("test.npy"),
        "--labels",
        &d.s("test_y.npy"),
    ]);
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(text.contains("ECE") && text.contains("Brier"), "{text}");

    write_i32(
        &d.p("bad_y.npy"),
        &(0..n as i64).map(|i| if i == 7 { 9 } else { 0 }).collect::<Vec<_>>(),
    );
    write_i32(&d.p("short_y.npy"), &[0, 1]);
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec![
                "calibrate".into(),
                "--logits".into(),
                d.s("test.npy"),
                "--labels".into(),
                d.s("bad_y.npy"),
            ],
            vec!["bad_y.npy", "label 9 at row 7"],
        ),
        (
            vec![
                "calibrate".into(),
                "--logits".into(),
                d.s("test.npy"),
                "--labels".into(),
                d.s("short_y.npy"),
            ],
            vec!["short_y.npy", "expected 400 labels"],
        ),
        (
            vec![
                "calibrate".into(),
                "--probs".into(),
                d.s("test.npy"),
                "--labels".into(),
                d.s("test_y.npy"),
                "--fit-temperature".into(),
                d.s("val.npy"),
                d.s("val_y.npy"),
            ],
            vec!["--fit-temperature needs --logits"],
        ),
        (
            vec![
                "calibrate".into(),
                "--probs".into(),
                d.s("test.npy"),
                "--labels".into(),
                d.s("test_y.npy"),
            ],
            vec!["test.npy", "not a distribution"],
        ),
        (
            vec![
                "calibrate".into(),
                "--logits".into(),
                d.s("test.npy"),
                "--labels".into(),
                d.s("test_y.npy"),
                "--plot".into(),
                d.s("rel.jpg"),
            ],
            vec!["rel.jpg", ".svg or .png"],
        ),
    ];
    for (args, needles) in cases {
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = lsmooth(&argv);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        for needle in needles {
            assert!(err.contains(needle), "{argv:?}: {err:?} lacks {needle:?}");
        }
    }
}

/// Probabilities with a zero on the true class: the NLL is `+inf` (`-ln 0`), and JSON says so (`"inf"`, not
/// `null`), for the value and for the bootstrap bound that resamples the row.
#[test]
fn calibrate_writes_an_infinite_nll_as_inf_in_json() {
    let d = Dir::new();
    let (n, k) = (40usize, 3usize);
    let mut probs = Vec::new();
    for i in 0..n {
        probs.extend_from_slice(if i == 5 {
            &[0.0f32, 0.5, 0.5]
        } else {
            &[0.6f32, 0.3, 0.1]
        });
    }
    npy::write_f32(&d.p("p.npy"), &[n, k], &probs).unwrap();
    write_i32(&d.p("y.npy"), &vec![0i64; n]);
    let out = lsmooth(&[
        "calibrate",
        "--probs",
        &d.s("p.npy"),
        "--labels",
        &d.s("y.npy"),
        "--bootstrap",
        "200",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["nll"], "inf", "{text}");
    assert_eq!(json["nll_ci"][1], "inf", "{text}");
    // The accuracy is finite, and stays a number: 39 of 40 rows put their largest probability on class 0.
    assert_eq!(json["accuracy"].as_f64(), Some(39.0 / 40.0), "{text}");
}
