//! `lsmooth bench --linear NxDxK`: the fused linear loss (forward and backward) next to the unfused
//! composition (the same products around the fused loss on materialised logits) and the three products alone.

use super::timing::{median, peak_rss, reset_peak_rss, rss};
use crate::cli::{BenchArgs, DType};
use crate::CliError;
use label_smoothing::linear::{self, LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::rng::SplitMix64;
use label_smoothing::GradOutput;
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// What `lsmooth bench --linear ... --json` prints.
#[derive(Debug, Serialize)]
pub struct LinearBenchReport {
    /// Rows (tokens, examples).
    pub n: usize,
    /// Hidden size.
    pub d: usize,
    /// Classes.
    pub k: usize,
    /// Rayon threads.
    pub threads: usize,
    /// The instruction set the loss kernel dispatched to.
    pub isa: &'static str,
    /// Rows per block of the fused loss.
    pub block_rows: usize,
    /// Classes per block of the fused loss (`k` when the classes are not blocked).
    pub block_classes: usize,
    /// Rounds timed; each times one fused call, one unfused call and the products alone, in that order.
    pub repeat: usize,
    /// Median seconds of the fused loss, forward and backward (`grad_x`, `grad_W`, `grad_b`).
    pub median_s: f64,
    /// Median seconds of the unfused composition.
    pub unfused_median_s: f64,
    /// Median seconds of the three products alone, on full `[N, K]` buffers.
    pub gemm_median_s: f64,
    /// The fused time over the products' time: the median of the per-round ratios.
    pub ratio_to_gemm: f64,
    /// The fused time over the unfused time: the median of the per-round ratios.
    pub ratio_to_unfused: f64,
    /// `6 N D K / median_s`, in GFLOP/s.
    pub gflops: f64,
    /// Median bandwidth of a copy of the weight's bytes into another buffer (read + write), in GB/s.
    pub copy_gbps: f64,
    /// Resident memory before the calls, with the inputs and the three gradient buffers allocated and written.
    pub base_rss_bytes: Option<u64>,
    /// Peak resident memory during one fused call (VmHWM, reset before it).
    pub peak_rss_bytes: Option<u64>,
    /// Peak resident memory during one unfused call.
    pub unfused_peak_rss_bytes: Option<u64>,
    /// Peak resident memory during the products alone.
    pub gemm_peak_rss_bytes: Option<u64>,
    /// `peak_rss_bytes - base_rss_bytes`: the fused loss's own memory.
    pub scratch_bytes: Option<u64>,
    /// `unfused_peak_rss_bytes - base_rss_bytes`.
    pub unfused_scratch_bytes: Option<u64>,
    /// The fused loss (mean over the rows), as a check that the two schedules compute the same thing.
    pub loss: f32,
    /// The unfused composition's loss.
    pub unfused_loss: f32,
    /// With `--peaked M`: the margin of the peaked logits.
    pub peaked: Option<f64>,
    /// With `--filter T`: the threshold.
    pub filter: Option<f64>,
    /// With `--filter T`: median seconds of the fused loss with the gradient filter.
    pub filtered_median_s: Option<f64>,
    /// With `--filter T`: the median over rounds of filtered / fused.
    pub ratio_filtered_to_fused: Option<f64>,
    /// With `--filter T`: the largest `|grad_x|` difference between the filtered and the exact fused loss,
    /// relative to the largest `|grad_x|`.
    pub filtered_grad_x_rel_diff: Option<f64>,
}

fn parse(s: &str) -> Result<(usize, usize, usize), CliError> {
    let err = || {
        CliError::Usage(format!(
            "--linear {s}: expected NxDxK with positive integers, e.g. 4096x1024x32000"
        ))
    };
    let parts: Vec<usize> = s
        .split(['x', 'X'])
        .map(|p| p.trim().parse::<usize>().map_err(|_| err()))
        .collect::<Result<_, _>>()?;
    let [n, d, k] = parts[..] else { return Err(err()) };
    if n == 0 || d == 0 || k < 2 {
        return Err(CliError::Usage(format!(
            "--linear {s}: needs N >= 1, D >= 1 and K >= 2"
        )));
    }
    // The unfused composition allocates [N, K] twice, and the inputs and gradients [N, D] and [K, D] twice each.
    const MAX_ELEMS: usize = 1 << 31;
    for (what, a, b) in [("N*K", n, k), ("N*D", n, d), ("K*D", k, d)] {
        if a.checked_mul(b).is_none_or(|c| c > MAX_ELEMS) {
            return Err(CliError::Usage(format!("--linear {s}: {what} is at most {MAX_ELEMS}")));
        }
    }
    // Inputs and gradients ([N, D] and [K, D] twice each, [K] thrice), the unfused composition's [N, K] twice and
    // the fused loss's block scratch (at most 128 MiB), in f32.
    let (n128, d128, k128) = (n as u128, d as u128, k as u128);
    let bytes = 4 * (2 * n128 * d128 + 3 * k128 * d128 + 3 * k128 + 2 * n128 * k128) + (128 << 20);
    super::timing::check_fits(bytes, "--linear", s)?;
    Ok((n, d, k))
}

/// Uniform values in `[-scale, scale)`, seeded, filled in parallel pieces of fixed size (the same values for
/// any number of threads).
fn uniform(len: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0f32; len];
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(i, c)| {
        let mut rng = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        c.iter_mut()
            .for_each(|x| *x = (rng.next_f64() as f32 * 2.0 - 1.0) * scale);
    });
    v
}

