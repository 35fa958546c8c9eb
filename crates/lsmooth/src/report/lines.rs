//! A line chart (one line per series, mean over seeds with a min-max band) as self-contained SVG.

use super::esc;
use std::fmt::Write;

/// One line: its name, colour, points `(x, mean)` and optional band `(low, high)` per point.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// CSS colour.
    pub color: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
    /// `(low, high)` per point, drawn as a translucent band (e.g. the range over seeds).
    pub band: Option<Vec<(f64, f64)>>,
}

/// A palette that stays distinguishable for colour-blind readers (Okabe and Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

/// Width of the plot area.
const PLOT_W: f64 = 346.0;
const H: f64 = 340.0;
const LEFT: f64 = 64.0;
/// The legend's minimum width; longer names widen the chart (about 7 px per character at 12 px).
const RIGHT: f64 = 150.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;

/// "Nice" tick positions covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).ceil() * step;
    (0..)
        .map(|i| start + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .collect()
}

/// The chart's ranges and sizes, and its data-to-pixel maps.
struct Frame {
    xlo: f64,
    xhi: f64,
    ylo: f64,
    yhi: f64,
    /// The whole width (the legend's room depends on the longest series name).
    w: f64,
    /// The plot area's width and height.
    pw: f64,
    ph: f64,
}

impl Frame {
    /// The y range covers every finite point and band (padded by 5%), the x range every point.
    fn of(series: &[Series]) -> Frame {
        let all_y = series.iter().flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.1)
                .chain(s.band.iter().flatten().flat_map(|b| [b.0, b.1]))
        });
        let (mut ylo, mut yhi) = all_y.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            if v.is_finite() {
                (a.min(v), b.max(v))
            } else {
                (a, b)
            }
        });
        if !ylo.is_finite() {
            (ylo, yhi) = (0.0, 1.0);
        }
        let pad = ((yhi - ylo) * 0.05).max(1e-6);
        let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let (xlo, xhi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (xlo, xhi) = if xlo.is_finite() && xhi > xlo {
            (xlo, xhi)
        } else {
            (0.0, 1.0)
        };
        let longest = series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0) as f64;
        let right = RIGHT.max(48.0 + 7.0 * longest);
        Frame {
            xlo,
            xhi,
            ylo: ylo - pad,
            yhi: yhi + pad,
            w: LEFT + PLOT_W + right,
            pw: PLOT_W,
            ph: H - TOP - BOTTOM,
        }
    }

    fn sx(&self, v: f64) -> f64 {
        LEFT + (v - self.xlo) / (self.xhi - self.xlo) * self.pw
    }

    fn sy(&self, v: f64) -> f64 {
        TOP + (1.0 - (v - self.ylo) / (self.yhi - self.ylo)) * self.ph
    }
}

/// The SVG text of a line chart. Each series is one `<path class="series">`; the y range covers every point
/// and band. Series past the eighth are dashed (ninth to sixteenth) or dotted, in the plot and the legend, since
/// callers colour them from the eight-colour [`PALETTE`] in turn.
pub fn svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let f = Frame::of(series);
    let mut s = String::new();
    axes(&mut s, &f, title, x_label, y_label);
    for (i, ser) in series.iter().enumerate() {
        series_svg(&mut s, &f, i, ser);
    }
    s.push_str("</svg>\n");
    s
}

/// The background, the title, the grid with its tick labels, the frame and the axis labels.
fn axes(s: &mut String, f: &Frame, title: &str, x_label: &str, y_label: &str) {
    let (w, pw, ph) = (f.w, f.pw, f.ph);
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{H}" viewBox="0 0 {w} {H}" font-family="sans-serif" font-size="12" role="img">
<rect width="{w}" height="{H}" fill="#ffffff"/>
<text x="{tx}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{t}</text>
"##,
        tx = LEFT + pw / 2.0,
        t = esc(title)
    );
    for v in ticks(f.ylo, f.yhi) {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            y = f.sy(v),
            x2 = LEFT + pw,
            tx = LEFT - 6.0,
            ty = f.sy(v) + 4.0,
            v = format_tick(v)
        );
    }
    for v in ticks(f.xlo, f.xhi) {
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{y2:.1}" stroke="#f0f0f0"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle">{v}</text>"##,
            x = f.sx(v),
            y2 = TOP + ph,
            ty = TOP + ph + 16.0,
            v = format_tick(v)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>
<text x="{cx}" y="{by}" text-anchor="middle">{xl}</text>
<text transform="translate(16 {cy}) rotate(-90)" text-anchor="middle">{yl}</text>"##,
        cx = LEFT + pw / 2.0,
        by = H - 10.0,
        cy = TOP + ph / 2.0,
        xl = esc(x_label),
        yl = esc(y_label)
    );
}

