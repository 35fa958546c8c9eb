//! The self-contained HTML page of `lsmooth compare`: inline CSS, inline SVG charts, no scripts and nothing
//! fetched from elsewhere, so it opens anywhere without a network.

use super::esc;
use crate::sweep::summary::{HtmlColumn, Summary};

/// The charts of the page, each an SVG document.
#[derive(Debug, Clone, Default)]
pub struct Sections {
    /// Learning curves.
    pub curves: Vec<String>,
    /// One reliability diagram per setting.
    pub reliability: Vec<String>,
    /// Penultimate-layer projections, one per setting.
    pub projections: Vec<String>,
    /// Metrics against the smoothing strength, with `--grid`.
    pub grid: Vec<String>,
}

/// Strips an SVG document's XML prolog, if any, for inlining.
fn inline(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1320px;
       color: #1a1a1a; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.3rem; }
p.meta { color: #555; margin-top: 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 0.88rem; }
th, td { padding: 0.35rem 0.55rem; border-bottom: 1px solid #e3e3e3; text-align: right; }
td { white-space: nowrap; }
th { vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f5f5f5; position: sticky; top: 0; }
td.best { font-weight: bold; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; }
.chart { border: 1px solid #e3e3e3; border-radius: 6px; padding: 0.3rem; background: #fff; margin: 0; }
.chart svg { display: block; max-width: 100%; height: auto; }
.note { color: #444; font-size: 0.92rem; max-width: 60rem; }
"#;

/// The whole page.
pub fn page(summary: &Summary, seeds: &[u64], columns: &[HtmlColumn], sections: &Sections) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    s.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    s.push_str("<title>lsmooth compare</title>\n<style>");
    s.push_str(STYLE);
    s.push_str("</style>\n</head>\n<body>\n<h1>Label smoothing: does it help, and is it calibrated?</h1>\n");
    s.push_str(&format!(
        "<p class=\"meta\">{}{} &middot; {} epochs &middot; seeds {} &middot; label noise {} &middot; {:.0} s &middot; {}</p>\n",
        esc(&summary.model),
        esc(&students(summary)),
        summary.base.epochs,
        esc(&format!("{seeds:?}")),
        summary.base.label_noise,
        summary.seconds,
        esc(&summary.made_by.describe())
    ));
    s.push_str(
        "<h2>Results</h2>\n<p class=\"note\">Mean &plusmn; standard deviation over seeds, on the test split; with \
fewer than three seeds, also a 95% bootstrap interval [lo, hi] over the pooled test predictions. \
ECE uses 15 equal-width bins. T is the temperature fitted on the validation split; &ldquo;after T&rdquo; are the \
test metrics once the logits are divided by it. A setting that calibrates as well as temperature scaling has a \
small ECE already and T near 1; T below 1 means the model is under-confident (over-smoothed).</p>\n",
    );
    s.push_str("<div class=\"table-wrap\"><table id=\"results\">\n<thead><tr><th>setting</th>");
    for (h, _) in columns {
        s.push_str(&format!("<th>{}</th>", esc(h)));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for st in &summary.settings {
        s.push_str(&format!("<tr><td>{}</td>", esc(&st.name)));
        for (_, f) in columns {
            s.push_str(&format!("<td>{}</td>", esc(&f(st))));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody>\n</table></div>\n");
    let section = |s: &mut String, title: &str, note: &str, charts: &[String]| {
        s.push_str(&format!(
            "<h2>{}</h2>\n<p class=\"note\">{}</p>\n<div class=\"grid\">\n",
            esc(title),
            note
        ));
        for c in charts {
            s.push_str("<figure class=\"chart\">");
            s.push_str(inline(c));
            s.push_str("</figure>\n");
        }
        s.push_str("</div>\n");
    };
    if !summary.grid.is_empty() {
        let mut note = String::from(
            "Each point is one strength, trained once per seed: the line is the mean, the band the range over \
seeds. A strength of 0 is plain cross-entropy. The validation split picks:",
        );
        for g in &summary.grid {
            for line in crate::sweep::grid::describe(g).lines() {
                note.push_str(&format!("<br>{}", esc(line)));
            }
        }
        section(&mut s, "Smoothing strength", &note, &sections.grid);
    }
    section(
        &mut s,
        "Learning curves",
        "Lines are the mean over seeds; the shaded band is the range.",
        &sections.curves,
    );
    section(
        &mut s,
        "Reliability diagrams",
        "Test predictions of all seeds pooled. Bars: accuracy per confidence bin; shaded: the gap to the diagonal \
(above the bar: over-confident, below: under-confident); orange: the smoothed reliability curve of smooth ECE \
(Błasiok and Nakkiran 2023) with a 95% bootstrap band; below: how many predictions fall in each bin.",
        &sections.reliability,
    );
    if !sections.projections.is_empty() {
        section(
            &mut s,
            "Penultimate layer",
            "As in M&uuml;ller, Kornblith and Hinton (2019), figure 1: test examples of three classes projected onto \
the plane through those classes' final-layer weight vectors (crosses), for the first seed of each setting. \
M&uuml;ller et al. found that label smoothing pulls each class into a tight cluster, equally far from the others; \
compare the panels to see whether it does here.",
            &sections.projections,
        );
    }
    s.push_str("</body>\n</html>\n");
    s
}

/// `" · distilled students: hidden 32"` when the sweep's students have their own widths, else nothing (plain
/// text, for the HTML page and the Markdown report).
pub fn students(summary: &Summary) -> String {
    summary
        .settings
        .iter()
        .find_map(|s| s.student_hidden.as_ref())
        .map(|h| {
            let w: Vec<String> = h.iter().map(|v| v.to_string()).collect();
            format!(" · distilled students: hidden {}", w.join(","))
        })
        .unwrap_or_default()
}
