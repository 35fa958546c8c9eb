//! Few classes (`K <=` [`MAX_K`], hard labels): [`LANES`] rows at a time, one row per lane.
//!
//! The row kernel ([`crate::kernel`]) vectorises along a row. With 10 classes a row fills less than one vector,
//! and its cost is the chain of dependent steps every row walks through (max, exponentials, the sums' trees,
//! `ln`, the gradient's scale): about 250 cycles a row, whatever `K`. Here a group of rows is transposed into
//! class-major lane arrays (`z[c][l]`: class `c` of the group's row `l`) so that each step runs for
//! [`LANES`] rows at once, and the per-row scalar work (`CallPlan::finish`, with its `ln`) runs for
//! [`LANES`] independent rows back to back, which the CPU overlaps.
//!
//! **The same bits as the row kernel.** Every value is computed by the operations the row kernel applies to
//! the same row, in the same order: the exact max, `exp(z - max)` with the same function, the per-lane f32
//! sums of the row kernel's accumulators (class `c` adds into position `c % LANES`, in increasing `c`), the
//! same f64 tree over the [`LANES`] positions ([`crate::simd::hsum`]), the same `CallPlan::finish`, and the
//! gradient's `coef * fma(q_scale, p, -w off)` and label entry. A row's result depends on the row alone, not on
//! the group it shares (lanes never mix), so the bits are the same for any split into tasks and any number of
//! threads. Rows the lanes do not handle (an ignored label; every logit `-inf`; a NaN or `+inf` logit, which
//! makes the exponential sum NaN) are left to the row kernel, after the group's gradient is written and before
//! anything of theirs is overwritten. `tests/lanes.rs` checks the bits against the row kernel.

use crate::element::{as_type, Element};
use crate::kernel::{label_grad, CallBuffers, GradRow, RowStats};
use crate::row::{CallPlan, RowKind, RowLoss};
use crate::simd::{exp_in_range, exp_nonpos, Isa, Kernel, Lanes, EXP_RANGE_LO, LANES};
use crate::types::Targets;

/// The most classes a row may have to be processed across the lanes. Above it moving the logits in and the
/// gradient out costs more than the row kernel's per-row overhead saves (measured: docs/BENCHMARKS.md).
pub(crate) const MAX_K: usize = 12;

/// One group of at most [`LANES`] rows, transposed.
struct Group {
    /// `z[c][l]`: the logit of class `c` of row `l`, then (with a gradient) its gradient entry.
    z: [Lanes; MAX_K],
    /// `e[c][l] = exp(z - max)`, kept for the gradient.
    e: [Lanes; MAX_K],
    /// bf16 and f16 logits widened to f32, row-major.
    wide: [f32; LANES * MAX_K],
}

impl Group {
    fn new() -> Box<Self> {
        Box::new(Group {
            z: [[0.0; LANES]; MAX_K],
            e: [[0.0; LANES]; MAX_K],
            wide: [0.0; LANES * MAX_K],
        })
    }

    /// Transposes `rows = z.len() / k <= LANES` rows of `k` logits in; the lanes of missing rows hold 0.
    #[inline(always)]
    fn load<S: Isa, E: Element>(&mut self, z: &[E], k: usize) {
        let rows = z.len() / k;
        debug_assert!(rows <= LANES && k <= MAX_K);
        // f32 is gathered from the logits; the 16-bit types are widened into `wide` first (row-major).
        let src: &[f32] = match as_type::<E, f32>(z) {
            Some(z) => z,
            None => {
                for (d, v) in self.wide.iter_mut().zip(z) {
                    *d = v.to_f32();
                }
                &self.wide[..z.len()]
            }
        };
        for c in 0..k {
            self.z[c] = S::gather(src, c, k, rows);
        }
    }

    /// Transposes the gradient rows out, except those in `skip` (a bit per row).
    #[inline(always)]
    fn store<E: Element>(&self, g: &mut [E], k: usize, skip: u32) {
        for (l, row) in g.chunks_exact_mut(k).enumerate() {
            if skip & (1 << l) != 0 {
                continue;
            }
            for (c, v) in row.iter_mut().enumerate() {
                *v = E::from_f32(self.z[c][l]);
            }
        }
    }

