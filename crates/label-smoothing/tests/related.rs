//! mixup/CutMix, distillation, the confidence penalty, label relaxation and online label smoothing: each loss
//! against its float64 definition written out here, and each gradient against central finite differences of that
//! definition.

use label_smoothing::confidence_penalty::confidence_penalty_loss;
use label_smoothing::distillation::{distillation_loss, DistillationConfig};
use label_smoothing::label_relaxation::label_relaxation_loss;
use label_smoothing::mixup::{cutmix, mixed_loss, mixup, MixedLabels};
use label_smoothing::online::OnlineLabelSmoothing;
use label_smoothing::rng::SplitMix64;
use label_smoothing::{GradOutput, LabelSmoothingConfig, Loss, LossError, Reduction, Spread, Targets};

const N: usize = 6;
const K: usize = 7;

fn problem(seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut r = SplitMix64::new(seed);
    let z = (0..N * K).map(|_| r.uniform(-3.0, 3.0) as f32).collect();
    let y = (0..N).map(|_| r.below(K as u64) as i64).collect();
    (z, y)
}

fn log_softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let l = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    z.iter().map(|v| v - l).collect()
}

fn smooth(y: usize, eps: f64, spread: Spread) -> Vec<f64> {
    let k = K as f64;
    (0..K)
        .map(|c| match spread {
            Spread::Others => {
                if c == y {
                    1.0 - eps
                } else {
                    eps / (k - 1.0)
                }
            }
            Spread::Uniform => (1.0 - eps) * (c == y) as u8 as f64 + eps / k,
        })
        .collect()
}

fn ce(q: &[f64], z: &[f64]) -> f64 {
    -q.iter().zip(log_softmax(z)).map(|(q, lp)| q * lp).sum::<f64>()
}

