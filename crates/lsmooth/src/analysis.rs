//! Analyses of trained models beyond their metrics: the penultimate-layer projection.
//!
//! The picture of Müller, Kornblith and Hinton (2019), "When does label smoothing help?", figure 1: penultimate
//! activations of three classes projected onto the plane through those classes' final-layer weight vectors
//! (the class templates). With label smoothing the clusters become tight and equidistant. The drawing is
//! [`crate::report::projection`].

/// Projected points and templates.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// The three classes, in the order given.
    pub classes: [usize; 3],
    /// `(u, v, i)`: an example's coordinates in the plane and the index (0..3) of its class in `classes`.
    pub points: Vec<(f64, f64, usize)>,
    /// The templates' own coordinates in the plane.
    pub templates: [(f64, f64); 3],
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Projects the examples of `classes` onto the plane through their templates.
///
/// - `features`: `[N, D]` penultimate activations; `labels`: `[N]`;
/// - `weights`: the final layer's weight matrix `[K, D]` (row `c` is class `c`'s template).
///
/// The plane's orthonormal basis is Gram-Schmidt of `w_b - w_a` and `w_c - w_a`; every point `x` maps to
/// `(x . u1, x . u2)`. Fails with a message naming the problem (shapes, classes out of range or repeated,
/// templates on one line).
pub fn project(
    features: &[f32],
    d: usize,
    labels: &[i64],
    weights: &[f32],
    k: usize,
    classes: [usize; 3],
) -> Result<Projection, String> {
    if d == 0 || features.len() != labels.len() * d {
        return Err(format!(
            "features hold {} values, expected [N = {}, D = {d}]",
            features.len(),
            labels.len()
        ));
    }
    if weights.len() != k * d {
        return Err(format!(
            "weights hold {} values, expected [K = {k}, D = {d}]",
            weights.len()
        ));
    }
    for &c in &classes {
        if c >= k {
            return Err(format!("class {c} is out of range for K = {k}"));
        }
    }
    if classes[0] == classes[1] || classes[0] == classes[2] || classes[1] == classes[2] {
        return Err(format!("the three classes must differ, got {classes:?}"));
    }
    let w = |c: usize| -> Vec<f64> { weights[c * d..(c + 1) * d].iter().map(|&x| x as f64).collect() };
    let (wa, wb, wc) = (w(classes[0]), w(classes[1]), w(classes[2]));
    let e1: Vec<f64> = wb.iter().zip(&wa).map(|(b, a)| b - a).collect();
    let n1 = dot(&e1, &e1).sqrt();
    if n1 == 0.0 {
        return Err(format!(
            "templates of classes {} and {} coincide",
            classes[0], classes[1]
        ));
    }
    let u1: Vec<f64> = e1.iter().map(|x| x / n1).collect();
    let e2: Vec<f64> = wc.iter().zip(&wa).map(|(c, a)| c - a).collect();
    let along = dot(&e2, &u1);
    let r: Vec<f64> = e2.iter().zip(&u1).map(|(e, u)| e - along * u).collect();
    let n2 = dot(&r, &r).sqrt();
    if n2 <= 1e-9 * n1.max(1.0) {
        return Err(format!(
            "the templates of classes {classes:?} lie on one line: no plane through them"
        ));
    }
    let u2: Vec<f64> = r.iter().map(|x| x / n2).collect();
    let at = |x: &[f64]| (dot(x, &u1), dot(x, &u2));
    let mut points = Vec::new();
    for (row, &y) in features.chunks_exact(d).zip(labels) {
        if let Some(i) = classes.iter().position(|&c| c as i64 == y) {
            let x: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            let (u, v) = at(&x);
            points.push((u, v, i));
        }
    }
    Ok(Projection {
        classes,
        points,
        templates: [at(&wa), at(&wb), at(&wc)],
    })
}
