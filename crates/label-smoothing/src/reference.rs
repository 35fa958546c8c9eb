//! A plain, obviously-correct float64 implementation of SPEC.md, for tests and for checking the fused kernel.
//!
//! It materialises every target row and log-probability, exactly as the definition reads; it is slow and
//! allocates `[N, K]` buffers. Inputs are validated like the fused loss's.

use crate::checks::{check_hard_targets, check_logits, check_soft_targets_of};
use crate::config::{LabelSmoothingConfig, Reduction, Smoothing};
use crate::error::Result;

/// Targets in f64.
#[derive(Debug, Clone, Copy)]
pub enum RefTargets<'a> {
    /// Hard labels `[N]`.
    Labels(&'a [i64]),
    /// Soft targets `[N, K]`.
    Soft(&'a [f64]),
}

/// Loss and gradient computed by [`loss_and_grad`].
#[derive(Debug, Clone, PartialEq)]
pub struct RefOutput {
    /// The per-row losses for reduction `none`; otherwise one value (the z-loss term included).
    pub loss: Vec<f64>,
    /// The z-loss term alone, reduced like the loss.
    pub z_loss: Vec<f64>,
    /// `dLoss/dlogits`, `[N, K]`.
    pub grad: Vec<f64>,
}

/// The loss and gradient of SPEC.md in float64.
///
/// `config` as for the fused loss; `k` classes; `logits` `[N, K]`; `grad_output` `None` (1) or `[N]` values
/// (reduction `none`) or one value.
pub fn loss_and_grad(
    config: &LabelSmoothingConfig,
    k: usize,
    logits: &[f64],
    targets: RefTargets<'_>,
    grad_output: Option<&[f64]>,
) -> Result<RefOutput> {
    // Validates K, eps, alpha and the weights, then the shapes and targets as the fused loss does.
    let loss = config.clone().init(k)?;
    let n = check_logits(logits.len(), k)?;
    let w: Vec<f64> = match &config.weights {
        Some(w) => w.iter().map(|&x| x as f64).collect(),
        None => vec![1.0; k],
    };
    match targets {
        RefTargets::Labels(y) => check_hard_targets(loss.config(), y, n, k)?,
        RefTargets::Soft(t) => check_soft_targets_of(loss.config(), t.len(), t.iter().copied(), n, k)?,
    }

    let mut losses = vec![0.0; n];
    let mut zs = vec![0.0; n];
    let mut lses = vec![0.0; n];
    let mut probs = vec![0.0; n * k];
    let mut q = vec![0.0; n * k];
    let mut kept = vec![false; n];
    // Soft-capping: every quantity below is of `cap tanh(z / cap)`, and the gradient carries its slope.
    let capped: Vec<f64> = match config.softcap {
        Some(c) => logits.iter().map(|&v| c as f64 * (v / c as f64).tanh()).collect(),
        None => logits.to_vec(),
    };
    let s = config.z_loss as f64;
    for i in 0..n {
        let z = &capped[i * k..(i + 1) * k];
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        let logp: Vec<f64> = z.iter().map(|&v| v - lse).collect();
        let qi = &mut q[i * k..(i + 1) * k];
        if !smoothed_target(config, targets, i, &logp, qi) {
            continue;
        }
        kept[i] = true;
        // A term with no target mass contributes nothing, even where log p = -inf.
        losses[i] = -(0..k)
            .filter(|&c| w[c] * qi[c] != 0.0)
            .map(|c| w[c] * qi[c] * logp[c])
            .sum::<f64>();
        for c in 0..k {
            probs[i * k + c] = logp[c].exp();
        }
        if s != 0.0 {
            zs[i] = s * lse * lse;
            lses[i] = lse;
        }
    }

    let totals: Vec<f64> = losses.iter().zip(&zs).map(|(l, z)| l + z).collect();
    let denominator = denominator(config, targets, &totals, &kept, &w);
    let z_denominator = z_denominator(config, targets, &kept, denominator);
    let g = |i: usize| -> f64 {
        match grad_output {
            None => 1.0,
            Some(g) if g.len() == 1 => g[0],
            Some(g) => g[i],
        }
    };
    let mut grad = vec![0.0; n * k];
    if denominator != 0.0 {
        for i in (0..n).filter(|&i| kept[i]) {
            let qi = &q[i * k..(i + 1) * k];
            let wq: f64 = (0..k).map(|c| w[c] * qi[c]).sum();
            for c in 0..k {
                let p = probs[i * k + c];
                let mut d = g(i) / denominator * (wq * p - w[c] * qi[c]);
                if s != 0.0 {
                    d += g(i) / z_denominator * 2.0 * s * lses[i] * p;
                }
                if let Some(cap) = config.softcap {
                    let t = (logits[i * k + c] / cap as f64).tanh();
                    d *= 1.0 - t * t;
                }
                grad[i * k + c] = d;
            }
        }
    }
    let (loss, z_loss) = match config.reduction {
        Reduction::None => (totals, zs),
        _ if denominator == 0.0 => (vec![0.0], vec![0.0]),
        _ => {
            let z = zs.iter().sum::<f64>() / z_denominator;
            (vec![losses.iter().sum::<f64>() / denominator + z], vec![z])
        }
    };
    Ok(RefOutput { loss, z_loss, grad })
}

/// The z-loss's denominator `D_z` (SPEC.md, "z-loss"): the reduction's, except for a weighted mean of hard
/// labels, which counts the rows not ignored instead of summing their label weights (Liger-Kernel's rule).
fn z_denominator(config: &LabelSmoothingConfig, targets: RefTargets<'_>, kept: &[bool], denominator: f64) -> f64 {
    match (config.reduction, targets, &config.weights) {
        (Reduction::Mean, RefTargets::Labels(_), Some(_)) => kept.iter().filter(|&&k| k).count().max(1) as f64,
        _ => denominator,
    }
}

/// Row `i`'s smoothed target `q` into `qi` (`K` values), from its label or soft target; `logp` is the row's
/// log-probabilities (for adaptive smoothing). `false` for an ignored row (`qi` untouched).
fn smoothed_target(
    config: &LabelSmoothingConfig,
    targets: RefTargets<'_>,
    i: usize,
    logp: &[f64],
    qi: &mut [f64],
) -> bool {
    let kf = qi.len() as f64;
    match targets {
        RefTargets::Labels(y) => {
            if Some(y[i]) == config.ignore_index {
                return false;
            }
            let y = y[i] as usize;
            let e = match config.smoothing {
                Smoothing::Fixed(e) => e as f64,
                Smoothing::Adaptive { alpha } => alpha as f64 * logp[y].exp(),
            };
            for (c, qc) in qi.iter_mut().enumerate() {
                let one_hot = if c == y { 1.0 } else { 0.0 };
                *qc = match config.spread {
                    crate::Spread::Others => {
                        if c == y {
                            1.0 - e
                        } else {
                            e / (kf - 1.0)
                        }
                    }
                    crate::Spread::Uniform => (1.0 - e) * one_hot + e / kf,
                };
            }
        }
        RefTargets::Soft(t) => {
            let e = match config.smoothing {
                Smoothing::Fixed(e) => e as f64,
                Smoothing::Adaptive { .. } => unreachable!("rejected by the checks"),
            };
            let ti = &t[i * qi.len()..(i + 1) * qi.len()];
            for (qc, &tc) in qi.iter_mut().zip(ti) {
                *qc = match config.spread {
                    crate::Spread::Others => (1.0 - e) * tc + e * (1.0 - tc) / (kf - 1.0),
                    crate::Spread::Uniform => (1.0 - e) * tc + e / kf,
                };
            }
        }
    }
    true
}

/// The reduction's denominator as SPEC.md defines it: 1 for `none` and `sum`; for `mean` the kept rows' label
/// weights (all `N` rows for soft targets); for `mean-nonzero` the rows whose loss is not zero (at least 1).
fn denominator(
    config: &LabelSmoothingConfig,
    targets: RefTargets<'_>,
    losses: &[f64],
    kept: &[bool],
    w: &[f64],
) -> f64 {
    let n = losses.len();
    match config.reduction {
        Reduction::None | Reduction::Sum => 1.0,
        Reduction::Mean => match targets {
            RefTargets::Soft(_) => n as f64,
            RefTargets::Labels(y) => (0..n).filter(|&i| kept[i]).map(|i| w[y[i] as usize]).sum(),
        },
        Reduction::MeanNonZero => losses.iter().filter(|&&l| l != 0.0).count().max(1) as f64,
    }
}
