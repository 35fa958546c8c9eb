//! The class-sharded loss (`shard`) against one process: bit for bit where the shards are cut at chunk
//! boundaries, within SPEC.md's tolerances elsewhere, and the typed errors of a bad layout.

use label_smoothing::rng::SplitMix64;
use label_smoothing::shard::{ShardLayout, ShardPlan, CHUNK};
use label_smoothing::{GradOutput, LabelSmoothingConfig, LabelSmoothingLoss, Loss, LossError, Reduction, Targets};

/// Deterministic pseudo-random logits in about [-6, 6].
fn logits(n: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut g = SplitMix64::new(seed);
    (0..n * k).map(|_| g.uniform(-6.0, 6.0) as f32).collect()
}

/// Runs the three steps for every shard in this process; returns the loss of shard 0, the gradient
/// concatenated back to `[N, K]` and the z-loss term (asserting that every shard got the same loss and z-loss).
fn sharded(
    loss_fn: &LabelSmoothingLoss,
    layout: &ShardLayout,
    z: &[f32],
    labels: &[i64],
    go: GradOutput<'_>,
) -> Result<(Loss, Vec<f32>, Loss), LossError> {
    let (n, k) = (labels.len(), loss_fn.num_classes());
    let plans: Vec<ShardPlan> = (0..layout.parts())
        .map(|r| ShardPlan::new(loss_fn.clone(), layout.clone(), r))
        .collect::<Result<_, _>>()?;
    let part = |r: usize| -> Vec<f32> { z.chunks(k).flat_map(|row| row[layout.range(r)].to_vec()).collect() };
    let mut records = Vec::new();
    for (r, p) in plans.iter().enumerate() {
        let mut rec = vec![0.0; n * p.record_len(r)];
        p.local_stats(&part(r), labels, &mut rec)?;
        records.push(rec);
    }
    let gathered: Vec<&[f64]> = records.iter().map(|r| r.as_slice()).collect();
    let mut grad = vec![0.0f32; n * k];
    let mut first: Option<(Loss, Loss)> = None;
    for (r, p) in plans.iter().enumerate() {
        let c = p.combine(labels, go, &gathered)?;
        let zr = part(r);
        let mut g = vec![0.0f32; zr.len()];
        p.local_grad(&c, &zr, &mut g)?;
        let range = layout.range(r);
        for (row, gr) in grad.chunks_mut(k).zip(g.chunks(range.len())) {
            row[range.clone()].copy_from_slice(gr);
        }
        match &first {
            None => first = Some((c.loss().clone(), c.z_loss().clone())),
            Some((l, zl)) => {
                assert_eq!(l, c.loss(), "shard {r} disagrees on the loss");
                assert_eq!(zl, c.z_loss(), "shard {r} disagrees on the z-loss");
            }
        }
    }
    let (loss, z_loss) = first.unwrap();
    Ok((loss, grad, z_loss))
}

fn whole(loss_fn: &LabelSmoothingLoss, z: &[f32], labels: &[i64], go: GradOutput<'_>) -> (Loss, Vec<f32>) {
    let mut g = vec![0.0f32; z.len()];
    let l = loss_fn.loss_and_grad(z, Targets::Labels(labels), go, &mut g).unwrap();
    (l, g)
}

fn configs(k: usize) -> Vec<LabelSmoothingConfig> {
    let weights: Vec<f32> = (0..k).map(|c| 0.5 + (c % 7) as f32 * 0.25).collect();
    vec![
        LabelSmoothingConfig::pytorch(0.1),
        LabelSmoothingConfig::fast_reid(0.1, 0.2),
        LabelSmoothingConfig::new()
            .with_adaptive(0.2)
            .with_spread(label_smoothing::Spread::Uniform),
        LabelSmoothingConfig::new().with_smoothing(0.0),
        LabelSmoothingConfig::pytorch(0.1).with_weights(Some(weights.clone())),
        LabelSmoothingConfig::new()
            .with_smoothing(0.2)
            .with_reduction(Reduction::Sum)
            .with_ignore_index(Some(-100)),
        LabelSmoothingConfig::new()
            .with_adaptive(0.3)
            .with_reduction(Reduction::MeanNonZero)
            .with_ignore_index(Some(-100)),
        LabelSmoothingConfig::pytorch(0.1)
            .with_weights(Some(weights.clone()))
            .with_reduction(Reduction::None)
            .with_ignore_index(Some(-100)),
        // z-loss (of the global log-sum-exp) and soft-capping.
        LabelSmoothingConfig::pytorch(0.1).with_z_loss(1e-3).with_softcap(6.0),
        LabelSmoothingConfig::pytorch(0.05)
            .with_weights(Some(weights))
            .with_z_loss(0.02),
        LabelSmoothingConfig::fast_reid(-1.0, 0.2).with_softcap(2.5),
        LabelSmoothingConfig::new()
            .with_z_loss(1e-4)
            .with_reduction(Reduction::None)
            .with_ignore_index(Some(-100)),
    ]
}