    /// The losses of rows `first..first + rows` into `losses` and, with `OUT`, their gradient into `self.z`.
    /// Returns the rows left to the row kernel (a bit per row).
    #[inline(always)]
    fn compute<S: Isa, const OUT: bool>(
        &mut self,
        plan: &CallPlan<'_>,
        first: usize,
        rows: usize,
        losses: &mut [RowLoss],
    ) -> u32 {
        let k = plan.k();
        #[cfg(feature = "test-hooks")]
        super::test_hooks::GROUPS.set(super::test_hooks::GROUPS.get() + 1);
        let all = (1u32 << rows) - 1;
        let Targets::Labels(labels) = plan.targets else {
            return all;
        };
        // Without class weights, weights of 1: every product with them is exact, so the bits are the row
        // kernel's unweighted ones (and one compiled variant fewer).
        const ONES: [f32; MAX_K] = [1.0; MAX_K];
        let w: &[f32] = plan.weights().unwrap_or(&ONES[..k]);
        assert!(k <= MAX_K && rows <= LANES && losses.len() == rows && first + rows <= labels.len());
        assert!(w.len() == k);

        // The max (and min, for the choice of `exp`). Exact: the order cannot change it.
        let mut mx = [f32::NEG_INFINITY; LANES];
        let mut mn = [f32::INFINITY; LANES];
        for zc in &self.z[..k] {
            for l in 0..LANES {
                mx[l] = if zc[l] > mx[l] { zc[l] } else { mx[l] };
                mn[l] = if zc[l] < mn[l] { zc[l] } else { mn[l] };
            }
        }
        // `exp_in_range` and `exp_nonpos` agree wherever both are defined; the cheaper one when every row allows.
        let in_range = (0..LANES).all(|l| mn[l] - mx[l] >= EXP_RANGE_LO);

        // The row kernel's per-lane accumulators: class `c` adds into position `c % LANES`.
        let mut se = [[0.0f32; LANES]; LANES];
        let mut sh = [[0.0f32; LANES]; LANES];
        for (c, &u) in w.iter().enumerate() {
            let (zc, ec) = (&self.z[c], &mut self.e[c]);
            let pos = c % LANES;
            for l in 0..LANES {
                let d = zc[l] - mx[l];
                let e = if in_range {
                    exp_in_range::<S>(d)
                } else {
                    exp_nonpos::<S>(d)
                };
                ec[l] = e;
                se[pos][l] += e;
                // Computed whether or not the loss uses it (`CallPlan::shifted`); dropped below when it does not.
                sh[pos][l] += if u == 0.0 { 0.0 } else { u * d };
            }
        }
        let sum_exp = tree(&se);
        let shifted = if plan.shifted { tree(&sh) } else { [0.0; LANES] };
        // As the row kernel's `RowStats::mass` (which a one-chunk row's loss does not use).
        let mass = if !plan.shifted {
            0.0
        } else if plan.weights().is_some() {
            let mut ms = [0.0f32; LANES];
            for (c, &u) in w.iter().enumerate() {
                ms[c % LANES] += u;
            }
            crate::simd::hsum(ms)
        } else {
            k as f64
        };

        // Per row: the loss and the gradient's constants (`CallPlan::finish`, f64), or the row left to the row kernel.
        let mut left = 0u32;
        let mut grads = [GradRow {
            max: 0.0,
            sum_exp: 1.0,
            coef: 0.0,
            q_scale: 0.0,
            t_scale: 0.0,
            off: 0.0,
            label: None,
            cap: None,
        }; LANES];
        let (mut coef, mut q_scale, mut off, mut factor) =
            ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
        for l in 0..rows {
            let i = first + l;
            let y = labels[i];
            if Some(y) == plan.ignore() || mx[l] == f32::NEG_INFINITY || sum_exp[l].is_nan() {
                left |= 1 << l;
                continue;
            }
            let y = y as usize;
            let st = RowStats {
                max: mx[l],
                sum_exp: sum_exp[l],
                mass,
                shifted: shifted[l],
                target_mass: 0.0,
                target_shifted: 0.0,
            };
            let (loss, g) = plan.finish(i, &RowKind::Hard { y, zy: self.z[y][l] }, &st);
            losses[l] = loss;
            if OUT {
                coef[l] = g.coef;
                q_scale[l] = g.q_scale;
                off[l] = g.off;
                // One chunk: its max is the row's.
                factor[l] = g.prob_factor(g.max);
                grads[l] = g;
            }
        }
        if !OUT {
            return left;
        }

        // The gradient, as `kernel::grad_value` computes it (no soft targets), over the logits.
        for (c, &u) in w.iter().enumerate() {
            let (ec, out) = (&self.e[c], &mut self.z[c]);
            for l in 0..LANES {
                let wq = u * off[l];
                out[l] = coef[l] * S::fma(q_scale[l], ec[l] * factor[l], -wq);
            }
        }
        // The label's entry, as `kernel::grad_row` writes it last.
        for (l, g) in grads.iter().enumerate().take(rows) {
            if left & (1 << l) != 0 {
                continue;
            }
            if let Some((y, _, _)) = g.label {
                let p_y = self.e[y][l] * factor[l];
                if let Some((y, v)) = label_grad::<S, true>(g, (p_y, 1.0), w) {
                    self.z[y][l] = v;
                }
            }
        }
        left
    }
}

