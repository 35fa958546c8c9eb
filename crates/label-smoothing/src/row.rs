//! One row's loss in f64, and what its gradient pass needs, from the row's [`RowStats`].

use crate::config::{Smoothing, Spread};
use crate::element::Element;
use crate::kernel::{Cap, GradRow, RowIo, RowStats};
use crate::loss::LabelSmoothingLoss;
use crate::types::{GradOutput, Targets};

/// Per-call constants of the row computation: the loss, and what this call adds to it.
pub(crate) struct CallPlan<'a> {
    pub(crate) loss: &'a LabelSmoothingLoss,
    pub(crate) targets: Targets<'a>,
    pub(crate) grad_output: GradOutput<'a>,
    /// Row `i`'s gradient is scaled by `scale * g_i` (`scale` is `1 / D` for the means).
    pub(crate) scale: f64,
    /// The `shifted` sums are needed (the smoothing can be non-zero).
    pub(crate) shifted: bool,
    /// Rows go across the SIMD lanes ([`lanes`]): hard labels and at most [`lanes::MAX_K`] classes.
    pub(crate) across_lanes: bool,
    /// The soft-capping of the logits, if configured.
    pub(crate) cap: Option<Cap>,
    /// The z-loss scale `s` (0: none).
    pub(crate) z_loss: f64,
    /// Each row's arg-max is wanted (the predicted class, for the accuracy).
    pub(crate) argmax: bool,
    /// `D / D_z`: the z-loss term of a row enters the row's loss times this, so that the call's reduction
    /// (`/ D`) divides it by its own denominator `D_z` (SPEC.md, "z-loss"). 1 except for a weighted mean.
    pub(crate) z_ratio: f64,
}

/// A row's loss as the reduction sees it (`ce + z_ratio * z`), its z-loss term `z = s * lse^2`, and the class of
/// its largest logit (-1 when not asked for, or for an ignored row).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowLoss {
    pub(crate) loss: f64,
    pub(crate) z: f64,
    pub(crate) pred: i64,
}

impl Default for RowLoss {
    fn default() -> Self {
        RowLoss {
            loss: 0.0,
            z: 0.0,
            pred: -1,
        }
    }
}

/// The per-row quantities that the loss and the gradient need besides the statistics.
pub(crate) enum RowKind<'a> {
    Ignored,
    Hard { y: usize, zy: f32 },
    Soft(&'a [f32]),
}

impl<'a> CallPlan<'a> {
    /// The plan of a call of `loss` on `targets`, each row's gradient scaled by `scale` and its upstream gradient.
    pub(crate) fn new(
        loss: &'a LabelSmoothingLoss,
        targets: Targets<'a>,
        grad_output: GradOutput<'a>,
        scale: f64,
        across_lanes: bool,
    ) -> Self {
        let config = loss.config();
        CallPlan {
            loss,
            targets,
            grad_output,
            scale,
            shifted: !matches!(config.smoothing, Smoothing::Fixed(e) if e == 0.0),
            across_lanes,
            cap: config.softcap.map(Cap::new),
            z_loss: config.z_loss as f64,
            z_ratio: 1.0,
            argmax: false,
        }
    }

    /// The same plan with the z-loss entering each row's loss times `z_ratio` (see [`CallPlan::z_ratio`]).
    pub(crate) fn with_z_ratio(mut self, z_ratio: f64) -> Self {
        self.z_ratio = z_ratio;
        self
    }

    /// The number of classes `K`.
    #[inline(always)]
    pub(crate) fn k(&self) -> usize {
        self.loss.num_classes()
    }

    #[inline(always)]
    pub(crate) fn spread(&self) -> Spread {
        self.loss.config().spread
    }

    #[inline(always)]
    pub(crate) fn smoothing(&self) -> Smoothing {
        self.loss.config().smoothing
    }

    #[inline(always)]
    pub(crate) fn ignore(&self) -> Option<i64> {
        self.loss.config().ignore_index
    }

