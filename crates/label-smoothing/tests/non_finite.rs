//! Non-finite logits are not an input error (SPEC, "Bad input"): a NaN or `+inf` logit makes its row's loss NaN
//! and its whole gradient row NaN, as in PyTorch, where `F.cross_entropy(x, y, label_smoothing=0.1,
//! reduction='none')` of such a row is `nan` and `torch.softmax` of it is all `nan` (`exp(z - max)` is
//! `exp(nan)`, or `exp(inf - inf)`, and the sum carries it to every class). Wherever the value sits: in an
//! ordinary chunk, in a chunk whose other logits are all `-inf` (which the max pass, blind to NaN, sees as
//! fully masked), in a chunk of nothing but NaN, in the row's tail, or in a row split across threads. The other
//! rows keep their bits. On 1 and 4 threads, forward only, into a buffer and in place, f32 and bf16.

mod common;

use common::Rng;
use label_smoothing::{bf16, Element, GradOutput, LabelSmoothingConfig, Loss, Reduction, Targets};

fn per_row(loss: Loss) -> Vec<f32> {
    match loss {
        Loss::PerRow(v) => v,
        Loss::Scalar(s) => panic!("expected per-row losses, got the scalar {s}"),
    }
}

/// The per-row losses and the gradient, forward only, into a buffer and in place (which must agree).
fn run<E: Element>(
    cfg: &LabelSmoothingConfig,
    z: &[f32],
    labels: &[i64],
    k: usize,
    threads: usize,
) -> (Vec<f32>, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let loss_fn = cfg.clone().with_reduction(Reduction::None).init(k).unwrap();
        let z: Vec<E> = z.iter().map(|&x| E::from_f32(x)).collect();
        let t = Targets::Labels(labels);
        let forward = per_row(loss_fn.loss(&z, t).unwrap());
        let mut g = vec![E::from_f32(0.0); z.len()];
        let with_grad = per_row(loss_fn.loss_and_grad(&z, t, GradOutput::ONE, &mut g).unwrap());
        let mut in_place = z.clone();
        let in_place_loss = per_row(
            loss_fn
                .loss_and_grad_in_place(&mut in_place, t, GradOutput::ONE)
                .unwrap(),
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&forward),
            bits(&with_grad),
            "forward-only and forward+backward losses"
        );
        assert_eq!(bits(&forward), bits(&in_place_loss), "in-place loss");
        let g: Vec<f32> = g.iter().map(|x| x.to_f32()).collect();
        let gi: Vec<f32> = in_place.iter().map(|x| x.to_f32()).collect();
        assert_eq!(bits(&g), bits(&gi), "in-place gradient");
        (forward, g)
    })
}

/// Rows of `k` logits uniform in `[-4, 4)` from a fixed seed, label 0 (kept finite by every poison below).
fn clean(n: usize, k: usize) -> Vec<f32> {
    let mut rng = Rng::new(0x9e37_79b9);
    (0..n * k).map(|_| (rng.uniform() * 8.0 - 4.0) as f32).collect()
}

fn check<E: Element>(name: &str, n: usize, k: usize, poisoned_row: usize, poison: impl Fn(&mut [f32])) {
    let z0 = clean(n, k);
    let mut z = z0.clone();
    poison(&mut z[poisoned_row * k..(poisoned_row + 1) * k]);
    let labels = vec![0i64; n];
    for cfg in [
        LabelSmoothingConfig::new().with_smoothing(0.1),
        LabelSmoothingConfig::pytorch(0.1),
        LabelSmoothingConfig::fast_reid(-1.0, 0.2),
        LabelSmoothingConfig::new().with_smoothing(0.0),
    ] {
        for threads in [1, 4] {
            let what = format!("{name}, {} logits, {threads} thread(s), {cfg:?}", E::NAME);
            let (l0, g0) = run::<E>(&cfg, &z0, &labels, k, threads);
            let (l, g) = run::<E>(&cfg, &z, &labels, k, threads);
            for r in 0..n {
                let (row, row0) = (&g[r * k..(r + 1) * k], &g0[r * k..(r + 1) * k]);
                if r == poisoned_row {
                    assert!(l[r].is_nan(), "{what}: loss of the poisoned row is {}", l[r]);
                    if let Some(c) = row.iter().position(|x| !x.is_nan()) {
                        panic!("{what}: gradient of class {c} of the poisoned row is {}", row[c]);
                    }
                } else {
                    assert_eq!(l[r].to_bits(), l0[r].to_bits(), "{what}: loss of row {r}");
                    assert!(l[r].is_finite(), "{what}: loss of row {r} is {}", l[r]);
                    for c in 0..k {
                        assert_eq!(
                            row[c].to_bits(),
                            row0[c].to_bits(),
                            "{what}: gradient of row {r} class {c}"
                        );
                    }
                }
            }
        }
    }
}

fn mask(range: std::ops::Range<usize>) -> impl Fn(&mut [f32]) {
    move |z| z[range.clone()].iter_mut().for_each(|x| *x = f32::NEG_INFINITY)
}

fn every_case<E: Element>() {
    let nan = f32::NAN;
    check::<E>("NaN among 10 classes", 3, 10, 1, |z| z[3] = nan);
    check::<E>("+inf among 10 classes", 3, 10, 1, |z| z[4] = f32::INFINITY);
    check::<E>("NaN, the rest -inf but the label", 3, 10, 1, |z| {
        mask(1..10)(z);
        z[7] = nan;
    });
    check::<E>("NaN in an ordinary chunk, another chunk -inf", 3, 5000, 1, |z| {
        mask(2048..4096)(z);
        z[100] = nan;
    });
    check::<E>("NaN in an otherwise -inf chunk", 3, 5000, 1, |z| {
        mask(2048..4096)(z);
        z[3000] = nan;
    });
    check::<E>("a chunk of nothing but NaN", 3, 5000, 2, |z| {
        z[2048..4096].iter_mut().for_each(|x| *x = nan)
    });
    check::<E>("NaN in an otherwise -inf tail chunk", 3, 5000, 0, |z| {
        mask(4096..5000)(z);
        z[4999] = nan;
    });
    // One row of 16 chunks: split across the 4 threads (fewer rows than threads), each part's statistics apart.
    check::<E>(
        "NaN in an otherwise -inf chunk of a row split across threads",
        1,
        16 * 2048,
        0,
        |z| {
            mask(10 * 2048..11 * 2048)(z);
            z[10 * 2048 + 5] = nan;
        },
    );
}

#[test]
fn a_nan_or_inf_logit_makes_its_row_nan_in_f32() {
    every_case::<f32>();
}

#[test]
fn a_nan_or_inf_logit_makes_its_row_nan_in_bf16() {
    every_case::<bf16>();
}
