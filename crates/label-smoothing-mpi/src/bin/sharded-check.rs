//! `sharded-check`: checks the sharded losses against one process on this MPI set-up. Launch it with
//! `mpirun -np P sharded-check MODE`; every rank prints one line and exits 0 when the check holds, 1 when it
//! does not. The crate's tests run it for P = 1..4; on a cluster it checks an MPI installation end to end.
//!
//! Modes:
//! - `cases`: the sharded loss and gradient on generated problems (several shapes, configurations and layouts)
//!   against the single-process loss on the whole logits, computed on every rank: bit for bit where the layout is
//!   cut at chunk boundaries, within 1e-5 elsewhere; the sharded linear loss against the single-process one;
//!   Megatron-LM's vocabulary-parallel smoothing formula against the float64 definition.
//! - `bad-layout`, `bad-label`, `bad-rows`, `bad-config`, `bad-hidden`: one rank's input is wrong; every rank must return the
//!   expected typed error (and the process exit, not hang).

use label_smoothing::linear::{LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::reference;
use label_smoothing::rng::SplitMix64;
use label_smoothing::shard::{ShardLayout, CHUNK};
use label_smoothing::{GradOutput, LabelSmoothingConfig, Reduction, Spread, Targets};
use label_smoothing_mpi::{ShardError, ShardedLinearLoss, ShardedLoss};
use mpi::traits::*;
use std::process::ExitCode;

/// Deterministic logits in about [-6, 6], the same on every rank.
fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut g = SplitMix64::new(seed);
    (0..len).map(|_| g.uniform(-1.0, 1.0) as f32 * scale).collect()
}

fn labels_for(n: usize, k: usize, seed: usize, ignore: Option<i64>) -> Vec<i64> {
    (0..n)
        .map(|i| match ignore {
            Some(ig) if i % 5 == 3 => ig,
            _ => ((i * 2_654_435_761 + seed * 97) % k) as i64,
        })
        .collect()
}

fn configs(k: usize) -> Vec<(&'static str, LabelSmoothingConfig)> {
    let w: Vec<f32> = (0..k).map(|c| 0.5 + (c % 7) as f32 * 0.25).collect();
    vec![
        ("pytorch 0.1", LabelSmoothingConfig::pytorch(0.1)),
        ("fast-reid 0.1", LabelSmoothingConfig::fast_reid(0.1, 0.2)),
        (
            "adaptive 0.2 mean-nonzero",
            LabelSmoothingConfig::new()
                .with_adaptive(0.2)
                .with_reduction(Reduction::MeanNonZero),
        ),
        (
            "plain sum",
            LabelSmoothingConfig::new()
                .with_smoothing(0.0)
                .with_reduction(Reduction::Sum),
        ),
        (
            "weighted uniform, ignore",
            LabelSmoothingConfig::pytorch(0.1)
                .with_weights(Some(w.clone()))
                .with_ignore_index(Some(-100)),
        ),
        (
            "others 0.2 none, weighted, ignore",
            LabelSmoothingConfig::new()
                .with_smoothing(0.2)
                .with_weights(Some(w.clone()))
                .with_reduction(Reduction::None)
                .with_ignore_index(Some(-100)),
        ),
        // z-loss (of the global log-sum-exp; over the rows, not the weights, for the weighted mean) and
        // soft-capping.
        (
            "pytorch 0.1, z-loss 1e-3, softcap 6",
            LabelSmoothingConfig::pytorch(0.1).with_z_loss(1e-3).with_softcap(6.0),
        ),
        (
            "weighted mean, ignore, z-loss 0.02",
            LabelSmoothingConfig::pytorch(0.05)
                .with_weights(Some(w))
                .with_ignore_index(Some(-100))
                .with_z_loss(0.02),
        ),
        (
            "adaptive 0.2 none, softcap 2.5",
            LabelSmoothingConfig::new()
                .with_adaptive(0.2)
                .with_reduction(Reduction::None)
                .with_softcap(2.5),
        ),
    ]
}

