use label_smoothing::__test_hooks::{lane_groups, with_row_kernel_only};
use label_smoothing::rng::SplitMix64;
use label_smoothing::{
    bf16, f16, Element, GradOutput, LabelSmoothingConfig, LabelSmoothingLoss, Loss, Reduction, Spread, Targets,
};

/// The most classes the lanes take (`driver::lanes::MAX_K`).
const SMALL_K: usize = 12;
/// Rows per group: the lane width (`simd::LANES`).
const LANES: usize = 16;

/// Loss bits of the forward call, loss bits with a gradient, gradient bits (buffer), gradient bits (in place).
type Bits = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>);

fn loss_bits(l: Loss) -> Vec<u32> {
    l.as_slice().iter().map(|x| x.to_bits()).collect()
}

/// The three calls on the same problem.
fn run<E: Element>(loss_fn: &LabelSmoothingLoss, z: &[f32], labels: &[i64], g_out: GradOutput<'_>) -> Bits {
    let z: Vec<E> = z.iter().map(|&x| E::from_f32(x)).collect();
    let t = Targets::Labels(labels);
    let fwd = loss_fn.loss(&z, t).unwrap();
    let mut g = vec![E::from_f32(7.0); z.len()];
    let with = loss_fn.loss_and_grad(&z, t, g_out, &mut g).unwrap();
    let mut zi = z.clone();
    let inp = loss_fn.loss_and_grad_in_place(&mut zi, t, g_out).unwrap();
    assert_eq!(loss_bits(with.clone()), loss_bits(inp));
    let gb = |v: &[E]| v.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<u32>>();
    (loss_bits(fwd), loss_bits(with), gb(&g), gb(&zi))
}

/// Logits of one of several kinds, with `-inf`, NaN, `+inf`, signed zeros and huge values in some rows.
fn logits(rng: &mut SplitMix64, n: usize, k: usize, kind: u64) -> Vec<f32> {
    let mut z: Vec<f32> = (0..n * k)
        .map(|_| match kind {
            0 => rng.uniform(-4.0, 4.0) as f32,
            1 => rng.uniform(-120.0, 30.0) as f32,
            2 => (rng.uniform(-1.0, 1.0) * 1e4) as f32,
            _ => (rng.below(3) as f32 - 1.0) * 0.0,
        })
        .collect();
    if kind == 0 && n > 4 {
        for (r, v) in [(1, f32::NEG_INFINITY), (2, f32::NAN), (3, f32::INFINITY), (4, -0.0)] {
            z[r * k + rng.below(k as u64) as usize] = v;
        }
        // A row with every logit -inf.
        z[..k].fill(f32::NEG_INFINITY);
    }
    z
}

fn configs(k: usize, rng: &mut SplitMix64) -> Vec<LabelSmoothingConfig> {
    let weights: Vec<f32> = (0..k)
        .map(|c| if c % 5 == 3 { 0.0 } else { rng.uniform(0.1, 2.0) as f32 })
        .collect();
    vec![
        LabelSmoothingConfig::new(),
        LabelSmoothingConfig::pytorch(0.1).with_reduction(Reduction::None),
        LabelSmoothingConfig::pytorch(0.0).with_reduction(Reduction::Sum),
        LabelSmoothingConfig::fast_reid(-1.0, 0.2),
        LabelSmoothingConfig::new()
            .with_spread(Spread::Others)
            .with_smoothing(0.3)
            .with_weights(Some(weights.clone()))
            .with_ignore_index(Some(-100))
            .with_reduction(Reduction::None),
        LabelSmoothingConfig::pytorch(0.0)
            .with_weights(Some(weights))
            .with_ignore_index(Some(-100)),
        LabelSmoothingConfig::new()
            .with_adaptive(0.5)
            .with_reduction(Reduction::MeanNonZero),
    ]
}

fn check<E: Element>(threads: usize) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut rng = SplitMix64::new(0x5eed);
    let mut cases = 0;
    for k in [2, 3, 5, 7, 10, 11, SMALL_K, SMALL_K + 1] {
        // The last size runs on the pool (above the calling-thread threshold), in several tasks.
        for (n, kind) in [
            (1, 0),
            (7, 0),
            (16, 0),
            (37, 0),
            (40, 1),
            (33, 2),
            (20, 3),
            (70_000 / k, 0),
        ] {
            let z = logits(&mut rng, n, k, kind);
            let mut labels: Vec<i64> = (0..n).map(|_| rng.below(k as u64) as i64).collect();
            if n > 6 {
                labels[5] = -100;
            }
            let per_row: Vec<f32> = (0..n).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
            for cfg in configs(k, &mut rng) {
                let ignoring = cfg.ignore_index.is_some();
                let labels: Vec<i64> = labels.iter().map(|&y| if y < 0 && !ignoring { 0 } else { y }).collect();
                let loss_fn = cfg.clone().init(k).unwrap();
                let g_out = if cfg.reduction == Reduction::None {
                    GradOutput::PerRow(&per_row)
                } else {
                    GradOutput::Scalar(0.75)
                };
                pool.install(|| {
                    let before = lane_groups();
                    let lanes = run::<E>(&loss_fn, &z, &labels, g_out);
                    if threads == 1 {
                        // Everything ran on this one thread: the lanes once per group of 16 rows and call (tasks
                        // hold whole groups), and only up to SMALL_K classes.
                        let groups = if k <= SMALL_K { 3 * n.div_ceil(LANES) } else { 0 };
                        assert_eq!(lane_groups() - before, groups, "K = {k}, N = {n}");
                    }
                    let before = lane_groups();
                    let rows = with_row_kernel_only(|| run::<E>(&loss_fn, &z, &labels, g_out));
                    assert_eq!(lane_groups(), before, "the row kernel alone used the lanes");
                    assert!(lanes == rows, "K = {k}, N = {n}, logits of kind {kind}, {cfg:?}");
                });
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 8 * 8 * 7);
}

#[test]
fn lanes_give_the_row_kernels_bits_f32() {
    check::<f32>(1);
    check::<f32>(3);
}

#[test]
fn lanes_give_the_row_kernels_bits_bf16_f16() {
    check::<bf16>(3);
    check::<f16>(1);
}

#[test]
fn the_row_kernel_only_setting_is_restored_after_a_panic() {
    let k = 5;
    let loss_fn = LabelSmoothingConfig::pytorch(0.1).init(k).unwrap();
    let z = vec![0.5f32; 32 * k];
    let labels = vec![1i64; 32];
    let caught = std::panic::catch_unwind(|| with_row_kernel_only(|| panic!("inside")));
    assert!(caught.is_err());
    let before = lane_groups();
    loss_fn.loss(&z, Targets::Labels(&labels)).unwrap();
    assert_eq!(lane_groups() - before, 2);
}