/// Central differences of `f` at `z`, step 1e-5.
fn finite_diff(z: &[f32], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
    let z: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    (0..z.len())
        .map(|i| {
            let h = 1e-5;
            let (mut a, mut b) = (z.clone(), z.clone());
            a[i] += h;
            b[i] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

fn rows(z: &[f64]) -> impl Iterator<Item = &[f64]> {
    z.chunks(K)
}

#[test]
fn mixed_loss_is_the_mixed_target_cross_entropy() {
    let (z, a) = problem(1);
    let b: Vec<i64> = a.iter().rev().copied().collect();
    let lambda: Vec<f32> = (0..N).map(|i| i as f32 / (N - 1) as f32).collect();
    for spread in [Spread::Others, Spread::Uniform] {
        for eps in [0.0, 0.1] {
            let cfg = LabelSmoothingConfig::new()
                .with_spread(spread)
                .with_smoothing(eps as f32);
            let loss_fn = cfg.init(K).unwrap();
            let mut grad = vec![0.0; N * K];
            let labels = MixedLabels {
                a: &a,
                b: &b,
                lambda: &lambda,
            };
            let got = mixed_loss(&loss_fn, &z, labels, Some(&mut grad))
                .unwrap()
                .scalar()
                .unwrap();
            // The definition: -sum q log p with q = lambda smooth(a) + (1 - lambda) smooth(b), mean over rows.
            let objective = |z: &[f64]| -> f64 {
                rows(z)
                    .enumerate()
                    .map(|(i, row)| {
                        let l = lambda[i] as f64;
                        let (qa, qb) = (smooth(a[i] as usize, eps, spread), smooth(b[i] as usize, eps, spread));
                        let q: Vec<f64> = qa.iter().zip(&qb).map(|(x, y)| l * x + (1.0 - l) * y).collect();
                        ce(&q, row)
                    })
                    .sum::<f64>()
                    / N as f64
            };
            let zf: Vec<f64> = z.iter().map(|&v| v as f64).collect();
            assert_close("mixed loss", &[got], &[objective(&zf)], 1e-5);
            assert_close("mixed grad", &grad, &finite_diff(&z, &objective), 1e-6);
        }
    }
}

#[test]
fn mixed_loss_with_lambda_one_is_the_plain_loss() {
    let (z, a) = problem(2);
    let b = vec![0i64; N];
    let loss_fn = LabelSmoothingConfig::pytorch(0.1).init(K).unwrap();
    let mixed = mixed_loss(
        &loss_fn,
        &z,
        MixedLabels {
            a: &a,
            b: &b,
            lambda: &[1.0],
        },
        None,
    )
    .unwrap();
    let plain = loss_fn.loss(&z, Targets::Labels(&a)).unwrap();
    assert_close(
        "lambda 1",
        &[mixed.scalar().unwrap()],
        &[plain.scalar().unwrap() as f64],
        1e-6,
    );
    // Options it does not define are errors, not silently ignored.
    let weighted = LabelSmoothingConfig::new()
        .with_weights(Some(vec![1.0; K]))
        .init(K)
        .unwrap();
    assert!(matches!(
        mixed_loss(
            &weighted,
            &z,
            MixedLabels {
                a: &a,
                b: &b,
                lambda: &[0.5]
            },
            None
        ),
        Err(LossError::Unsupported { .. })
    ));
    assert!(matches!(
        mixed_loss(
            &loss_fn,
            &z,
            MixedLabels {
                a: &a,
                b: &b,
                lambda: &[1.5]
            },
            None
        ),
        Err(LossError::InvalidParameter { name: "lambda", .. })
    ));
}

#[test]
fn mixup_mixes_rows_with_a_seeded_beta_lambda() {
    let (n, d) = (8, 5);
    let x: Vec<f32> = (0..n * d).map(|v| v as f32).collect();
    let labels: Vec<i64> = (0..n as i64).collect();
    let mut mixed = x.clone();
    let mix = mixup(&mut mixed, n, &labels, 0.4, &mut SplitMix64::new(3)).unwrap();
    let l = mix.lambda as f64;
    for i in 0..n {
        assert_eq!(mix.labels_b[i], labels[mix.perm[i]]);
        for j in 0..d {
            let want = l * x[i * d + j] as f64 + (1.0 - l) * x[mix.perm[i] * d + j] as f64;
            assert!((mixed[i * d + j] as f64 - want).abs() < 1e-4);
        }
    }
    // Same seed, same mix.
    let mut again = x.clone();
    assert_eq!(
        mixup(&mut again, n, &labels, 0.4, &mut SplitMix64::new(3)).unwrap(),
        mix
    );
    // lambda ~ Beta(a, a): mean 1/2 over many draws.
    let mut r = SplitMix64::new(5);
    let mean = (0..4000)
        .map(|_| mixup(&mut [0.0; 2], 2, &[0, 1], 1.0, &mut r).unwrap().lambda as f64)
        .sum::<f64>()
        / 4000.0;
    assert!((mean - 0.5).abs() < 0.02, "{mean}");
}

#[test]
fn cutmix_pastes_one_box_and_sets_lambda_to_the_kept_area() {
    let shape = [4, 2, 8, 10];
    let [n, c, h, w] = shape;
    let x: Vec<f32> = (0..n * c * h * w).map(|v| v as f32).collect();
    let labels = [0i64, 1, 2, 3];
    for seed in 0..20 {
        let mut mixed = x.clone();
        let (mix, b) = cutmix(&mut mixed, shape, &labels, 1.0, &mut SplitMix64::new(seed)).unwrap();
        let area = (b.y1 - b.y0) * (b.x1 - b.x0);
        assert!((mix.lambda as f64 - (1.0 - area as f64 / (h * w) as f64)).abs() < 1e-6);
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        let inside = (b.y0..b.y1).contains(&y) && (b.x0..b.x1).contains(&xx);
                        let src = if inside { mix.perm[i] } else { i };
                        let off = ch * h * w + y * w + xx;
                        assert_eq!(mixed[i * c * h * w + off], x[src * c * h * w + off]);
                    }
                }
            }
        }
    }
}

