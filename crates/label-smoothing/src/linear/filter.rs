//! The optional gradient filter ([`LinearCrossEntropy::with_gradient_filter`](super::LinearCrossEntropy)), in
//! the style of Cut Cross-Entropy: the products skip the tiles of the logits' gradient whose entries are all
//! negligible.
//!
//! With label smoothing no entry of the gradient `G = coef (Q p - w q)` is negligible: the smoothed target puts
//! `off` on every class. So `G` is first split into three parts, exactly:
//!
//! - a rank-one part `R[i, c] = r_i w_c` with `r_i = -coef_i off` (the spread of the target),
//! - a sparse part, one entry per row at the label, `L_i = G[i, y_i] - R[i, y_i]`,
//! - the rest, `F = G - R - L`, which is `coef_i Q_i p_ic` off the label: small wherever `p` is. With
//!   soft-capping each entry of `G` carries the cap's slope `1 - t_ic^2` (`t = tanh(z / c)`), and `F` off the
//!   label is `coef_i ((1 - t_ic^2) Q_i p_ic + w_c off t_ic^2)`: small where `p` is and the logit is well inside
//!   the cap. The split is exact whatever `G` holds, so the bound below holds with every option.
//!
//! `F` goes through the dense products, skipping every tile of [`CLASS_BLOCK`] classes (all the block's rows)
//! whose entries are all at most the threshold `t` in absolute value; `R` and `L` are added in closed form:
//! `grad_x += r u^T` with `u = sum_c w_c W_c`, `grad_W += w v^T` with `v = sum_i r_i x_i`, and the label rows.
//! Leaving out entries of at most `t` bounds the error of each output by
//!
//! - `|d grad_x[i, e]| <= t * sum_c |W[c, e]|`,
//! - `|d grad_W[c, e]| <= t * sum_i |x[i, e]|`,
//! - `|d grad_b[c]| <= t * N`,
//!
//! (before the final `mean-nonzero` correction, which scales everything alike), on top of f32 rounding.

use super::products::{ClassGrads, CLASS_BLOCK};
use std::ops::Range;

/// One block of the backward products: some rows of `x` and some classes of `W`, with what the split needs of
/// them.
pub(crate) struct Block<'a> {
    /// The block's rows of `x`, `[rows, D]`.
    pub x: &'a [f32],
    /// The block's classes' rows of `W`, `[classes, D]`.
    pub w: &'a [f32],
    /// The hidden size `D`.
    pub d: usize,
    /// The block's classes (global indices).
    pub classes: Range<usize>,
    /// Those classes' weights.
    pub weights: Option<&'a [f32]>,
    /// The block's rows' labels (global indices).
    pub labels: &'a [i64],
    /// The ignore index.
    pub ignore: Option<i64>,
    /// The block's rows' `coef_i` (the upstream gradient times the reduction's scale).
    pub coef: &'a [f32],
}

/// A block's gradient split for the filter (see the module documentation).
pub(crate) struct Split {
    /// `r_i = -coef_i off` per row (0 for an ignored row).
    pub r: Vec<f64>,
    /// `(y_i, L_i)` per row that is not ignored.
    pub label: Vec<Option<(usize, f32)>>,
    /// Per tile of [`CLASS_BLOCK`] classes: whether any entry of `F` in it exceeds the threshold.
    pub keep: Vec<bool>,
}

