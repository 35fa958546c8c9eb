//! The debiased L2 calibration error of Kumar, Liang and Ma (2019), top-label, with equal-mass bins, as their
//! `calibration` package computes it for continuous probabilities
//! (`calibration.lower_bound_scaling_top_ce(probs, labels, p=2, debias=True, num_bins=B)`).
//!
//! The sorted confidences are split into `B` groups whose sizes differ by at most one (the first `N mod B` one
//! larger, as `numpy.array_split`); the bin edges are the midpoints between neighbouring groups, the last edge 1,
//! duplicates merged; a confidence `c` falls in the first bin whose upper edge is `>= c`. In a bin with `n_b >= 2`
//! examples, mean confidence `c_b` and accuracy `a_b`, the squared gap is debiased by the variance of `a_b`:
//! `e_b = (c_b - a_b)^2 - a_b (1 - a_b) / (n_b - 1)`; bins of fewer than two examples count 0. The estimate is
//! `sqrt(max(0, sum_b n_b / N * e_b))`.

/// The debiased L2 calibration error of top-label confidences `[N]` and their correctness `[N]` with `bins`
/// equal-mass bins (`N >= 1`, `bins >= 1`).
pub fn debiased_l2_ce(confidence: &[f64], correct: &[bool], bins: usize) -> f64 {
    let n = confidence.len();
    if n == 0 || bins == 0 {
        return f64::NAN;
    }
    let mut sorted = confidence.to_vec();
    sorted.sort_by(f64::total_cmp);
    let parts = bins.min(n);
    let (size, extra) = (n / parts, n % parts);
    let mut edges = Vec::with_capacity(parts);
    let mut end = 0;
    for p in 0..parts - 1 {
        end += size + usize::from(p < extra);
        edges.push((sorted[end - 1] + sorted[end]) / 2.0);
    }
    edges.push(1.0);
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    let nb = edges.len();
    let (mut count, mut conf, mut hits) = (vec![0usize; nb], vec![0.0f64; nb], vec![0.0f64; nb]);
    for (&c, &ok) in confidence.iter().zip(correct) {
        // numpy.searchsorted(edges, c, side="left"): the number of edges below c.
        let b = edges.partition_point(|&e| e < c).min(nb - 1);
        count[b] += 1;
        conf[b] += c;
        hits[b] += ok as u8 as f64;
    }
    let total: f64 = (0..nb)
        .filter(|&b| count[b] >= 2)
        .map(|b| {
            let m = count[b] as f64;
            let (cb, ab) = (conf[b] / m, hits[b] / m);
            m / n as f64 * ((cb - ab) * (cb - ab) - ab * (1.0 - ab) / (m - 1.0))
        })
        .sum();
    total.max(0.0).sqrt()
}
