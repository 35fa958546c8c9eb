//! The rows of one parallel task, one at a time, in the call's row variant ([`RowTask`]), with the task's f32
//! scratch row for 16-bit gradients.

use crate::element::Element;
use crate::kernel::{argmax, grad_row, row_stats, CallBuffers, InPlace, ReadOnly, RowIo, Separate, WithScratch};
use crate::row::{CallPlan, RowKind, RowLoss};
use crate::simd::{dispatch, Isa, Kernel};

use super::lanes;
use crate::types::Targets;

/// The rows of one parallel task, run under [`dispatch`], for one row variant: class weights (`W`), soft targets
/// (`T`), `shifted` sums needed (`SHIFTED`; see [`crate::kernel::row_stats`]). The variant is the same for every row
/// of a call, so it is chosen once per task ([`CallPlan::rows_one_at_a_time`]) and each variant is a function of its
/// own rather than eight inlined into one: with the chunk loops shared through [`Isa::outline`], that keeps the
/// core crate's build short (docs/DESIGN.md, "Compiled in pieces").
struct RowTask<'a, 'p, E, const W: bool, const T: bool, const SHIFTED: bool> {
    plan: &'a CallPlan<'p>,
    first_row: usize,
    bufs: CallBuffers<'a, E>,
    losses: &'a mut [RowLoss],
}

impl<E: Element, const W: bool, const T: bool, const SHIFTED: bool> Kernel for RowTask<'_, '_, E, W, T, SHIFTED> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self) {
        let (k, first, plan) = (self.plan.k(), self.first_row, self.plan);
        let mut row_bufs = RowBufs::default();
        match self.bufs {
            CallBuffers::Read(zc) => {
                for (r, (z, l)) in zc.chunks_exact(k).zip(self.losses.iter_mut()).enumerate() {
                    *l = plan.row::<S, E, _, W, T, SHIFTED>(first + r, &mut ReadOnly(z), &mut row_bufs);
                }
            }
            CallBuffers::Write(zc, gc) => {
                let mut scratch = ScratchRow::take::<E>(k);
                let rows = zc
                    .chunks_exact(k)
                    .zip(gc.chunks_exact_mut(k))
                    .zip(self.losses.iter_mut());
                for (r, ((z, g), l)) in rows.enumerate() {
                    *l = plan.row_with_output::<S, E, _, W, T, SHIFTED>(
                        first + r,
                        Separate::new(z, g),
                        &mut scratch,
                        &mut row_bufs,
                    );
                }
                scratch.give_back();
            }
            CallBuffers::InPlace(zc) => {
                let mut scratch = ScratchRow::take::<E>(k);
                for (r, (z, l)) in zc.chunks_exact_mut(k).zip(self.losses.iter_mut()).enumerate() {
                    *l = plan.row_with_output::<S, E, _, W, T, SHIFTED>(
                        first + r,
                        InPlace(z),
                        &mut scratch,
                        &mut row_bufs,
                    );
                }
                scratch.give_back();
            }
        }
    }
}

/// The longest scratch row a thread keeps between tasks: 1 MiB of f32, which covers the largest language-model
/// vocabularies (256k). A task with longer rows allocates its own and frees it at the end.
const SCRATCH_KEEP: usize = 1 << 18;

