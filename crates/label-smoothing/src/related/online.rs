//! Online label smoothing (Zhang et al. 2021, "Delving deep into label smoothing"): the soft target of class `y`
//! is learnt during training. Over an epoch, the softmax outputs of the correctly classified examples of each
//! class are summed; at the epoch's end each sum is normalised into that class's row of a `K x K` soft-label
//! matrix `S` (a class with no correct example gets the uniform row), used for the next epoch. The loss is
//! `w_hard * CE(z, y) + w_soft * CE(z, S[y])` (the paper's weights: 0.5 and 0.5).
//!
//! Before the first epoch ends, `S` is uniform (our choice; the paper leaves the first epoch's matrix open).
//! [`OnlineLabelSmoothing::state`] and [`OnlineLabelSmoothing::from_state`] save and restore everything, so a
//! resumed training run continues with the same matrix and partial sums.

use super::rowmath::{check_range, check_shape, reduce_rows, Softmax};
use crate::checks::check_labels;
use crate::config::Reduction;
use crate::{Loss, LossError, Result};

/// Everything an [`OnlineLabelSmoothing`] holds, for saving and restoring.
#[derive(Debug, Clone, PartialEq)]
pub struct OlsState {
    /// Classes.
    pub k: usize,
    /// Weight of the hard-label cross-entropy.
    pub hard_weight: f64,
    /// Weight of the cross-entropy against `S[y]`.
    pub soft_weight: f64,
    /// The soft-label matrix in use, `[K, K]` row-major, rows summing to 1.
    pub matrix: Vec<f64>,
    /// This epoch's sums of correct predictions' probabilities, `[K, K]`.
    pub sums: Vec<f64>,
    /// This epoch's count of correct predictions per class, `[K]`.
    pub counts: Vec<u64>,
}

/// The online label-smoothing state and loss.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineLabelSmoothing {
    state: OlsState,
}

impl OnlineLabelSmoothing {
    /// `k` classes, the paper's weights 0.5 / 0.5.
    pub fn new(k: usize) -> Result<Self> {
        Self::with_weights(k, 0.5, 0.5)
    }

    /// `k` classes and the weights of the hard and soft terms (non-negative).
    pub fn with_weights(k: usize, hard_weight: f64, soft_weight: f64) -> Result<Self> {
        if k < 2 {
            return Err(LossError::TooFewClasses { k });
        }
        check_range("hard_weight", hard_weight, 0.0, f64::MAX, "[0, inf)")?;
        check_range("soft_weight", soft_weight, 0.0, f64::MAX, "[0, inf)")?;
        Ok(Self {
            state: OlsState {
                k,
                hard_weight,
                soft_weight,
                matrix: vec![1.0 / k as f64; k * k],
                sums: vec![0.0; k * k],
                counts: vec![0; k],
            },
        })
    }

    /// Restores a saved state (checked for consistency).
    pub fn from_state(state: OlsState) -> Result<Self> {
        let k = state.k;
        let mut fresh = Self::with_weights(k, state.hard_weight, state.soft_weight)?;
        for (what, len, want) in [
            ("matrix", state.matrix.len(), k * k),
            ("sums", state.sums.len(), k * k),
            ("counts", state.counts.len(), k),
        ] {
            if len != want {
                return Err(LossError::Length {
                    what,
                    expected: want.to_string(),
                    got: len,
                });
            }
        }
        fresh.state = state;
        Ok(fresh)
    }

    /// The state, for saving.
    pub fn state(&self) -> &OlsState {
        &self.state
    }

    /// The soft target row of class `y`.
    pub fn soft_target(&self, y: usize) -> &[f64] {
        let k = self.state.k;
        &self.state.matrix[y * k..(y + 1) * k]
    }