/// `config` with only the weights of `range` (what a rank gives [`ShardedLoss::new`]).
fn local_config(config: &LabelSmoothingConfig, range: std::ops::Range<usize>) -> LabelSmoothingConfig {
    LabelSmoothingConfig {
        weights: config.weights.as_ref().map(|w| w[range].to_vec()),
        ..config.clone()
    }
}

fn layouts(k: usize, p: usize) -> Vec<(&'static str, ShardLayout)> {
    let mut out = vec![("even", ShardLayout::even(k, p).unwrap())];
    if p > 1 {
        let lens: Vec<usize> = (0..p).map(|r| (r + 1) * k / p - r * k / p).collect();
        let by_class = ShardLayout::from_lens(&lens).unwrap();
        if !by_class.chunk_aligned() {
            out.push(("by classes", by_class));
        }
    }
    out
}

fn slice_rows(z: &[f32], k: usize, range: std::ops::Range<usize>) -> Vec<f32> {
    z.chunks(k).flat_map(|row| row[range.clone()].to_vec()).collect()
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs()) || (a.is_nan() && b.is_nan())
}

/// The logits cases; returns (cases, of which bit-identical) or a description of the first failure.
fn logits_cases(world: &impl Communicator) -> Result<(usize, usize), String> {
    let (p, rank) = (world.size() as usize, world.rank() as usize);
    let mut done = (0, 0);
    for (case, &(n, k)) in [(13usize, 4 * CHUNK + 300), (3, 2 * CHUNK), (9, 700), (1, 5 * CHUNK)]
        .iter()
        .enumerate()
    {
        let z = values(n * k, case as u64 + 1, 6.0);
        for (name, config) in configs(k) {
            let labels = labels_for(n, k, case, config.ignore_index);
            let per_row: Vec<f32> = (0..n).map(|i| 0.5 + 0.1 * i as f32).collect();
            let go = if config.reduction == Reduction::None {
                GradOutput::PerRow(&per_row)
            } else {
                GradOutput::Scalar(0.7)
            };
            let single = config.clone().init(k).unwrap();
            let mut g1 = vec![0.0f32; n * k];
            let l1 = single.loss_and_grad(&z, Targets::Labels(&labels), go, &mut g1).unwrap();
            for (lname, layout) in layouts(k, p) {
                if layout.parts() != p {
                    continue;
                }
                let range = layout.range(rank);
                let loss = ShardedLoss::new(world, local_config(&config, range.clone()), k, range.start, range.len())
                    .map_err(|e| format!("{name}, {lname}: new: {e}"))?;
                let zr = slice_rows(&z, k, range.clone());
                let mut g = vec![f32::NAN; zr.len()];
                let l = loss
                    .loss_and_grad(&zr, &labels, go, &mut g)
                    .map_err(|e| format!("{name}, {lname}: {e}"))?;
                let want = slice_rows(&g1, k, range.clone());
                let what = format!("[{n}, {k}] {name}, layout {lname} {:?}", layout.range(rank));
                if layout.chunk_aligned() {
                    if l != l1 {
                        return Err(format!("{what}: loss {l:?} is not bit-identical to {l1:?}"));
                    }
                    if let Some(i) = g.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits()) {
                        return Err(format!(
                            "{what}: grad[{i}] = {} is not bit-identical to {}",
                            g[i], want[i]
                        ));
                    }
                    done.1 += 1;
                } else {
                    for (a, b) in l.as_slice().iter().zip(l1.as_slice()) {
                        if !close(*a, *b, 1e-5) {
                            return Err(format!("{what}: loss {a} vs one process {b}"));
                        }
                    }
                    if let Some(i) = g.iter().zip(&want).position(|(a, b)| !close(*a, *b, 1e-5)) {
                        return Err(format!("{what}: grad[{i}] = {} vs one process {}", g[i], want[i]));
                    }
                }
                // In place: the same loss and gradient bits as with a separate buffer.
                let mut zi = zr.clone();
                let li = loss
                    .loss_and_grad_in_place(&mut zi, &labels, go)
                    .map_err(|e| format!("{name}, {lname}: {e}"))?;
                if li != l || zi.iter().zip(&g).any(|(a, b)| a.to_bits() != b.to_bits()) {
                    return Err(format!(
                        "[{n}, {k}] {name}, layout {lname}: in place differs from a separate gradient"
                    ));
                }
                // The loss alone (upstream gradient 1, which does not change the value) agrees.
                if loss.loss(&zr, &labels).map_err(|e| e.to_string())? != l {
                    return Err(format!("{what}: loss() differs from loss_and_grad()"));
                }
                done.0 += 1;
            }
        }
    }
    Ok(done)
}

