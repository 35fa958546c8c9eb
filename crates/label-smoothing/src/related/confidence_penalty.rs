//! The confidence penalty (Pereyra et al. 2017): the label-smoothed cross-entropy minus `beta` times the entropy
//! of the prediction, `CE_smoothed - beta * H(softmax(z))`, which discourages peaked outputs directly.
//!
//! `d(-H)/dz_j = p_j (log p_j + H)`, so the gradient is the cross-entropy's plus `beta * p_j (log p_j + H)`.

use super::rowmath::{check_range, check_shape, rows, Softmax};
use crate::config::Reduction;
use crate::{GradOutput, LabelSmoothingLoss, Loss, LossError, Result, Targets};

/// `CE_smoothed(z, y) - beta * H(softmax(z))` of `logits` `[N, K]` and `labels` `[N]`; with `grad` (`[N, K]`)
/// also its gradient.
///
/// `ce` gives the cross-entropy term; reductions `none`, `sum` and `mean` (over the `N` rows) are supported, without
/// class weights or ignored rows (whose denominators the entropy term has no counterpart for).
pub fn confidence_penalty_loss(
    ce: &LabelSmoothingLoss,
    beta: f32,
    logits: &[f32],
    labels: &[i64],
    grad: Option<&mut [f32]>,
) -> Result<Loss> {
    check_range("beta", beta as f64, 0.0, f64::MAX, "[0, inf)")?;
    let config = ce.config();
    let ignored = config.ignore_index.is_some_and(|i| labels.contains(&i));
    if config.weights.is_some() || ignored {
        return Err(LossError::Unsupported {
            loss: "the confidence penalty",
            option: "class weights or ignored rows",
        });
    }
    if config.reduction == Reduction::MeanNonZero {
        return Err(LossError::Unsupported {
            loss: "the confidence penalty",
            option: "the mean-nonzero reduction",
        });
    }
    let k = ce.num_classes();
    let n = check_shape(logits.len(), k, grad.as_ref().map(|g| g.len()))?;
    let scale = match config.reduction {
        Reduction::Mean => 1.0 / n.max(1) as f64,
        _ => 1.0,
    };
    let targets = Targets::Labels(labels);
    // The entropy of a row; with `g`, also adds `b * p (log p + H)` to it. `scratch` holds K floats.
    let row = |z: &[f32], g: Option<&mut [f32]>, p: &mut [f32], b: f64| -> f64 {
        let sm = Softmax::of(z, 1.0);
        let l = sm.lse();
        sm.probs_into(z, p);
        let h = -p
            .iter()
            .zip(z)
            .filter(|(&p, _)| p > 0.0)
            .map(|(&p, &zc)| p as f64 * (zc as f64 - l))
            .sum::<f64>();
        if let Some(g) = g {
            for ((gc, &pc), &zc) in g.iter_mut().zip(p.iter()).zip(z) {
                if pc > 0.0 {
                    *gc = (*gc as f64 + b * pc as f64 * (zc as f64 - l + h)) as f32;
                }
            }
        }
        h
    };
    let (base, h) = match grad {
        Some(g) => {
            let base = ce.loss_and_grad(logits, targets, GradOutput::ONE, g)?;
            let b = beta as f64 * scale;
            (base, rows(logits, k, Some(g), k, |_, z, g, p| row(z, g, p, b)))
        }
        None => (
            ce.loss(logits, targets)?,
            rows(logits, k, None, k, |_, z, _, p| row(z, None, p, 0.0)),
        ),
    };
    let b = beta as f64;
    Ok(match base {
        Loss::PerRow(v) => Loss::PerRow(v.iter().zip(&h).map(|(&l, &h)| (l as f64 - b * h) as f32).collect()),
        Loss::Scalar(l) => Loss::Scalar((l as f64 - b * scale * h.iter().sum::<f64>()) as f32),
    })
}
