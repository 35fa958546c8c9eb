//! Trains the classifier head of a synthetic 100,000-class problem with its classes sharded over the MPI ranks,
//! and prints the loss of every step, the same as one process.
//!
//! ```text
//! cargo build --release --example sharded_head -p label-smoothing-mpi
//! mpirun -np 4 target/release/examples/sharded_head            # sharded over 4 processes
//! target/release/examples/sharded_head --single                 # one process, no MPI: the same losses
//! ```
//!
//! Each class `c` has a prototype in `D` dimensions; a row is its class's prototype plus noise; the head
//! `W [K, D]`, `b [K]` starts small and is trained by SGD on the label-smoothed loss (PyTorch's convention,
//! 0.1). Rank `r` generates and trains only its rows `W_r`, `b_r` (the classes of an even split cut at chunk
//! boundaries); the features `x` are the same on every rank.

use label_smoothing::linear::{LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::rng::SplitMix64;
use label_smoothing::shard::ShardLayout;
use label_smoothing::{GradOutput, LabelSmoothingConfig, Loss};
use label_smoothing_mpi::ShardedLinearLoss;
use mpi::traits::*;
use std::time::Instant;

struct Args {
    classes: usize,
    hidden: usize,
    rows: usize,
    steps: usize,
    lr: f32,
    single: bool,
}

fn parse() -> Args {
    let mut a = Args {
        classes: 100_000,
        hidden: 64,
        rows: 512,
        steps: 10,
        lr: 50.0,
        single: false,
    };
    let mut it = std::env::args().skip(1);
    let fail = |what: String| -> ! {
        eprintln!("{what}; flags: --classes K --hidden D --rows N --steps S --lr LR --single");
        std::process::exit(2)
    };
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> String { it.next().unwrap_or_else(|| fail(format!("{name} needs a value"))) };
        let mut count = |name: &str| -> usize {
            let v = value(name);
            v.parse()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| fail(format!("{name} {v}: expected a positive integer")))
        };
        match flag.as_str() {
            "--classes" => a.classes = count("--classes"),
            "--hidden" => a.hidden = count("--hidden"),
            "--rows" => a.rows = count("--rows"),
            "--steps" => a.steps = count("--steps"),
            "--lr" => {
                let v = value("--lr");
                a.lr = v
                    .parse()
                    .ok()
                    .filter(|lr: &f32| lr.is_finite() && *lr > 0.0)
                    .unwrap_or_else(|| fail(format!("--lr {v}: expected a positive number")))
            }
            "--single" => a.single = true,
            other => fail(format!("unknown flag {other}")),
        }
    }
    a
}

/// Checks that every rank was given the same arguments (one all-gather, before any step): ranks that disagree
/// would wait for each other's exchanges forever, or train silently apart. On a mismatch every rank says which
/// argument differs and exits.
fn agree(world: &impl Communicator, a: &Args) {
    let names = ["--classes", "--hidden", "--rows", "--steps", "--lr"];
    let mine = [
        a.classes as u64,
        a.hidden as u64,
        a.rows as u64,
        a.steps as u64,
        a.lr.to_bits() as u64,
    ];
    let mut all = vec![0u64; mine.len() * world.size() as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
    for (rank, theirs) in all.chunks_exact(mine.len()).enumerate() {
        if let Some(i) = (0..mine.len()).find(|&i| theirs[i] != all[i]) {
            eprintln!(
                "rank {}: rank {rank} was given other arguments than rank 0 ({} differs)",
                world.rank(),
                names[i]
            );
            std::process::exit(2);
        }
    }
}

/// `len` deterministic values in [-scale, scale] from `seed`.
fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut g = SplitMix64::new(seed);
    (0..len).map(|_| g.uniform(-1.0, 1.0) as f32 * scale).collect()
}