/// Series `i`: its band if any, its line, and its legend entry.
fn series_svg(s: &mut String, f: &Frame, i: usize, ser: &Series) {
    if let Some(band) = &ser.band {
        let upper: Vec<String> = ser
            .points
            .iter()
            .zip(band)
            .map(|(p, b)| format!("{:.1},{:.1}", f.sx(p.0), f.sy(b.1)))
            .collect();
        let lower: Vec<String> = ser
            .points
            .iter()
            .zip(band)
            .rev()
            .map(|(p, b)| format!("{:.1},{:.1}", f.sx(p.0), f.sy(b.0)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polygon class="band" points="{} {}" fill="{}" fill-opacity="0.15" stroke="none"/>"##,
            upper.join(" "),
            lower.join(" "),
            ser.color
        );
    }
    // Past the palette's eight colours they repeat: the second round is dashed, later ones dotted.
    let dash = match i / PALETTE.len() {
        0 => "",
        1 => r#" stroke-dasharray="7,4""#,
        _ => r#" stroke-dasharray="2,3""#,
    };
    let d: Vec<String> = ser
        .points
        .iter()
        .enumerate()
        .map(|(j, p)| format!("{}{:.1},{:.1}", if j == 0 { "M" } else { "L" }, f.sx(p.0), f.sy(p.1)))
        .collect();
    let _ = writeln!(
        s,
        r##"<path class="series" d="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"##,
        d.join(" "),
        ser.color
    );
    let ly = TOP + 10.0 + 20.0 * i as f64;
    let lx = LEFT + f.pw + 14.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="{ly}" x2="{lx2}" y2="{ly}" stroke="{c}" stroke-width="3"{dash}/><text x="{tx}" y="{ty}">{n}</text>"##,
        lx2 = lx + 22.0,
        c = ser.color,
        tx = lx + 28.0,
        ty = ly + 4.0,
        n = esc(&ser.name)
    );
}

fn format_tick(v: f64) -> String {
    let r = (v * 1e6).round() / 1e6;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_per_series_and_nice_ticks() {
        let s = svg(
            "t",
            "epoch",
            "accuracy",
            &[
                Series {
                    name: "a".into(),
                    color: PALETTE[0].into(),
                    points: vec![(1.0, 0.5), (2.0, 0.7)],
                    band: Some(vec![(0.4, 0.6), (0.6, 0.8)]),
                },
                Series {
                    name: "b<c".into(),
                    color: PALETTE[1].into(),
                    points: vec![(1.0, 0.6), (2.0, 0.9)],
                    band: None,
                },
            ],
        );
        assert_eq!(s.matches(r#"class="series""#).count(), 2);
        assert_eq!(s.matches(r#"class="band""#).count(), 1);
        assert!(s.contains("b&lt;c"));
        let t = ticks(0.0, 1.0);
        assert_eq!(t.len(), 6, "{t:?}");
        assert!((t[1] - 0.2).abs() < 1e-12 && (t[5] - 1.0).abs() < 1e-12, "{t:?}");
        assert_eq!(format_tick(t[3]), "0.6");
    }

    #[test]
    fn series_past_the_palette_are_dashed_in_plot_and_legend() {
        let series: Vec<Series> = (0..10)
            .map(|i| Series {
                name: format!("s{i}"),
                color: PALETTE[i % PALETTE.len()].into(),
                points: vec![(1.0, i as f64), (2.0, i as f64 + 1.0)],
                band: None,
            })
            .collect();
        let s = svg("t", "x", "y", &series);
        // Series 8 and 9 reuse the first two colours: dashed path and dashed legend swatch each.
        assert_eq!(s.matches(r#"stroke-dasharray="7,4""#).count(), 4);
        let solid = svg("t", "x", "y", &series[..8]);
        assert!(!solid.contains("stroke-dasharray"));
    }
}