thread_local! {
    /// Each thread's f32 scratch row for 16-bit gradients, kept between tasks and calls (at most
    /// [`SCRATCH_KEEP`] values).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A task's f32 scratch row for bf16 and f16 gradients ([`crate::kernel::WithScratch`]): it saves the gradient
/// pass one `exp` per class and changes no bits ([`crate::kernel::RowIo::KEEPS_EXP`]). Its values are never read
/// before the statistics pass of the same row wrote them. Taken out of the thread-local and given back rather
/// than borrowed inside `LocalKey::with`: the kernel must not run in a closure, which would not be compiled for
/// the dispatched instruction set.
struct ScratchRow(Vec<f32>);

impl ScratchRow {
    /// `k` values for bf16 and f16; none for f32, which keeps the exponentials in its gradient buffer.
    fn take<E: Element>(k: usize) -> Self {
        if E::STORES_EXP {
            return ScratchRow(Vec::new());
        }
        let mut v = SCRATCH.take();
        v.truncate(k);
        v.resize(k, 0.0);
        ScratchRow(v)
    }

    /// The scratch row.
    fn row(&mut self) -> &mut [f32] {
        &mut self.0
    }

    /// Returns the row to the thread for its next task, unless longer than [`SCRATCH_KEEP`].
    fn give_back(self) {
        if !self.0.is_empty() && self.0.len() <= SCRATCH_KEEP {
            SCRATCH.set(self.0);
        }
    }
}

impl CallPlan<'_> {
    /// The rows `first_row..` of one task: across the lanes when [`CallPlan::across_lanes`] holds, else one at a time.
    pub(crate) fn rows<E: Element>(&self, first_row: usize, bufs: CallBuffers<'_, E>, losses: &mut [RowLoss]) {
        if self.across_lanes {
            dispatch(lanes::LanesTask {
                plan: self,
                first: first_row,
                bufs,
                losses,
            })
        } else {
            self.rows_one_at_a_time(first_row, bufs, losses)
        }
    }

    /// The rows `first_row..` of one task by the row kernel, in the call's row variant ([`RowTask`]).
    pub(crate) fn rows_one_at_a_time<E: Element>(
        &self,
        first_row: usize,
        bufs: CallBuffers<'_, E>,
        losses: &mut [RowLoss],
    ) {
        let soft = matches!(self.targets, Targets::Soft(_));
        with_variant!((self.weights().is_some(), soft, self.shifted) => |W, T, SHIFTED| dispatch(RowTask::<E, W, T, SHIFTED> {
            plan: self,
            first_row,
            bufs,
            losses,
        }))
    }

    /// Loss of row `i` (f64); writes its gradient when `io` has an output. `W`, `T`, `SHIFTED`: the call's row variant
    /// ([`RowTask`]).
    #[inline(always)]
    fn row<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const SHIFTED: bool>(
        &self,
        i: usize,
        io: &mut IO,
        bufs: &mut RowBufs,
    ) -> RowLoss {
        let kind = self.row_kind::<E, IO>(i, io);
        if matches!(kind, RowKind::Ignored) {
            if IO::WRITES {
                for c in 0..self.k() {
                    io.store(c, 0.0);
                }
            }
            return RowLoss::default();
        }
        // Before the statistics pass, which may write over the logits.
        let pred = if self.argmax {
            argmax::<S, E, IO>(io, 0, self.k()).1 as i64
        } else {
            -1
        };
        let out = if IO::KEEPS_EXP {
            self.row_passes::<S, E, IO, W, T, SHIFTED, true>(i, &kind, io, bufs)
        } else {
            self.row_passes::<S, E, IO, W, T, SHIFTED, false>(i, &kind, io, bufs)
        };
        RowLoss { pred, ..out }
    }

    /// Loss of row `i` and its gradient into `io`'s output, which keeps the exponentials between the passes
    /// itself (f32) or, for the 16-bit types, in the task's `scratch` row ([`ScratchRow`]).
    #[inline(always)]
    fn row_with_output<S: Isa, E: Element, IO: RowIo<E>, const W: bool, const T: bool, const SHIFTED: bool>(
        &self,
        i: usize,
        io: IO,
        scratch: &mut ScratchRow,
        bufs: &mut RowBufs,
    ) -> RowLoss {
        // A constant condition: only one of the two is compiled for each `E` (a choice made at run time
        // compiled both and more than doubled the release build, docs/DESIGN.md).
        if E::STORES_EXP {
            self.row::<S, E, _, W, T, SHIFTED>(i, &mut { io }, bufs)
        } else {
            self.row::<S, E, _, W, T, SHIFTED>(i, &mut WithScratch::new(io, scratch.row()), bufs)
        }
    }

    #[inline(always)]
    fn row_passes<
        S: Isa,
        E: Element,
        IO: RowIo<E>,
        const W: bool,
        const T: bool,
        const SHIFTED: bool,
        const STORE: bool,
    >(
        &self,
        i: usize,
        kind: &RowKind<'_>,
        io: &mut IO,
        bufs: &mut RowBufs,
    ) -> RowLoss {
        let w: &[f32] = self.weights().unwrap_or(&[]);
        let t: &[f32] = match kind {
            RowKind::Soft(t) => t,
            _ => &[],
        };
        let RowBufs { maxima, capped } = bufs;
        // With soft-capping and a gradient, the capped logits are kept beside the exponentials (no `exp` or `tanh`
        // in the gradient pass).
        let aux: &mut [f32] = if STORE && self.cap.is_some() {
            capped.resize(self.k(), 0.0);
            capped
        } else {
            &mut []
        };
        let st = row_stats::<S, E, IO, W, T, SHIFTED, STORE>(io, w, t, self.cap, maxima, aux);
        let (loss, g) = self.finish(i, kind, &st);
        if IO::WRITES {
            grad_row::<S, E, IO, W, T, STORE>(&g, io, maxima, w, t, aux);
        }
        loss
    }
}

/// A task's buffers for its rows, reused from row to row: the chunk maxima of the current row (rows longer than
/// one chunk only), and its capped logits (soft-capping with a gradient only).
#[derive(Default)]
struct RowBufs {
    maxima: Vec<f32>,
    capped: Vec<f32>,
}
