//! The related losses composed from candle ops: the definitions of the core crate's `mixup`, `distillation`,
//! `confidence_penalty`, `label_relaxation` and `online` modules, differentiated by candle's autograd, for devices
//! without the core crate's kernels (CUDA, Metal). The functions of [`super`] use them for logits that are not
//! on the CPU; they run on any device, the CPU included (which is how they are tested against the kernels).
//!
//! Each materialises a few `[N, K]` tensors (log-probabilities, a target), computes in f32 and returns a scalar
//! in the logits' dtype. Parameters and labels are checked as the core crate checks them, with the same errors.

use candle_core::{DType, Tensor, D};
use label_smoothing::distillation::DistillationConfig;
use label_smoothing::online::OnlineLabelSmoothing;
use label_smoothing::{LabelSmoothingConfig, LabelSmoothingLoss, LossError, Reduction, Smoothing, Targets};

use crate::composed::{self, log_softmax, one_hot};
use crate::{classes_of, labels_to_host, Error, Result, TargetKind};

/// `-sum_c q_c log p_c` per row, terms with `q_c = 0` counting 0 (even where `log p_c = -inf`): `[N]`.
fn cross_entropy_rows(q: &Tensor, log_p: &Tensor) -> Result<Tensor> {
    let terms = (q * log_p)?;
    let terms = q.ne(0.0)?.where_cond(&terms, &terms.zeros_like()?)?;
    Ok(terms.sum(D::Minus1)?.neg()?)
}

/// Checks labels against `K` (the core crate's error for a label out of range) and returns them on the host.
fn checked_labels(labels: &Tensor, n: usize, k: usize) -> Result<Vec<i64>> {
    let host = labels_to_host(labels)?;
    LabelSmoothingConfig::new()
        .init(k)?
        .validate(n * k, Targets::Labels(&host))?;
    Ok(host)
}

fn in_range(name: &'static str, v: f32, lo: f64, hi: f64, expected: &'static str) -> Result<()> {
    let v = v as f64;
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(Error::Loss(LossError::InvalidParameter {
            name,
            value: v,
            expected,
        }))
    }
}

/// The per-row label-smoothed cross-entropy of `loss`'s spread and smoothing, without its reduction and ignore
/// index: `[N]`, f32.
fn smoothed_rows(loss: &LabelSmoothingLoss, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let mut cfg = loss.config().clone();
    cfg.reduction = Reduction::None;
    cfg.ignore_index = None;
    composed::forward(&cfg.init(loss.num_classes())?, x, labels, TargetKind::Labels)
}

/// Reduces per-row losses to a scalar: `none` and `sum` sum them, `mean` divides by `N`, `mean-nonzero` by the
/// rows with a non-zero loss (at least 1).
fn reduce(rows: Tensor, reduction: Reduction) -> Result<Tensor> {
    Ok(match reduction {
        Reduction::None | Reduction::Sum => rows.sum_all()?,
        Reduction::Mean => rows.mean_all()?,
        Reduction::MeanNonZero => {
            let count = rows.detach().ne(0.0)?.to_dtype(DType::F32)?.sum_all()?.maximum(1.0)?;
            rows.sum_all()?.broadcast_div(&count)?
        }
    })
}

/// [`super::mixed_cross_entropy`] composed from candle ops: `lambda * CE(a) + (1 - lambda) * CE(b)` per row (the
/// loss is linear in the target), reduced by `loss`'s reduction.
pub fn mixed_cross_entropy(
    logits: &Tensor,
    a: &Tensor,
    b: &Tensor,
    lambda: f32,
    loss: &LabelSmoothingLoss,
) -> Result<Tensor> {
    let config = loss.config();
    let unsupported = |option| Error::Loss(LossError::Unsupported { loss: "mixup", option });
    if matches!(config.smoothing, Smoothing::Adaptive { .. }) {
        return Err(unsupported("adaptive smoothing"));
    }
    if config.weights.is_some() {
        return Err(unsupported("class weights"));
    }
    if config.reduction == Reduction::None {
        return Err(Error::Loss(LossError::Unsupported {
            loss: "mixed_cross_entropy",
            option: "reduction none (it returns a scalar)",
        }));
    }
    in_range("lambda", lambda, 0.0, 1.0, "[0, 1]")?;
    let x = logits.to_dtype(DType::F32)?;
    let rows_a = smoothed_rows(loss, &x, a)?;
    let rows_b = smoothed_rows(loss, &x, b)?;
    let rows = ((rows_a * lambda as f64)? + (rows_b * (1.0 - lambda as f64))?)?;
    Ok(reduce(rows, config.reduction)?.to_dtype(logits.dtype())?)
}

