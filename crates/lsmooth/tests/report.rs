//! `lsmooth compare`: its summary and report files, and the HTML report rendered in a real browser (headless
//! Chromium): no console errors, every chart present and non-empty, and a screenshot to look at.
//!
//! Without Chromium the browser test is skipped with a message, unless `LSMOOTH_REQUIRE_CHROMIUM` is set (CI sets
//! it, after installing Debian's `chromium`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const SETTINGS: [&str; 2] = ["plain", "others:0.1"];

/// Runs a small sweep once per test binary and returns its output directory.
fn report_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compare-report");
        let _ = std::fs::remove_dir_all(&dir);
        let o = Command::new(env!("CARGO_BIN_EXE_lsmooth"))
            .args([
                "compare",
                "--settings",
                &SETTINGS.join(","),
                "--seeds",
                "0,1",
                "--epochs",
                "2",
                "--train-size",
                "1000",
                "--out",
                dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(stdout.lines().filter(|l| l.contains(" seed ")).count(), 4, "{stdout}");
        assert!(
            stdout.contains("test accuracy %") && stdout.contains("report.html"),
            "{stdout}"
        );
        dir
    })
}

#[test]
fn summary_json_has_every_setting_with_mean_and_sd() {
    let dir = report_dir();
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let settings = summary["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 2);
    for (s, name) in settings.iter().zip(SETTINGS) {
        assert_eq!(s["name"], name);
        for metric in [
            "test_accuracy",
            "test_nll",
            "test_ece",
            "test_brier",
            "train_test_gap",
            "convergence_epoch",
            "test_ece_scaled",
        ] {
            let values: Vec<f64> = s[metric]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(values.len(), 2, "{name} {metric}");
            // Mean and sample sd recomputed from the per-seed values.
            let mean = (values[0] + values[1]) / 2.0;
            let sd = (values[0] - values[1]).abs() / 2f64.sqrt();
            assert!(
                (s[metric]["mean"].as_f64().unwrap() - mean).abs() < 1e-12,
                "{name} {metric}"
            );
            assert!(
                (s[metric]["sd"].as_f64().unwrap() - sd).abs() < 1e-12,
                "{name} {metric}"
            );
        }
        // The per-seed values are those of the runs' own metrics.json.
        for (i, seed) in [0, 1].iter().enumerate() {
            let run = dir.join("runs").join(format!("{}-seed{seed}", name.replace(':', "-")));
            let m: Value = serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
            assert_eq!(s["test_accuracy"]["values"][i], m["test_accuracy"]);
        }
    }
    // Two seeds are few: each setting carries bootstrap intervals over its pooled test predictions (2 x 2000
    // rows), which hold the pooled accuracy, and the tables show them next to the means.
    for s in settings {
        let b = &s["test_bootstrap"];
        let acc = b["accuracy"]
            .as_array()
            .unwrap_or_else(|| panic!("no test_bootstrap in {s}"));
        let (lo, hi) = (acc[0].as_f64().unwrap(), acc[1].as_f64().unwrap());
        let pooled = s["test_accuracy"]["mean"].as_f64().unwrap(); // equal test sizes: the pooled accuracy
        assert!(lo <= pooled && pooled <= hi && hi - lo < 0.05, "{lo} {pooled} {hi}");
        assert_eq!(b["config"]["resamples"].as_u64(), Some(1000));
        assert!(b["smooth_ece"].is_null());
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| plain |") && md.contains("| others:0.1 |"), "{md}");
    let plain_row = md.lines().find(|l| l.starts_with("| plain |")).unwrap();
    assert_eq!(
        plain_row.matches('[').count(),
        4,
        "accuracy, NLL, ECE and Brier intervals: {plain_row}"
    );
}

#[test]
fn report_html_is_self_contained() {
    let html = std::fs::read_to_string(report_dir().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for forbidden in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(forbidden), "report.html contains {forbidden}");
    }
    // The only URL is SVG's namespace.
    let urls = html.matches("http").count();
    assert_eq!(urls, html.matches("http://www.w3.org/2000/svg").count());
    // 4 learning-curve charts, a reliability diagram and a projection per setting.
    assert_eq!(html.matches("<svg").count(), 4 + 2 * SETTINGS.len());
    // Each reliability diagram carries the smoothed curve of the pooled predictions and its bootstrap band.
    assert_eq!(html.matches("class=\"smooth-curve\"").count(), SETTINGS.len());
    assert_eq!(html.matches("class=\"smooth-band\"").count(), SETTINGS.len());
}

fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Headless Chromium with the flags this machine needs (root, no network).
fn headless(chrome: &Path, profile: &Path) -> Command {
    let mut c = Command::new(chrome);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--hide-scrollbars",
    ]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Loads `page`, returns (DOM after load, console messages).
fn load(chrome: &Path, page: &Path) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let o = headless(chrome, profile.path())
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "chromium: {}", String::from_utf8_lossy(&o.stderr));
    let console = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&o.stdout).into_owned(), console)
}