/// The sharded linear loss against the single-process one.
fn linear_cases(world: &impl Communicator) -> Result<usize, String> {
    let (p, rank) = (world.size() as usize, world.rank() as usize);
    let mut done = 0;
    for &(n, d, k, block) in &[(37usize, 24usize, 3 * CHUNK + 11, 16usize), (5, 8, 300, 2)] {
        let x = values(n * d, 11, 1.0);
        let w = values(k * d, 12, 0.5);
        let b = values(k, 13, 0.5);
        for (name, config) in configs(k) {
            let labels = labels_for(n, k, 3, config.ignore_index);
            let per_row: Vec<f32> = (0..n).map(|i| 1.0 - 0.05 * i as f32).collect();
            let go = if config.reduction == Reduction::None {
                GradOutput::PerRow(&per_row)
            } else {
                GradOutput::ONE
            };
            let single = LinearCrossEntropy::new(config.clone().init(k).unwrap(), d).unwrap();
            let (mut gx1, mut gw1, mut gb1) = (vec![0.0; n * d], vec![0.0; k * d], vec![0.0; k]);
            let inputs = LinearInputs {
                x: &x,
                weight: &w,
                bias: Some(&b),
            };
            let l1 = single
                .loss_and_grad(
                    inputs,
                    &labels,
                    go,
                    LinearGrads {
                        x: Some(&mut gx1),
                        weight: Some(&mut gw1),
                        bias: Some(&mut gb1),
                    },
                )
                .unwrap();
            let layout = ShardLayout::even(k, p).unwrap();
            let range = layout.range(rank);
            let loss = ShardedLinearLoss::new(
                world,
                local_config(&config, range.clone()),
                k,
                range.start,
                range.len(),
                d,
            )
            .and_then(|l| l.with_block_rows(block))
            .map_err(|e| format!("linear {name}: {e}"))?;
            let (wr, br) = (&w[range.start * d..range.end * d], &b[range.clone()]);
            let (mut gx, mut gw, mut gb) = (vec![0.0; n * d], vec![0.0; range.len() * d], vec![0.0; range.len()]);
            let l = loss
                .loss_and_grad(
                    LinearInputs {
                        x: &x,
                        weight: wr,
                        bias: Some(br),
                    },
                    &labels,
                    go,
                    LinearGrads {
                        x: Some(&mut gx),
                        weight: Some(&mut gw),
                        bias: Some(&mut gb),
                    },
                )
                .map_err(|e| format!("linear {name}: {e}"))?;
            let what = format!("linear [{n}, {d}, {k}] {name}");
            for (a, b) in l.as_slice().iter().zip(l1.as_slice()) {
                if !close(*a, *b, 1e-5) {
                    return Err(format!("{what}: loss {a} vs one process {b}"));
                }
            }
            let checks: [(&str, &[f32], &[f32]); 3] = [
                ("grad x", &gx, &gx1),
                ("grad W", &gw, &gw1[range.start * d..range.end * d]),
                ("grad b", &gb, &gb1[range.clone()]),
            ];
            for (gname, got, want) in checks {
                if let Some(i) = got
                    .iter()
                    .zip(want)
                    .position(|(a, b)| (a - b).abs() > 1e-6 + 1e-4 * b.abs())
                {
                    return Err(format!("{what}: {gname}[{i}] = {} vs one process {}", got[i], want[i]));
                }
            }
            done += 1;
        }
    }
    Ok(done)
}

