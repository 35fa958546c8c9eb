//! Calibration metrics on hand-made cases whose answers are known exactly, on random cases against a plain f64
//! reimplementation written here, and temperature scaling recovering a known temperature.

mod common;

use common::Rng;
use label_smoothing::calibration::{calibration, fit_temperature, nll_of_logits, softmax_rows, CalibrationError};

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn perfectly_calibrated_predictions_have_zero_ece() {
    // Confidence 0.8 on class 0, right 8 times out of 10; confidence 0.6 on class 1, right 3 times out of 5.
    let mut probs = Vec::new();
    let mut labels = Vec::new();
    for i in 0..10 {
        probs.extend([0.8, 0.2]);
        labels.push(if i < 8 { 0 } else { 1 });
    }
    for i in 0..5 {
        probs.extend([0.4, 0.6]);
        labels.push(if i < 3 { 1 } else { 0 });
    }
    let r = calibration(&probs, &labels, 2, 15).unwrap();
    close(r.ece, 0.0, 1e-12, "ece");
    close(r.mce, 0.0, 1e-12, "mce");
    close(r.accuracy, 11.0 / 15.0, 1e-12, "accuracy");
    close(r.top5_accuracy, 1.0, 0.0, "top-5 of 2 classes");
    assert_eq!(r.bins.iter().map(|b| b.count).sum::<usize>(), 15);
    assert_eq!(r.bins.len(), 15);
}

#[test]
fn always_wrong_predictions() {
    let probs: Vec<f64> = (0..4).flat_map(|_| [0.9, 0.1]).collect();
    let r = calibration(&probs, &[1, 1, 1, 1], 2, 10).unwrap();
    close(r.accuracy, 0.0, 0.0, "accuracy");
    close(r.ece, 0.9, 1e-12, "ece");
    close(r.mce, 0.9, 1e-12, "mce");
    close(r.adaptive_ece, 0.9, 1e-12, "adaptive ece");
    close(r.nll, -(0.1f64.ln()), 1e-12, "nll");
    close(r.brier, 0.81 + 0.81, 1e-12, "brier");
    // Classwise: class 0 has p = 0.9 with frequency 0, class 1 has p = 0.1 with frequency 1.
    close(r.classwise_ece, (0.9 + 0.9) / 2.0, 1e-12, "classwise");
}

#[test]
fn a_single_bin_is_the_gap_between_mean_accuracy_and_mean_confidence() {
    let probs = [0.7, 0.2, 0.1, 0.3, 0.6, 0.1, 0.5, 0.25, 0.25];
    let r = calibration(&probs, &[0, 0, 0], 3, 1).unwrap();
    // Confidences 0.7, 0.6, 0.5 (mean 0.6); correct: row 0 and row 2 (2/3).
    close(r.ece, (2.0 / 3.0 - 0.6f64).abs(), 1e-12, "ece");
    close(
        r.adaptive_ece,
        (2.0 / 3.0 - 0.6f64).abs(),
        1e-12,
        "adaptive ece with one bin",
    );
}

#[test]
fn bin_edges_and_confidence_one() {
    // Confidence exactly 0.5 with 2 bins falls in the upper bin [0.5, 1); exactly 1 falls in the last bin.
    let probs = [0.5, 0.5, 1.0, 0.0, 0.25, 0.75];
    let r = calibration(&probs, &[0, 0, 1], 2, 2).unwrap();
    assert_eq!(r.bins[0].count, 0);
    assert_eq!(r.bins[1].count, 3);
    let r = calibration(&[1.0, 0.0], &[0], 2, 15).unwrap();
    assert_eq!(r.bins[14].count, 1);
    close(r.ece, 0.0, 0.0, "confident and right");
    // Ties between classes: the first maximal class is the prediction (like argmax).
    let r = calibration(&[0.5, 0.5], &[1], 2, 15).unwrap();
    close(r.accuracy, 0.0, 0.0, "tie goes to class 0");
}

/// The metrics written out directly, for comparison.
#[allow(clippy::needless_range_loop)]
fn plain(probs: &[f64], labels: &[i64], k: usize, m: usize) -> (f64, f64, f64, f64, f64) {
    let n = labels.len();
    let (mut ece_bins, mut nll, mut brier, mut correct) = (vec![(0usize, 0.0f64, 0.0f64); m], 0.0, 0.0, 0);
    for i in 0..n {
        let p = &probs[i * k..(i + 1) * k];
        let mut arg = 0;
        for c in 1..k {
            if p[c] > p[arg] {
                arg = c;
            }
        }
        let y = labels[i] as usize;
        let mut b = (p[arg] * m as f64) as usize;
        if b >= m {
            b = m - 1;
        }
        ece_bins[b].0 += 1;
        ece_bins[b].1 += p[arg];
        ece_bins[b].2 += if arg == y { 1.0 } else { 0.0 };
        correct += (arg == y) as usize;
        nll += -p[y].ln();
        for c in 0..k {
            let t = if c == y { 1.0 } else { 0.0 };
            brier += (p[c] - t).powi(2);
        }
    }
    let mut ece = 0.0;
    for &(cnt, cs, hs) in &ece_bins {
        if cnt > 0 {
            ece += cnt as f64 / n as f64 * (hs / cnt as f64 - cs / cnt as f64).abs();
        }
    }
    (correct as f64 / n as f64, nll / n as f64, brier / n as f64, ece, 0.0)
}