/// The peak resident memory while `f` runs once, where the OS lets it be reset.
fn peak_of(f: &mut impl FnMut()) -> Option<u64> {
    let reset = reset_peak_rss();
    f();
    peak_rss().filter(|_| reset)
}

fn timed(f: &mut impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// The seeded problem: hidden states, weight, bias and labels.
struct Problem {
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    labels: Vec<i64>,
}

impl Problem {
    /// Logits of standard deviation about 1 (x uniform in `[-1, 1)`, W scaled by `1/sqrt(D)`), or with
    /// `--peaked M` each row of x its label's row of W scaled so that its own logit is about `M`, plus noise.
    fn new(args: &BenchArgs, n: usize, d: usize, k: usize) -> Self {
        let mut x = uniform(n * d, 1.0, args.seed);
        let w = uniform(k * d, (3.0 / d as f32).sqrt(), args.seed.wrapping_add(1));
        let bias = uniform(k, 0.1, args.seed.wrapping_add(2));
        let mut rng = SplitMix64::new(args.seed.wrapping_add(3));
        let labels: Vec<i64> = (0..n).map(|_| rng.below(k as u64) as i64).collect();
        if let Some(margin) = args.peaked {
            // Row i: W[y_i] scaled so that x_i . W[y_i] = margin, plus noise of a tenth of x's default spread.
            for (xi, &y) in x.chunks_exact_mut(d).zip(&labels) {
                let wy = &w[y as usize * d..(y as usize + 1) * d];
                let norm2: f64 = wy.iter().map(|&v| v as f64 * v as f64).sum();
                for (v, &we) in xi.iter_mut().zip(wy) {
                    *v = (margin * we as f64 / norm2) as f32 + 0.1 * *v;
                }
            }
        }
        Problem { x, w, bias, labels }
    }

    fn inputs(&self) -> LinearInputs<'_> {
        LinearInputs {
            x: &self.x,
            weight: &self.w,
            bias: Some(&self.bias),
        }
    }
}

/// The three gradient buffers, shared by every schedule (each overwrites them).
struct Grads {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Grads {
    fn all(&mut self) -> LinearGrads<'_> {
        LinearGrads {
            x: Some(&mut self.x),
            weight: Some(&mut self.w),
            bias: Some(&mut self.b),
        }
    }
}

/// The fused loss of the flags, and with `--filter` the same with the gradient filter.
fn losses(args: &BenchArgs, d: usize, k: usize) -> Result<(LinearCrossEntropy, Option<LinearCrossEntropy>), CliError> {
    let mut lce = LinearCrossEntropy::new(args.loss.config(0.1)?.init(k)?, d)?;
    if let Some(b) = args.block_rows {
        lce = lce.with_block_rows(b)?;
    }
    if let Some(c) = args.block_classes {
        lce = lce.with_block_classes(c)?;
    }
    let filtered = match args.filter {
        Some(t) => Some(lce.clone().with_gradient_filter(t as f32)?),
        None => None,
    };
    Ok((lce, filtered))
}

