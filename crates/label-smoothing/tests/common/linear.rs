//! Helpers of the linear-loss tests: seeded problems, the float64 composition they are checked against, the
//! fused loss's outputs, and the tolerance of f32 products.

use label_smoothing::linear::{LinearCrossEntropy, LinearGrads, LinearInputs};
use label_smoothing::reference::{self, RefTargets};
use label_smoothing::rng::SplitMix64 as Rng;
use label_smoothing::{GradOutput, LabelSmoothingConfig};

pub struct Problem {
    pub n: usize,
    pub d: usize,
    pub k: usize,
    pub x: Vec<f32>,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub labels: Vec<i64>,
}

pub fn problem(n: usize, d: usize, k: usize, seed: u64, ignore: Option<i64>) -> Problem {
    let mut rng = Rng::new(seed);
    let x = (0..n * d).map(|_| rng.normal() as f32).collect();
    let w = (0..k * d).map(|_| rng.normal() as f32 * 0.3).collect();
    let b = (0..k).map(|_| rng.normal() as f32 * 0.5).collect();
    let labels = (0..n)
        .map(|i| match ignore {
            Some(ig) if i % 5 == 3 => ig,
            _ => rng.below(k as u64) as i64,
        })
        .collect();
    Problem {
        n,
        d,
        k,
        x,
        w,
        b,
        labels,
    }
}

pub struct Expected {
    pub loss: Vec<f64>,
    pub gx: Vec<f64>,
    pub gw: Vec<f64>,
    pub gb: Vec<f64>,
    // Sums of |terms| of each gradient entry, which bound the f32 rounding of the products.
    pub gx_mag: Vec<f64>,
    pub gw_mag: Vec<f64>,
}

pub fn expected(p: &Problem, config: &LabelSmoothingConfig, bias: bool, grad_output: Option<&[f64]>) -> Expected {
    let (n, d, k) = (p.n, p.d, p.k);
    let mut z = vec![0.0f64; n * k];
    for i in 0..n {
        for c in 0..k {
            let mut s = if bias { p.b[c] as f64 } else { 0.0 };
            for e in 0..d {
                s += p.x[i * d + e] as f64 * p.w[c * d + e] as f64;
            }
            z[i * k + c] = s;
        }
    }
    let r = reference::loss_and_grad(config, k, &z, RefTargets::Labels(&p.labels), grad_output).unwrap();
    let g = &r.grad;
    let (mut gx, mut gx_mag) = (vec![0.0; n * d], vec![0.0; n * d]);
    let (mut gw, mut gw_mag) = (vec![0.0; k * d], vec![0.0; k * d]);
    let mut gb = vec![0.0; k];
    // The f32 gradient of the logits is off by a few ulps of its row's scale (`s_i = sum_c |G_ic|`, about
    // twice the row's coefficient), and the label's entry is a difference of O(1) values: each product term
    // may carry an error of eps * s_i times its other factor.
    let s: Vec<f64> = (0..n)
        .map(|i| g[i * k..(i + 1) * k].iter().map(|v| v.abs()).sum())
        .collect();
    let w_max: Vec<f64> = (0..d)
        .map(|e| (0..k).map(|c| (p.w[c * d + e] as f64).abs()).fold(0.0, f64::max))
        .collect();
    for i in 0..n {
        for e in 0..d {
            gx_mag[i * d + e] += s[i] * w_max[e];
        }
    }
    let x_s: Vec<f64> = (0..d)
        .map(|e| (0..n).map(|i| s[i] * (p.x[i * d + e] as f64).abs()).sum())
        .collect();
    for c in 0..k {
        for e in 0..d {
            gw_mag[c * d + e] += x_s[e];
        }
    }
    for i in 0..n {
        for c in 0..k {
            let gic = g[i * k + c];
            gb[c] += gic;
            for e in 0..d {
                let (xv, wv) = (p.x[i * d + e] as f64, p.w[c * d + e] as f64);
                gx[i * d + e] += gic * wv;
                gx_mag[i * d + e] += (gic * wv).abs();
                gw[c * d + e] += gic * xv;
                gw_mag[c * d + e] += (gic * xv).abs();
            }
        }
    }
    Expected {
        loss: r.loss,
        gx,
        gw,
        gb,
        gx_mag,
        gw_mag,
    }
}

