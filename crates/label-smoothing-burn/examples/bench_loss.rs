//! Forward and backward of the loss on burn's CPU backends (Flex and NdArray) with autodiff: this crate's fused path, its
//! composition of burn operations, burn's own `CrossEntropyLoss` with smoothing 0.1, and the core kernel called
//! directly on the same logits (into a buffer it reuses, and into a new buffer each call, as a framework's
//! gradient tensor is), in alternating rounds, and a copy of the logits for the machine's bandwidth; prints the
//! medians and the per-round ratios.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p label-smoothing-burn --example bench_loss [NxK ...] [--rounds R]
//! ```
//!
//! Default shapes 2048x32000 and 8192x1000, 5 rounds.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor};
use label_smoothing::rng::benchmark_problem;
use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
use label_smoothing_burn::LabelSmoothingCrossEntropyConfig;
use rayon::prelude::*;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds of one forward and backward, the gradient of the logits read out of the graph.
fn timed(x: &Tensor<2>, f: &dyn Fn(Tensor<2>) -> Tensor<1>) -> f64 {
    let x = x.clone().require_grad();
    let t = Instant::now();
    let loss = f(x.clone());
    let grads = loss.backward();
    let g = x.grad(&grads).expect("a gradient");
    std::hint::black_box(g);
    t.elapsed().as_secs_f64()
}

#[allow(deprecated)] // NdArray: the CPU backend this crate's fused path runs on
fn main() {
    let mut shapes = Vec::new();
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--rounds" {
            rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds R");
        } else {
            let (n, k) = a.split_once('x').expect("shapes as NxK");
            shapes.push((n.parse::<usize>().unwrap(), k.parse::<usize>().unwrap()));
        }
    }
    if shapes.is_empty() {
        shapes = vec![(2048, 32000), (8192, 1000)];
    }
    println!(
        "instruction set {}, {} rayon threads, {rounds} rounds, forward + backward, medians",
        label_smoothing::instruction_set(),
        rayon::current_num_threads()
    );
    println!(
        "| backend | shape | fused | composed | burn CrossEntropyLoss | core kernel | core, new buffer | burn's / fused | \
         fused / core | fused / core, new buffer | fused GB/s | copy GB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let backends = [
        ("Flex", Device::flex().autodiff()),
        ("NdArray", Device::ndarray().autodiff()),
    ];
    for ((backend, dev), (n, k)) in backends.iter().flat_map(|b| shapes.iter().map(move |s| (b, *s))) {
        let (logits, labels) = benchmark_problem(n, k, 1);
        let x = Tensor::<1>::from_floats(logits.as_slice(), dev).reshape([n, k]);
        let y = Tensor::<1, Int>::from_ints(labels.as_slice(), dev);
        let ours = LabelSmoothingCrossEntropyConfig::pytorch(0.1).init(k, dev).unwrap();
        let theirs = CrossEntropyLossConfig::new().with_smoothing(Some(0.1)).init(dev);
        let core = LabelSmoothingConfig::pytorch(0.1).init(k).unwrap();
        let mut grad = vec![0.0f32; n * k];
        let (mut tf, mut tc, mut tb, mut tk, mut tn) = (vec![], vec![], vec![], vec![], vec![]);
        let mut copy = vec![0.0f32; n * k];
        let mut tcopy = vec![];
        for _ in 0..rounds + 1 {
            tf.push(timed(&x, &|x| ours.forward(x, y.clone()).unwrap()));
            tc.push(timed(&x, &|x| ours.forward_composed(x, y.clone()).unwrap()));
            tb.push(timed(&x, &|x| theirs.forward(x, y.clone())));
            let t = Instant::now();
            core.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad)
                .unwrap();
            tk.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut fresh = vec![0.0f32; n * k];
            core.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut fresh)
                .unwrap();
            std::hint::black_box(&fresh);
            drop(fresh);
            tn.push(t.elapsed().as_secs_f64());
            // The machine's copy bandwidth on the same bytes, in pieces as the kernel's threads take them.
            let t = Instant::now();
            copy.par_chunks_mut(1 << 15)
                .zip(logits.par_chunks(1 << 15))
                .for_each(|(d, s)| d.copy_from_slice(s));
            std::hint::black_box(&copy);
            tcopy.push(t.elapsed().as_secs_f64());
        }
        // The first round pays for page faults.
        for v in [&mut tf, &mut tc, &mut tb, &mut tk, &mut tn, &mut tcopy] {
            v.remove(0);
        }
        let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
        println!(
            "| {backend} | {n}x{k} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1}x | {:.2}x | {:.2}x | {:.1} | {:.1} |",
            1e3 * median(tf.clone()),
            1e3 * median(tc.clone()),
            1e3 * median(tb.clone()),
            1e3 * median(tk.clone()),
            1e3 * median(tn.clone()),
            ratio(&tb, &tf),
            ratio(&tf, &tk),
            ratio(&tf, &tn),
            // Logits read and gradient written, against the copy's read and write of the same bytes.
            8.0 * (n * k) as f64 / median(tf.clone()) / 1e9,
            8.0 * (n * k) as f64 / median(tcopy.clone()) / 1e9,
        );
    }
}