/// One call's loss (NaN for a per-row loss), discarding nothing: errors are returned.
fn call(
    lce: &LinearCrossEntropy,
    p: &Problem,
    grads: &mut Grads,
    unfused: bool,
) -> Result<f32, label_smoothing::LossError> {
    let loss = if unfused {
        linear::unfused(lce, p.inputs(), &p.labels, GradOutput::ONE, grads.all())?
    } else {
        lce.loss_and_grad(p.inputs(), &p.labels, GradOutput::ONE, grads.all())?
    };
    Ok(loss.scalar().unwrap_or(f32::NAN))
}

/// The memory of one call of each schedule, its loss, and the time of one fused call (to size the rounds).
struct Probe {
    base: Option<u64>,
    fused: Option<u64>,
    unfused: Option<u64>,
    gemms: Option<u64>,
    fused_loss: f32,
    unfused_loss: f32,
    seconds: f64,
}

fn probe(lce: &LinearCrossEntropy, p: &Problem, grads: &mut Grads) -> Result<Probe, CliError> {
    let base = rss();
    let (mut fused_loss, mut unfused_loss) = (Ok(f32::NAN), Ok(f32::NAN));
    let fused = peak_of(&mut || fused_loss = call(lce, p, grads, false));
    let seconds = timed(&mut || fused_loss = call(lce, p, grads, false));
    let fused_loss = fused_loss?;
    let unfused = peak_of(&mut || unfused_loss = call(lce, p, grads, true));
    let unfused_loss = unfused_loss?;
    let gemms = peak_of(&mut || linear::gemms_only(lce, p.inputs(), &mut grads.x, &mut grads.w));
    Ok(Probe {
        base,
        fused,
        unfused,
        gemms,
        fused_loss,
        unfused_loss,
        seconds,
    })
}

/// The largest `|grad_x|` difference between the filtered and the exact fused loss, relative to the largest
/// `|grad_x|`.
fn filtered_rel_diff(
    lce: &LinearCrossEntropy,
    filtered: &LinearCrossEntropy,
    p: &Problem,
    grads: &mut Grads,
) -> Result<f64, CliError> {
    call(lce, p, grads, false)?;
    let exact = grads.x.clone();
    call(filtered, p, grads, false)?;
    let big = exact.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let diff = exact
        .iter()
        .zip(&grads.x)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) as f64;
    Ok(if big > 0.0 { diff / big } else { 0.0 })
}

/// Seconds per round of each schedule: fused, filtered (with `--filter`), unfused, the products, a copy of W.
#[derive(Default)]
struct Rounds {
    fused: Vec<f64>,
    filtered: Vec<f64>,
    unfused: Vec<f64>,
    gemms: Vec<f64>,
    copy: Vec<f64>,
}

fn rounds(
    (lce, filtered): (&LinearCrossEntropy, Option<&LinearCrossEntropy>),
    p: &Problem,
    grads: &mut Grads,
    repeat: usize,
) -> Rounds {
    let mut t = Rounds::default();
    let mut copy = vec![0.0f32; p.w.len()];
    for _ in 0..repeat {
        t.fused.push(timed(&mut || {
            let _ = call(lce, p, grads, false);
        }));
        if let Some(flce) = filtered {
            t.filtered.push(timed(&mut || {
                let _ = call(flce, p, grads, false);
            }));
        }
        t.unfused.push(timed(&mut || {
            let _ = call(lce, p, grads, true);
        }));
        t.gemms.push(timed(&mut || {
            linear::gemms_only(lce, p.inputs(), &mut grads.x, &mut grads.w)
        }));
        t.copy.push(timed(&mut || {
            copy.par_chunks_mut(1 << 15)
                .zip(p.w.par_chunks(1 << 15))
                .for_each(|(d, s)| d.copy_from_slice(s));
            std::hint::black_box(&copy);
        }));
    }
    t
}

