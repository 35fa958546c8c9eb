//! A reliability diagram in the style of Guo et al. (2017): accuracy per confidence bin as bars, the gap to the
//! diagonal shaded, and the confidence histogram below; optionally the smoothed reliability curve of smooth ECE
//! (Błasiok and Nakkiran 2023) over it, with a bootstrap band.

use super::esc;
use label_smoothing::calibration::{
    bootstrap_reliability, smoothed_reliability, BootstrapConfig, CalibrationError, CalibrationReport, RowScores,
};
use std::fmt::Write;

const W: f64 = 420.0;
const LEFT: f64 = 56.0;
const TOP: f64 = 72.0;
const PLOT: f64 = 320.0;
const HIST_TOP: f64 = TOP + PLOT + 46.0;
const HIST_H: f64 = 90.0;
const H: f64 = HIST_TOP + HIST_H + 44.0;

fn x(v: f64) -> f64 {
    LEFT + v * PLOT
}

fn y(v: f64) -> f64 {
    TOP + (1.0 - v) * PLOT
}

/// A pointwise band `(t, lo, hi)` and its coverage level.
pub type Band = (Vec<(f64, f64, f64)>, f64);

/// The smoothed reliability curve to draw over the bars: `(t, accuracy)` points and optionally a band of
/// `(t, lo, hi)`, both over the confidences the data cover.
#[derive(Debug, Clone, Default)]
pub struct SmoothCurve {
    /// The curve.
    pub points: Vec<(f64, f64)>,
    /// The band around it, if bootstrapped, with its level.
    pub band: Option<Band>,
    /// The kernel bandwidth.
    pub bandwidth: f64,
}

/// The smoothed reliability curve of `rows` at bandwidth `sigma`, over the confidences they cover (201 points
/// of `[0, 1]`), with a pointwise bootstrap band when `band` is given.
pub fn smooth_curve(
    rows: &RowScores,
    sigma: f64,
    band: Option<&BootstrapConfig>,
) -> Result<SmoothCurve, CalibrationError> {
    const POINTS: usize = 201;
    let (lo, hi) = rows
        .confidence
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &c| (a.min(c), b.max(c)));
    let inside = |t: f64| t >= lo - 1e-12 && t <= hi + 1e-12;
    let points = smoothed_reliability(&rows.confidence, &rows.correct, sigma, POINTS)
        .into_iter()
        .filter(|p| inside(p.0))
        .map(|(t, a, _)| (t, a))
        .collect();
    let band = match band {
        Some(config) => {
            let b = bootstrap_reliability(rows, sigma, POINTS, config)?;
            Some((b.into_iter().filter(|p| inside(p.0)).collect(), config.level))
        }
        None => None,
    };
    Ok(SmoothCurve {
        points,
        band,
        bandwidth: sigma,
    })
}

/// The SVG text of a reliability diagram for `report`, titled `title`.
pub fn svg(report: &CalibrationReport, title: &str) -> String {
    svg_with_curve(report, title, None)
}

/// The SVG text of a reliability diagram for `report`, titled `title`, with the smoothed curve if given
/// (`class="smooth-curve"`, a polyline; its band `class="smooth-band"`, a polygon).
///
/// Each non-empty bin gets one bar (`class="acc-bar"`, height = accuracy) and one gap rectangle
/// (`class="gap"`, from the accuracy to the bin's mean confidence); each bin one histogram bar
/// (`class="hist-bar"`, height proportional to its share of the examples).
pub fn svg_with_curve(report: &CalibrationReport, title: &str, curve: Option<&SmoothCurve>) -> String {
    let mut s = String::new();
    title_and_grid(&mut s, title);
    bars(&mut s, report);
    if let Some(c) = curve {
        smooth_curve_svg(&mut s, c);
    }
    frame_and_legend(&mut s, report);
    histogram(&mut s, report);
    s
}

/// The background, the title, and the grid with its axis labels.
fn title_and_grid(s: &mut String, title: &str) {
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="#ffffff"/>
<text x="{tx}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>
"##,
        tx = W / 2.0,
        title = esc(title)
    );
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let _ = write!(
            s,
            r##"<line x1="{x0}" y1="{yv}" x2="{x1}" y2="{yv}" stroke="#e5e5e5"/><text x="{tx}" y="{ty}" text-anchor="end">{v:.1}</text>
<line x1="{xv}" y1="{y0}" x2="{xv}" y2="{y1}" stroke="#e5e5e5"/><text x="{xv}" y="{txy}" text-anchor="middle">{v:.1}</text>
"##,
            x0 = x(0.0),
            x1 = x(1.0),
            yv = y(v),
            tx = LEFT - 6.0,
            ty = y(v) + 4.0,
            xv = x(v),
            y0 = y(0.0),
            y1 = y(1.0),
            txy = HIST_TOP + HIST_H + 16.0,
        );
    }
}

/// Per non-empty bin, the accuracy bar and the gap to its mean confidence.
fn bars(s: &mut String, report: &CalibrationReport) {
    let nb = report.bins.len().max(1) as f64;
    let bw = PLOT / nb;
    for b in report.bins.iter().filter(|b| b.count > 0) {
        let bx = x(b.lower) + 0.5;
        let (acc_top, conf_top) = (y(b.accuracy), y(b.confidence));
        let _ = write!(
            s,
            r##"<rect class="acc-bar" x="{bx:.2}" y="{acc_top:.2}" width="{w:.2}" height="{h:.2}" fill="#3b6fb6" stroke="#1f3f73"><title>confidence {lo:.3}-{hi:.3}: accuracy {acc:.3}, mean confidence {conf:.3}, {n} examples</title></rect>
<rect class="gap" x="{bx:.2}" y="{gy:.2}" width="{w:.2}" height="{gh:.2}" fill="#e34a33" fill-opacity="0.35" stroke="#e34a33" stroke-opacity="0.8"/>
"##,
            w = bw - 1.0,
            h = (y(0.0) - acc_top).max(0.0),
            lo = b.lower,
            hi = b.upper,
            acc = b.accuracy,
            conf = b.confidence,
            n = b.count,
            gy = acc_top.min(conf_top),
            gh = (acc_top - conf_top).abs(),
        );
    }
}