/// Megatron-LM's `vocab_parallel_cross_entropy` with label smoothing, on this rank's shard, in f64: the
/// global log-sum-exp, but `K_r` (the shard's class count) in `smoothing = a K / (K - 1)` and the mean of the
/// log-probabilities over the shard's classes only.
fn megatron_loss(z_row: &[f32], range: std::ops::Range<usize>, y: usize, a: f64) -> f64 {
    let lse = {
        let m = z_row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        m + z_row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
    };
    let nll = lse - z_row[y] as f64;
    let kr = range.len() as f64;
    let smoothing = a * kr / (kr - 1.0);
    let mean_log_probs = range.clone().map(|c| z_row[c] as f64 - lse).sum::<f64>() / kr;
    (1.0 - smoothing) * nll - smoothing * mean_log_probs
}

/// Ours against the float64 definition and Megatron's formula: returns (our max error, Megatron's max error
/// over the rows and the ranks).
fn megatron_case(world: &impl Communicator) -> Result<(f64, f64), String> {
    let (p, rank) = (world.size() as usize, world.rank() as usize);
    let (n, k, a) = (8usize, 3 * CHUNK, 0.1f32);
    // Logits that rise across the classes, as a trained model's do across its frequent classes: the shards'
    // means of the log-probabilities then differ, which is what Megatron's formula gets wrong.
    let z: Vec<f32> = values(n * k, 99, 2.0)
        .iter()
        .enumerate()
        .map(|(i, v)| v + 8.0 * (i % k) as f32 / k as f32)
        .collect();
    let labels = labels_for(n, k, 7, None);
    let config = LabelSmoothingConfig::new()
        .with_spread(Spread::Others)
        .with_smoothing(a)
        .with_reduction(Reduction::None);
    let layout = ShardLayout::even(k, p).unwrap();
    let range = layout.range(rank);
    let loss = ShardedLoss::new(world, config.clone(), k, range.start, range.len()).map_err(|e| e.to_string())?;
    let ours = loss
        .loss(&slice_rows(&z, k, range.clone()), &labels)
        .map_err(|e| e.to_string())?;
    let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    let defn = reference::loss_and_grad(&config, k, &z64, reference::RefTargets::Labels(&labels), None)
        .map_err(|e| e.to_string())?
        .loss;
    let (mut ours_err, mut megatron_err) = (0.0f64, 0.0f64);
    for i in 0..n {
        let row = &z[i * k..(i + 1) * k];
        let y = labels[i] as usize;
        let defn = defn[i];
        ours_err = ours_err.max((ours.as_slice()[i] as f64 - defn).abs() / defn.abs().max(1.0));
        // Every rank's value of Megatron's formula (each rank here holds the whole logits): they differ.
        for r in 0..p {
            let m = megatron_loss(row, layout.range(r), y, a as f64);
            megatron_err = megatron_err.max((m - defn).abs() / defn.abs().max(1.0));
        }
    }
    Ok((ours_err, megatron_err))
}

/// One rank's wrong input; every rank must get `expect`.
fn bad_input(world: &impl Communicator, mode: &str) -> Result<String, String> {
    let (p, rank) = (world.size() as usize, world.rank() as usize);
    let k = 10 * p + 1;
    let last = p - 1;
    let layout = ShardLayout::even(k, p).unwrap();
    let range = layout.range(rank);
    let config = LabelSmoothingConfig::pytorch(0.1);
    let err: ShardError = match mode {
        "bad-layout" => {
            // The last rank claims one class more than it has: the shards overlap and miss nothing, or run past K.
            let (offset, len) = if rank == last {
                (range.start - 1, range.len() + 1)
            } else {
                (range.start, range.len())
            };
            match ShardedLoss::new(world, config, k, offset, len) {
                Ok(_) => return Err("a layout whose last shard overlaps the one before was accepted".into()),
                Err(e) => {
                    if !matches!(&e, ShardError::Loss(label_smoothing::LossError::ShardLayout { .. })) {
                        return Err(format!("expected a layout error, got {e}"));
                    }
                    e
                }
            }
        }
        "bad-config" => {
            let config = if rank == last {
                LabelSmoothingConfig::pytorch(0.2)
            } else {
                config
            };
            match ShardedLoss::new(world, config, k, range.start, range.len()) {
                Ok(_) => return Err("ranks with different smoothing were accepted".into()),
                Err(e) => {
                    if !matches!(&e, ShardError::Mismatch { rank: r, what: "the loss configuration", .. } if *r == last)
                    {
                        return Err(format!("expected a configuration mismatch at rank {last}, got {e}"));
                    }
                    e
                }
            }
        }
        "bad-hidden" => {
            let hidden = if rank == last { 9 } else { 8 };
            match ShardedLinearLoss::new(world, config, k, range.start, range.len(), hidden) {
                Ok(_) => return Err("ranks with different hidden sizes were accepted".into()),
                Err(e) => {
                    if !matches!(&e, ShardError::Mismatch { rank: r, what: "the hidden size D", .. } if *r == last) {
                        return Err(format!("expected a hidden-size mismatch at rank {last}, got {e}"));
                    }
                    e
                }
            }
        }
        "bad-label" | "bad-rows" => bad_call(world, mode, k, range, config)?,
        other => return Err(format!("unknown mode {other}")),
    };
    Ok(format!("error as expected: {err}"))
}