fn bench(args: &BenchArgs, n: usize, d: usize, k: usize, threads: usize) -> Result<LinearBenchReport, CliError> {
    let (lce, filtered) = losses(args, d, k)?;
    let p = Problem::new(args, n, d, k);
    let mut grads = Grads {
        x: vec![1.0f32; n * d],
        w: vec![1.0f32; k * d],
        b: vec![1.0f32; k],
    };
    let probe = probe(&lce, &p, &mut grads)?;
    // About 30 s of fused calls in all, unless given; every round times the schedules in turn.
    let repeat = args
        .repeat
        .unwrap_or_else(|| ((30.0 / probe.seconds.max(1e-9)) as usize).clamp(3, 50));
    let filtered_rel = match &filtered {
        Some(f) => Some(filtered_rel_diff(&lce, f, &p, &mut grads)?),
        None => None,
    };
    let t = rounds((&lce, filtered.as_ref()), &p, &mut grads, repeat);
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let median_s = median(t.fused.clone());
    let sub = |peak: Option<u64>| Some(peak?.saturating_sub(probe.base?));
    let with_filter = !t.filtered.is_empty();
    Ok(LinearBenchReport {
        n,
        d,
        k,
        threads,
        isa: label_smoothing::instruction_set(),
        block_rows: lce.block_rows(n),
        block_classes: lce.block_classes(),
        repeat,
        median_s,
        unfused_median_s: median(t.unfused.clone()),
        gemm_median_s: median(t.gemms.clone()),
        ratio_to_gemm: ratio(&t.fused, &t.gemms),
        ratio_to_unfused: ratio(&t.fused, &t.unfused),
        gflops: 6.0 * n as f64 * d as f64 * k as f64 / median_s / 1e9,
        copy_gbps: 8.0 * (k * d) as f64 / median(t.copy) / 1e9,
        base_rss_bytes: probe.base,
        peak_rss_bytes: probe.fused,
        unfused_peak_rss_bytes: probe.unfused,
        gemm_peak_rss_bytes: probe.gemms,
        scratch_bytes: sub(probe.fused),
        unfused_scratch_bytes: sub(probe.unfused),
        loss: probe.fused_loss,
        unfused_loss: probe.unfused_loss,
        peaked: args.peaked,
        filter: args.filter,
        filtered_median_s: with_filter.then(|| median(t.filtered.clone())),
        ratio_filtered_to_fused: with_filter.then(|| ratio(&t.filtered, &t.fused)),
        filtered_grad_x_rel_diff: filtered_rel,
    })
}

/// Runs `bench --linear` and prints a short table, or one JSON object with `--json`.
pub(super) fn run(args: &BenchArgs, shape: &str, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let (n, d, k) = parse(shape)?;
    if args.dtype != DType::F32 {
        return Err(CliError::Usage("--linear takes f32 inputs only (--dtype f32)".into()));
    }
    let threads = args.threads.unwrap_or_else(rayon::current_num_threads);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start {threads} threads: {e}")))?;
    let r = pool.install(|| bench(args, n, d, k, threads))?;
    let w = CliError::Stdout;
    if args.json {
        let line =
            serde_json::to_string(&r).map_err(|e| CliError::Runtime(format!("encoding the JSON output: {e}")))?;
        return writeln!(out, "{line}").map_err(w);
    }
    let mib = |b: Option<u64>| {
        b.map_or("unknown".to_string(), |b| {
            format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
        })
    };
    writeln!(
        out,
        "linear {}x{}x{} f32, {} thread(s), {}, blocks of {} rows x {} classes ({} rounds)\n\
         fused    median {:>9.3} s  {:>6.1} GFLOP/s  peak RSS {} (scratch {})\n\
         unfused  median {:>9.3} s  peak RSS {} (scratch {})\n\
         products median {:>9.3} s  peak RSS {}\n\
         fused/products {:.3}x, fused/unfused {:.3}x; copy {:.1} GB/s; loss {} (unfused {})",
        r.n,
        r.d,
        r.k,
        r.threads,
        r.isa,
        r.block_rows,
        r.block_classes,
        r.repeat,
        r.median_s,
        r.gflops,
        mib(r.peak_rss_bytes),
        mib(r.scratch_bytes),
        r.unfused_median_s,
        mib(r.unfused_peak_rss_bytes),
        mib(r.unfused_scratch_bytes),
        r.gemm_median_s,
        mib(r.gemm_peak_rss_bytes),
        r.ratio_to_gemm,
        r.ratio_to_unfused,
        r.copy_gbps,
        r.loss,
        r.unfused_loss,
    )
    .map_err(w)?;
    if let (Some(t), Some(m), Some(q), Some(e)) = (
        r.filter,
        r.filtered_median_s,
        r.ratio_filtered_to_fused,
        r.filtered_grad_x_rel_diff,
    ) {
        writeln!(
            out,
            "filtered median {m:>9.3} s  (threshold {t:e}): {q:.3}x the fused loss; grad_x off by {e:.1e} of its largest entry"
        )
        .map_err(w)?;
    }
    Ok(())
}