    /// The class weights `[K]` the kernels use, if any: the configured ones divided by a power of two when they
    /// are far from 1 (`LabelSmoothingLoss::kernel_weights`), which [`Self::finish`] and [`Self::row_coef`]
    /// multiply back.
    #[inline(always)]
    pub(crate) fn weights(&self) -> Option<&'a [f32]> {
        self.loss.kernel_weights()
    }

    /// `sum_c u_c` of [`Self::weights`] in f64 (`K` without weights).
    #[inline(always)]
    pub(crate) fn weight_total(&self) -> f64 {
        self.loss.weight_total()
    }
    pub(crate) fn row_kind<E: Element, IO: RowIo<E>>(&self, i: usize, io: &IO) -> RowKind<'_> {
        match self.targets {
            Targets::Labels(labels) => {
                if Some(labels[i]) == self.ignore() {
                    RowKind::Ignored
                } else {
                    let y = labels[i] as usize;
                    RowKind::Hard { y, zy: io.load(y) }
                }
            }
            Targets::Soft(t) => RowKind::Soft(&t[i * self.k()..(i + 1) * self.k()]),
        }
    }

    pub(crate) fn row_coef(&self, i: usize) -> f64 {
        let g = match self.grad_output {
            GradOutput::Scalar(g) => g as f64,
            GradOutput::PerRow(g) => g[i] as f64,
        };
        g * self.scale * self.loss.weight_scale()
    }

    /// The loss of a row and what its gradient pass needs, from its statistics (of the capped logits, with a cap).
    pub(crate) fn finish(&self, i: usize, kind: &RowKind<'_>, st: &RowStats) -> (RowLoss, GradRow) {
        let ln_s = st.sum_exp.ln();
        let mut g = GradRow {
            max: st.max,
            sum_exp: st.sum_exp,
            coef: self.row_coef(i) as f32,
            q_scale: 1.0,
            t_scale: 0.0,
            off: 0.0,
            label: None,
            cap: self.cap,
        };
        let w_all = self.weight_total();
        let loss = match *kind {
            RowKind::Ignored => return (RowLoss::default(), g),
            RowKind::Hard { y, zy } => {
                // With a cap, the label's capped logit in f64 (the same on every instruction set), and `d_y`
                // at most 0 although `st.max` was capped in f32: `-log p_y` is never negative.
                let (zy_c, d_y) = match self.cap {
                    Some(cap) => {
                        let zc = cap.apply_f64(zy);
                        (zc, (zc - st.max as f64).min(0.0))
                    }
                    None => (zy as f64, zy as f64 - st.max as f64),
                };
                let e = match self.smoothing() {
                    Smoothing::Fixed(e) => e as f64,
                    Smoothing::Adaptive { alpha } => alpha as f64 * (d_y.exp() / st.sum_exp),
                };
                let (off, on) = self.spread().hard_target(e, self.k());
                let w_y = self.weights().map_or(1.0, |w| w[y] as f64);
                if self.weights().is_some() {
                    g.q_scale = (off * w_all + (on - off) * w_y) as f32;
                }
                g.off = off as f32;
                g.label = Some((y, zy, on as f32));
                let spread_term = if off != 0.0 {
                    off * (w_all * ln_s - st.shifted)
                } else {
                    0.0
                };
                // -log p_y as the definition computes it, `lse - z_y`: a row fit to within f64 round-off of
                // `lse` has a loss of exactly 0, as in PyTorch and fast-reid, which matters to `mean-nonzero`.
                let nll_y = if self.cap.is_some() {
                    ln_s - d_y
                } else {
                    (st.max as f64 + ln_s) - zy_c
                };
                spread_term + (on - off) * w_y * nll_y
            }
            RowKind::Soft(_) => {
                let e = match self.smoothing() {
                    Smoothing::Fixed(e) => e as f64,
                    Smoothing::Adaptive { .. } => 0.0, // rejected by `check`
                };
                let (t_scale, off) = self.spread().soft_target(e, self.k());
                g.q_scale = (t_scale * st.target_mass + off * w_all) as f32;
                g.t_scale = t_scale as f32;
                g.off = off as f32;
                // `ln_s` as the definition's `lse - max` rounds it: a row fit to within f64 round-off of `lse` (all
                // its target mass on classes at the max) has a loss of exactly 0, as for hard labels, which matters
                // to `mean-nonzero`.
                let ln_s_def = if st.max.is_finite() {
                    (st.max as f64 + ln_s) - st.max as f64
                } else {
                    ln_s
                };
                let target_term = if t_scale != 0.0 {
                    t_scale * (st.target_mass * ln_s_def - st.target_shifted)
                } else {
                    0.0
                };
                let spread_term = if off != 0.0 {
                    off * (w_all * ln_s - st.shifted)
                } else {
                    0.0
                };
                target_term + spread_term
            }
        };
        let ce = loss * self.loss.weight_scale();
        if self.z_loss == 0.0 {
            return (
                RowLoss {
                    loss: ce,
                    ..RowLoss::default()
                },
                g,
            );
        }
        // z-loss: `s lse^2` on the row's loss, `2 s lse p_c` on its gradient. The gradient pass writes
        // `coef (q_scale p_c - ...)` with `coef = g scale weight_scale`, and the z-term's gradient is
        // `g scale z_ratio 2 s lse p_c`, so it adds `2 s lse z_ratio / weight_scale` to `q_scale`.
        let lse = st.max as f64 + ln_s;
        let z = self.z_loss * lse * lse;
        g.q_scale = (g.q_scale as f64 + 2.0 * self.z_loss * lse * self.z_ratio / self.loss.weight_scale()) as f32;
        (
            RowLoss {
                loss: ce + self.z_ratio * z,
                z,
                pred: -1,
            },
            g,
        )
    }
}
