//! `lsmooth bench`: the fused kernel on seeded random logits, timed next to a copy and a read of the same bytes
//! (`linear`: the fused linear loss, next to the unfused composition and the products alone).

mod linear;
mod timing;

use timing::{median, peak_rss, quartiles, time_warm};

use crate::cli::{BenchArgs, DType};
use crate::CliError;
use label_smoothing::{bf16, f16, Element, GradOutput, Targets};
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
    /// Rounds timed; each round times one call of the loss, one copy and one read, in that order (each after an
    /// untimed call of the same).
    pub repeat: usize,
    /// Median seconds per call of the loss (over the rounds).
    pub median_s: f64,
    /// Bytes counted per call: the logits read, plus the gradient written unless forward only.
    pub bytes: usize,
    /// `bytes / median_s`, in GB/s (1e9 bytes).
    pub gbps: f64,
    /// Median seconds to copy a buffer of the logits' size into another (same threads).
    pub copy_median_s: f64,
    /// The copy's bandwidth: bytes read plus bytes written over its median, in GB/s.
    pub copy_gbps: f64,
    /// The loss's bandwidth over the copy's: the median over rounds of the ratio within each round (each round
    /// times one loss call, one copy and one read in turn). Close to, but not exactly, `gbps / copy_gbps`.
    pub fraction_of_copy: f64,
    /// The lower and upper quartiles of the per-round ratios behind `fraction_of_copy`: how much they moved.
    pub fraction_of_copy_quartiles: [f64; 2],
    /// Median seconds to read the logits once (a parallel sum).
    pub read_median_s: f64,
    /// The loss's time over the read's: the median over rounds of the ratio within each round.
    pub ratio_to_read: f64,
    /// Median nanoseconds per row.
    pub ns_per_row: f64,
    /// Peak resident memory of the process (VmHWM), in bytes, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// With `--versus-plain`: the z-loss scale and the soft-cap timed (null: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<(f32, Option<f32>)>,
    /// With `--versus-plain`: median seconds per call of the same loss without z-loss and soft-capping, timed in
    /// the same rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plain_median_s: Option<f64>,
    /// With `--versus-plain`: the median over rounds of the loss's time over the plain loss's in the same round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_plain: Option<f64>,
}

/// Per-round times of the three measurements, taken in turn: round `i` times one call of the loss, then one
/// copy, then one read (each after an untimed call of the same, [`time_warm`]), so that a neighbour's burst on
/// this shared machine slows all three of a round rather than one whole measurement, and the per-round ratios
/// cancel most of it.
struct Rounds {
    loss: Vec<f64>,
    copy: Vec<f64>,
    read: Vec<f64>,
    /// With `--versus-plain`: the loss without z-loss and soft-capping, timed right after the loss.
    plain: Vec<f64>,
}

fn interleaved<B>(
    repeat: usize,
    buf: &mut B,
    mut loss: impl FnMut(&mut B),
    mut plain: Option<&mut dyn FnMut(&mut B)>,
    mut copy: impl FnMut(&mut B),
    mut read: impl FnMut(),
) -> Rounds {
    let mut r = Rounds {
        loss: Vec::with_capacity(repeat),
        copy: Vec::with_capacity(repeat),
        read: Vec::with_capacity(repeat),
        plain: Vec::new(),
    };
    for _ in 0..repeat {
        r.loss.push(time_warm(&mut || loss(buf)));
        if let Some(p) = plain.as_mut() {
            r.plain.push(time_warm(&mut || p(buf)));
        }
        r.copy.push(time_warm(&mut || copy(buf)));
        r.read.push(time_warm(&mut read));
    }
    r
}

/// The plain loss's call of `--versus-plain`.
type PlainCall<'a, E> = dyn FnMut(&mut Vec<E>) + 'a;

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
    // The logits and their gradient are allocated whole: keep them within this kind of machine's memory.
    const MAX_LOGITS: usize = 1 << 31;
    if n.checked_mul(k).is_none_or(|c| c > MAX_LOGITS) {
        return Err(CliError::Usage(format!(
            "--shape {s}: N*K is at most {MAX_LOGITS} (8 GiB of f32 logits, as much again for the gradient)"
        )));
    }
    // The f32 problem and its conversion, then the logits and one output buffer (f32: 4 bytes each).
    timing::check_fits(3 * 4 * (n * k) as u128, "--shape", s)?;
    Ok((n, k))
}

