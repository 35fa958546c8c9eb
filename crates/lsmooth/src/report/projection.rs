//! The projection of [`crate::analysis`] drawn as self-contained SVG.

use std::fmt::Write;

#[cfg(test)]
use crate::analysis::project;
use crate::analysis::Projection;

const COLORS: [&str; 3] = ["#0072B2", "#D55E00", "#009E73"];

/// A scatter plot of a projection: one `<circle class="point">` per example, one `class="template"` cross per
/// class. `names` label the classes in the legend.
pub fn svg(p: &Projection, title: &str, names: [&str; 3]) -> String {
    const S: f64 = 380.0;
    const PAD: f64 = 40.0;
    let (w, h) = (S + 2.0 * PAD + 90.0, S + 2.0 * PAD);
    let coords = p
        .points
        .iter()
        .map(|q| (q.0, q.1))
        .chain(p.templates.iter().copied())
        .filter(|q| q.0.is_finite() && q.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in coords {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    // Equal scales on both axes: distances in the plane are what the picture is about.
    let span = (x1 - x0).max(y1 - y0).max(1e-9) * 1.08;
    let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    let sx = |x: f64| PAD + ((x - cx) / span + 0.5) * S;
    let sy = |y: f64| PAD + (0.5 - (y - cy) / span) * S;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12" role="img">
<rect width="{w}" height="{h}" fill="#ffffff"/>
<text x="{tx}" y="24" text-anchor="middle" font-size="14" font-weight="bold">{t}</text>
<rect x="{PAD}" y="{PAD}" width="{S}" height="{S}" fill="none" stroke="#444"/>"##,
        tx = PAD + S / 2.0,
        t = title.replace('&', "&amp;").replace('<', "&lt;")
    );
    for &(x, y, i) in &p.points {
        if x.is_finite() && y.is_finite() {
            let _ = writeln!(
                s,
                r##"<circle class="point" cx="{:.1}" cy="{:.1}" r="2" fill="{}" fill-opacity="0.45"/>"##,
                sx(x),
                sy(y),
                COLORS[i]
            );
        }
    }
    for (i, &(x, y)) in p.templates.iter().enumerate() {
        let (px, py) = (sx(x), sy(y));
        let _ = writeln!(
            s,
            r##"<path class="template" d="M{a:.1},{b:.1} L{c:.1},{e:.1} M{a:.1},{e:.1} L{c:.1},{b:.1}" stroke="{col}" stroke-width="3"/>"##,
            a = px - 7.0,
            c = px + 7.0,
            b = py - 7.0,
            e = py + 7.0,
            col = COLORS[i]
        );
    }
    for (i, name) in names.iter().enumerate() {
        let ly = PAD + 12.0 + 20.0 * i as f64;
        let lx = PAD + S + 14.0;
        let _ = writeln!(
            s,
            r##"<circle cx="{lx}" cy="{ly}" r="5" fill="{c}"/><text x="{tx}" y="{ty}">{n}</text>"##,
            c = COLORS[i],
            tx = lx + 10.0,
            ty = ly + 4.0,
            n = name.replace('&', "&amp;").replace('<', "&lt;")
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{lx}" y="{ty}" fill="#444">x = template</text>"##,
        lx = PAD + S + 14.0,
        ty = PAD + 80.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_project_to_an_isometric_copy_of_their_triangle() {
        // D = 4; templates a, b, c with |b-a| = 1, |c-a| = 2, (b-a).(c-a) = 0.
        let weights = [
            0.5f32, 0.0, 0.0, 1.0, // class 0
            1.5, 0.0, 0.0, 1.0, // class 1
            0.5, 2.0, 0.0, 1.0, // class 2
            9.0, 9.0, 9.0, 9.0, // class 3, not projected
        ];
        let features = [1.5f32, 2.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let p = project(&features, 4, &[1, 3], &weights, 4, [0, 1, 2]).unwrap();
        let [a, b, c] = p.templates;
        let dist = |p: (f64, f64), q: (f64, f64)| ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
        assert!((dist(a, b) - 1.0).abs() < 1e-12);
        assert!((dist(a, c) - 2.0).abs() < 1e-12);
        assert!((dist(b, c) - 5f64.sqrt()).abs() < 1e-12);
        // Only the example of class 1 is kept; u1 = e_x, u2 = e_y: its coordinates are (1.5, 2).
        assert_eq!(p.points.len(), 1);
        let (u, v, i) = p.points[0];
        assert_eq!(i, 1);
        assert!((u - 1.5).abs() < 1e-12 && (v - 2.0).abs() < 1e-12, "{u} {v}");
        let svg = svg(&p, "t", ["a", "b", "c"]);
        assert_eq!(svg.matches(r#"class="point""#).count(), 1);
        assert_eq!(svg.matches(r#"class="template""#).count(), 3);
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        let w = [0.0f32, 0.0, 1.0, 1.0, 2.0, 2.0];
        assert!(project(&[], 2, &[], &w, 3, [0, 1, 2]).unwrap_err().contains("one line"));
        assert!(project(&[], 2, &[], &w, 3, [0, 1, 1]).unwrap_err().contains("differ"));
        assert!(project(&[], 2, &[], &w, 3, [0, 1, 5])
            .unwrap_err()
            .contains("out of range"));
        assert!(project(&[1.0], 2, &[0], &w, 3, [0, 1, 2])
            .unwrap_err()
            .contains("features"));
    }
}
