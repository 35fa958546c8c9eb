//! Vector scaling and the bootstrap: the same results for any number of threads, and progress reported as the
//! work goes (the calls `lsmooth calibrate` draws its progress bars from).

mod common;

use common::Rng;
use label_smoothing::calibration::{
    bootstrap, bootstrap_with_progress, fit_vector_scaling, fit_vector_scaling_with_progress, BootstrapConfig,
    RowScores,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `n` rows of `k` classes whose class-`c` logits are `factor[c]` times those the labels were drawn from.
fn held_out(n: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let (mut logits, mut labels) = (Vec::with_capacity(n * k), Vec::with_capacity(n));
    for _ in 0..n {
        let base: Vec<f64> = (0..k).map(|_| rng.normal()).collect();
        let e: Vec<f64> = base.iter().map(|b| b.exp()).collect();
        let mut r = rng.uniform() * e.iter().sum::<f64>();
        let mut y = k - 1;
        for (c, v) in e.iter().enumerate() {
            if r < *v {
                y = c;
                break;
            }
            r -= v;
        }
        labels.push(y as i64);
        logits.extend(
            base.iter()
                .enumerate()
                .map(|(c, b)| (b * (1.0 + (c % 3) as f64)) as f32),
        );
    }
    (logits, labels)
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn vector_scaling_has_the_same_bits_for_any_number_of_threads() {
    // More rows than blocks, and fewer (a block per row, empty blocks absent).
    for (n, k) in [(700, 9), (5, 4)] {
        let (logits, labels) = held_out(n, k, 11);
        let one = in_pool(1, || fit_vector_scaling(&logits, &labels, k).unwrap());
        let three = in_pool(3, || fit_vector_scaling(&logits, &labels, k).unwrap());
        assert_eq!(one, three, "n={n} k={k}");
        assert!(one.iterations > 0 && one.nll.is_finite(), "{one:?}");
    }
}

#[test]
fn vector_scaling_reports_each_iteration_and_recovers_the_factors() {
    let (n, k) = (3000, 6);
    let (logits, labels) = held_out(n, k, 12);
    let mut seen = Vec::new();
    let fit = fit_vector_scaling_with_progress(&logits, &labels, k, &mut |i, nll| seen.push((i, nll))).unwrap();
    assert_eq!(fit, fit_vector_scaling(&logits, &labels, k).unwrap());
    assert_eq!(seen.len(), fit.iterations);
    assert!(seen.iter().enumerate().all(|(j, &(i, _))| i == j + 1), "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[1].1 <= w[0].1),
        "the NLL never rises: {seen:?}"
    );
    assert_eq!(seen.last().unwrap().1, fit.nll);
    // The file's class-c logits are (1 + c % 3) times the generating ones: the fitted weights undo that.
    for (c, w) in fit.weights.iter().enumerate() {
        let want = 1.0 / (1.0 + (c % 3) as f64);
        assert!(
            (w - want).abs() < 0.15 * want,
            "class {c}: weight {w}, want about {want}"
        );
    }
}

#[test]
fn the_bootstrap_reports_every_resample_and_keeps_its_intervals() {
    let (n, k) = (400, 5);
    let (logits, labels) = held_out(n, k, 13);
    let rows = RowScores::from_logits(&logits, &labels, k, 1.0).unwrap();
    let config = BootstrapConfig::default().with_resamples(64).with_seed(3);
    let count = AtomicUsize::new(0);
    let with = in_pool(2, || {
        bootstrap_with_progress(&rows, 10, &config, &|| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap()
    });
    assert_eq!(count.load(Ordering::Relaxed), 64);
    assert_eq!(with, in_pool(1, || bootstrap(&rows, 10, &config).unwrap()));
}
