//! Times the sharded loss (forward and backward) on `[N, K]` logits split over the ranks, and prints one JSON
//! line from rank 0. The numbers in docs/DISTRIBUTED.md come from it:
//!
//! ```text
//! cargo build --release --example sharded_bench -p label-smoothing-mpi
//! RAYON_NUM_THREADS=1 mpirun --oversubscribe -np 2 target/release/examples/sharded_bench --rows 2048 --classes 131072
//! ```
//!
//! Each rank generates its own `[N, K_r]` logits (an even split at chunk boundaries); every round starts and
//! ends with a barrier, so a round's time is the slowest rank's. Also measured, in the same run: the
//! all-gather of the records alone (the communication) and the machine's copy bandwidth (a 256 MiB copy).

use label_smoothing::rng::SplitMix64;
use label_smoothing::shard::ShardLayout;
use label_smoothing::{GradOutput, LabelSmoothingConfig};
use label_smoothing_mpi::ShardedLoss;
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let (n, k, repeat) = parse_args();
    let universe = mpi::initialize().expect("MPI could not be initialised");
    let world = universe.world();
    let (p, rank) = (world.size() as usize, world.rank() as usize);
    let layout = ShardLayout::even(k, p).expect("layout");
    let range = layout.range(rank);
    let loss = ShardedLoss::new(&world, LabelSmoothingConfig::pytorch(0.1), k, range.start, range.len()).expect("loss");
    let mut g = SplitMix64::new(rank as u64 + 1);
    let logits: Vec<f32> = (0..n * range.len()).map(|_| g.uniform(-8.0, 8.0) as f32).collect();
    let labels: Vec<i64> = (0..n).map(|i| ((i * 2_654_435_761) % k) as i64).collect();
    let mut grad = vec![0.0f32; logits.len()];

    let mut times = Vec::new();
    for _ in 0..repeat + 1 {
        world.barrier();
        let t = Instant::now();
        loss.loss_and_grad(&logits, &labels, GradOutput::ONE, &mut grad)
            .expect("loss");
        world.barrier();
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0); // the first round pays for page faults

    // On one rank, the single-process fused loss on the same logits, in alternating rounds with the above.
    let mut single = Vec::new();
    if p == 1 {
        let loss_fn = loss.plan().loss_fn();
        let targets = label_smoothing::Targets::Labels(&labels);
        for _ in 0..repeat {
            let t = Instant::now();
            loss_fn
                .loss_and_grad(&logits, targets, GradOutput::ONE, &mut grad)
                .expect("loss");
            single.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            loss.loss_and_grad(&logits, &labels, GradOutput::ONE, &mut grad)
                .expect("loss");
            times.push(t.elapsed().as_secs_f64());
        }
    }

    // The exchange alone: the same all-gather of the records.
    let plan = loss.plan();
    let counts: Vec<i32> = (0..p).map(|r| (n * plan.record_len(r)) as i32).collect();
    let exchange = exchange_times(&world, &counts, n * plan.record_len(rank), repeat);
    let copy = if rank == 0 { copy_gbps() } else { 0.0 };
    if rank == 0 {
        let med = median(times);
        let single = if single.is_empty() {
            "null".to_string()
        } else {
            format!("{:.6}", median(single))
        };
        let sent: usize = n * plan.record_len(rank) * 8;
        let received: usize = counts.iter().map(|&c| c as usize).sum::<usize>() * 8;
        println!(
            "{{\"ranks\": {p}, \"threads_per_rank\": {}, \"rows\": {n}, \"classes\": {k}, \"median_s\": {med:.6}, \"single_process_median_s\": {single}, \
             \"exchange_median_s\": {:.6}, \"record_bytes_sent_rank0\": {sent}, \"record_bytes_gathered\": {received}, \
             \"logits_gb_per_s\": {:.2}, \"copy_gb_per_s\": {copy:.2}}}",
            rayon_threads(),
            median(exchange),
            // Logits read and gradient written: 8 bytes per element.
            8.0 * (n * k) as f64 / med / 1e9,
        );
    }
}

/// `--rows N --classes K --repeat R` (defaults 2048, 131072, 7).
fn parse_args() -> (usize, usize, usize) {
    let mut args = std::env::args().skip(1);
    let (mut n, mut k, mut repeat) = (2048usize, 131_072usize, 7usize);
    while let Some(flag) = args.next() {
        let v: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("flags take a positive integer");
        match flag.as_str() {
            "--rows" => n = v,
            "--classes" => k = v,
            "--repeat" => repeat = v,
            other => panic!("unknown flag {other}; flags: --rows N --classes K --repeat R"),
        }
    }
    (n, k, repeat)
}

/// Seconds of `repeat` all-gathers of records of `counts[r]` values from each rank (this rank's `own`).
fn exchange_times(world: &SimpleCommunicator, counts: &[i32], own: usize, repeat: usize) -> Vec<f64> {
    let displs: Vec<i32> = counts
        .iter()
        .scan(0, |a, &c| {
            let d = *a;
            *a += c;
            Some(d)
        })
        .collect();
    let record = vec![0.0f64; own];
    let mut all = vec![0.0f64; counts.iter().map(|&c| c as usize).sum()];
    let mut exchange = Vec::new();
    for _ in 0..repeat {
        world.barrier();
        let t = Instant::now();
        {
            let mut part = PartitionMut::new(&mut all[..], counts, &displs[..]);
            world.all_gather_varcount_into(&record[..], &mut part);
        }
        world.barrier();
        exchange.push(t.elapsed().as_secs_f64());
    }
    exchange
}

/// The median bandwidth of a 256 MiB copy (read plus write), in GB/s.
fn copy_gbps() -> f64 {
    let src = vec![1.0f32; 64 << 20];
    let mut dst = vec![0.0f32; 64 << 20];
    let mut c = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        c.push(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    // A copy reads and writes: 2 * 256 MiB.
    2.0 * (256u64 << 20) as f64 / median(c) / 1e9
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}
