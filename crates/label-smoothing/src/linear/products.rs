//! The three matrix products of a linear classifier's loss, on a fixed grid of tasks, through the `gemm` crate.
//!
//! Every task is one single-threaded `gemm` call on a block of the output that no other task writes, and the
//! grid depends only on the shapes (never on the number of threads), so every output element is computed by the
//! same instructions in the same order on any pool: the products are bit-identical for any number of threads.
//! All matrices are row-major; `x` is `[rows, D]`, `w` is `[K, D]` (as `nn.Linear` stores it), the logits and
//! their gradient `g` are `[rows, K]`.

use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Classes per task of the products over classes (the logits, and the weight's gradient).
pub(crate) const CLASS_BLOCK: usize = 512;
/// Hidden columns per task of the input's gradient.
pub(crate) const HIDDEN_BLOCK: usize = 128;

/// A raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the pointer is only dereferenced by `gemm` calls on disjoint blocks (see each use), while the buffer
// it points into is mutably borrowed by the function that spawned the tasks.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so that closures capture the whole `Send` value, not its raw field).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// `logits[r, c] = sum_d x[r, d] w[c, d] (+ bias[c])`; `logits` is `[rows, K]` and fully overwritten.
pub(crate) fn logits(x: &[f32], w: &[f32], bias: Option<&[f32]>, d: usize, k: usize, logits: &mut [f32]) {
    let rows = logits.len() / k;
    assert!(x.len() == rows * d && w.len() == k * d && bias.is_none_or(|b| b.len() == k));
    if rows == 0 {
        return;
    }
    if let Some(b) = bias {
        logits.chunks_exact_mut(k).for_each(|row| row.copy_from_slice(b));
    }
    let dst = SharedOut(logits.as_mut_ptr());
    (0..k.div_ceil(CLASS_BLOCK)).into_par_iter().for_each(|j| {
        let c0 = j * CLASS_BLOCK;
        let kc = CLASS_BLOCK.min(k - c0);
        // SAFETY: this task writes only columns c0..c0 + kc of the [rows, K] logits (row stride K), which no
        // other task touches; it reads x [rows, D] and rows c0..c0 + kc of w [K, D], all within the lengths
        // asserted above.
        unsafe {
            gemm(
                rows,
                kc,
                d,
                dst.at(c0),
                1,
                k as isize,
                bias.is_some(),
                x.as_ptr(),
                1,
                d as isize,
                w.as_ptr().add(c0 * d),
                d as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    });
}

/// `gx[r, e] (+)= sum_c g[r, c] w[c, e]`: the input's gradient, `[rows, D]`, added to `gx` when `accumulate`,
/// written otherwise.
pub(crate) fn grad_input(g: &[f32], w: &[f32], d: usize, k: usize, accumulate: bool, gx: &mut [f32]) {
    grad_input_kept(g, w, d, k, accumulate, None, gx)
}

/// [`grad_input`] over the class tiles of [`CLASS_BLOCK`] classes whose `keep` entry is set (all of them for
/// `None`): the gradient filter's product, which leaves out the tiles of `g` it found negligible.
pub(crate) fn grad_input_kept(
    g: &[f32],
    w: &[f32],
    d: usize,
    k: usize,
    accumulate: bool,
    keep: Option<&[bool]>,
    gx: &mut [f32],
) {
    let rows = gx.len() / d;
    assert!(g.len() == rows * k && w.len() == k * d);
    assert!(keep.is_none_or(|t| t.len() == k.div_ceil(CLASS_BLOCK)));
    if rows == 0 {
        return;
    }
    // The spans of classes the product runs over: all of them in one call, or the kept tiles one by one.
    let spans: Vec<(usize, usize)> = match keep {
        None => vec![(0, k)],
        Some(keep) => (0..keep.len())
            .filter(|&t| keep[t])
            .map(|t| (t * CLASS_BLOCK, CLASS_BLOCK.min(k - t * CLASS_BLOCK)))
            .collect(),
    };
    let dst = SharedOut(gx.as_mut_ptr());
    (0..d.div_ceil(HIDDEN_BLOCK)).into_par_iter().for_each(|j| {
        let e0 = j * HIDDEN_BLOCK;
        let dc = HIDDEN_BLOCK.min(d - e0);
        let mut read = accumulate;
        for &(c0, kc) in &spans {
            // SAFETY: this task writes only columns e0..e0 + dc of gx [rows, D] (row stride D), which no other
            // task touches; it reads columns c0..c0 + kc of g [rows, K] and rows c0..c0 + kc, columns
            // e0..e0 + dc of w [K, D], within the lengths asserted above.
            unsafe {
                gemm(
                    rows,
                    dc,
                    kc,
                    dst.at(e0),
                    1,
                    d as isize,
                    read,
                    g.as_ptr().add(c0),
                    1,
                    k as isize,
                    w.as_ptr().add(c0 * d + e0),
                    1,
                    d as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                )
            }
            read = true;
        }
        if !read {
            // No tile kept and nothing to add to: the columns are zero.
            for r in 0..rows {
                // SAFETY: row r, columns e0..e0 + dc of gx [rows, D]: this task's own.
                unsafe { std::slice::from_raw_parts_mut(dst.at(r * d + e0), dc) }.fill(0.0);
            }
        }
    });
}

/// Where the gradients of some classes go: their rows of `grad_W` (`[classes, D]`) and of the bias accumulator
/// (`[classes]`, in f64), each when asked for.
#[derive(Default)]
pub(crate) struct ClassGrads<'a> {
    pub weight: Option<&'a mut [f32]>,
    pub bias: Option<&'a mut [f64]>,
}

impl ClassGrads<'_> {
    /// The same destinations, borrowed again.
    pub(crate) fn reborrow(&mut self) -> ClassGrads<'_> {
        ClassGrads {
            weight: self.weight.as_deref_mut(),
            bias: self.bias.as_deref_mut(),
        }
    }
}