#[test]
fn random_cases_match_a_plain_reimplementation() {
    let mut rng = Rng::new(99);
    for trial in 0..30 {
        let (n, k, m) = (1 + rng.below(300), 2 + rng.below(12), 1 + rng.below(20));
        let logits: Vec<f32> = (0..n * k).map(|_| (rng.normal() * 2.5) as f32).collect();
        let labels: Vec<i64> = (0..n).map(|_| rng.below(k) as i64).collect();
        let probs = softmax_rows(&logits, k, 1.0).unwrap();
        let r = calibration(&probs, &labels, k, m).unwrap();
        let (acc, nll, brier, ece, _) = plain(&probs, &labels, k, m);
        close(r.accuracy, acc, 1e-12, &format!("trial {trial}: accuracy"));
        close(r.nll, nll, 1e-9, &format!("trial {trial}: nll"));
        close(r.brier, brier, 1e-9, &format!("trial {trial}: brier"));
        close(r.ece, ece, 1e-9, &format!("trial {trial}: ece"));
        close(
            nll_of_logits(&logits, &labels, k, 1.0).unwrap(),
            nll,
            1e-6,
            "nll from logits",
        );
        assert!(r.mce >= r.ece - 1e-12 && r.mce <= 1.0);
        assert!((0.0..=1.0).contains(&r.adaptive_ece) && (0.0..=1.0).contains(&r.classwise_ece));
    }
}

#[test]
fn temperature_scaling_recovers_a_known_temperature() {
    // Labels drawn from softmax(base); the model reports base * T0, over-confident by T0. The fitted temperature
    // should undo it.
    let mut rng = Rng::new(5);
    let (n, k) = (20_000, 6);
    for t0 in [2.0f64, 0.5] {
        let mut logits = Vec::with_capacity(n * k);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let base: Vec<f64> = (0..k).map(|_| rng.normal() * 1.5).collect();
            let m = base.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = base.iter().map(|b| (b - m).exp()).collect();
            let s: f64 = e.iter().sum();
            let mut u = rng.uniform() * s;
            let mut y = k - 1;
            for (c, &v) in e.iter().enumerate() {
                if u < v {
                    y = c;
                    break;
                }
                u -= v;
            }
            labels.push(y as i64);
            logits.extend(base.iter().map(|b| (b * t0) as f32));
        }
        let t = fit_temperature(&logits, &labels, k).unwrap();
        assert!((t / t0 - 1.0).abs() < 0.05, "fitted {t}, true {t0}");
        let before = nll_of_logits(&logits, &labels, k, 1.0).unwrap();
        let after = nll_of_logits(&logits, &labels, k, t).unwrap();
        assert!(after < before, "scaling lowers the NLL: {before} -> {after}");
        // Temperature never changes the argmax.
        let p1 = softmax_rows(&logits, k, 1.0).unwrap();
        let pt = softmax_rows(&logits, k, t).unwrap();
        let acc1 = calibration(&p1, &labels, k, 15).unwrap().accuracy;
        let acct = calibration(&pt, &labels, k, 15).unwrap().accuracy;
        assert_eq!(acc1, acct);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    assert_eq!(calibration(&[], &[], 2, 15).unwrap_err(), CalibrationError::Empty);
    assert_eq!(
        calibration(&[0.5, 0.5], &[0], 2, 0).unwrap_err(),
        CalibrationError::ZeroBins
    );
    let e = calibration(&[0.5, 0.5, 0.2, 0.8], &[0, 2], 2, 15).unwrap_err();
    assert_eq!(e, CalibrationError::LabelOutOfRange { row: 1, label: 2, k: 2 });
    assert!(e.to_string().contains("row 1"));
    let e = calibration(&[0.5, 0.5, 0.5, 0.6], &[0, 1], 2, 15).unwrap_err();
    assert!(matches!(e, CalibrationError::NotADistribution { row: 1, .. }), "{e}");
    let e = calibration(&[1.5, -0.5], &[0], 2, 15).unwrap_err();
    assert!(matches!(e, CalibrationError::NotADistribution { row: 0, .. }), "{e}");
    let e = calibration(&[0.5, 0.5, 1.0], &[0], 2, 15).unwrap_err();
    assert!(
        matches!(
            e,
            CalibrationError::Shape {
                what: "probabilities",
                ..
            }
        ),
        "{e}"
    );
    let e = calibration(&[0.5, 0.5], &[0, 1], 2, 15).unwrap_err();
    assert!(matches!(e, CalibrationError::Shape { what: "labels", .. }), "{e}");
    assert!(matches!(
        softmax_rows(&[0.0, 1.0], 2, 0.0),
        Err(CalibrationError::BadTemperature(_))
    ));
    assert!(matches!(
        fit_temperature(&[0.0], &[0], 1),
        Err(CalibrationError::Shape { .. })
    ));
}

#[test]
fn fit_temperature_refuses_non_finite_logits_by_row_and_class() {
    use label_smoothing::calibration::{fit_temperature, CalibrationError};
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let logits = [1.0f32, 0.0, 0.5, 2.0, bad, 0.0];
        assert_eq!(
            fit_temperature(&logits, &[0, 1], 3).unwrap_err().to_string(),
            CalibrationError::NonFiniteLogit {
                row: 1,
                class: 1,
                value: bad
            }
            .to_string()
        );
    }
}
