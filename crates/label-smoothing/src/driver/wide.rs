//! One long row split across threads: parts of whole chunks, their statistics combined in a single thread's
//! order, then the gradient pass over the same parts (the same bits as one thread).

use crate::element::Element;
use crate::kernel::{
    label_grad, label_prob, slice_grad, slice_stats, Bufs, GradRow, InPlace, ReadOnly, RowIo, RowStats, Separate, CHUNK,
};
use crate::row::{Plan, RowKind};
use crate::simd::{dispatch, Isa, Kernel};
use crate::types::Targets;
use rayon::prelude::*;

/// What a part of a long row computes.
#[derive(Clone, Copy)]
enum PartOp<'a> {
    /// Statistics of each chunk of the part (and, when storing, `exp(z - chunk max)` into the output).
    Stats,
    /// The gradient, given the row's finished `GradRow` and every chunk's max.
    Grad(&'a GradRow, &'a [f32]),
}

/// A run of whole chunks of one long row, run under [`dispatch`] on some thread.
struct PartTask<'a, 'p, E> {
    plan: &'a Plan<'p>,
    row: usize,
    /// Class index of the part's first element.
    offset: usize,
    bufs: Bufs<'a, E>,
    op: PartOp<'a>,
}

impl<E: Element> Kernel for PartTask<'_, '_, E> {
    type Output = Vec<RowStats>;
    #[inline(always)]
    fn run<S: Isa>(self) -> Vec<RowStats> {
        match self.bufs {
            Bufs::Read(z) => self
                .plan
                .part::<S, E, _>(self.row, self.offset, &mut ReadOnly(z), self.op),
            Bufs::Write(z, g) => self
                .plan
                .part::<S, E, _>(self.row, self.offset, &mut Separate::new(z, g), self.op),
            Bufs::InPlace(z) => self
                .plan
                .part::<S, E, _>(self.row, self.offset, &mut InPlace(z), self.op),
        }
    }
}

/// The label's gradient entry of a wide row, computed with the same instructions as a narrow row's.
struct LabelFix<'a> {
    g: &'a GradRow,
    stored: Option<f32>,
    chunk_max: f32,
    weights: Option<&'a [f32]>,
}

impl Kernel for LabelFix<'_> {
    type Output = Option<(usize, f32)>;
    #[inline(always)]
    fn run<S: Isa>(self) -> Option<(usize, f32)> {
        let p = label_prob::<S>(self.g, self.stored, self.chunk_max);
        match self.weights {
            Some(w) => label_grad::<S, true>(self.g, p, w),
            None => label_grad::<S, false>(self.g, p, &[]),
        }
    }
}