/// Turns the block's gradient `g [rows, classes]` into `F` in place and returns the rest of the split (label
/// entries only for the labels in the block's classes, indexed from its first); `off` is the target's spread.
pub(crate) fn split(g: &mut [f32], block: &Block<'_>, off: f64, threshold: f32) -> Split {
    let Block {
        labels,
        ignore,
        coef,
        weights,
        ..
    } = *block;
    let (k, offset) = (block.classes.len(), block.classes.start);
    let tiles = k.div_ceil(CLASS_BLOCK);
    let mut keep = vec![false; tiles];
    let mut r = vec![0.0f64; labels.len()];
    let mut label = vec![None; labels.len()];
    for (i, row) in g.chunks_exact_mut(k).enumerate() {
        if Some(labels[i]) == ignore {
            continue; // an ignored row's gradient is zero: F = 0, r = 0, no label term
        }
        let ri = -(coef[i] as f64) * off;
        r[i] = ri;
        if ri != 0.0 {
            match weights {
                Some(w) => row.iter_mut().zip(w).for_each(|(v, &wc)| *v -= (ri * wc as f64) as f32),
                None => {
                    let rf = ri as f32;
                    row.iter_mut().for_each(|v| *v -= rf);
                }
            }
        }
        let y = labels[i] as usize;
        if (offset..offset + k).contains(&y) {
            let yl = y - offset;
            label[i] = Some((yl, row[yl]));
            row[yl] = 0.0;
        }
        for (t, tile) in row.chunks(CLASS_BLOCK).enumerate() {
            // A NaN keeps its tile: a non-finite gradient must reach the products.
            if !keep[t] && tile.iter().any(|v| v.abs() > threshold || v.is_nan()) {
                keep[t] = true;
            }
        }
    }
    Split { r, label, keep }
}

/// `u = sum_c w_c W[c, :]` in f64: what the rank-one part contributes to `grad_x` per unit of `r_i`.
pub(crate) fn weighted_column_sums(w: &[f32], weights: Option<&[f32]>, d: usize) -> Vec<f64> {
    let mut u = vec![0.0f64; d];
    for (c, row) in w.chunks_exact(d).enumerate() {
        let wc = weights.map_or(1.0, |w| w[c] as f64);
        u.iter_mut().zip(row).for_each(|(a, &v)| *a += wc * v as f64);
    }
    u
}

/// Adds the rank-one and label parts of a block to the gradients: `gx` is the block's rows of `grad_x`, `out` its
/// classes' rows of `grad_W` and of the bias accumulator. The rank-one part of `grad_x`, `r u^T` over all the
/// classes, is added when `u` is given (once per block of rows).
pub(crate) fn add_closed_forms(
    split: &Split,
    block: &Block<'_>,
    u: Option<&[f64]>,
    gx: Option<&mut [f32]>,
    out: ClassGrads<'_>,
) {
    let Block { x, w, d, weights, .. } = *block;
    let ClassGrads { weight: gw, bias: gb } = out;
    if let Some(gx) = gx {
        for (i, row) in gx.chunks_exact_mut(d).enumerate() {
            let ri = split.r[i];
            if let (true, Some(u)) = (ri != 0.0, u) {
                row.iter_mut()
                    .zip(u)
                    .for_each(|(v, &ue)| *v = (*v as f64 + ri * ue) as f32);
            }
            if let Some((y, l)) = split.label[i] {
                row.iter_mut()
                    .zip(&w[y * d..(y + 1) * d])
                    .for_each(|(v, &we)| *v += l * we);
            }
        }
    }
    let r_sum: f64 = split.r.iter().sum();
    if let Some(gw) = gw {
        // v = sum_i r_i x_i
        let mut v = vec![0.0f64; d];
        for (i, xi) in x.chunks_exact(d).enumerate() {
            let ri = split.r[i];
            if ri != 0.0 {
                v.iter_mut().zip(xi).for_each(|(a, &xe)| *a += ri * xe as f64);
            }
        }
        if v.iter().any(|&a| a != 0.0) {
            for (c, row) in gw.chunks_exact_mut(d).enumerate() {
                let wc = weights.map_or(1.0, |w| w[c] as f64);
                row.iter_mut()
                    .zip(&v)
                    .for_each(|(g, &ve)| *g = (*g as f64 + wc * ve) as f32);
            }
        }
        for (i, xi) in x.chunks_exact(d).enumerate() {
            if let Some((y, l)) = split.label[i] {
                gw[y * d..(y + 1) * d]
                    .iter_mut()
                    .zip(xi)
                    .for_each(|(g, &xe)| *g += l * xe);
            }
        }
    }
    if let Some(gb) = gb {
        if r_sum != 0.0 {
            for (c, b) in gb.iter_mut().enumerate() {
                *b += weights.map_or(1.0, |w| w[c] as f64) * r_sum;
            }
        }
        for &(y, l) in split.label.iter().flatten() {
            gb[y] += l as f64;
        }
    }
}