    /// Accumulates the softmax outputs of the correctly classified rows of `logits` `[N, K]` (argmax = label).
    pub fn observe(&mut self, logits: &[f32], labels: &[i64]) -> Result<()> {
        let k = self.state.k;
        let n = check_shape(logits.len(), k, None)?;
        self.check_labels(labels, n)?;
        let mut p = vec![0.0f32; k];
        for (z, &y) in logits.chunks(k).zip(labels) {
            let arg = (0..k).fold(0, |a, c| if z[c] > z[a] { c } else { a });
            if arg as i64 != y {
                continue;
            }
            Softmax::of(z, 1.0).probs_into(z, &mut p);
            let y = y as usize;
            for (s, &pc) in self.state.sums[y * k..(y + 1) * k].iter_mut().zip(&p) {
                *s += pc as f64;
            }
            self.state.counts[y] += 1;
        }
        Ok(())
    }

    /// Ends an epoch: the normalised sums become the matrix (uniform rows for classes never correct), and the sums
    /// restart from zero.
    pub fn finish_epoch(&mut self) {
        let k = self.state.k;
        for y in 0..k {
            let row = &self.state.sums[y * k..(y + 1) * k];
            let total: f64 = row.iter().sum();
            let new: Vec<f64> = if self.state.counts[y] == 0 || total <= 0.0 {
                vec![1.0 / k as f64; k]
            } else {
                row.iter().map(|s| s / total).collect()
            };
            self.state.matrix[y * k..(y + 1) * k].copy_from_slice(&new);
        }
        self.state.sums.iter_mut().for_each(|s| *s = 0.0);
        self.state.counts.iter_mut().for_each(|c| *c = 0);
    }

    fn check_labels(&self, labels: &[i64], n: usize) -> Result<()> {
        if labels.len() != n {
            return Err(LossError::Length {
                what: "labels",
                expected: n.to_string(),
                got: labels.len(),
            });
        }
        check_labels(labels, self.state.k, None)
    }

    /// `w_hard * CE(z, y) + w_soft * CE(z, S[y])` of `logits` `[N, K]` and `labels` `[N]`, reduced by `reduction`
    /// (`mean` over `N`); with `grad` (`[N, K]`) also its gradient `(w_hard + w_soft) p - w_hard onehot(y) -
    /// w_soft S[y]` (scaled by the reduction).
    pub fn loss(&self, logits: &[f32], labels: &[i64], reduction: Reduction, grad: Option<&mut [f32]>) -> Result<Loss> {
        let k = self.state.k;
        let n = check_shape(logits.len(), k, grad.as_ref().map(|g| g.len()))?;
        self.check_labels(labels, n)?;
        let (wh, ws) = (self.state.hard_weight, self.state.soft_weight);
        // `wh (lse - z_y) + ws sum_c S_yc (lse - z_c)` (terms with S_yc = 0 count 0); with `g`, the gradient
        // `((wh + ws) p - wh onehot(y) - ws S[y]) * scale`.
        let row = |i: usize, z: &[f32], g: Option<&mut [f32]>, _: &mut [f32], scale: f64| -> f64 {
            let y = labels[i] as usize;
            let sm = Softmax::of(z, 1.0);
            let l = sm.lse();
            let s = self.soft_target(y);
            if let Some(g) = g {
                sm.probs_into(z, g);
                for (gc, &q) in g.iter_mut().zip(s) {
                    *gc = (((wh + ws) * *gc as f64 - ws * q) * scale) as f32;
                }
                g[y] -= (wh * scale) as f32;
            }
            let soft: f64 = s
                .iter()
                .zip(z)
                .filter(|(&q, _)| q != 0.0)
                .map(|(&q, &zc)| q * (l - zc as f64))
                .sum();
            wh * (l - z[y] as f64) + ws * soft
        };
        let (losses, denominator) = reduce_rows(logits, k, grad, reduction, 0, row);
        Ok(match reduction {
            Reduction::None => Loss::PerRow(losses.iter().map(|&l| l as f32).collect()),
            _ => Loss::Scalar((losses.iter().sum::<f64>() / denominator) as f32),
        })
    }
}
