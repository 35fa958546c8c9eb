//! Times the fused loss on one shape: the core crate alone, so that two commits can be compared side by side
//! without building the CLI (docs/BENCHMARKS.md, "Before and after").
//!
//! ```text
//! cargo run --release -p label-smoothing --example time_loss -- 8192 1000 2 [fwd]
//! ```
//!
//! Arguments: rows `N`, classes `K`, rayon threads, and `fwd` for the loss alone (default: loss and gradient into
//! a second buffer). Logits uniform in `[-4, 4)` and uniform labels from a fixed seed, spread `others`,
//! `eps = 0.1`; prints the median of about `2e9 / (N K)` calls (5 to 2000) and `bytes / median` with the bytes
//! counted as `lsmooth bench` counts them (`4 N K` read, plus `4 N K` written with the gradient).

use label_smoothing::{GradOutput, LabelSmoothingConfig, Targets};
use std::time::Instant;

fn arg(args: &[String], i: usize, what: &str) -> usize {
    match args.get(i).map(|a| a.parse::<usize>()) {
        Some(Ok(v)) if v > 0 => v,
        _ => {
            eprintln!("usage: time_loss N K THREADS [fwd]   ({what} missing or not a positive integer)");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (n, k, threads) = (arg(&args, 1, "N"), arg(&args, 2, "K"), arg(&args, 3, "THREADS"));
    let forward_only = args.get(4).is_some_and(|a| a == "fwd");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool");
    let (logits, labels) = label_smoothing::rng::benchmark_problem(n, k, 42);
    let loss_fn = LabelSmoothingConfig::new()
        .with_smoothing(0.1)
        .init(k)
        .expect("a valid configuration");
    let mut grad = vec![0f32; n * k];
    let calls = (2e9 / (n * k) as f64).clamp(5.0, 2000.0) as usize;
    let mut times = Vec::with_capacity(calls);
    pool.install(|| {
        for _ in 0..=calls {
            let t = Instant::now();
            if forward_only {
                std::hint::black_box(loss_fn.loss(&logits, Targets::Labels(&labels)).expect("valid input"));
            } else {
                let l = loss_fn.loss_and_grad(&logits, Targets::Labels(&labels), GradOutput::ONE, &mut grad);
                std::hint::black_box(l.expect("valid input"));
            }
            times.push(t.elapsed().as_secs_f64());
        }
    });
    times.remove(0); // the first call pays for page faults and waking the pool
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let bytes = if forward_only { 4 } else { 8 } * n * k;
    println!(
        "{n}x{k} threads={threads} {}: median {:.4} ms, {:.1} GB/s, {:.1} ns/row",
        if forward_only { "forward" } else { "fwd_bwd" },
        median * 1e3,
        bytes as f64 / median / 1e9,
        median * 1e9 / n as f64
    );
}
