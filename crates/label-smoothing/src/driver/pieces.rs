//! The row kernels of a class shard ([`crate::shard`]): the statistics of each piece of each row (a piece is the
//! shard's part of one chunk of the global row), and the gradient pass over the same pieces. The pieces are the
//! chunks the single-process kernel uses wherever the shard is cut at chunk boundaries, computed by the same
//! out-of-line chunk kernels ([`slice_stats`], [`slice_grad`]), so their bits are the same.

use crate::kernel::{
    label_grad, label_prob, slice_grad, slice_stats, GradRow, InPlace, ReadOnly, RowIo, RowStats, Separate,
};
use crate::row::CallPlan;
use crate::simd::{dispatch, Isa, Kernel};

/// What a shard's row task computes.
pub(crate) enum ShardOp<'a> {
    /// Each piece's statistics into `stats` (`[rows, pieces]`; ignored rows get [`RowStats::EMPTY`]).
    Stats(&'a [f32], &'a mut [RowStats]),
    /// The gradient into the output (from the logits, or over them when they are `None`), from each row's
    /// [`GradRow`] (`None`: an ignored row, all zeros) and each piece's max (`[rows, pieces]`).
    Grad(Option<&'a [f32]>, &'a mut [f32], &'a [Option<GradRow>], &'a [f32]),
}

/// Rows `first..` of a shard (logits `[rows, len]` of the classes `[offset, offset + len)`).
pub(crate) struct ShardRows<'a, 'p> {
    pub plan: &'a CallPlan<'p>,
    /// Global index of the first row.
    pub first: usize,
    pub offset: usize,
    /// The shard's number of classes.
    pub len: usize,
    /// Local `[start, end)` of each piece.
    pub pieces: &'a [(usize, usize)],
    pub op: ShardOp<'a>,
}

impl Kernel for ShardRows<'_, '_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self) {
        let has_w = self.plan.weights().is_some();
        match (has_w, self.plan.shifted) {
            (false, false) => self.run_variant::<S, false, false>(),
            (false, true) => self.run_variant::<S, false, true>(),
            (true, false) => self.run_variant::<S, true, false>(),
            (true, true) => self.run_variant::<S, true, true>(),
        }
    }
}

impl ShardRows<'_, '_> {
    #[inline(always)]
    fn run_variant<S: Isa, const W: bool, const SHIFTED: bool>(self) {
        let (plan, offset, pieces, len) = (self.plan, self.offset, self.pieces, self.len);
        let full_w: &[f32] = plan.weights().unwrap_or(&[]);
        let w: &[f32] = plan.weights().map_or(&[][..], |w| &w[offset..offset + len]);
        let labels = match plan.targets {
            crate::types::Targets::Labels(l) => l,
            crate::types::Targets::Soft(_) => unreachable!("a shard takes hard labels only"),
        };
        if len == 0 {
            return;
        }
        match self.op {
            ShardOp::Stats(logits, stats) => {
                let rows = logits.chunks_exact(len).zip(stats.chunks_exact_mut(pieces.len()));
                for (r, (z, st)) in rows.enumerate() {
                    if Some(labels[self.first + r]) == plan.ignore() {
                        st.fill(RowStats::EMPTY);
                        continue;
                    }
                    let io = &mut ReadOnly(z);
                    for (s, &(a, b)) in st.iter_mut().zip(pieces) {
                        *s = slice_stats::<S, f32, _, W, false, SHIFTED, false>(io, a, b, w, &[], plan.cap, &mut []);
                    }
                }
            }
            ShardOp::Grad(logits, out, grad_rows, maxima) => {
                let rows = out
                    .chunks_exact_mut(len)
                    .zip(grad_rows)
                    .zip(maxima.chunks_exact(pieces.len()));
                for (r, ((o, g), mx)) in rows.enumerate() {
                    let Some(g) = g else {
                        o.fill(0.0);
                        continue;
                    };
                    match logits {
                        Some(z) => grad_row::<S, _, W>(
                            g,
                            &mut Separate::new(&z[r * len..(r + 1) * len], o),
                            offset,
                            pieces,
                            mx,
                            w,
                            full_w,
                        ),
                        None => grad_row::<S, _, W>(g, &mut InPlace(o), offset, pieces, mx, w, full_w),
                    }
                }
            }
        }
    }
}

/// One row's gradient over its pieces, then the label's entry when the label is in the shard.
#[inline(always)]
fn grad_row<S: Isa, IO: RowIo<f32>, const W: bool>(
    g: &GradRow,
    io: &mut IO,
    offset: usize,
    pieces: &[(usize, usize)],
    maxima: &[f32],
    w: &[f32],
    full_w: &[f32],
) {
    let len = io.len();
    // The label's entry needs p_y, computed from z_y (held in the GradRow) with its piece's max.
    let label = match g.label {
        Some((y, _, _)) if (offset..offset + len).contains(&y) => {
            let piece = pieces.iter().position(|&(_, b)| y - offset < b).unwrap_or(0);
            Some(label_prob::<S>(g, None, None, maxima[piece]))
        }
        _ => None,
    };
    for (&m, &(a, b)) in maxima.iter().zip(pieces) {
        slice_grad::<S, f32, _, W, false, false>(g, io, a, b, m, w, &[], &[]);
    }
    if let Some(p) = label {
        if let Some((y, v)) = label_grad::<S, W>(g, p, full_w) {
            io.store(y - offset, v);
        }
    }
}

/// Runs [`ShardRows`] under [`dispatch`].
pub(crate) fn run_shard_rows(task: ShardRows<'_, '_>) {
    dispatch(task)
}