/// The smoothed curve, its band if any, and its legend entry.
fn smooth_curve_svg(s: &mut String, c: &SmoothCurve) {
    let clamp = |v: f64| v.clamp(0.0, 1.0);
    if let Some((band, _)) = &c.band {
        let upper = band
            .iter()
            .map(|&(t, _, hi)| format!("{:.2},{:.2}", x(t), y(clamp(hi))));
        let lower = band
            .iter()
            .rev()
            .map(|&(t, lo, _)| format!("{:.2},{:.2}", x(t), y(clamp(lo))));
        let pts: Vec<String> = upper.chain(lower).collect();
        let _ = writeln!(
            s,
            r##"<polygon class="smooth-band" points="{}" fill="#f28e2b" fill-opacity="0.25" stroke="none"/>"##,
            pts.join(" ")
        );
    }
    let pts: Vec<String> = c
        .points
        .iter()
        .map(|&(t, a)| format!("{:.2},{:.2}", x(t), y(clamp(a))))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline class="smooth-curve" points="{}" fill="none" stroke="#d9590b" stroke-width="2"/>"##,
        pts.join(" ")
    );
    let detail = match &c.band {
        Some((_, level)) => format!(
            "smoothed reliability curve (sigma {:.4}) with its {:.0}% bootstrap band",
            c.bandwidth,
            level * 100.0
        ),
        None => format!("smoothed reliability curve (sigma {:.4})", c.bandwidth),
    };
    let _ = writeln!(
        s,
        r##"<g class="smooth-legend"><title>{detail}</title><line x1="{lx}" y1="{ly}" x2="{lx2}" y2="{ly}" stroke="#d9590b" stroke-width="2"/><text x="{tx}" y="{ty}">smoothed</text></g>"##,
        lx = LEFT + 236.0,
        lx2 = LEFT + 250.0,
        ly = 56.0,
        tx = LEFT + 254.0,
        ty = 60.0,
        detail = esc(&detail),
    );
}

/// The diagonal, the frame, the metrics line and the legend.
fn frame_and_legend(s: &mut String, report: &CalibrationReport) {
    let _ = write!(
        s,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#555" stroke-dasharray="5,4"/>
<rect x="{x0}" y="{y1}" width="{PLOT}" height="{PLOT}" fill="none" stroke="#333"/>
<text x="{lx}" y="{ly}" text-anchor="middle" transform="rotate(-90 {lx} {ly})">accuracy</text>
<text x="{tx}" y="{ty}" font-size="12">ECE {ece:.4} · smECE {smece:.4} · MCE {mce:.4} · acc {acc:.4}</text>
<rect x="{kx}" y="{ky}" width="12" height="10" fill="#3b6fb6"/><text x="{kx2}" y="{ky2}">accuracy</text>
<rect x="{kx3}" y="{ky}" width="12" height="10" fill="#e34a33" fill-opacity="0.35" stroke="#e34a33"/><text x="{kx4}" y="{ky2}">gap to the diagonal</text>
"##,
        x0 = x(0.0),
        y0 = y(0.0),
        x1 = x(1.0),
        y1 = y(1.0),
        lx = LEFT - 38.0,
        ly = TOP + PLOT / 2.0,
        tx = LEFT,
        ty = 42.0,
        ece = report.ece,
        smece = report.smooth_ece,
        mce = report.mce,
        acc = report.accuracy,
        kx = LEFT,
        ky = 51.0,
        kx2 = LEFT + 16.0,
        ky2 = 60.0,
        kx3 = LEFT + 88.0,
        kx4 = LEFT + 104.0,
    );
}

/// The confidence histogram below the diagram, with its frame and axis labels.
fn histogram(s: &mut String, report: &CalibrationReport) {
    let bw = PLOT / report.bins.len().max(1) as f64;
    let max_share = report
        .bins
        .iter()
        .map(|b| b.count as f64 / report.n.max(1) as f64)
        .fold(0.0, f64::max)
        .max(1e-12);
    for b in &report.bins {
        let share = b.count as f64 / report.n.max(1) as f64;
        let h = share / max_share * HIST_H;
        let _ = writeln!(
            s,
            r##"<rect class="hist-bar" x="{bx:.2}" y="{by:.2}" width="{w:.2}" height="{h:.2}" fill="#7f7f7f"><title>{n} examples ({pct:.1}%)</title></rect>"##,
            bx = x(b.lower) + 0.5,
            by = HIST_TOP + HIST_H - h,
            w = bw - 1.0,
            n = b.count,
            pct = 100.0 * share,
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{x0}" y="{ht}" width="{PLOT}" height="{HIST_H}" fill="none" stroke="#333"/>
<text x="{lx}" y="{ly}" text-anchor="middle" transform="rotate(-90 {lx} {ly})">share</text>
<text x="{cx}" y="{cy}" text-anchor="middle">confidence (top-label probability)</text>
</svg>
"##,
        x0 = x(0.0),
        ht = HIST_TOP,
        lx = LEFT - 38.0,
        ly = HIST_TOP + HIST_H / 2.0,
        cx = LEFT + PLOT / 2.0,
        cy = HIST_TOP + HIST_H + 34.0,
    );
}
