//! Knowledge distillation (Hinton, Vinyals and Dean 2015) with a label-smoothed hard-label term:
//!
//! `(1 - beta) * CE_smoothed(student, y) + beta * T^2 * KL(softmax(teacher / T) || softmax(student / T))`,
//!
//! the KL term averaged over the `N` rows (PyTorch's `reduction="batchmean"`). Its gradient with respect to the
//! student's logits is `(1 - beta) * dCE + beta * T * (softmax(student / T) - softmax(teacher / T)) / N`; the
//! teacher is a constant. The hard-label term is the fused kernel with the configuration's options.

use crate::config::Reduction;
use crate::rowmath::{check_range, check_shape, lse, rows};
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
    let ce_value = match grad {
        Some(g) => {
            let value = ce
                .loss_and_grad(student, hard, GradOutput::Scalar((1.0 - beta) as f32), g)?
                .scalar()
                .expect("mean is a scalar") as f64;
            let scale = beta * t / n.max(1) as f64;
            if scale != 0.0 {
                student
                    .chunks(k)
                    .zip(teacher.chunks(k))
                    .zip(g.chunks_mut(k))
                    .for_each(|((s, te), g)| {
                        let (ls, lt) = (lse(s, t), lse(te, t));
                        for ((gc, &sc), &tc) in g.iter_mut().zip(s).zip(te) {
                            let ps = (sc as f64 / t - ls).exp();
                            let pt = (tc as f64 / t - lt).exp();
                            *gc = (*gc as f64 + scale * (ps - pt)) as f32;
                        }
                    });
            }
            value
        }
        None => ce.loss(student, hard)?.scalar().expect("mean is a scalar") as f64,
    };
    // KL(pt || ps) per row: sum pt (log pt - log ps), with 0 log 0 = 0.
    let teacher_rows: Vec<&[f32]> = teacher.chunks(k).collect();
    let kl = rows(student, k, None, |i, s, _| {
        let te = teacher_rows[i];
        let (ls, lt) = (lse(s, t), lse(te, t));
        te.iter()
            .zip(s)
            .map(|(&tc, &sc)| {
                let log_pt = tc as f64 / t - lt;
                let pt = log_pt.exp();
                if pt == 0.0 {
                    0.0
                } else {
                    pt * (log_pt - (sc as f64 / t - ls))
                }
            })
            .sum()
    });
    let kl_mean = kl.iter().sum::<f64>() / n.max(1) as f64;
    Ok(((1.0 - beta) * ce_value + beta * t * t * kl_mean) as f32)
}
