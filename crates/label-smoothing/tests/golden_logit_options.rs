//! The fused loss against `testdata/logit_option_cases.json`: z-loss, soft-capping, the predicted class and the
//! token accuracy, computed in float64 with PyTorch by `scripts/gen_logit_option_cases.py` from Liger-Kernel's
//! formulas (hard labels, uniform smoothing) and from SPEC.md for what Liger-Kernel lacks. Every case in f32, with
//! the gradient into a buffer and in place.

mod common;

use common::{assert_grad_close, assert_loss_close};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Smoothing, Targets};
use serde::Deserialize;

#[derive(Deserialize)]
struct Options {
    eps: f64,
    alpha: Option<f64>,
    spread: String,
    weights: Option<Vec<f64>>,
    ignore_index: Option<i64>,
    reduction: String,
    z_loss: f64,
    softcap: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Values {
    One(f64),
    Many(Vec<f64>),
}

impl Values {
    fn to_vec(&self) -> Vec<f64> {
        match self {
            Values::One(v) => vec![*v],
            Values::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Case {
    name: String,
    n: usize,
    k: usize,
    logits: Vec<f64>,
    targets: Option<Vec<i64>>,
    soft_targets: Option<Vec<f64>>,
    options: Options,
    expected_loss: Values,
    expected_z_loss: Values,
    expected_grad: Vec<f64>,
    expected_predicted: Option<Vec<i64>>,
    expected_correct: Option<usize>,
    expected_counted: Option<usize>,
    checked_against: String,
}

fn cases() -> Vec<Case> {
    #[derive(Deserialize)]
    struct File {
        cases: Vec<Case>,
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/logit_option_cases.json");
    let text = std::fs::read_to_string(path).expect("logit option cases file");
    serde_json::from_str::<File>(&text)
        .expect("logit option cases parse")
        .cases
}

fn config(o: &Options) -> LabelSmoothingConfig {
    LabelSmoothingConfig {
        spread: o.spread.parse().unwrap(),
        smoothing: match o.alpha {
            Some(a) => Smoothing::Adaptive { alpha: a as f32 },
            None => Smoothing::Fixed(o.eps as f32),
        },
        reduction: o.reduction.parse().unwrap(),
        ignore_index: o.ignore_index,
        weights: o.weights.as_ref().map(|w| w.iter().map(|&x| x as f32).collect()),
        z_loss: o.z_loss as f32,
        softcap: o.softcap.map(|c| c as f32),
    }
}

fn check_all() -> usize {
    let cases = cases();
    assert!(
        cases
            .iter()
            .filter(|c| c.checked_against == "Liger-Kernel's formulas")
            .count()
            >= 40
    );
    for c in &cases {
        let loss_fn = config(&c.options).init(c.k).unwrap();
        let logits: Vec<f32> = c.logits.iter().map(|&x| x as f32).collect();
        let soft: Vec<f32> = c.soft_targets.iter().flatten().map(|&x| x as f32).collect();
        let targets = match &c.targets {
            Some(y) => Targets::Labels(y),
            None => Targets::Soft(&soft),
        };
        let mut grad = vec![0.0f32; c.n * c.k];
        let out = loss_fn
            .report_and_grad(&logits, targets, GradOutput::ONE, &mut grad, true)
            .unwrap();
        assert_loss_close(&c.name, out.loss.as_slice(), &c.expected_loss.to_vec());
        assert_loss_close(
            &format!("{} z-loss", c.name),
            out.z_loss.as_slice(),
            &c.expected_z_loss.to_vec(),
        );
        assert_grad_close(&c.name, &grad, &c.expected_grad);
        if let Some(want) = &c.expected_predicted {
            assert_eq!(out.predicted.as_ref(), Some(want), "{}", c.name);
            let acc = out.accuracy.unwrap();
            assert_eq!(Some(acc.correct), c.expected_correct, "{}", c.name);
            assert_eq!(Some(acc.counted), c.expected_counted, "{}", c.name);
        }
        let mut z = logits.clone();
        let in_place = loss_fn
            .loss_and_grad_in_place(&mut z, targets, GradOutput::ONE)
            .unwrap();
        assert_eq!(in_place, out.loss, "{}: in place", c.name);
        assert_eq!(z, grad, "{}: in-place gradient", c.name);
    }
    cases.len()
}

#[test]
fn every_case_matches_its_float64_values() {
    assert_eq!(check_all(), 66);
}
