//! The related losses (mixup targets, distillation, confidence penalty, label relaxation, online label smoothing),
//! forward and backward, next to the fused label-smoothed cross-entropy on the same logits.
//!
//! Run with `cargo bench -p label-smoothing --bench related`. Every benchmark counts `8 * N * K` bytes (read the
//! logits, write the gradient), as in the `fused` bench; distillation also reads the teacher's logits, which is
//! not counted. Uses rayon's global pool.

use divan::counter::BytesCount;
use divan::Bencher;
use label_smoothing::confidence_penalty::confidence_penalty_loss;
use label_smoothing::distillation::{distillation_loss, DistillationConfig};
use label_smoothing::label_relaxation::label_relaxation_loss;
use label_smoothing::mixup::{mixed_loss, MixedLabels};
use label_smoothing::online::OnlineLabelSmoothing;
use label_smoothing::rng::SplitMix64;
use label_smoothing::{GradOutput, LabelSmoothingConfig, LabelSmoothingLoss, Reduction, Targets};

const SHAPES: &[(usize, usize)] = &[(8192, 1000), (512, 32000)];

fn main() {
    divan::main();
}

struct Problem {
    k: usize,
    logits: Vec<f32>,
    teacher: Vec<f32>,
    labels: Vec<i64>,
    mixed_in: Vec<i64>,
    grad: Vec<f32>,
    ce: LabelSmoothingLoss,
}

fn problem(n: usize, k: usize) -> Problem {
    let mut r = SplitMix64::new(0x5eed ^ (n as u64 * 31 + k as u64));
    let mut logits = || (0..n * k).map(|_| r.uniform(-4.0, 4.0) as f32).collect::<Vec<f32>>();
    let (logits, teacher) = (logits(), logits());
    let mut r = SplitMix64::new(7);
    let labels: Vec<i64> = (0..n).map(|_| r.below(k as u64) as i64).collect();
    let mixed_in = labels.iter().rev().copied().collect();
    Problem {
        k,
        logits,
        teacher,
        labels,
        mixed_in,
        grad: vec![0.0; n * k],
        ce: LabelSmoothingConfig::new().with_smoothing(0.1).init(k).unwrap(),
    }
}

fn bench(b: Bencher, (n, k): (usize, usize), f: fn(&mut Problem)) {
    let mut p = problem(n, k);
    b.counter(BytesCount::new(8 * n * k)).bench_local(|| f(&mut p));
}

#[divan::bench(args = SHAPES)]
fn label_smoothing(b: Bencher, shape: (usize, usize)) {
    bench(b, shape, |p| {
        p.ce.loss_and_grad(&p.logits, Targets::Labels(&p.labels), GradOutput::ONE, &mut p.grad)
            .unwrap();
    });
}

#[divan::bench(args = SHAPES)]
fn mixup_target(b: Bencher, shape: (usize, usize)) {
    bench(b, shape, |p| {
        let labels = MixedLabels {
            a: &p.labels,
            b: &p.mixed_in,
            lambda: &[0.7],
        };
        mixed_loss(&p.ce, &p.logits, labels, Some(&mut p.grad)).unwrap();
    });
}

#[divan::bench(args = SHAPES)]
fn distillation(b: Bencher, shape: (usize, usize)) {
    bench(b, shape, |p| {
        let cfg = DistillationConfig::new(0.5, 4.0);
        distillation_loss(&p.ce, cfg, &p.logits, &p.teacher, &p.labels, Some(&mut p.grad)).unwrap();
    });
}

#[divan::bench(args = SHAPES)]
fn confidence_penalty(b: Bencher, shape: (usize, usize)) {
    bench(b, shape, |p| {
        confidence_penalty_loss(&p.ce, 0.1, &p.logits, &p.labels, Some(&mut p.grad)).unwrap();
    });
}

#[divan::bench(args = SHAPES)]
fn label_relaxation(b: Bencher, shape: (usize, usize)) {
    bench(b, shape, |p| {
        label_relaxation_loss(0.1, Reduction::Mean, p.k, &p.logits, &p.labels, Some(&mut p.grad)).unwrap();
    });
}

/// Its state is a `K x K` matrix, so only the smaller shape.
#[divan::bench(args = [(8192, 1000)])]
fn online_label_smoothing(b: Bencher, (n, k): (usize, usize)) {
    let mut p = problem(n, k);
    let ols = OnlineLabelSmoothing::new(k).unwrap();
    b.counter(BytesCount::new(8 * n * k)).bench_local(|| {
        ols.loss(&p.logits, &p.labels, Reduction::Mean, Some(&mut p.grad))
            .unwrap();
    });
}
