//! Label relaxation (Lienen and Hüllermeier 2021): instead of a fixed smoothed target, any prediction that gives
//! the label at least `1 - alpha` is acceptable. The loss is 0 for such a prediction; otherwise it is
//! `KL(p_r || p)`, where `p_r` is the acceptable distribution closest to `p`: `p_r[y] = 1 - alpha` and
//! `p_r[c] = alpha * p[c] / (1 - p[y])` elsewhere. As in the authors' implementation, `p_r` is held constant for
//! the gradient, which is then `p - p_r` (zero for accepted rows).

use super::rowmath::{check_range, check_shape, reduce_rows, Softmax};
use crate::checks::check_labels;
use crate::config::Reduction;
use crate::{Loss, LossError, Result};

/// Label relaxation with parameter `alpha` in `[0, 1]` of `logits` `[N, K]` and `labels` `[N]`; with `grad`
/// (`[N, K]`) also its gradient. `reduction`: `none`, `sum`, `mean` (over `N`) or `mean-nonzero`.
pub fn label_relaxation_loss(
    alpha: f32,
    reduction: Reduction,
    k: usize,
    logits: &[f32],
    labels: &[i64],
    grad: Option<&mut [f32]>,
) -> Result<Loss> {
    check_range("alpha", alpha as f64, 0.0, 1.0, "[0, 1]")?;
    let n = check_shape(logits.len(), k, grad.as_ref().map(|g| g.len()))?;
    if labels.len() != n {
        return Err(LossError::Length {
            what: "labels",
            expected: n.to_string(),
            got: labels.len(),
        });
    }
    check_labels(labels, k, None)?;
    let a = alpha as f64;
    // The loss of row i in closed form: with `log p_y = z_y - lse` and `p_r` as above,
    // `KL(p_r || p) = (1 - a) (ln(1 - a) - log p_y) + a ln(a / (1 - p_y))` (the off-label terms share one log
    // ratio and their weights sum to `a`). With `g`, also its gradient `(p - p_r) * scale`:
    // `p_c (1 - a / (1 - p_y))` off the label and `p_y - (1 - a)` on it.
    let row = |i: usize, z: &[f32], g: Option<&mut [f32]>, scale: f64| -> f64 {
        let y = labels[i] as usize;
        let sm = Softmax::of(z, 1.0);
        let log_py = z[y] as f64 - sm.lse();
        let py = log_py.exp();
        let accepted = py >= 1.0 - a;
        if let Some(g) = g {
            if accepted {
                g.iter_mut().for_each(|gc| *gc = 0.0);
            } else {
                sm.probs_into(z, g);
                let factor = ((1.0 - a / (1.0 - py)) * scale) as f32;
                g.iter_mut().for_each(|gc| *gc *= factor);
                g[y] = ((py - (1.0 - a)) * scale) as f32;
            }
        }
        if accepted {
            return 0.0;
        }
        let xlogx = |x: f64, r: f64| if x > 0.0 { x * r.ln() } else { 0.0 };
        xlogx(1.0 - a, 1.0 - a) - (1.0 - a) * log_py + xlogx(a, a / (1.0 - py))
    };
    let (losses, denominator) = reduce_rows(logits, k, grad, reduction, 0, |i, z, g, _, scale| row(i, z, g, scale));
    Ok(match reduction {
        Reduction::None => Loss::PerRow(losses.iter().map(|&l| l as f32).collect()),
        _ => Loss::Scalar((losses.iter().sum::<f64>() / denominator) as f32),
    })
}