/// A call with a label out of range (`bad-label`) or one row fewer (`bad-rows`) on the last rank: the error,
/// if it is the expected one on every rank.
fn bad_call(
    world: &impl Communicator,
    mode: &str,
    k: usize,
    range: std::ops::Range<usize>,
    config: LabelSmoothingConfig,
) -> Result<ShardError, String> {
    let (p, rank) = (world.size() as usize, world.rank() as usize);
    let (last, n) = (p - 1, 6);
    let loss = ShardedLoss::new(world, config, k, range.start, range.len()).map_err(|e| e.to_string())?;
    let mut labels = labels_for(n, k, 1, None);
    let mut rows = n;
    if rank == last {
        if mode == "bad-label" {
            labels[3] = k as i64;
        } else {
            rows = n - 1;
            labels.pop();
        }
    }
    let z = values(rows * range.len(), 5, 3.0);
    let mut g = vec![0.0; z.len()];
    match loss.loss_and_grad(&z, &labels, GradOutput::ONE, &mut g) {
        Ok(_) => Err(format!("{mode}: accepted")),
        Err(e) => {
            let ok = match mode {
                "bad-label" => matches!(&e, ShardError::Input { rank: r, message, .. }
                    if *r == last && message.contains("row 3") && message.contains(&format!("label {k}"))),
                _ => {
                    matches!(&e, ShardError::Mismatch { rank: r, what: "N (the number of rows)", .. } if *r == last)
                }
            };
            if !ok {
                return Err(format!("{mode}: unexpected error {e}"));
            }
            if let ShardError::Input { local, .. } = &e {
                if (rank == last) != local.is_some() {
                    return Err(format!(
                        "{mode}: the typed error must be on the failing rank only: {e:?}"
                    ));
                }
            }
            Ok(e)
        }
    }
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "cases".into());
    let Some(universe) = mpi::initialize() else {
        eprintln!("sharded-check: MPI could not be initialised");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let (p, rank) = (world.size(), world.rank());
    let result = if mode == "cases" {
        logits_cases(&world).and_then(|(cases, bitwise)| {
            let linear = linear_cases(&world)?;
            let (ours, megatron) = megatron_case(&world)?;
            if ours > 1e-5 {
                return Err(format!("our sharded loss is {ours} from the float64 definition"));
            }
            // One shard: Megatron's formula is the definition; more: it is not.
            if p == 1 && megatron > 1e-9 {
                return Err(format!(
                    "Megatron's formula on one shard is {megatron} from the definition"
                ));
            }
            if p > 1 && megatron < 1e-2 {
                return Err(format!(
                    "Megatron's formula on {p} shards is only {megatron} from the definition"
                ));
            }
            Ok(format!(
                "ok: {cases} logits cases ({bitwise} bit-identical to one process), {linear} linear cases; \
                 largest relative error from the float64 definition: ours {ours:.1e}, Megatron's formula {megatron:.1e}"
            ))
        })
    } else {
        bad_input(&world, &mode)
    };
    match result {
        Ok(msg) => {
            println!("rank {rank}/{p}: {msg}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            println!("rank {rank}/{p}: FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}