/// [`crate::simd::hsum`] of each of the [`LANES`] rows, whose per-position f32 sums are `v[position][row]`: the
/// same f64 tree (position `j` with `j + 8`, then `+ 4`, `+ 2`, `+ 1`), so the same bits.
#[inline(always)]
fn tree(v: &[Lanes; LANES]) -> [f64; LANES] {
    let mut w = [[0.0f64; LANES]; LANES];
    for (wj, vj) in w.iter_mut().zip(v) {
        for l in 0..LANES {
            wj[l] = vj[l] as f64;
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            let add = w[j + width];
            for l in 0..LANES {
                w[j][l] += add[l];
            }
        }
        width /= 2;
    }
    w[0]
}

/// One group's computation ([`Group::compute`]) as its own out-of-line kernel ([`Isa::outline`]), so that it is
/// compiled once per instruction set rather than once for every element type and call form it is reached from.
struct GroupTask<'a, 'p> {
    grp: &'a mut Group,
    plan: &'a CallPlan<'p>,
    first: usize,
    losses: &'a mut [RowLoss],
    /// A gradient is wanted.
    out: bool,
}

impl Group {
    /// Loads the rows `z` (at most [`LANES`], the first being row `first`) and computes their losses into `losses`
    /// and, with `out`, their gradient into the group: [`GroupTask`], out of line. Returns the rows left to the
    /// row kernel (see [`Group::compute`]).
    #[inline(always)]
    fn run<S: Isa, E: Element>(
        &mut self,
        plan: &CallPlan<'_>,
        first: usize,
        z: &[E],
        losses: &mut [RowLoss],
        out: bool,
    ) -> u32 {
        self.load::<S, E>(z, plan.k());
        S::outline(GroupTask {
            grp: self,
            plan,
            first,
            losses,
            out,
        })
    }
}

impl Kernel for GroupTask<'_, '_> {
    type Output = u32;
    #[inline(always)]
    fn run<S: Isa>(self) -> u32 {
        let rows = self.losses.len();
        if self.out {
            self.grp.compute::<S, true>(self.plan, self.first, rows, self.losses)
        } else {
            self.grp.compute::<S, false>(self.plan, self.first, rows, self.losses)
        }
    }
}

/// The rows `l` whose bit is set in `mask`.
fn bits(mask: u32) -> impl Iterator<Item = usize> {
    (0..LANES).filter(move |&l| mask & (1 << l) != 0)
}

/// The rows of one parallel task (`first` is the first one's index), when [`CallPlan::across_lanes`] holds.
pub(super) struct LanesTask<'a, 'p, E> {
    pub(super) plan: &'a CallPlan<'p>,
    pub(super) first: usize,
    pub(super) bufs: CallBuffers<'a, E>,
    pub(super) losses: &'a mut [RowLoss],
}

impl<E: Element> Kernel for LanesTask<'_, '_, E> {
    type Output = ();
    #[inline(always)]
    fn run<S: Isa>(self) {
        let (plan, first, bufs, losses) = (self.plan, self.first, self.bufs, self.losses);
        let k = plan.k();
        let mut grp = Group::new();
        let span = LANES * k;
        // A row left to the row kernel, through its own dispatched task: inlining the row kernel here would compile
        // it once more (a much longer build) for rows that are rare.
        let by_row = |row: usize, bufs: CallBuffers<'_, E>, loss: &mut RowLoss| {
            plan.rows_one_at_a_time(row, bufs, std::slice::from_mut(loss))
        };
        let mut bufs = bufs;
        for (gi, lg) in losses.chunks_mut(LANES).enumerate() {
            let r0 = first + gi * LANES;
            let mut group = bufs.range(gi * span..gi * span + lg.len() * k);
            let writes = group.writes();
            let left = grp.run::<S, E>(plan, r0, group.logits(), lg, writes);
            // In place, the rows left keep their logits for the row kernel below.
            if let Some(out) = group.output_mut() {
                grp.store(out, k, left);
            }
            for l in bits(left) {
                by_row(r0 + l, group.range(l * k..(l + 1) * k), &mut lg[l]);
            }
        }
    }
}
