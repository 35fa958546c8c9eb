//! One long row split across threads: parts of whole chunks, their statistics combined in a single thread's
//! order, then the gradient pass over the same parts (the same bits as one thread).

use crate::element::Element;
use crate::kernel::{
    argmax, combine_argmax, label_grad, label_prob, slice_grad, slice_stats, CallBuffers, GradRow, InPlace, ReadOnly,
    RowIo, RowStats, Separate, CHUNK,
};
use crate::row::{CallPlan, RowKind, RowLoss};
use crate::simd::{dispatch, Isa, Kernel};
use crate::types::Targets;

/// What a part of a long row computes.
#[derive(Clone, Copy)]
enum PartOp<'a> {
    /// Statistics of each chunk of the part (and, when storing, `exp(z - chunk max)` into the output).
    Stats,
    /// The arg-max of each chunk of the part, as the `max` of a `RowStats` and its class in `sum_exp`.
    Argmax,
    /// The gradient, given the row's finished `GradRow` and every chunk's max.
    Grad(&'a GradRow, &'a [f32]),
}

/// A run of whole chunks of one long row, run under [`dispatch`] on some thread.
struct PartTask<'a, 'p, E> {
    plan: &'a CallPlan<'p>,
    row: usize,
    /// Class index of the part's first element.
    offset: usize,
    bufs: CallBuffers<'a, E>,
    op: PartOp<'a>,
}

impl<E: Element> Kernel for PartTask<'_, '_, E> {
    type Output = Vec<RowStats>;
    #[inline(always)]
    fn run<S: Isa>(self) -> Vec<RowStats> {
        match self.bufs {
            CallBuffers::Read(z) => self
                .plan
                .part::<S, E, _>(self.row, self.offset, &mut ReadOnly(z), self.op),
            CallBuffers::Write(z, g) => {
                self.plan
                    .part::<S, E, _>(self.row, self.offset, &mut Separate::new(z, g), self.op)
            }
            CallBuffers::InPlace(z) => self
                .plan
                .part::<S, E, _>(self.row, self.offset, &mut InPlace(z), self.op),
        }
    }
}

/// The label's gradient entry of a wide row, computed with the same instructions as a narrow row's.
struct LabelEntry<'a> {
    g: &'a GradRow,
    stored: Option<f32>,
    chunk_max: f32,
    weights: Option<&'a [f32]>,
}

impl Kernel for LabelEntry<'_> {
    type Output = Option<(usize, f32)>;
    #[inline(always)]
    fn run<S: Isa>(self) -> Option<(usize, f32)> {
        let p = label_prob::<S>(self.g, self.stored, None, self.chunk_max);
        match self.weights {
            Some(w) => label_grad::<S, true>(self.g, p, w),
            None => label_grad::<S, false>(self.g, p, &[]),
        }
    }
}

