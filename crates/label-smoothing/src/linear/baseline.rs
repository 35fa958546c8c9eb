//! What the fused linear loss is measured against: the unfused composition (materialised logits, the fused
//! loss on them, two more products) and the three products alone (the floor). Both use the same products as
//! [`LinearCrossEntropy`], so a benchmark compares the schedules, not two matrix libraries.

use super::products::{self, ClassGrads};
use super::{LinearCrossEntropy, LinearGrads, LinearInputs};
use crate::error::Result;
use crate::types::{GradOutput, Loss, Targets};

/// The same loss and gradients as [`LinearCrossEntropy::loss_and_grad`], computed the usual way: the `[N, K]`
/// logits `x W^T (+ b)`, the fused loss writing their `[N, K]` gradient `G` into a second buffer, then
/// `grad_x = G W`, `grad_W = G^T x`, `grad_b = sum_rows G`. Holds `8 N K` bytes of scratch.
pub fn unfused(
    lce: &LinearCrossEntropy,
    inputs: LinearInputs<'_>,
    labels: &[i64],
    grad_output: GradOutput<'_>,
    grads: LinearGrads<'_>,
) -> Result<Loss> {
    let n = lce.check(&inputs, labels, &grad_output, &grads)?;
    let (k, d) = (lce.loss_fn().num_classes(), lce.hidden());
    let mut logits = vec![0.0f32; n * k];
    products::logits(inputs.x, inputs.weight, inputs.bias, d, k, &mut logits);
    let mut g = vec![0.0f32; n * k];
    let loss = lce
        .loss_fn()
        .loss_and_grad(&logits, Targets::Labels(labels), grad_output, &mut g)?;
    if let Some(gx) = grads.x {
        products::grad_input(&g, inputs.weight, d, k, false, gx);
    }
    let mut bias_acc = grads.bias.as_ref().map(|_| vec![0.0f64; k]);
    let out = ClassGrads {
        weight: grads.weight,
        bias: bias_acc.as_deref_mut(),
    };
    products::grad_weight(&g, inputs.x, d, k, false, out);
    if let (Some(gb), Some(acc)) = (grads.bias, bias_acc) {
        gb.iter_mut().zip(acc).for_each(|(g, a)| *g = a as f32);
    }
    Ok(loss)
}

/// The three products of the loss alone, on full `[N, K]` buffers and with no loss between them: the logits
/// `x W^T`, then `grad_x = L W` and `grad_W = L^T x` with the logits `L` standing in for their gradient. The
/// time no schedule of these products can beat.
pub fn gemms_only(lce: &LinearCrossEntropy, inputs: LinearInputs<'_>, grad_x: &mut [f32], grad_weight: &mut [f32]) {
    let (k, d) = (lce.loss_fn().num_classes(), lce.hidden());
    let n = inputs.x.len() / d;
    let mut logits = vec![0.0f32; n * k];
    products::logits(inputs.x, inputs.weight, None, d, k, &mut logits);
    products::grad_input(&logits, inputs.weight, d, k, false, grad_x);
    let out = ClassGrads {
        weight: Some(grad_weight),
        bias: None,
    };
    products::grad_weight(&logits, inputs.x, d, k, false, out);
}