fn run_typed<E: Element>(args: &BenchArgs, n: usize, k: usize, threads: usize) -> Result<BenchReport, CliError> {
    let config = args.loss.config(0.1)?;
    let loss_fn = config.clone().init(k)?;
    let plain_fn = config.with_z_loss(0.0);
    let plain_fn = label_smoothing::LabelSmoothingConfig {
        softcap: None,
        ..plain_fn
    }
    .init(k)?;
    let (logits32, labels) = label_smoothing::rng::benchmark_problem(n, k, args.seed);
    let logits: Vec<E> = logits32.iter().map(|&x| E::from_f32(x)).collect();
    drop(logits32);
    let elem = std::mem::size_of::<E>();
    let targets = Targets::Labels(&labels);
    let bytes_in = n * k * elem;

    // Pick a number of rounds that keeps the timed loss calls near a second in all, unless given.
    let probe = {
        let t = Instant::now();
        loss_fn.loss(&logits, targets)?;
        t.elapsed().as_secs_f64()
    };
    let repeat = args
        .repeat
        .unwrap_or_else(|| ((1.0 / probe.max(1e-9)) as usize).clamp(5, 500));

    let (mode, bytes) = if args.forward_only {
        ("forward", bytes_in)
    } else if args.in_place {
        ("in_place", 2 * bytes_in)
    } else {
        ("fwd_bwd", 2 * bytes_in)
    };
    // One output buffer of the logits' size, shared by the loss and the copy so that the peak memory is that of
    // the loss alone: the gradient (in place: a copy of the logits, which each call overwrites with its
    // gradient; the copies write the logits back) or, forward only, just the copy's destination.
    let mut out = if args.in_place {
        logits.clone()
    } else {
        vec![E::from_f32(0.0); n * k]
    };
    let call = |f: &label_smoothing::LabelSmoothingLoss, out: &mut Vec<E>| {
        let r = if args.forward_only {
            f.loss(&logits, targets)
        } else if args.in_place {
            f.loss_and_grad_in_place(out, targets, GradOutput::ONE)
        } else {
            f.loss_and_grad(&logits, targets, GradOutput::ONE, out)
        };
        std::hint::black_box(r.ok());
    };
    let loss_call = |out: &mut Vec<E>| call(&loss_fn, out);
    let mut plain_call = |out: &mut Vec<E>| call(&plain_fn, out);
    let plain: Option<&mut PlainCall<'_, E>> = if args.versus_plain { Some(&mut plain_call) } else { None };

    let copy_call = |dst: &mut Vec<E>| copy_into(dst, &logits);
    let read_call = || {
        std::hint::black_box(read_sum(&logits));
    };
    let rounds = interleaved(repeat, &mut out, loss_call, plain, copy_call, read_call);
    drop(out);
    let versus = args.versus_plain.then(|| {
        let ratios: Vec<f64> = rounds.loss.iter().zip(&rounds.plain).map(|(l, p)| l / p).collect();
        (median(rounds.plain.clone()), median(ratios))
    });

    let stats = Stats::of(&rounds, bytes, 2 * bytes_in);
    Ok(BenchReport {
        n,
        k,
        dtype: E::NAME,
        threads,
        isa: label_smoothing::instruction_set(),
        mode,
        repeat,
        median_s: stats.median_s,
        bytes,
        gbps: bytes as f64 / stats.median_s / 1e9,
        copy_median_s: stats.copy_median_s,
        copy_gbps: 2.0 * bytes_in as f64 / stats.copy_median_s / 1e9,
        fraction_of_copy: stats.fraction[1],
        fraction_of_copy_quartiles: [stats.fraction[0], stats.fraction[2]],
        read_median_s: stats.read_median_s,
        ratio_to_read: stats.ratio_to_read,
        ns_per_row: stats.median_s * 1e9 / n as f64,
        peak_rss_bytes: peak_rss(),
        options: args
            .versus_plain
            .then_some((loss_fn.config().z_loss, loss_fn.config().softcap)),
        plain_median_s: versus.map(|v| v.0),
        ratio_to_plain: versus.map(|v| v.1),
    })
}

/// The medians of the rounds, and the per-round ratios' summaries.
struct Stats {
    median_s: f64,
    copy_median_s: f64,
    read_median_s: f64,
    /// The quartiles of the loss's bandwidth over the copy's, per round.
    fraction: [f64; 3],
    /// The median of the loss's time over the read's, per round.
    ratio_to_read: f64,
}

