//! Knowledge distillation (Hinton, Vinyals and Dean 2015) with a label-smoothed hard-label term:
//!
//! `(1 - beta) * CE_smoothed(student, y) + beta * T^2 * KL(softmax(teacher / T) || softmax(student / T))`,
//!
//! the KL term averaged over the `N` rows (PyTorch's `reduction="batchmean"`). Its gradient with respect to the
//! student's logits is `(1 - beta) * dCE + beta * T * (softmax(student / T) - softmax(teacher / T)) / N`; the
//! teacher is a constant. The hard-label term is the fused kernel with the configuration's options.

use super::rowmath::{check_range, check_shape, rows, Softmax};
use crate::config::Reduction;
use crate::{GradOutput, LabelSmoothingLoss, LossError, Result, Targets};

/// The distillation weight and temperature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistillationConfig {
    /// Weight of the distillation term, in `[0, 1]`.
    pub beta: f32,
    /// Softmax temperature `T > 0` of both teacher and student in the distillation term.
    pub temperature: f32,
}

impl DistillationConfig {
    /// Weight `beta`, temperature `T`.
    pub fn new(beta: f32, temperature: f32) -> Self {
        Self { beta, temperature }
    }
}

/// The distillation loss of `student` logits `[N, K]` against `teacher` logits `[N, K]` and `labels` `[N]`; with
/// `grad` (`[N, K]`) also its gradient with respect to the student's logits.
///
/// `ce` gives the hard-label term (its spread, smoothing, weights, ignore index) and must use the `mean`
/// reduction.
pub fn distillation_loss(
    ce: &LabelSmoothingLoss,
    config: DistillationConfig,
    student: &[f32],
    teacher: &[f32],
    labels: &[i64],
    grad: Option<&mut [f32]>,
) -> Result<f32> {
    check_range("beta", config.beta as f64, 0.0, 1.0, "[0, 1]")?;
    let t = config.temperature as f64;
    if !(t.is_finite() && t > 0.0) {
        return Err(LossError::InvalidParameter {
            name: "temperature",
            value: t,
            expected: "(0, inf)",
        });
    }
    if ce.config().reduction != Reduction::Mean {
        return Err(LossError::Unsupported {
            loss: "distillation",
            option: "a reduction other than mean",
        });
    }
    let k = ce.num_classes();
    let n = check_shape(student.len(), k, grad.as_ref().map(|g| g.len()))?;
    if teacher.len() != student.len() {
        return Err(LossError::Length {
            what: "teacher logits",
            expected: student.len().to_string(),
            got: teacher.len(),
        });
    }
    let beta = config.beta as f64;
    let hard = Targets::Labels(labels);
    let inv_t = (1.0 / t) as f32;
    // KL(pt || ps) of row i = sum pt (log pt - log ps) = sum pt (t_c - s_c) / T - lse(t / T) + lse(s / T), with
    // 0 log 0 = 0; with `g`, also adds `scale * (ps - pt)` to it. `scratch` holds 2K floats.
    let row = |i: usize, s: &[f32], g: Option<&mut [f32]>, scratch: &mut [f32], scale: f32| -> f64 {
        let te = &teacher[i * k..(i + 1) * k];
        let (ss, st) = (Softmax::of(s, inv_t), Softmax::of(te, inv_t));
        let (ps, pt) = scratch.split_at_mut(k);
        st.probs_into(te, pt);
        let dot: f64 = pt
            .iter()
            .zip(te.iter().zip(s))
            .filter(|(&p, _)| p != 0.0)
            .map(|(&p, (&tc, &sc))| p as f64 * (tc as f64 - sc as f64))
            .sum();
        if let Some(g) = g {
            ss.probs_into(s, ps);
            for ((gc, &a), &b) in g.iter_mut().zip(ps.iter()).zip(pt.iter()) {
                *gc += scale * (a - b);
            }
        }
        dot / t - st.lse() + ss.lse()
    };
    let (ce_value, kl) = match grad {
        Some(g) => {
            let value = ce
                .loss_and_grad(student, hard, GradOutput::Scalar((1.0 - beta) as f32), g)?
                .scalar()
                .expect("mean is a scalar") as f64;
            let scale = (beta * t / n.max(1) as f64) as f32;
            let kl = rows(student, k, Some(g), 2 * k, |i, s, g, scratch| {
                row(i, s, g.filter(|_| scale != 0.0), scratch, scale)
            });
            (value, kl)
        }
        None => (
            ce.loss(student, hard)?.scalar().expect("mean is a scalar") as f64,
            rows(student, k, None, 2 * k, |i, s, _, scratch| {
                row(i, s, None, scratch, 0.0)
            }),
        ),
    };
    let kl_mean = kl.iter().sum::<f64>() / n.max(1) as f64;
    Ok(((1.0 - beta) * ce_value + beta * t * t * kl_mean) as f32)
}
