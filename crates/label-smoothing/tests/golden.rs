//! Every golden case (computed in float64 with PyTorch autograd, cross-checked against `F.cross_entropy` and
//! fast-reid's `cross_entropy_loss`) through the three calls of the fused loss and through the f64 reference.

mod common;

use common::{assert_grad_close, assert_loss_close, golden_cases};
use label_smoothing::reference::{self, RefTargets};
use label_smoothing::{GradOutput, Targets};

#[test]
fn golden_cases_fused_and_reference() {
    let cases = golden_cases();
    assert_eq!(cases.len(), 133, "the golden file holds 133 cases");
    for case in &cases {
        let name = case.name.as_str();
        let cfg = case.config();
        let loss_fn = cfg.clone().init(case.k).unwrap_or_else(|e| panic!("{name}: init: {e}"));
        let logits: Vec<f32> = case.logits.iter().map(|&x| x as f32).collect();
        let soft: Option<Vec<f32>> = case
            .soft_targets
            .as_ref()
            .map(|t| t.iter().map(|&x| x as f32).collect());
        let targets = match (&case.targets, &soft) {
            (Some(y), None) => Targets::Labels(y),
            (None, Some(t)) => Targets::Soft(t),
            _ => panic!("{name}: exactly one of targets / soft_targets"),
        };
        let go32: Option<Vec<f32>> = case.grad_output.as_ref().map(|g| g.iter().map(|&x| x as f32).collect());
        let grad_output = match &go32 {
            Some(g) => GradOutput::PerRow(g),
            None => GradOutput::ONE,
        };
        let want_loss = case.expected_loss();

        let fwd = loss_fn.loss(&logits, targets).unwrap();
        assert_loss_close(&format!("{name} (loss)"), fwd.as_slice(), &want_loss);

        let mut grad = vec![f32::NAN; logits.len()];
        let l2 = loss_fn.loss_and_grad(&logits, targets, grad_output, &mut grad).unwrap();
        assert_loss_close(&format!("{name} (loss_and_grad)"), l2.as_slice(), &want_loss);
        assert_grad_close(&format!("{name} (loss_and_grad)"), &grad, &case.expected_grad);

        let mut inplace = logits.clone();
        let l3 = loss_fn
            .loss_and_grad_in_place(&mut inplace, targets, grad_output)
            .unwrap();
        assert_eq!(l3, l2, "{name}: in place and buffer give the same loss");
        assert_eq!(
            inplace.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            grad.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{name}: in place and buffer give the same gradient bits"
        );

        let reft = match (&case.targets, &case.soft_targets) {
            (Some(y), None) => RefTargets::Labels(y),
            (None, Some(t)) => RefTargets::Soft(t),
            _ => unreachable!(),
        };
        // The reference takes the config's f32 eps and weights, hence a tolerance above f64 round-off.
        let r = reference::loss_and_grad(&cfg, case.k, &case.logits, reft, case.grad_output.as_deref()).unwrap();
        for (i, (&g, &w)) in r.loss.iter().zip(&want_loss).enumerate() {
            assert!(
                (g - w).abs() <= 1e-7 * w.abs().max(1.0),
                "{name}: reference loss[{i}] = {g}, want {w}"
            );
        }
        for (i, (&g, &w)) in r.grad.iter().zip(&case.expected_grad).enumerate() {
            assert!((g - w).abs() <= 1e-7, "{name}: reference grad[{i}] = {g}, want {w}");
        }
    }
}
