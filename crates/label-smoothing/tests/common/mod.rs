//! Shared helpers of the integration tests: the golden cases and tolerance checks.
#![allow(dead_code)]

use label_smoothing::{LabelSmoothingConfig, Reduction, Smoothing, Spread};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Options {
    pub eps: f64,
    pub alpha: Option<f64>,
    pub spread: String,
    pub weights: Option<Vec<f64>>,
    pub ignore_index: Option<i64>,
    pub reduction: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Expected {
    Scalar(f64),
    PerRow(Vec<f64>),
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    pub n: usize,
    pub k: usize,
    pub logits: Vec<f64>,
    pub targets: Option<Vec<i64>>,
    pub soft_targets: Option<Vec<f64>>,
    pub options: Options,
    pub grad_output: Option<Vec<f64>>,
    pub expected_loss: Expected,
    pub expected_grad: Vec<f64>,
}

impl Case {
    pub fn config(&self) -> LabelSmoothingConfig {
        let o = &self.options;
        LabelSmoothingConfig {
            spread: o.spread.parse::<Spread>().unwrap(),
            smoothing: match o.alpha {
                Some(a) => Smoothing::Adaptive { alpha: a as f32 },
                None => Smoothing::Fixed(o.eps as f32),
            },
            reduction: o.reduction.parse::<Reduction>().unwrap(),
            ignore_index: o.ignore_index,
            weights: o.weights.as_ref().map(|w| w.iter().map(|&x| x as f32).collect()),
        }
    }

    pub fn expected_loss(&self) -> Vec<f64> {
        match &self.expected_loss {
            Expected::Scalar(v) => vec![*v],
            Expected::PerRow(v) => v.clone(),
        }
    }
}

pub fn golden_cases() -> Vec<Case> {
    #[derive(Deserialize)]
    struct File {
        cases: Vec<Case>,
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cross_entropy_cases.json");
    let text = std::fs::read_to_string(path).expect("golden cases file");
    serde_json::from_str::<File>(&text).expect("golden cases parse").cases
}

/// SPEC.md: the loss within a relative 1e-5 or an absolute 1e-6 of the float64 definition.
pub fn assert_loss_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: loss length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_infinite() {
            assert_eq!(g as f64, w, "{what}: loss[{i}]");
            continue;
        }
        let err = (g as f64 - w).abs();
        assert!(
            err <= 1e-6 || err <= 1e-5 * w.abs(),
            "{what}: loss[{i}] = {g}, expected {w} (error {err:e})"
        );
    }
}

/// SPEC.md: each gradient entry within 1e-6 absolute.
pub fn assert_grad_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: grad length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= 1e-6, "{what}: grad[{i}] = {g}, expected {w} (error {err:e})");
    }
}

/// A small deterministic generator (SplitMix64) for test inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