pub struct Got {
    pub loss: Vec<f32>,
    pub gx: Vec<f32>,
    pub gw: Vec<f32>,
    pub gb: Vec<f32>,
}

pub fn fused(lce: &LinearCrossEntropy, p: &Problem, bias: bool, grad_output: GradOutput<'_>) -> Got {
    let (mut gx, mut gw, mut gb) = (
        vec![f32::NAN; p.n * p.d],
        vec![f32::NAN; p.k * p.d],
        vec![f32::NAN; p.k],
    );
    let inputs = LinearInputs {
        x: &p.x,
        weight: &p.w,
        bias: bias.then_some(&p.b[..]),
    };
    let grads = LinearGrads {
        x: Some(&mut gx),
        weight: Some(&mut gw),
        bias: Some(&mut gb),
    };
    let loss = lce.loss_and_grad(inputs, &p.labels, grad_output, grads).unwrap();
    Got {
        loss: loss.as_slice().to_vec(),
        gx,
        gw,
        gb,
    }
}

/// The fused linear loss of `config` in blocks of `block` rows (and of `classes` classes when given) against the
/// f64 composition on `p`, with or without the bias, at upstream gradient 1 or (`per_row_go`, reduction `none`)
/// a different one per row.
pub fn check_blocks(
    p: &Problem,
    config: LabelSmoothingConfig,
    bias: bool,
    block: usize,
    classes: Option<usize>,
    per_row_go: bool,
) {
    let mut lce = LinearCrossEntropy::new(config.clone().init(p.k).unwrap(), p.d)
        .unwrap()
        .with_block_rows(block)
        .unwrap();
    if let Some(c) = classes {
        lce = lce.with_block_classes(c).unwrap();
    }
    let go: Vec<f32> = (0..p.n).map(|i| 0.5 + (i % 3) as f32 * 0.25).collect();
    let go64: Vec<f64> = go.iter().map(|&v| v as f64).collect();
    let (grad_output, go_ref) = if per_row_go {
        (GradOutput::PerRow(&go), Some(&go64[..]))
    } else {
        (GradOutput::ONE, None)
    };
    let want = expected(p, &config, bias, go_ref);
    let got = fused(&lce, p, bias, grad_output);
    // The configuration without its weights (a vector of K values), which would drown the message.
    let name = format!(
        "{:?} {:?} {:?} {:?} weights {} z-loss {} softcap {:?} bias {bias} block {block} classes {classes:?}",
        config.smoothing,
        config.spread,
        config.reduction,
        config.ignore_index,
        config.weights.is_some(),
        config.z_loss,
        config.softcap
    );
    assert_matches(&name, &got, &want, p);
}

/// Asserts that the fused loss's outputs `got` match the f64 composition's `want` on problem `p`: the losses
/// within SPEC.md's `1e-5` relative, the gradients within [`close`]'s bound.
pub fn assert_matches(name: &str, got: &Got, want: &Expected, p: &Problem) {
    for (i, (&g, &w)) in got.loss.iter().zip(&want.loss).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * w.abs() + 1e-6,
            "{name}: loss[{i}] {g} vs {w}"
        );
    }
    close(&format!("{name}: grad x"), &got.gx, &want.gx, Some(&want.gx_mag), p.k);
    close(&format!("{name}: grad W"), &got.gw, &want.gw, Some(&want.gw_mag), p.n);
    close(&format!("{name}: grad b"), &got.gb, &want.gb, None, p.n);
}

/// f32 products over `K` (or `N`) terms: the error of an entry is bounded by a small multiple of the unit
/// roundoff times the number of terms times the sum of the terms' magnitudes; 1e-6 absolute as SPEC.md.
pub fn close(what: &str, got: &[f32], want: &[f64], mag: Option<&[f64]>, terms: usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let m = mag.map_or(w.abs(), |m| m[i]);
        let tol = 1e-6 + 4.0 * f32::EPSILON as f64 * (terms as f64).sqrt() * m;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (tolerance {tol:e})"
        );
    }
}