/// The rows' labels and features: prototype of the label plus noise.
fn batch(a: &Args) -> (Vec<i64>, Vec<f32>) {
    let labels: Vec<i64> = (0..a.rows)
        .map(|i| ((i as u64 * 2_654_435_761) % a.classes as u64) as i64)
        .collect();
    let mut x = Vec::with_capacity(a.rows * a.hidden);
    for (i, &y) in labels.iter().enumerate() {
        let proto = values(a.hidden, 1_000_003 + y as u64, 1.0);
        let noise = values(a.hidden, 7 + i as u64, 0.3);
        x.extend(proto.iter().zip(&noise).map(|(p, e)| p + e));
    }
    (labels, x)
}

/// The head's rows for the classes `range`: each class's row from its own seed, so a shard needs only its own.
fn head(a: &Args, range: std::ops::Range<usize>) -> (Vec<f32>, Vec<f32>) {
    let w: Vec<f32> = range
        .clone()
        .flat_map(|c| values(a.hidden, 42 + c as u64, 0.01))
        .collect();
    (w, vec![0.0; range.len()])
}

/// Trains the head rows `classes` by SGD for `a.steps` steps, one call of `loss_and_grad` (the single-process
/// or the sharded loss) per step; prints each step's loss when `print`.
fn train(
    a: &Args,
    x: &[f32],
    classes: std::ops::Range<usize>,
    print: bool,
    mut loss_and_grad: impl FnMut(LinearInputs<'_>, LinearGrads<'_>) -> Loss,
) {
    let (mut w, mut b) = head(a, classes);
    let (mut gw, mut gb) = (vec![0.0; w.len()], vec![0.0; b.len()]);
    for step in 0..a.steps {
        let t = Instant::now();
        let inputs = LinearInputs {
            x,
            weight: &w,
            bias: Some(&b),
        };
        let grads = LinearGrads {
            x: None,
            weight: Some(&mut gw),
            bias: Some(&mut gb),
        };
        let loss = loss_and_grad(inputs, grads);
        for (p, g) in w.iter_mut().zip(&gw).chain(b.iter_mut().zip(&gb)) {
            *p -= a.lr * g;
        }
        if print {
            let l = loss.scalar().unwrap();
            println!("step {step}: loss {l:.6} (bits {:08x})", l.to_bits());
            eprintln!("step {step}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        }
    }
}

fn main() {
    let a = parse();
    let config = LabelSmoothingConfig::pytorch(0.1);
    let (labels, x) = batch(&a);
    let d = a.hidden;
    if a.single {
        let lce = LinearCrossEntropy::new(config.init(a.classes).expect("config"), d).expect("hidden");
        println!("one process, {} classes, {} rows, D = {d}", a.classes, a.rows);
        train(&a, &x, 0..a.classes, true, |inputs, grads| {
            lce.loss_and_grad(inputs, &labels, GradOutput::ONE, grads)
                .expect("loss")
        });
        return;
    }
    let universe = mpi::initialize().expect("MPI could not be initialised");
    let world = universe.world();
    agree(&world, &a);
    let (p, rank) = (world.size() as usize, world.rank() as usize);
    let layout = ShardLayout::even(a.classes, p).expect("layout");
    let range = layout.range(rank);
    let fail = |e: label_smoothing_mpi::ShardError| -> ! {
        eprintln!("rank {rank}: {e}");
        std::process::exit(1)
    };
    let loss_fn =
        ShardedLinearLoss::new(&world, config, a.classes, range.start, range.len(), d).unwrap_or_else(|e| fail(e));
    if rank == 0 {
        println!(
            "{p} processes, {} classes, {} rows, D = {d}; rank 0 holds classes {range:?}",
            a.classes, a.rows
        );
    }
    train(&a, &x, range, rank == 0, |inputs, grads| {
        loss_fn
            .loss_and_grad(inputs, &labels, GradOutput::ONE, grads)
            .unwrap_or_else(|e| fail(e))
    });
}