/// Measures every chart as laid out by the browser: appended to a copy of the page, it writes its findings
/// into the DOM, which `--dump-dom` prints.
const PROBE: &str = r#"<script>
const charts = [...document.querySelectorAll('figure.chart > svg')].map(s => {
  const r = s.getBoundingClientRect();
  const marks = s.querySelectorAll('rect.acc-bar, rect.hist-bar, path.series, circle.point, path.template').length;
  return { title: s.querySelector('text').textContent, width: r.width, height: r.height, marks };
});
const rows = document.querySelectorAll('#results tbody tr').length;
const pre = document.createElement('pre');
pre.id = 'probe';
pre.textContent = JSON.stringify({ charts, rows });
document.body.appendChild(pre);
</script>"#;

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        assert!(
            std::env::var_os("LSMOOTH_REQUIRE_CHROMIUM").is_none(),
            "LSMOOTH_REQUIRE_CHROMIUM is set but no chromium is on PATH"
        );
        eprintln!("skipped: no Chromium on PATH (apt-get install chromium to run this test)");
        return;
    };
    let work = tempfile::tempdir().unwrap();

    // The console check itself must be able to fail: a page with an error is caught.
    let broken = work.path().join("broken.html");
    std::fs::write(&broken, "<!DOCTYPE html><p>x</p><script>undefinedFunction()</script>").unwrap();
    let (_, console) = load(&chrome, &broken);
    assert!(
        console.iter().any(|l| l.contains("undefinedFunction")),
        "the console check does not see errors: {console:?}"
    );

    let report = report_dir().join("report.html");
    let (_, console) = load(&chrome, &report);
    assert!(
        console.is_empty(),
        "console messages while loading the report: {console:?}"
    );

    let probe = work.path().join("probe.html");
    let html = std::fs::read_to_string(&report).unwrap();
    std::fs::write(&probe, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let (dom, console) = load(&chrome, &probe);
    assert!(console.is_empty(), "console messages while probing: {console:?}");
    let start = dom.find("<pre id=\"probe\">").expect("the probe ran") + "<pre id=\"probe\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    let found: Value = serde_json::from_str(&unescape(&dom[start..end])).unwrap();
    assert_eq!(found["rows"], SETTINGS.len());
    let charts = found["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 4 + 2 * SETTINGS.len(), "{charts:?}");
    for c in charts {
        assert!(
            c["width"].as_f64().unwrap() > 200.0 && c["height"].as_f64().unwrap() > 200.0,
            "{c}"
        );
        assert!(c["marks"].as_u64().unwrap() > 0, "chart without marks: {c}");
    }
    for name in SETTINGS {
        assert!(charts
            .iter()
            .any(|c| c["title"].as_str().unwrap().starts_with(&format!("{name}: ECE"))));
        assert!(charts.iter().any(|c| c["title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{name}: penultimate"))));
    }

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let o = headless(&chrome, profile.path())
        .arg("--window-size=1280,3000")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 50_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