/// The weight's and the bias's gradients from a block of rows: `gw[c, e] (+)= sum_r g[r, c] x[r, e]` (added
/// to `gw` when `accumulate`, written otherwise) and `gb[c] += sum_r g[r, c]` in row order, in f64.
pub(crate) fn grad_weight(g: &[f32], x: &[f32], d: usize, k: usize, accumulate: bool, out: ClassGrads<'_>) {
    grad_weight_kept(g, x, d, k, accumulate, None, out)
}

/// [`grad_weight`] over the class tiles whose `keep` entry is set (all for `None`); a tile left out gets no
/// contribution (zeros where not `accumulate`).
pub(crate) fn grad_weight_kept(
    g: &[f32],
    x: &[f32],
    d: usize,
    k: usize,
    accumulate: bool,
    keep: Option<&[bool]>,
    out: ClassGrads<'_>,
) {
    let ClassGrads { weight: gw, bias: gb } = out;
    let rows = x.len() / d;
    assert!(g.len() == rows * k && gw.as_ref().is_none_or(|w| w.len() == k * d));
    assert!(gb.as_ref().is_none_or(|b| b.len() == k));
    let task = |j: usize, gwj: Option<&mut [f32]>, gbj: Option<&mut [f64]>| {
        let c0 = j * CLASS_BLOCK;
        let kc = CLASS_BLOCK.min(k - c0);
        if keep.is_some_and(|t| !t[j]) {
            if let (Some(gwj), false) = (gwj, accumulate) {
                gwj.fill(0.0);
            }
            return;
        }
        if let Some(gwj) = gwj {
            if rows == 0 {
                if !accumulate {
                    gwj.fill(0.0);
                }
            } else {
                // SAFETY: gwj is this task's own [kc, D] block of gw; the product reads columns c0..c0 + kc of
                // every row of g [rows, K] (the transpose's row stride 1, column stride K) and x [rows, D],
                // within the lengths asserted above.
                unsafe {
                    gemm(
                        kc,
                        d,
                        rows,
                        gwj.as_mut_ptr(),
                        1,
                        d as isize,
                        accumulate,
                        g.as_ptr().add(c0),
                        k as isize,
                        1,
                        x.as_ptr(),
                        1,
                        d as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    )
                }
            }
        }
        if let Some(gbj) = gbj {
            for row in g.chunks_exact(k) {
                for (acc, &v) in gbj.iter_mut().zip(&row[c0..c0 + kc]) {
                    *acc += v as f64;
                }
            }
        }
    };
    match (gw, gb) {
        (Some(gw), Some(gb)) => gw
            .par_chunks_mut(CLASS_BLOCK * d)
            .zip(gb.par_chunks_mut(CLASS_BLOCK))
            .enumerate()
            .for_each(|(j, (a, b))| task(j, Some(a), Some(b))),
        (Some(gw), None) => gw
            .par_chunks_mut(CLASS_BLOCK * d)
            .enumerate()
            .for_each(|(j, a)| task(j, Some(a), None)),
        (None, Some(gb)) => gb
            .par_chunks_mut(CLASS_BLOCK)
            .enumerate()
            .for_each(|(j, b)| task(j, None, Some(b))),
        (None, None) => {}
    }
}
