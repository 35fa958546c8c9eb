//! Smooth ECE (Błasiok and Nakkiran 2023): the calibration error of a reliability curve smoothed with a reflected
//! Gaussian kernel, at the bandwidth where the error equals the bandwidth.
//!
//! The computation follows Apple's `relplot` (`relplot.smECE`, its default reflected Gaussian kernel), so that the
//! numbers agree with the tool the paper ships to within rounding:
//!
//! 1. The residuals `r_i = c_i - a_i` (confidence minus correctness) and the weights `1` are spread onto a grid of
//!    `G = max(2000, round(20 / sigma)) / 2 + 1` points of `[0, 1]` by linear interpolation between the two
//!    nearest grid points.
//! 2. Each grid is convolved with a Gaussian of standard deviation `sigma`, reflected at 0 and at 1 (the grid
//!    extended by its mirror images on both sides).
//! 3. At `max(200, round(10 / sigma))` evenly spaced points `t` the smoothed residual `R(t)` and density `D(t)`
//!    are read by linear interpolation, with `D(t) + 1e-4` in place of `D(t)`; smooth ECE at `sigma` is
//!    `sum_t |R(t) / D(t)| D(t) / sum_t D(t)`.
//! 4. The bandwidth: `sigma = 1` if smooth ECE at 1 is at least 1; otherwise ten bisection steps on `(0, 1]` for the
//!    fixed point of `sigma = smECE(sigma)`, keeping the upper end of the bracket, where `sigma >= smECE(sigma)`
//!    (below `1e-3` counts as the other side, as in `relplot`).
//!
//! The kernel is cut at 12 standard deviations (its weight there is `e^-72`, far below a rounding error of the
//! sums), and the smoothed grids are computed only at the grid points the interpolation of step 3 reads, which
//! makes each evaluation `O(N + min(G, 2 P) * min(G, 24 sigma G))` for `P` evaluation points.

/// A smooth ECE and the bandwidth it was computed at.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SmoothEce {
    /// The smooth ECE.
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub value: f64,
    /// The kernel's standard deviation `sigma` (the fixed point of `sigma = smECE(sigma)`).
    #[cfg_attr(feature = "serde", serde(with = "crate::json_float"))]
    pub bandwidth: f64,
}

/// `numpy.linspace(0, 1, n)`: `i * (1 / (n - 1))`, the last point exactly 1.
fn linspace01(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.0];
    }
    let step = 1.0 / (n - 1) as f64;
    let mut t: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    t[n - 1] = 1.0;
    t
}

/// Spreads `values[i]` at position `f[i]` onto `g` grid points by linear interpolation.
fn round_to_grid(f: &[f64], values: impl Iterator<Item = f64>, g: usize) -> Vec<f64> {
    let mut grid = vec![0.0; g];
    let scale = (g - 1) as f64;
    for (&x, v) in f.iter().zip(values) {
        let pos = x * scale;
        let bin = (pos as i64).clamp(0, g as i64 - 2) as usize;
        let frac = pos - bin as f64;
        grid[bin] += (1.0 - frac) * v;
        grid[bin + 1] += frac * v;
    }
    grid
}

/// `reflected(grid)`: the grid extended by its mirror images, reversed without its last point before it and
/// reversed without its first after it (`numpy.flip(v)[:-1], v, numpy.flip(v)[1:]`).
fn reflected(grid: &[f64]) -> Vec<f64> {
    let g = grid.len();
    grid[1..]
        .iter()
        .rev()
        .chain(grid)
        .chain(grid[..g - 1].iter().rev())
        .copied()
        .collect()
}

/// The two grids convolved with the Gaussian `kernel`, reflected at both ends, at the output points marked in
/// `needed` (the others are left 0: linear interpolation at the evaluation points reads only the marked ones).
///
/// `numpy.convolve(ext, kernel, "valid")[g/2 .. g/2 + g]`: `out[j] = sum_kk ext[j + g/2 + g - 1 - kk] kernel[kk]`,
/// over the kernel indices `kk` within `reach` of its centre `(g - 1) / 2`. With the kernel reversed each output
/// is a dot product of contiguous slices, and the two grids share one pass over the kernel.
fn reflected_convolutions(a: &[f64], b: &[f64], kernel: &[f64], reach: usize, needed: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let g = a.len();
    let (ea, eb) = (reflected(a), reflected(b));
    let centre = (g - 1) as f64 / 2.0;
    let lo = (centre - reach as f64).ceil().max(0.0) as usize;
    let hi = ((centre + reach as f64).floor() as usize).min(g - 1);
    let reversed: Vec<f64> = kernel[lo..=hi].iter().rev().copied().collect();
    let len = reversed.len();
    let (mut oa, mut ob) = (vec![0.0; g], vec![0.0; g]);
    for j in (0..g).filter(|&j| needed[j]) {
        let start = j + g / 2 + (g - 1) - hi;
        (oa[j], ob[j]) = dot2(&ea[start..start + len], &eb[start..start + len], &reversed);
    }
    (oa, ob)
}

