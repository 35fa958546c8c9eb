//! Shared helpers of the integration tests: the golden cases and tolerance checks.
#![allow(dead_code)]

pub mod linear;

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
            ..Default::default()
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

/// SPEC.md: each gradient entry within 1e-6 absolute. An entry larger than 1 in magnitude (possible only with
/// class weights, an upstream gradient above 1 or a mean over a small weight) cannot be held that closely by an
/// f32, whose spacing there exceeds 1e-7: such entries are held to 1e-6 relative.
pub fn assert_grad_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: grad length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= 1e-6 * w.abs().max(1.0),
            "{what}: grad[{i}] = {g}, expected {w} (error {err:e})"
        );
    }
}

/// A small deterministic generator for test inputs: the crate's SplitMix64, with the draws the tests use.
pub struct Rng(label_smoothing::rng::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(label_smoothing::rng::SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.next_f64()
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

/// Options drawn for randomised tests.
#[derive(Clone)]
pub struct Draw {
    pub n: usize,
    pub k: usize,
    pub scale: f64,
    pub config: LabelSmoothingConfig,
    pub soft: bool,
    pub per_row_grad: bool,
    pub seed: u64,
}

impl std::fmt::Debug for Draw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        write!(
            f,
            "Draw {{ n: {}, k: {}, scale: {}, spread: {}, smoothing: {:?}, reduction: {}, ignore: {:?}, weights: {}, \
             z_loss: {}, softcap: {:?}, soft: {}, per_row_grad: {}, seed: {} }}",
            self.n,
            self.k,
            self.scale,
            c.spread,
            c.smoothing,
            c.reduction,
            c.ignore_index,
            c.weights
                .as_ref()
                .map_or("none".to_string(), |w| format!("{} values", w.len())),
            c.z_loss,
            c.softcap,
            self.soft,
            self.per_row_grad,
            self.seed
        )
    }
}

/// Inputs built from a [`Draw`]: logits, labels (with some ignored rows when an ignore index is set) or soft
/// targets, and an optional per-row upstream gradient.
pub struct Inputs {
    pub logits: Vec<f32>,
    pub labels: Vec<i64>,
    pub soft: Vec<f32>,
    pub grad_output: Option<Vec<f32>>,
}

impl Draw {
    pub fn inputs(&self) -> Inputs {
        let mut rng = Rng::new(self.seed);
        let (n, k) = (self.n, self.k);
        let logits: Vec<f32> = (0..n * k).map(|_| (rng.normal() * self.scale) as f32).collect();
        let labels: Vec<i64> = (0..n)
            .map(|_| match self.config.ignore_index {
                Some(ig) if rng.uniform() < 0.25 => ig,
                _ => rng.below(k) as i64,
            })
            .collect();
        let mut soft = Vec::new();
        if self.soft {
            for _ in 0..n {
                // Sparse-ish probability rows, normalised in f64 and then rounded to f32.
                let raw: Vec<f64> = (0..k)
                    .map(|_| if rng.uniform() < 0.3 { rng.uniform() } else { 0.0 })
                    .collect();
                let total: f64 = raw.iter().sum::<f64>() + 1.0;
                let hot = rng.below(k);
                soft.extend(
                    raw.iter()
                        .enumerate()
                        .map(|(c, &v)| ((v + if c == hot { 1.0 } else { 0.0 }) / total) as f32),
                );
            }
        }
        let grad_output = self.per_row_grad.then(|| (0..n).map(|_| rng.normal() as f32).collect());
        Inputs {
            logits,
            labels,
            soft,
            grad_output,
        }
    }
}

/// The per-row target distributions `q` in f64, computed directly from SPEC.md's table (independent of the
/// crate): hard labels (with the row's smoothing `e[i]`) or soft rows. Ignored rows are all zero.
pub fn target_rows(
    spread: Spread,
    k: usize,
    labels: Option<&[i64]>,
    soft: Option<&[f64]>,
    e: &[f64],
    ignore: Option<i64>,
) -> Vec<f64> {
    let n = e.len();
    let kf = k as f64;
    let mut q = vec![0.0; n * k];
    for i in 0..n {
        for c in 0..k {
            q[i * k + c] = match (labels, soft) {
                (Some(y), _) => {
                    if Some(y[i]) == ignore {
                        0.0
                    } else {
                        let hot = if c as i64 == y[i] { 1.0 } else { 0.0 };
                        match spread {
                            Spread::Others => hot * (1.0 - e[i]) + (1.0 - hot) * e[i] / (kf - 1.0),
                            Spread::Uniform => (1.0 - e[i]) * hot + e[i] / kf,
                        }
                    }
                }
                (None, Some(t)) => {
                    let t = t[i * k + c];
                    match spread {
                        Spread::Others => (1.0 - e[i]) * t + e[i] * (1.0 - t) / (kf - 1.0),
                        Spread::Uniform => (1.0 - e[i]) * t + e[i] / kf,
                    }
                }
                _ => unreachable!(),
            };
        }
    }
    q
}

/// `sum_i g_i / D * (-sum_c w_c q_ic log softmax(z_i)_c)` in f64, with `q`, `g` and `D` held fixed.
pub fn objective_f64(z: &[f64], k: usize, q: &[f64], w: &[f64], g: &[f64], d: f64) -> f64 {
    let n = z.len() / k;
    let mut total = 0.0;
    for i in 0..n {
        let row = &z[i * k..(i + 1) * k];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        let l: f64 = (0..k).map(|c| -w[c] * q[i * k + c] * (row[c] - lse)).sum();
        total += g[i] / d * l;
    }
    total
}