#[test]
fn distillation_is_weighted_ce_plus_t_squared_kl() {
    let (s, y) = problem(4);
    let (t, _) = problem(5);
    for (beta, temp) in [(0.0f32, 1.0f32), (0.5, 2.0), (0.9, 4.0), (1.0, 1.0)] {
        let ce_fn = LabelSmoothingConfig::new().with_smoothing(0.1).init(K).unwrap();
        let mut grad = vec![0.0; N * K];
        let got = distillation_loss(&ce_fn, DistillationConfig::new(beta, temp), &s, &t, &y, Some(&mut grad)).unwrap();
        let tf: Vec<f64> = t.iter().map(|&v| v as f64 / temp as f64).collect();
        let objective = |z: &[f64]| -> f64 {
            let (b, tt) = (beta as f64, temp as f64);
            let mut ce_sum = 0.0;
            let mut kl = 0.0;
            for (i, row) in rows(z).enumerate() {
                ce_sum += ce(&smooth(y[i] as usize, 0.1, Spread::Others), row);
                let scaled: Vec<f64> = row.iter().map(|v| v / tt).collect();
                let (ls, lt) = (log_softmax(&scaled), log_softmax(&tf[i * K..(i + 1) * K]));
                kl += lt.iter().zip(&ls).map(|(a, b)| a.exp() * (a - b)).sum::<f64>();
            }
            (1.0 - b) * ce_sum / N as f64 + b * tt * tt * kl / N as f64
        };
        let sf: Vec<f64> = s.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("kd loss beta {beta} T {temp}"),
            &[got],
            &[objective(&sf)],
            1e-5,
        );
        assert_close(
            &format!("kd grad beta {beta} T {temp}"),
            &grad,
            &finite_diff(&s, &objective),
            1e-6,
        );
    }
}

#[test]
fn confidence_penalty_is_ce_minus_beta_entropy() {
    let (z, y) = problem(6);
    for reduction in [Reduction::Mean, Reduction::Sum] {
        let ce_fn = LabelSmoothingConfig::new()
            .with_smoothing(0.05)
            .with_reduction(reduction)
            .init(K)
            .unwrap();
        let mut grad = vec![0.0; N * K];
        let got = confidence_penalty_loss(&ce_fn, 0.3, &z, &y, Some(&mut grad))
            .unwrap()
            .scalar()
            .unwrap();
        let objective = |z: &[f64]| -> f64 {
            let total: f64 = rows(z)
                .enumerate()
                .map(|(i, row)| {
                    let lp = log_softmax(row);
                    let h = -lp.iter().map(|l| l.exp() * l).sum::<f64>();
                    ce(&smooth(y[i] as usize, 0.05, Spread::Others), row) - 0.3 * h
                })
                .sum();
            if reduction == Reduction::Mean {
                total / N as f64
            } else {
                total
            }
        };
        let zf: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        assert_close("penalty loss", &[got], &[objective(&zf)], 1e-5);
        assert_close("penalty grad", &grad, &finite_diff(&z, &objective), 1e-6);
    }
    // beta = 0 is the plain loss.
    let ce_fn = LabelSmoothingConfig::new().init(K).unwrap();
    let zero = confidence_penalty_loss(&ce_fn, 0.0, &z, &y, None)
        .unwrap()
        .scalar()
        .unwrap();
    assert_eq!(zero, ce_fn.loss(&z, Targets::Labels(&y)).unwrap().scalar().unwrap());
}