impl Plan<'_> {
    /// Loss of row `i` with its chunks spread over rayon's threads (rows with many classes, few rows).
    pub(crate) fn wide_row<E: Element>(&self, i: usize, mut bufs: Bufs<'_, E>) -> f64 {
        let k = self.k;
        let n_chunks = k.div_ceil(CHUNK);
        // Parts of whole chunks; how many does not change the result, only the balance.
        let chunks_per_part = n_chunks.div_ceil(4 * rayon::current_num_threads()).max(1);
        let part_len = chunks_per_part * CHUNK;
        let kind = match &bufs {
            Bufs::Read(z) => self.row_kind::<E, _>(i, &ReadOnly(z)),
            Bufs::Write(z, _) => self.row_kind::<E, _>(i, &ReadOnly(z)),
            Bufs::InPlace(z) => self.row_kind::<E, _>(i, &ReadOnly(z)),
        };
        let run_parts = |bufs: &mut Bufs<'_, E>, op: PartOp<'_>| -> Vec<RowStats> {
            let task = |ci: usize, b: Bufs<'_, E>| {
                dispatch(PartTask {
                    plan: self,
                    row: i,
                    offset: ci * part_len,
                    bufs: b,
                    op,
                })
            };
            let parts: Vec<Vec<RowStats>> = match bufs {
                Bufs::Read(z) => z
                    .par_chunks(part_len)
                    .enumerate()
                    .map(|(ci, zc)| task(ci, Bufs::Read(zc)))
                    .collect(),
                Bufs::Write(z, g) => z
                    .par_chunks(part_len)
                    .zip(g.par_chunks_mut(part_len))
                    .enumerate()
                    .map(|(ci, (zc, gc))| task(ci, Bufs::Write(zc, gc)))
                    .collect(),
                Bufs::InPlace(z) => z
                    .par_chunks_mut(part_len)
                    .enumerate()
                    .map(|(ci, zc)| task(ci, Bufs::InPlace(zc)))
                    .collect(),
            };
            parts.into_iter().flatten().collect()
        };

        if matches!(kind, RowKind::Ignored) {
            match &mut bufs {
                Bufs::Read(_) => {}
                Bufs::Write(_, g) => g.iter_mut().for_each(|v| *v = E::from_f32(0.0)),
                Bufs::InPlace(z) => z.iter_mut().for_each(|v| *v = E::from_f32(0.0)),
            }
            return 0.0;
        }
        let chunk_stats = run_parts(&mut bufs, PartOp::Stats);
        let st = chunk_stats.iter().fold(RowStats::EMPTY, |acc, c| acc.combine(c));
        let (loss, g) = self.finish(i, &kind, &st);
        if matches!(bufs, Bufs::Read(_)) {
            return loss;
        }
        let maxima: Vec<f32> = chunk_stats.iter().map(|c| c.max).collect();
        // The label's entry needs p_y, read before the gradient pass overwrites what it is computed from.
        let label_fix = g.label.map(|(y, _, _)| {
            let stored = match &bufs {
                Bufs::Write(_, o) if E::STORES_EXP => Some(o[y].to_f32()),
                Bufs::InPlace(z) if E::STORES_EXP => Some(z[y].to_f32()),
                _ => None,
            };
            LabelFix {
                g: &g,
                stored,
                chunk_max: maxima[y / CHUNK],
                weights: self.weights,
            }
        });
        run_parts(&mut bufs, PartOp::Grad(&g, &maxima));
        if let Some((y, v)) = label_fix.and_then(dispatch) {
            match &mut bufs {
                Bufs::Write(_, o) => o[y] = E::from_f32(v),
                Bufs::InPlace(z) => z[y] = E::from_f32(v),
                Bufs::Read(_) => {}
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
        let w_all: &[f32] = self.weights.map_or(&[][..], |w| &w[offset..offset + len]);
        let t_all: &[f32] = match self.targets {
            Targets::Soft(t) => &t[i * self.k + offset..i * self.k + offset + len],
            Targets::Labels(_) => &[],
        };
        let (has_w, has_t) = (self.weights.is_some(), !t_all.is_empty());
        let mut out = Vec::new();
        let mut start = 0;
        while start < len {
            let end = (start + CHUNK).min(len);
            match op {
                PartOp::Stats => {
                    let st = match (has_w, has_t, self.lin) {
                        (false, false, false) => {
                            slice_stats::<S, E, IO, false, false, false, STORE>(io, start, end, w_all, t_all)
                        }
                        (false, false, true) => {
                            slice_stats::<S, E, IO, false, false, true, STORE>(io, start, end, w_all, t_all)
                        }
                        (true, false, false) => {
                            slice_stats::<S, E, IO, true, false, false, STORE>(io, start, end, w_all, t_all)
                        }
                        (true, false, true) => {
                            slice_stats::<S, E, IO, true, false, true, STORE>(io, start, end, w_all, t_all)
                        }
                        (false, true, false) => {
                            slice_stats::<S, E, IO, false, true, false, STORE>(io, start, end, w_all, t_all)
                        }
                        (false, true, true) => {
                            slice_stats::<S, E, IO, false, true, true, STORE>(io, start, end, w_all, t_all)
                        }
                        (true, true, false) => {
                            slice_stats::<S, E, IO, true, true, false, STORE>(io, start, end, w_all, t_all)
                        }
                        (true, true, true) => {
                            slice_stats::<S, E, IO, true, true, true, STORE>(io, start, end, w_all, t_all)
                        }
                    };
                    out.push(st);
                }
                PartOp::Grad(g, maxima) => {
                    let m = maxima[(offset + start) / CHUNK];
                    match (has_w, has_t) {
                        (false, false) => {
                            slice_grad::<S, E, IO, false, false, STORE>(g, io, start, end, m, w_all, t_all)
                        }
                        (true, false) => slice_grad::<S, E, IO, true, false, STORE>(g, io, start, end, m, w_all, t_all),
                        (false, true) => slice_grad::<S, E, IO, false, true, STORE>(g, io, start, end, m, w_all, t_all),
                        (true, true) => slice_grad::<S, E, IO, true, true, STORE>(g, io, start, end, m, w_all, t_all),
                    }
                }
            }
            start = end;
        }
        out
    }
}
