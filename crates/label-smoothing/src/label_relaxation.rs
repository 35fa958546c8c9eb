//! Label relaxation (Lienen and Hüllermeier 2021): instead of a fixed smoothed target, any prediction that gives
//! the label at least `1 - alpha` is acceptable. The loss is 0 for such a prediction; otherwise it is
//! `KL(p_r || p)`, where `p_r` is the acceptable distribution closest to `p`: `p_r[y] = 1 - alpha` and
//! `p_r[c] = alpha * p[c] / (1 - p[y])` elsewhere. As in the authors' implementation, `p_r` is held constant for
//! the gradient, which is then `p - p_r` (zero for accepted rows).

use crate::config::Reduction;
use crate::loss::check_labels;
use crate::rowmath::{check_range, check_shape, lse, rows};
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
    // Per row: (loss, log-sum-exp, p_y).
    let stats: Vec<(f64, f64, f64)> = logits
        .chunks(k)
        .zip(labels)
        .map(|(z, &y)| {
            let l = lse(z, 1.0);
            let py = (z[y as usize] as f64 - l).exp();
            if py >= 1.0 - a {
                return (0.0, l, py);
            }
            let rest = 1.0 - py;
            let loss = z
                .iter()
                .enumerate()
                .map(|(c, &zc)| {
                    let log_p = zc as f64 - l;
                    let r = if c == y as usize {
                        1.0 - a
                    } else {
                        a * log_p.exp() / rest
                    };
                    if r > 0.0 {
                        r * (r.ln() - log_p)
                    } else {
                        0.0
                    }
                })
                .sum();
            (loss, l, py)
        })
        .collect();
    let denominator = match reduction {
        Reduction::None | Reduction::Sum => 1.0,
        Reduction::Mean => n.max(1) as f64,
        Reduction::MeanNonZero => stats.iter().filter(|s| s.0 != 0.0).count().max(1) as f64,
    };
    if let Some(g) = grad {
        rows(logits, k, Some(g), |i, z, g| {
            let g = g.expect("a gradient row");
            let (_, l, py) = stats[i];
            let y = labels[i] as usize;
            for (c, (gc, &zc)) in g.iter_mut().zip(z).enumerate() {
                *gc = if py >= 1.0 - a {
                    0.0
                } else {
                    let p = (zc as f64 - l).exp();
                    let r = if c == y { 1.0 - a } else { a * p / (1.0 - py) };
                    ((p - r) / denominator) as f32
                };
            }
            0.0
        });
    }
    Ok(match reduction {
        Reduction::None => Loss::PerRow(stats.iter().map(|s| s.0 as f32).collect()),
        _ => Loss::Scalar((stats.iter().map(|s| s.0).sum::<f64>() / denominator) as f32),
    })
}