impl Stats {
    /// From the rounds, the loss moving `bytes` per call and the copy `copy_bytes` (read plus write).
    fn of(rounds: &Rounds, bytes: usize, copy_bytes: usize) -> Stats {
        let n = rounds.loss.len();
        let fractions: Vec<f64> = (0..n)
            .map(|i| (bytes as f64 / rounds.loss[i]) / (copy_bytes as f64 / rounds.copy[i]))
            .collect();
        let to_read: Vec<f64> = (0..n).map(|i| rounds.loss[i] / rounds.read[i]).collect();
        Stats {
            median_s: median(rounds.loss.clone()),
            copy_median_s: median(rounds.copy.clone()),
            read_median_s: median(rounds.read.clone()),
            fraction: quartiles(fractions),
            ratio_to_read: median(to_read),
        }
    }
}

/// The copy and the read go in pieces of 32768 elements whatever the row length: the loss splits a long row
/// across the threads, so its reference must too (pieces of whole rows left `1 x 1048576`'s copy on one thread).
const PIECE: usize = 1 << 15;

/// Copies `src` into `dst` in parallel pieces.
fn copy_into<E: Element>(dst: &mut [E], src: &[E]) {
    dst.par_chunks_mut(PIECE)
        .zip(src.par_chunks(PIECE))
        .for_each(|(d, s)| d.copy_from_slice(s));
    std::hint::black_box(&dst);
}

/// Reads `v` once: a parallel sum with sixteen running sums per piece, so that the read vectorises and the loop
/// costs no more than the loads.
fn read_sum<E: Element>(v: &[E]) -> f32 {
    v.par_chunks(PIECE)
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
        .sum()
}

/// Runs the benchmark and prints a short table, or one JSON object with `--json`.
pub fn run(args: &BenchArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    if let Some(shape) = &args.linear {
        return linear::run(args, shape, out);
    }
    // clap's `requires = "linear"` on these is not enforced next to `--shape`, which conflicts with --linear.
    let linear_only = [
        ("--block-rows", args.block_rows.is_some()),
        ("--block-classes", args.block_classes.is_some()),
        ("--filter", args.filter.is_some()),
        ("--peaked", args.peaked.is_some()),
    ];
    if let Some((flag, _)) = linear_only.iter().find(|(_, given)| *given) {
        return Err(CliError::Usage(format!("{flag} applies to --linear only")));
    }
    let (n, k) = parse_shape(args.shape.as_deref().unwrap_or_default())?;
    if args.forward_only && args.in_place {
        return Err(CliError::Usage(
            "--forward-only and --in-place exclude each other".into(),
        ));
    }
    if args.repeat == Some(0) {
        return Err(CliError::Usage("--repeat must be at least 1".into()));
    }
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    if threads == 0 {
        return Err(CliError::Usage("--threads must be at least 1".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start {threads} threads: {e}")))?;
    let report = pool.install(|| match args.dtype {
        DType::F32 => run_typed::<f32>(args, n, k, threads),
        DType::Bf16 => run_typed::<bf16>(args, n, k, threads),
        DType::F16 => run_typed::<f16>(args, n, k, threads),
    })?;
    let w = CliError::Stdout;
    if args.json {
        let line =
            serde_json::to_string(&report).map_err(|e| CliError::Runtime(format!("encoding the JSON output: {e}")))?;
        writeln!(out, "{line}").map_err(w)?;
    } else {
        let r = &report;
        writeln!(
            out,
            "shape {}x{} {}, {} thread(s), {}, {} ({} rounds of loss, copy, read)\n\
             loss     median {:>10.3} ms  {:>7.2} GB/s  {:>9.1} ns/row\n\
             copy     median {:>10.3} ms  {:>7.2} GB/s  (read + write of {} bytes)\n\
             read     median {:>10.3} ms\n\
             loss/copy bandwidth {:.0}% (per-round quartiles {:.0}-{:.0}%), loss/read time {:.2}x, peak RSS {}",
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
            100.0 * r.fraction_of_copy_quartiles[0],
            100.0 * r.fraction_of_copy_quartiles[1],
            r.ratio_to_read,
            r.peak_rss_bytes.map_or("unknown".to_string(), |b| format!(
                "{:.1} MiB",
                b as f64 / (1 << 20) as f64
            )),
        )
        .map_err(w)?;
        if let (Some(p), Some(ratio)) = (r.plain_median_s, r.ratio_to_plain) {
            writeln!(
                out,
                "plain    median {:>10.3} ms  (the same loss without --z-loss and --softcap, in the same rounds): \
                 loss/plain time {ratio:.3}x",
                p * 1e3
            )
            .map_err(w)?;
        }
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