impl CallPlan<'_> {
    /// Loss of row `i` with its chunks spread over rayon's threads (rows with many classes, few rows).
    pub(crate) fn wide_row<E: Element>(&self, i: usize, mut bufs: CallBuffers<'_, E>) -> RowLoss {
        let k = self.k();
        let n_chunks = k.div_ceil(CHUNK);
        // Parts of whole chunks; how many does not change the result, only the balance.
        let chunks_per_part = n_chunks.div_ceil(4 * rayon::current_num_threads()).max(1);
        let part_len = chunks_per_part * CHUNK;
        let kind = self.row_kind::<E, _>(i, &ReadOnly(bufs.logits()));
        let run_parts = |bufs: &mut CallBuffers<'_, E>, op: PartOp<'_>| -> Vec<RowStats> {
            let task = |ci: usize, b: CallBuffers<'_, E>| {
                dispatch(PartTask {
                    plan: self,
                    row: i,
                    offset: ci * part_len,
                    bufs: b,
                    op,
                })
            };
            let parts: Vec<Vec<RowStats>> = bufs.par_map_parts(part_len, task);
            parts.into_iter().flatten().collect()
        };

        if matches!(kind, RowKind::Ignored) {
            if let Some(o) = bufs.output_mut() {
                o.iter_mut().for_each(|v| *v = E::from_f32(0.0));
            }
            return RowLoss::default();
        }
        // Before the statistics pass, which may write over the logits.
        let pred = if self.argmax {
            let parts = run_parts(&mut bufs, PartOp::Argmax);
            combine_argmax(parts.iter().map(|p| (p.max, p.sum_exp as usize))).map_or(-1, |(_, c)| c as i64)
        } else {
            -1
        };
        let chunk_stats = run_parts(&mut bufs, PartOp::Stats);
        let st = chunk_stats.iter().fold(RowStats::EMPTY, |acc, c| acc.combine(c));
        let (loss, g) = self.finish(i, &kind, &st);
        let loss = RowLoss { pred, ..loss };
        if !bufs.writes() {
            return loss;
        }
        let maxima: Vec<f32> = chunk_stats.iter().map(|c| c.max).collect();
        // The label's entry needs p_y, read before the gradient pass overwrites what it is computed from.
        let label_fix = g.label.map(|(y, _, _)| {
            let stored = match bufs.output_mut() {
                Some(o) if E::STORES_EXP => Some(o[y].to_f32()),
                _ => None,
            };
            LabelEntry {
                g: &g,
                stored,
                chunk_max: maxima[y / CHUNK],
                weights: self.weights(),
            }
        });
        run_parts(&mut bufs, PartOp::Grad(&g, &maxima));
        if let Some((y, v)) = label_fix.and_then(dispatch) {
            if let Some(o) = bufs.output_mut() {
                o[y] = E::from_f32(v);
            }
        }
        loss
    }

    /// One part of a wide row: chunk statistics, or the gradient.
    #[inline(always)]
    fn part<S: Isa, E: Element, IO: RowIo<E>>(
        &self,
        i: usize,
        offset: usize,
        io: &mut IO,
        op: PartOp<'_>,
    ) -> Vec<RowStats> {
        if IO::KEEPS_EXP {
            self.part_with::<S, E, IO, true>(i, offset, io, op)
        } else {
            self.part_with::<S, E, IO, false>(i, offset, io, op)
        }
    }

    #[inline(always)]
    fn part_with<S: Isa, E: Element, IO: RowIo<E>, const STORE: bool>(
        &self,
        i: usize,
        offset: usize,
        io: &mut IO,
        op: PartOp<'_>,
    ) -> Vec<RowStats> {
        let len = io.len();
        let w_all: &[f32] = self.weights().map_or(&[][..], |w| &w[offset..offset + len]);
        let t_all: &[f32] = match self.targets {
            Targets::Soft(t) => &t[i * self.k() + offset..i * self.k() + offset + len],
            Targets::Labels(_) => &[],
        };
        let (has_w, has_t) = (self.weights().is_some(), !t_all.is_empty());
        let mut out = Vec::new();
        let mut start = 0;
        while start < len {
            let end = (start + CHUNK).min(len);
            match op {
                PartOp::Stats => {
                    let st = with_variant!((has_w, has_t, self.shifted) => |W, T, SHIFTED| {
                        slice_stats::<S, E, IO, W, T, SHIFTED, STORE>(io, start, end, w_all, t_all, self.cap, &mut [])
                    });
                    out.push(st);
                }
                PartOp::Argmax => {
                    let (max, c) = argmax::<S, E, IO>(io, start, end);
                    out.push(RowStats {
                        max,
                        sum_exp: (offset + c) as f64,
                        ..RowStats::EMPTY
                    });
                }
                PartOp::Grad(g, maxima) => {
                    let m = maxima[(offset + start) / CHUNK];
                    with_variant!((has_w, has_t) => |W, T| {
                        slice_grad::<S, E, IO, W, T, STORE>(g, io, start, end, m, w_all, t_all, &[])
                    })
                }
            }
            start = end;
        }
        out
    }
}