#[test]
fn label_relaxation_is_kl_to_the_closest_acceptable_distribution() {
    let (mut z, y) = problem(7);
    // Make row 0 confident in its label: its loss and gradient must be zero.
    z[y[0] as usize] = 20.0;
    let alpha = 0.2;
    let mut grad = vec![0.0; N * K];
    let got = match label_relaxation_loss(alpha, Reduction::None, K, &z, &y, Some(&mut grad)).unwrap() {
        Loss::PerRow(v) => v,
        other => panic!("{other:?}"),
    };
    let a = alpha as f64;
    let zf: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    // The relaxed target of each row at the current logits, held constant for the gradient.
    let targets: Vec<Option<Vec<f64>>> = rows(&zf)
        .enumerate()
        .map(|(i, row)| {
            let p: Vec<f64> = log_softmax(row).iter().map(|l| l.exp()).collect();
            let yi = y[i] as usize;
            (p[yi] < 1.0 - a).then(|| {
                (0..K)
                    .map(|c| if c == yi { 1.0 - a } else { a * p[c] / (1.0 - p[yi]) })
                    .collect()
            })
        })
        .collect();
    assert!(targets[0].is_none());
    assert_eq!(got[0], 0.0);
    assert!(grad[..K].iter().all(|&g| g == 0.0));
    for (i, row) in rows(&zf).enumerate() {
        let want = targets[i].as_ref().map_or(0.0, |r| {
            let lp = log_softmax(row);
            r.iter().zip(&lp).map(|(r, l)| r * (r.ln() - l)).sum()
        });
        assert_close(&format!("relaxation row {i}"), &[got[i]], &[want], 1e-5);
    }
    // Upstream gradient 1 per row: d(sum_i KL(r_i || p_i))/dz with r frozen.
    let objective = |z: &[f64]| -> f64 {
        rows(z)
            .enumerate()
            .map(|(i, row)| {
                targets[i].as_ref().map_or(0.0, |r| {
                    let lp = log_softmax(row);
                    r.iter().zip(&lp).map(|(r, l)| r * (r.ln() - l)).sum()
                })
            })
            .sum()
    };
    assert_close("relaxation grad", &grad, &finite_diff(&z, &objective), 1e-6);
}

#[test]
fn online_label_smoothing_learns_its_matrix_from_correct_predictions() {
    let k = 3;
    let mut ols = OnlineLabelSmoothing::new(k).unwrap();
    assert_eq!(ols.soft_target(1), &[1.0 / 3.0; 3]);
    // Rows 0 and 1 are correct for class 0, row 2 is wrong (label 1, argmax 0); class 2 never appears.
    let z = [2.0f32, 0.0, 0.0, 1.0, 0.5, -1.0, 3.0, 0.0, 0.0];
    let y = [0i64, 0, 1];
    ols.observe(&z, &y).unwrap();
    let saved = ols.state().clone();
    ols.finish_epoch();
    let sm = |row: &[f32]| -> Vec<f64> {
        let r: Vec<f64> = row.iter().map(|&v| v as f64).collect();
        log_softmax(&r).iter().map(|l| l.exp()).collect()
    };
    let (p0, p1) = (sm(&z[0..3]), sm(&z[3..6]));
    let sum: Vec<f64> = p0.iter().zip(&p1).map(|(a, b)| a + b).collect();
    let total: f64 = sum.iter().sum();
    // The probabilities are computed in f32 (the kernel's exp) and accumulated in f64.
    for (got, s) in ols.soft_target(0).iter().zip(&sum) {
        assert!((got - s / total).abs() < 1e-6, "{got} vs {}", s / total);
    }
    assert_eq!(ols.soft_target(1), &[1.0 / 3.0; 3], "no correct prediction: uniform");
    assert_eq!(ols.soft_target(2), &[1.0 / 3.0; 3]);
    assert!(ols.state().counts.iter().all(|&c| c == 0));
    // Saving and restoring mid-epoch gives the same state.
    let mut restored = OnlineLabelSmoothing::from_state(saved).unwrap();
    restored.finish_epoch();
    assert_eq!(restored, ols);

    // The loss: 0.5 CE(z, y) + 0.5 CE(z, S[y]), mean; its gradient against finite differences.
    let (logits, labels) = {
        let mut r = SplitMix64::new(9);
        let z: Vec<f32> = (0..4 * k).map(|_| r.uniform(-2.0, 2.0) as f32).collect();
        (z, vec![0i64, 1, 2, 0])
    };
    let mut grad = vec![0.0; logits.len()];
    let got = ols
        .loss(&logits, &labels, Reduction::Mean, Some(&mut grad))
        .unwrap()
        .scalar()
        .unwrap();
    let objective = |z: &[f64]| -> f64 {
        z.chunks(k)
            .zip(&labels)
            .map(|(row, &y)| {
                let onehot: Vec<f64> = (0..k).map(|c| (c == y as usize) as u8 as f64).collect();
                0.5 * ce(&onehot, row) + 0.5 * ce(ols.soft_target(y as usize), row)
            })
            .sum::<f64>()
            / 4.0
    };
    let zf: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    assert_close("ols loss", &[got], &[objective(&zf)], 1e-5);
    assert_close("ols grad", &grad, &finite_diff(&logits, &objective), 1e-6);
}

