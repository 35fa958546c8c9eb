//! `lsmooth bench`: the fused kernel on seeded random logits, timed next to a copy and a read of the same bytes.

use crate::cli::{BenchArgs, DType};
use crate::CliError;
use label_smoothing::{bf16, f16, Element, GradOutput, LabelSmoothingConfig, Targets};
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// What `lsmooth bench --json` prints.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Rows.
    pub n: usize,
    /// Classes.
    pub k: usize,
    /// Logit type.
    pub dtype: &'static str,
    /// Rayon threads.
    pub threads: usize,
    /// The instruction set the kernel dispatched to.
    pub isa: &'static str,
    /// `forward` (loss only), `fwd_bwd` (loss and gradient into a buffer) or `in_place`.
    pub mode: &'static str,
    /// Timed calls of each measurement.
    pub repeat: usize,
    /// Median seconds per call of the loss.
    pub median_s: f64,
    /// Bytes counted per call: the logits read, plus the gradient written unless forward only.
    pub bytes: usize,
    /// `bytes / median_s`, in GB/s (1e9 bytes).
    pub gbps: f64,
    /// Median seconds to copy a buffer of the logits' size into another (same threads).
    pub copy_median_s: f64,
    /// The copy's bandwidth: bytes read plus bytes written over its median, in GB/s.
    pub copy_gbps: f64,
    /// `gbps / copy_gbps`.
    pub fraction_of_copy: f64,
    /// Median seconds to read the logits once (a parallel sum).
    pub read_median_s: f64,
    /// `median_s / read_median_s`.
    pub ratio_to_read: f64,
    /// Median nanoseconds per row.
    pub ns_per_row: f64,
    /// Peak resident memory of the process (VmHWM), in bytes, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn time_it(repeat: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up: page faults, caches, the pool
    median(
        (0..repeat)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn parse_shape(s: &str) -> Result<(usize, usize), CliError> {
    let err = || {
        CliError::Usage(format!(
            "--shape {s}: expected NxK with positive integers, e.g. 2048x32000"
        ))
    };
    let (a, b) = s.split_once(['x', 'X']).ok_or_else(err)?;
    let (n, k) = (
        a.trim().parse::<usize>().map_err(|_| err())?,
        b.trim().parse::<usize>().map_err(|_| err())?,
    );
    if n == 0 || k < 2 {
        return Err(CliError::Usage(format!("--shape {s}: needs N >= 1 and K >= 2")));
    }
    Ok((n, k))
}

fn run_typed<E: Element>(args: &BenchArgs, n: usize, k: usize, threads: usize) -> Result<BenchReport, CliError> {
    let mut config = LabelSmoothingConfig::new().with_spread(args.spread);
    config = match (args.adaptive, args.smoothing) {
        (Some(a), _) => config.with_adaptive(a),
        (None, Some(e)) => config.with_smoothing(e),
        (None, None) => config.with_smoothing(0.1),
    };
    let loss_fn = config.init(k)?;
    let (logits32, labels) = label_smoothing::rng::benchmark_problem(n, k, args.seed);
    let logits: Vec<E> = logits32.iter().map(|&x| E::from_f32(x)).collect();
    drop(logits32);
    let elem = std::mem::size_of::<E>();
    let targets = Targets::Labels(&labels);
    let bytes_in = n * k * elem;

    // Pick a repeat count that keeps each measurement near a second, unless given.
    let probe = {
        let t = Instant::now();
        loss_fn.loss(&logits, targets)?;
        t.elapsed().as_secs_f64()
    };
    let repeat = args
        .repeat
        .unwrap_or_else(|| ((1.0 / probe.max(1e-9)) as usize).clamp(5, 500));

    let (mode, bytes, median_s) = if args.forward_only {
        let t = time_it(repeat, || {
            std::hint::black_box(loss_fn.loss(&logits, targets).ok());
        });
        ("forward", bytes_in, t)
    } else if args.in_place {
        let mut buf = logits.clone();
        let t = time_it(repeat, || {
            std::hint::black_box(loss_fn.loss_and_grad_in_place(&mut buf, targets, GradOutput::ONE).ok());
        });
        ("in_place", 2 * bytes_in, t)
    } else {
        let mut grad = vec![E::from_f32(0.0); n * k];
        let t = time_it(repeat, || {
            std::hint::black_box(loss_fn.loss_and_grad(&logits, targets, GradOutput::ONE, &mut grad).ok());
        });
        ("fwd_bwd", 2 * bytes_in, t)
    };

    let chunk = (1usize << 15).max(k);
    let mut dst = vec![E::from_f32(0.0); n * k];
    let copy_median_s = time_it(repeat, || {
        dst.par_chunks_mut(chunk)
            .zip(logits.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
    });
    std::hint::black_box(&dst);
    drop(dst);
    let read_median_s = time_it(repeat, || {
        // Sixteen running sums, so that the read vectorises and the loop costs no more than the loads.
        let s: f32 = logits
            .par_chunks(chunk)
            .map(|c| {
                let mut acc = [0.0f32; 16];
                let body = c.chunks_exact(16);
                let tail: f32 = body.remainder().iter().map(|x| x.to_f32()).sum();
                for v in body {
                    for j in 0..16 {
                        acc[j] += v[j].to_f32();
                    }
                }
                acc.iter().sum::<f32>() + tail
            })
            .sum();
        std::hint::black_box(s);
    });

    let gbps = bytes as f64 / median_s / 1e9;
    let copy_gbps = 2.0 * bytes_in as f64 / copy_median_s / 1e9;
    Ok(BenchReport {
        n,
        k,
        dtype: E::NAME,
        threads,
        isa: label_smoothing::instruction_set(),
        mode,
        repeat,
        median_s,
        bytes,
        gbps,
        copy_median_s,
        copy_gbps,
        fraction_of_copy: gbps / copy_gbps,
        read_median_s,
        ratio_to_read: median_s / read_median_s,
        ns_per_row: median_s * 1e9 / n as f64,
        peak_rss_bytes: peak_rss(),
    })
}

/// Runs the benchmark and prints a short table, or one JSON object with `--json`.
pub fn run(args: &BenchArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let (n, k) = parse_shape(&args.shape)?;
    if args.forward_only && args.in_place {
        return Err(CliError::Usage(
            "--forward-only and --in-place exclude each other".into(),
        ));
    }
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    if threads == 0 {
        return Err(CliError::Usage("--threads must be at least 1".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start {threads} threads: {e}")))?;
    let report = pool.install(|| match args.dtype {
        DType::F32 => run_typed::<f32>(args, n, k, threads),
        DType::Bf16 => run_typed::<bf16>(args, n, k, threads),
        DType::F16 => run_typed::<f16>(args, n, k, threads),
    })?;
    let w = |e: std::io::Error| CliError::Usage(format!("cannot write to stdout: {e}"));
    if args.json {
        let line = serde_json::to_string(&report).map_err(|e| CliError::Usage(e.to_string()))?;
        writeln!(out, "{line}").map_err(w)?;
    } else {
        let r = &report;
        writeln!(
            out,
            "shape {}x{} {}, {} thread(s), {}, {} ({} timed calls)\n\
             loss     median {:>10.3} ms  {:>7.2} GB/s  {:>9.1} ns/row\n\
             copy     median {:>10.3} ms  {:>7.2} GB/s  (read + write of {} bytes)\n\
             read     median {:>10.3} ms\n\
             loss/copy bandwidth {:.0}%, loss/read time {:.2}x, peak RSS {}",
            r.n,
            r.k,
            r.dtype,
            r.threads,
            r.isa,
            r.mode,
            r.repeat,
            r.median_s * 1e3,
            r.gbps,
            r.ns_per_row,
            r.copy_median_s * 1e3,
            r.copy_gbps,
            bytes_in_of(r),
            r.read_median_s * 1e3,
            100.0 * r.fraction_of_copy,
            r.ratio_to_read,
            r.peak_rss_bytes.map_or("unknown".to_string(), |b| format!(
                "{:.1} MiB",
                b as f64 / (1 << 20) as f64
            )),
        )
        .map_err(w)?;
    }
    Ok(())
}

fn bytes_in_of(r: &BenchReport) -> usize {
    if r.mode == "forward" {
        r.bytes
    } else {
        r.bytes / 2
    }
}
