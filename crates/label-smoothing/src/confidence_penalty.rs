//! The confidence penalty (Pereyra et al. 2017): the label-smoothed cross-entropy minus `beta` times the entropy
//! of the prediction, `CE_smoothed - beta * H(softmax(z))`, which discourages peaked outputs directly.
//!
//! `d(-H)/dz_j = p_j (log p_j + H)`, so the gradient is the cross-entropy's plus `beta * p_j (log p_j + H)`.

use crate::config::Reduction;
use crate::rowmath::{check_range, check_shape, lse, rows};
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
    let base = match grad {
        Some(g) => {
            let base = ce.loss_and_grad(logits, targets, GradOutput::ONE, g)?;
            let b = beta as f64 * scale;
            rows(logits, k, Some(g), |_, z, g| {
                let l = lse(z, 1.0);
                let h = entropy(z, l);
                for (gc, &zc) in g.expect("a gradient row").iter_mut().zip(z) {
                    let log_p = zc as f64 - l;
                    let p = log_p.exp();
                    if p > 0.0 {
                        *gc = (*gc as f64 + b * p * (log_p + h)) as f32;
                    }
                }
                0.0
            });
            base
        }
        None => ce.loss(logits, targets)?,
    };
    let h: Vec<f64> = rows(logits, k, None, |_, z, _| entropy(z, lse(z, 1.0)));
    let b = beta as f64;
    Ok(match base {
        Loss::PerRow(v) => Loss::PerRow(v.iter().zip(&h).map(|(&l, &h)| (l as f64 - b * h) as f32).collect()),
        Loss::Scalar(l) => Loss::Scalar((l as f64 - b * scale * h.iter().sum::<f64>()) as f32),
    })
}

/// `H = -sum p log p` of a row with log-sum-exp `l`.
fn entropy(z: &[f32], l: f64) -> f64 {
    -z.iter()
        .map(|&v| {
            let lp = v as f64 - l;
            let p = lp.exp();
            if p > 0.0 {
                p * lp
            } else {
                0.0
            }
        })
        .sum::<f64>()
}