/// The related losses reuse the fused kernel where they can: with beta = 0 distillation is exactly it.
#[test]
fn distillation_with_beta_zero_is_the_fused_loss() {
    let (s, y) = problem(8);
    let ce_fn = LabelSmoothingConfig::fast_reid(0.1, 0.2)
        .with_reduction(Reduction::Mean)
        .init(K)
        .unwrap();
    let mut g1 = vec![0.0; N * K];
    let mut g2 = vec![0.0; N * K];
    let a = distillation_loss(&ce_fn, DistillationConfig::new(0.0, 3.0), &s, &s, &y, Some(&mut g1)).unwrap();
    let b = ce_fn
        .loss_and_grad(&s, Targets::Labels(&y), GradOutput::ONE, &mut g2)
        .unwrap();
    assert_eq!(a, b.scalar().unwrap());
    assert_eq!(g1, g2);
}

/// Rows wider than the SIMD lanes (1007 = 62 x 16 + 15 classes: vector body and scalar tail), every loss against
/// its float64 definition and central differences, and the same bits on one thread as on three.
#[test]
fn wide_rows_match_the_definitions_on_any_number_of_threads() {
    let (n, k) = (2usize, 1007usize);
    let mut r = SplitMix64::new(21);
    let z: Vec<f32> = (0..n * k).map(|_| r.uniform(-6.0, 6.0) as f32).collect();
    let teacher: Vec<f32> = (0..n * k).map(|_| r.uniform(-6.0, 6.0) as f32).collect();
    let y: Vec<i64> = vec![3, 1006];
    let b: Vec<i64> = vec![500, 3];
    let lambda = [0.3f32];
    let tf: Vec<f64> = teacher.iter().map(|&v| v as f64).collect();
    let zf: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    let onehot = |c: usize| -> Vec<f64> { (0..k).map(|j| (j == c) as u8 as f64).collect() };
    let mean = |f: &dyn Fn(usize, &[f64]) -> f64, z: &[f64]| -> f64 {
        z.chunks(k).enumerate().map(|(i, row)| f(i, row)).sum::<f64>() / n as f64
    };
    let plain = LabelSmoothingConfig::new().init(k).unwrap();
    let smoothed = LabelSmoothingConfig::new().with_smoothing(0.1).init(k).unwrap();
    let mut ols = OnlineLabelSmoothing::new(k).unwrap();
    let mut correct = teacher.clone();
    correct[3] = 40.0;
    ols.observe(&correct[..k], &[3]).unwrap();
    ols.finish_epoch();
    // The relaxed targets at z, held constant for the gradient.
    let relaxed: Vec<Vec<f64>> = zf
        .chunks(k)
        .enumerate()
        .map(|(i, row)| {
            let p: Vec<f64> = log_softmax(row).iter().map(|l| l.exp()).collect();
            let yi = y[i] as usize;
            assert!(p[yi] < 0.8);
            (0..k)
                .map(|c| if c == yi { 0.8 } else { 0.2 * p[c] / (1.0 - p[yi]) })
                .collect()
        })
        .collect();
    let kl = |p: &[f64], lq: &[f64]| -> f64 {
        p.iter()
            .zip(lq)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, l)| p * (p.ln() - l))
            .sum::<f64>()
    };
    let scaled = |row: &[f64], t: f64| -> Vec<f64> { row.iter().map(|v| v / t).collect() };
    type Run<'a> = Box<dyn Fn(&mut [f32]) -> f32 + Sync + 'a>;
    type Objective<'a> = Box<dyn Fn(&[f64]) -> f64 + 'a>;
    let cases: Vec<(&str, Run, Objective)> = vec![
        (
            "mixed",
            Box::new(|g| {
                let labels = MixedLabels {
                    a: &y,
                    b: &b,
                    lambda: &lambda,
                };
                mixed_loss(&smoothed, &z, labels, Some(g)).unwrap().scalar().unwrap()
            }),
            Box::new(|z| {
                let sm = |c: usize| -> Vec<f64> {
                    (0..k)
                        .map(|j| if j == c { 0.9 } else { 0.1 / (k - 1) as f64 })
                        .collect()
                };
                mean(
                    &|i, row| 0.3 * ce(&sm(y[i] as usize), row) + 0.7 * ce(&sm(b[i] as usize), row),
                    z,
                )
            }),
        ),
        (
            "distillation",
            Box::new(|g| {
                distillation_loss(&plain, DistillationConfig::new(0.5, 3.0), &z, &teacher, &y, Some(g)).unwrap()
            }),
            Box::new(|z| {
                mean(
                    &|i, row| {
                        let pt: Vec<f64> = log_softmax(&scaled(&tf[i * k..(i + 1) * k], 3.0))
                            .iter()
                            .map(|l| l.exp())
                            .collect();
                        0.5 * ce(&onehot(y[i] as usize), row) + 0.5 * 9.0 * kl(&pt, &log_softmax(&scaled(row, 3.0)))
                    },
                    z,
                )
            }),
        ),
        (
            "confidence penalty",
            Box::new(|g| {
                confidence_penalty_loss(&plain, 0.3, &z, &y, Some(g))
                    .unwrap()
                    .scalar()
                    .unwrap()
            }),
            Box::new(|z| {
                mean(
                    &|i, row| {
                        let lp = log_softmax(row);
                        let h = -lp.iter().map(|l| l.exp() * l).sum::<f64>();
                        ce(&onehot(y[i] as usize), row) - 0.3 * h
                    },
                    z,
                )
            }),
        ),
        (
            "label relaxation",
            Box::new(|g| {
                label_relaxation_loss(0.2, Reduction::Mean, k, &z, &y, Some(g))
                    .unwrap()
                    .scalar()
                    .unwrap()
            }),
            Box::new(|z| mean(&|i, row| kl(&relaxed[i], &log_softmax(row)), z)),
        ),
        (
            "online label smoothing",
            Box::new(|g| ols.loss(&z, &y, Reduction::Mean, Some(g)).unwrap().scalar().unwrap()),
            Box::new(|z| {
                mean(
                    &|i, row| {
                        let yi = y[i] as usize;
                        0.5 * ce(&onehot(yi), row) + 0.5 * ce(ols.soft_target(yi), row)
                    },
                    z,
                )
            }),
        ),
    ];
    for (name, run, objective) in &cases {
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut g = vec![0.0f32; n * k];
            let v = pool.install(|| run(&mut g));
            (v, g)
        };
        let (v1, g1) = on(1);
        let (v3, g3) = on(3);
        assert_eq!(v1.to_bits(), v3.to_bits(), "{name}: value depends on threads");
        assert!(
            g1.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: gradient depends on threads"
        );
        assert_close(&format!("{name} loss"), &[v1], &[objective(&zf)], 1e-5);
        assert_close(&format!("{name} grad"), &g1, &finite_diff(&z, objective.as_ref()), 1e-6);
    }
}
