//! The fused forward+backward against a naive composition and against a plain copy, side by side.
//!
//! Run with `cargo bench -p label-smoothing --bench fused`. Every benchmark counts `8 * N * K` bytes (read the
//! logits, write the gradient; for the copy: read the source, write the destination), so divan's throughput
//! columns compare directly; forward-only counts the `4 * N * K` bytes it reads.
//! Uses rayon's global pool (2 threads on the reference machine; set `RAYON_NUM_THREADS` to change it).

use divan::counter::BytesCount;
use divan::Bencher;
use label_smoothing::{bf16, GradOutput, LabelSmoothingConfig, Targets};
use rayon::prelude::*;

const SHAPES: &[(usize, usize)] = &[
    (4096, 10),
    (64, 751),
    (8192, 1000),
    (2048, 32000),
    (512, 128000),
    (1, 1048576),
];
const EPS: f32 = 0.1;

fn main() {
    divan::main();
}

struct Problem {
    n: usize,
    k: usize,
    logits: Vec<f32>,
    labels: Vec<i64>,
}

fn problem(n: usize, k: usize) -> Problem {
    let (logits, labels) =
        label_smoothing::rng::benchmark_problem(n, k, 0x1234_5678_9abc_def0u64 ^ (n as u64 * 31 + k as u64));
    Problem { n, k, logits, labels }
}

fn rows_per_task(k: usize) -> usize {
    ((1 << 15) / k).max(1)
}

/// The naive composition, as PyTorch's CPU path computes `F.cross_entropy(x, y, label_smoothing=e)` forward and
/// backward: materialise `log_softmax`, reduce it to the loss, then materialise `softmax - target` as the gradient.
/// Each stage is parallel over rows, but each is its own pass over memory.
fn naive(p: &Problem, logp: &mut [f32], grad: &mut [f32]) -> f32 {
    let (n, k) = (p.n, p.k);
    let rpt = rows_per_task(k);
    // 1. log_softmax into a buffer.
    logp.par_chunks_mut(rpt * k)
        .zip(p.logits.par_chunks(rpt * k))
        .for_each(|(lc, zc)| {
            for (l, z) in lc.chunks_exact_mut(k).zip(zc.chunks_exact(k)) {
                let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let s: f32 = z.iter().map(|&v| (v - m).exp()).sum();
                let lse = m + s.ln();
                for (o, &v) in l.iter_mut().zip(z) {
                    *o = v - lse;
                }
            }
        });
    // 2. the loss: (1-e) * nll + e/K * sum(-logp) (uniform spread), mean over rows.
    let total: f64 = logp
        .par_chunks(k)
        .zip(p.labels.par_iter())
        .map(|(l, &y)| {
            let smooth: f32 = -l.iter().sum::<f32>();
            ((1.0 - EPS) * -l[y as usize] + EPS / k as f32 * smooth) as f64
        })
        .sum();
    // 3. the gradient: (exp(logp) - q) / N.
    let inv_n = 1.0 / n as f32;
    grad.par_chunks_mut(rpt * k)
        .zip(logp.par_chunks(rpt * k))
        .zip(p.labels.par_chunks(rpt))
        .for_each(|((gc, lc), yc)| {
            for ((g, l), &y) in gc.chunks_exact_mut(k).zip(lc.chunks_exact(k)).zip(yc) {
                for (o, &v) in g.iter_mut().zip(l) {
                    *o = (v.exp() - EPS / k as f32) * inv_n;
                }
                g[y as usize] -= (1.0 - EPS) * inv_n;
            }
        });
    (total / n as f64) as f32
}

fn bytes(n: usize, k: usize, per_elem: usize) -> BytesCount {
    BytesCount::new(per_elem * n * k)
}

#[divan::bench(args = SHAPES, max_time = 3)]
fn fused_fwd_bwd(b: Bencher, &(n, k): &(usize, usize)) {
    let p = problem(n, k);
    let loss_fn = LabelSmoothingConfig::pytorch(EPS).init(k).unwrap();
    let mut grad = vec![0.0f32; n * k];
    b.counter(bytes(n, k, 8)).bench_local(|| {
        loss_fn
            .loss_and_grad(&p.logits, Targets::Labels(&p.labels), GradOutput::ONE, &mut grad)
            .unwrap()
    });
}

#[divan::bench(args = SHAPES, max_time = 3)]
fn fused_in_place(b: Bencher, &(n, k): &(usize, usize)) {
    let p = problem(n, k);
    let loss_fn = LabelSmoothingConfig::pytorch(EPS).init(k).unwrap();
    let mut buf = p.logits.clone();
    b.counter(bytes(n, k, 8)).bench_local(|| {
        // Overwrites the buffer with the gradient; the values change, the work per call does not.
        loss_fn
            .loss_and_grad_in_place(&mut buf, Targets::Labels(&p.labels), GradOutput::ONE)
            .unwrap()
    });
}

#[divan::bench(args = SHAPES, max_time = 3)]
fn forward_only(b: Bencher, &(n, k): &(usize, usize)) {
    let p = problem(n, k);
    let loss_fn = LabelSmoothingConfig::pytorch(EPS).init(k).unwrap();
    b.counter(bytes(n, k, 4))
        .bench_local(|| loss_fn.loss(&p.logits, Targets::Labels(&p.labels)).unwrap());
}

#[divan::bench(args = SHAPES, max_time = 3)]
fn naive_composition(b: Bencher, &(n, k): &(usize, usize)) {
    let p = problem(n, k);
    let mut logp = vec![0.0f32; n * k];
    let mut grad = vec![0.0f32; n * k];
    b.counter(bytes(n, k, 8))
        .bench_local(|| naive(&p, &mut logp, &mut grad));
}

#[divan::bench(args = SHAPES, max_time = 3)]
fn copy(b: Bencher, &(n, k): &(usize, usize)) {
    let src = vec![1.0f32; n * k];
    let mut dst = vec![0.0f32; n * k];
    // Pieces of 32768 elements whatever the row length: the loss splits a long row across the threads, so the
    // copy must too.
    let chunk = 1 << 15;
    b.counter(bytes(n, k, 8)).bench_local(|| {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
    });
}

#[divan::bench(args = SHAPES, max_time = 3)]
fn fused_fwd_bwd_bf16(b: Bencher, &(n, k): &(usize, usize)) {
    let p = problem(n, k);
    let logits: Vec<bf16> = p.logits.iter().map(|&x| bf16::from_f32(x)).collect();
    let loss_fn = LabelSmoothingConfig::pytorch(EPS).init(k).unwrap();
    let mut grad = vec![bf16::ZERO; n * k];
    // bf16: 2 bytes read and 2 written per element.
    b.counter(bytes(n, k, 4)).bench_local(|| {
        loss_fn
            .loss_and_grad(&logits, Targets::Labels(&p.labels), GradOutput::ONE, &mut grad)
            .unwrap()
    });
}