#[test]
fn chunk_aligned_shards_are_bit_identical_to_one_process() {
    let (n, k) = (9, 3 * CHUNK + 517);
    let z = logits(n, k, 1);
    let mut labels: Vec<i64> = (0..n).map(|i| ((i * 2654435761) % k) as i64).collect();
    labels[2] = 5; // in the first shard
    labels[3] = (k - 1) as i64; // in the last
    labels[4] = -100; // ignored where the config has an ignore index, else replaced
    let layouts = [
        ShardLayout::from_lens(&[k]).unwrap(),
        ShardLayout::from_lens(&[CHUNK, k - CHUNK]).unwrap(),
        ShardLayout::from_lens(&[CHUNK, 2 * CHUNK, k - 3 * CHUNK]).unwrap(),
        ShardLayout::even(k, 4).unwrap(),
    ];
    for config in configs(k) {
        let mut labels = labels.clone();
        if config.ignore_index.is_none() {
            labels[4] = 7;
        }
        let per_row: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 * 0.1).collect();
        let go = if config.reduction == Reduction::None {
            GradOutput::PerRow(&per_row)
        } else {
            GradOutput::Scalar(0.7)
        };
        let loss_fn = config.clone().init(k).unwrap();
        let (l1, g1) = whole(&loss_fn, &z, &labels, go);
        for layout in &layouts {
            assert!(layout.chunk_aligned());
            let (l, g, zl) = sharded(&loss_fn, layout, &z, &labels, go).unwrap();
            assert_eq!(l, l1, "{config:?} {layout:?}");
            let z1 = loss_fn.report(&z, Targets::Labels(&labels), false).unwrap().z_loss;
            assert_eq!(zl, z1, "z-loss: {config:?} {layout:?}");
            let same = g.iter().zip(&g1).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "gradient bits differ: {config:?} {layout:?}");
        }
    }
}

#[test]
fn unaligned_shards_agree_within_tolerance() {
    for &(n, k, parts) in &[(7usize, 10usize, 3usize), (5, 2, 2), (4, 3000, 4), (1, CHUNK + 1, 2)] {
        let z = logits(n, k, k as u64);
        let labels: Vec<i64> = (0..n).map(|i| ((i * 7 + 3) % k) as i64).collect();
        for config in configs(k) {
            let per_row: Vec<f32> = vec![1.0; n];
            let go = if config.reduction == Reduction::None {
                GradOutput::PerRow(&per_row)
            } else {
                GradOutput::ONE
            };
            let loss_fn = config.clone().init(k).unwrap();
            let (l1, g1) = whole(&loss_fn, &z, &labels, go);
            let layout = ShardLayout::even(k, parts).unwrap();
            let (l, g, _) = sharded(&loss_fn, &layout, &z, &labels, go).unwrap();
            for (a, b) in l.as_slice().iter().zip(l1.as_slice()) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{config:?} loss {a} vs {b}");
            }
            for (a, b) in g.iter().zip(&g1) {
                assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "{config:?} grad {a} vs {b}");
            }
        }
    }
}

#[test]
fn all_rows_ignored_and_no_rows() {
    let k = 2 * CHUNK;
    let loss_fn = LabelSmoothingConfig::pytorch(0.1)
        .with_ignore_index(Some(-1))
        .init(k)
        .unwrap();
    let layout = ShardLayout::even(k, 2).unwrap();
    let z = logits(3, k, 5);
    let labels = vec![-1i64; 3];
    let (l, g, _) = sharded(&loss_fn, &layout, &z, &labels, GradOutput::ONE).unwrap();
    assert_eq!(l, whole(&loss_fn, &z, &labels, GradOutput::ONE).0);
    assert!(g.iter().all(|&v| v == 0.0));
    let (l, g, _) = sharded(&loss_fn, &layout, &[], &[], GradOutput::ONE).unwrap();
    assert_eq!(l, whole(&loss_fn, &[], &[], GradOutput::ONE).0);
    assert!(g.is_empty());
}