/// [`super::distillation`] composed from candle ops.
pub fn distillation(
    logits: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    ce: &LabelSmoothingLoss,
    config: DistillationConfig,
) -> Result<Tensor> {
    in_range("beta", config.beta, 0.0, 1.0, "[0, 1]")?;
    in_range(
        "temperature",
        config.temperature,
        f64::MIN_POSITIVE,
        f64::MAX,
        "(0, inf)",
    )?;
    if ce.config().reduction != Reduction::Mean {
        return Err(Error::Loss(LossError::Unsupported {
            loss: "distillation",
            option: "a reduction other than mean",
        }));
    }
    if teacher.dims() != logits.dims() {
        return Err(Error::Shape {
            what: "teacher logits",
            expected: format!("{:?}", logits.dims()),
            got: teacher.dims().to_vec(),
        });
    }
    let (n, _) = logits.dims2()?;
    let x = logits.to_dtype(DType::F32)?;
    let hard = composed::forward(ce, &x, labels, TargetKind::Labels)?;
    let t = config.temperature as f64;
    let log_ps = log_softmax(&(&x / t)?)?;
    let log_pt = log_softmax(&(teacher.to_dtype(DType::F32)?.detach() / t)?)?.detach();
    let pt = log_pt.exp()?;
    // KL(pt || ps) = sum pt (log pt - log ps), with 0 log 0 = 0.
    let terms = (&pt * (&log_pt - &log_ps)?)?;
    let terms = pt.ne(0.0)?.where_cond(&terms, &terms.zeros_like()?)?;
    let kl = (terms.sum_all()? / n.max(1) as f64)?;
    let beta = config.beta as f64;
    let out = ((hard * (1.0 - beta))? + (kl * (beta * t * t))?)?;
    Ok(out.to_dtype(logits.dtype())?)
}

/// [`super::confidence_penalty`] composed from candle ops.
pub fn confidence_penalty(logits: &Tensor, labels: &Tensor, ce: &LabelSmoothingLoss, beta: f32) -> Result<Tensor> {
    in_range("beta", beta, 0.0, f64::MAX, "[0, inf)")?;
    let config = ce.config();
    let host = labels_to_host(labels)?;
    if config.weights.is_some() || config.ignore_index.is_some_and(|i| host.contains(&i)) {
        return Err(Error::Loss(LossError::Unsupported {
            loss: "the confidence penalty",
            option: "class weights or ignored rows",
        }));
    }
    if config.reduction == Reduction::MeanNonZero {
        return Err(Error::Loss(LossError::Unsupported {
            loss: "the confidence penalty",
            option: "the mean-nonzero reduction",
        }));
    }
    let x = logits.to_dtype(DType::F32)?;
    let ce_rows = smoothed_rows(ce, &x, labels)?;
    let log_p = log_softmax(&x)?;
    let p = log_p.exp()?;
    // H = -sum p log p, with 0 log 0 = 0.
    let entropy = cross_entropy_rows(&p, &log_p)?;
    let rows = (ce_rows - (entropy * beta as f64)?)?;
    Ok(reduce(rows, config.reduction)?.to_dtype(logits.dtype())?)
}

/// [`super::label_relaxation`] composed from candle ops (the relaxed target held constant, as in the core crate).
pub fn label_relaxation(logits: &Tensor, labels: &Tensor, alpha: f32) -> Result<Tensor> {
    in_range("alpha", alpha, 0.0, 1.0, "[0, 1]")?;
    let k = classes_of(logits)?;
    let (n, _) = logits.dims2()?;
    let host = checked_labels(labels, n, k)?;
    let x = logits.to_dtype(DType::F32)?;
    let log_p = log_softmax(&x)?;
    let p = log_p.exp()?.detach();
    let hot = one_hot(&host, k, &x)?;
    let a = alpha as f64;
    let py = (&p * &hot)?.sum_keepdim(D::Minus1)?;
    // Rows already giving the label at least 1 - alpha are accepted: zero target, zero loss, zero gradient.
    let keep = py.lt(1.0 - a)?.broadcast_as((n, k))?;
    let off = p
        .broadcast_div(&py.affine(-1.0, 1.0)?.maximum(f32::MIN_POSITIVE)?)?
        .affine(a, 0.0)?;
    let r = ((&hot * (1.0 - a))? + (hot.affine(-1.0, 1.0)? * off)?)?;
    let r = keep.where_cond(&r, &r.zeros_like()?)?;
    // KL(r || p) = sum r log r - sum r log p.
    let r_log_r = r
        .ne(0.0)?
        .where_cond(&(&r * r.log()?)?, &r.zeros_like()?)?
        .sum(D::Minus1)?;
    let rows = (r_log_r + cross_entropy_rows(&r, &log_p)?)?;
    Ok(rows.mean_all()?.to_dtype(logits.dtype())?)
}

/// [`super::online_label_smoothing`] composed from candle ops: the soft-label matrix is copied to the logits'
/// device (`K x K` f32).
pub fn online_label_smoothing(logits: &Tensor, labels: &Tensor, state: &OnlineLabelSmoothing) -> Result<Tensor> {
    let s = state.state();
    let k = s.k;
    let (n, lk) = logits.dims2()?;
    if lk != k {
        return Err(Error::Shape {
            what: "logits",
            expected: format!("[N, {k}]"),
            got: logits.dims().to_vec(),
        });
    }
    let host = checked_labels(labels, n, k)?;
    let x = logits.to_dtype(DType::F32)?;
    let matrix: Vec<f32> = s.matrix.iter().map(|&v| v as f32).collect();
    let matrix = Tensor::from_vec(matrix, (k, k), x.device())?;
    let idx = Tensor::from_vec(host.iter().map(|&y| y as u32).collect::<Vec<u32>>(), n, x.device())?;
    let soft = matrix.index_select(&idx, 0)?;
    let q = ((one_hot(&host, k, &x)? * s.hard_weight)? + (soft * s.soft_weight)?)?;
    let rows = cross_entropy_rows(&q, &log_softmax(&x)?)?;
    Ok(rows.mean_all()?.to_dtype(logits.dtype())?)
}