/// `(sum_i a_i k_i, sum_i b_i k_i)` with four independent partial sums each (the sums are bound by the latency
/// of one addition chain otherwise).
fn dot2(a: &[f64], b: &[f64], k: &[f64]) -> (f64, f64) {
    let (mut sa, mut sb) = ([0.0f64; 4], [0.0f64; 4]);
    let (ca, cb, ck) = (a.chunks_exact(4), b.chunks_exact(4), k.chunks_exact(4));
    let (ra, rb, rk) = (ca.remainder(), cb.remainder(), ck.remainder());
    for ((x, y), w) in ca.zip(cb).zip(ck) {
        for l in 0..4 {
            sa[l] += x[l] * w[l];
            sb[l] += y[l] * w[l];
        }
    }
    let ta: f64 = ra.iter().zip(rk).map(|(x, w)| x * w).sum();
    let tb: f64 = rb.iter().zip(rk).map(|(y, w)| y * w).sum();
    (
        (sa[0] + sa[2]) + (sa[1] + sa[3]) + ta,
        (sb[0] + sb[2]) + (sb[1] + sb[3]) + tb,
    )
}

/// The grid index linear interpolation at `t` starts from (it reads that index and the next).
fn cell(g: usize, t: f64) -> usize {
    ((t * (g - 1) as f64) as i64).clamp(0, g as i64 - 2) as usize
}

/// Linear interpolation of the grid (point `i` at `i / (len - 1)`) at `t`.
fn interpolate(grid: &[f64], t: f64) -> f64 {
    let g = grid.len();
    let bucket = 1.0 / (g - 1) as f64;
    let i = cell(g, t);
    let r = (t - i as f64 * bucket) / bucket;
    grid[i] * (1.0 - r) + grid[i + 1] * r
}

/// The smoothed residual `R(t)` and density `D(t) + 1e-4` at `points` evenly spaced `t` in `[0, 1]`.
fn smooth(confidence: &[f64], correct: &[bool], sigma: f64, points: usize) -> (Vec<f64>, Vec<f64>) {
    let g = (2000f64.max((20.0 / sigma).round_ties_even()) as usize) / 2 + 1;
    let t = linspace01(g);
    let norm = (2.0 * std::f64::consts::PI).sqrt() * sigma;
    let kernel: Vec<f64> = t
        .iter()
        .map(|&x| (-(x - 0.5) * (x - 0.5) / (2.0 * sigma * sigma)).exp() / norm)
        .collect();
    let reach = ((12.0 * sigma * (g - 1) as f64).ceil() as usize).min(g);
    let residual = round_to_grid(
        confidence,
        confidence.iter().zip(correct).map(|(&c, &a)| c - a as u8 as f64),
        g,
    );
    let ones = round_to_grid(confidence, std::iter::repeat(1.0), g);
    let eval = linspace01(points);
    let mut needed = vec![false; g];
    for &x in &eval {
        let i = cell(g, x);
        needed[i] = true;
        needed[i + 1] = true;
    }
    let (rs, dens) = reflected_convolutions(&residual, &ones, &kernel, reach, &needed);
    let d: Vec<f64> = eval.iter().map(|&x| interpolate(&dens, x) + 1e-4).collect();
    let r: Vec<f64> = eval.iter().zip(&d).map(|(&x, &dx)| interpolate(&rs, x) / dx).collect();
    (r, d)
}

/// Smooth ECE at a fixed bandwidth `sigma` (`relplot.smECE_sigma`).
///
/// Arguments: `confidence [N]` the top-label confidences in `[0, 1]`, `correct [N]` whether each top label was
/// right; `sigma > 0`.
pub fn smooth_ece_at(confidence: &[f64], correct: &[bool], sigma: f64) -> f64 {
    let points = 200usize.max((10.0 / sigma).round_ties_even() as usize);
    let (r, d) = smooth(confidence, correct, sigma, points);
    let num: f64 = r.iter().zip(&d).map(|(r, d)| r.abs() * d).sum();
    num / d.iter().sum::<f64>()
}

/// Smooth ECE with its bandwidth chosen by the fixed-point rule (`relplot.smECE`).
///
/// Arguments: `confidence [N]` the top-label confidences in `[0, 1]`, `correct [N]` whether each top label was
/// right (the two as long as each other, `N >= 1`).
pub fn smooth_ece(confidence: &[f64], correct: &[bool]) -> SmoothEce {
    let holds = |s: f64| s < 1e-3 || s < smooth_ece_at(confidence, correct, s);
    let sigma = if holds(1.0) {
        1.0
    } else {
        let (mut start, mut end) = (1.0f64, 0.0f64);
        for _ in 0..10 {
            let mid = (start + end) / 2.0;
            if holds(mid) {
                end = mid;
            } else {
                start = mid;
            }
        }
        start
    };
    SmoothEce {
        value: smooth_ece_at(confidence, correct, sigma),
        bandwidth: sigma,
    }
}

/// The smoothed reliability curve at bandwidth `sigma`: at `points` evenly spaced confidences `t` in `[0, 1]`,
/// `(t, accuracy(t), density(t))` with `accuracy(t) = t - R(t)` (the smoothed residual taken off the diagonal)
/// and the density normalised to integrate to about 1.
pub fn smoothed_reliability(confidence: &[f64], correct: &[bool], sigma: f64, points: usize) -> Vec<(f64, f64, f64)> {
    let points = points.max(2);
    let (r, d) = smooth(confidence, correct, sigma, points);
    let n = confidence.len().max(1) as f64;
    linspace01(points)
        .into_iter()
        .zip(r.iter().zip(&d))
        .map(|(t, (&r, &d))| (t, t - r, d / n))
        .collect()
}