#[test]
fn bad_layouts_and_inputs_are_typed_errors() {
    let k = 100;
    let loss_fn = LabelSmoothingConfig::pytorch(0.1).init(k).unwrap();
    let gap = ShardLayout::from_ranges(&[(0, 40), (50, 50)], k).unwrap_err();
    assert!(
        matches!(&gap, LossError::ShardLayout { reason } if reason.contains("shard 1 starts at class 50")),
        "{gap}"
    );
    let short = ShardLayout::from_ranges(&[(0, 40), (40, 50)], k).unwrap_err();
    assert!(short.to_string().contains("[0, 90)"), "{short}");
    assert!(ShardLayout::from_lens(&[10, 0]).is_err());
    assert!(ShardLayout::even(3, 4).is_err());
    let wrong_k = ShardPlan::new(loss_fn.clone(), ShardLayout::from_lens(&[50, 40]).unwrap(), 0).unwrap_err();
    assert!(wrong_k.to_string().contains("K = 100"), "{wrong_k}");
    assert!(ShardPlan::new(loss_fn.clone(), ShardLayout::even(k, 2).unwrap(), 2).is_err());

    let plan = ShardPlan::new(loss_fn, ShardLayout::even(k, 2).unwrap(), 1).unwrap();
    let mut rec = vec![0.0; 2 * plan.record_len(1)];
    let label = plan.local_stats(&[0.0; 100], &[3, 100], &mut rec).unwrap_err();
    assert!(
        matches!(
            label,
            LossError::LabelOutOfRange {
                row: 1,
                label: 100,
                k: 100,
                ..
            }
        ),
        "{label}"
    );
    let shape = plan.local_stats(&[0.0; 99], &[3, 4], &mut rec).unwrap_err();
    assert!(shape.to_string().contains("[2, 50]"), "{shape}");
}

#[test]
fn even_layout_cuts_at_chunks_when_it_can() {
    let l = ShardLayout::even(10 * CHUNK + 5, 3).unwrap();
    assert!(l.chunk_aligned());
    assert_eq!(l.num_classes(), 10 * CHUNK + 5);
    assert_eq!(l.range(0), 0..3 * CHUNK);
    assert_eq!(l.owner(3 * CHUNK), 1);
    assert_eq!(l.owner(10 * CHUNK + 4), 2);
    let small = ShardLayout::even(10, 3).unwrap();
    assert_eq!((small.range(0), small.range(1), small.range(2)), (0..3, 3..6, 6..10));
    assert!(!small.chunk_aligned());
}

#[test]
fn one_shard_is_bit_identical_for_few_classes_too() {
    // K <= 12 runs the rows across the SIMD lanes in one process; one shard must still give the same bits.
    for k in [2usize, 5, 10, 12, 13, 100] {
        let n = 37;
        let z = logits(n, k, k as u64 + 100);
        let labels: Vec<i64> = (0..n).map(|i| ((i * 5 + 1) % k) as i64).collect();
        for config in configs(k) {
            let per_row = vec![1.0f32; n];
            let go = if config.reduction == Reduction::None {
                GradOutput::PerRow(&per_row)
            } else {
                GradOutput::ONE
            };
            let loss_fn = config.clone().init(k).unwrap();
            let (l1, g1) = whole(&loss_fn, &z, &labels, go);
            let (l, g, _) = sharded(&loss_fn, &ShardLayout::from_lens(&[k]).unwrap(), &z, &labels, go).unwrap();
            assert_eq!(l, l1, "K = {k} {config:?}");
            assert!(
                g.iter().zip(&g1).all(|(a, b)| a.to_bits() == b.to_bits()),
                "K = {k} {config:?}"
            );
        }
    }
}

#[test]
fn unaligned_shards_give_the_same_bits_for_any_number_of_threads() {
    let (n, k) = (40, 3000);
    let z = logits(n, k, 9);
    let labels: Vec<i64> = (0..n).map(|i| ((i * 31 + 2) % k) as i64).collect();
    let loss_fn = LabelSmoothingConfig::new().with_adaptive(0.2).init(k).unwrap();
    let layout = ShardLayout::from_lens(&[1000, 1500, 500]).unwrap();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| sharded(&loss_fn, &layout, &z, &labels, GradOutput::ONE).unwrap())
    };
    let (l1, g1, _) = run(1);
    for threads in [2, 3] {
        let (l, g, _) = run(threads);
        assert_eq!(l, l1, "{threads} threads");
        assert!(
            g.iter().zip(&g1).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{threads} threads"
        );
    }
}
