//! `calibration::evaluate`, which works through the rows in blocks, gives the numbers of the whole-matrix
//! definitions bit for bit: `calibration` on `softmax_rows` (with the NLL of `nll_of_logits`) and the
//! `RowScores` of `from_logits` / `from_probs`, on shapes that span several blocks, with a temperature, with
//! vector scaling (against `VectorScaling::apply`) and on probabilities.

use label_smoothing::calibration::{
    calibration, evaluate, nll_of_logits, softmax_rows, CalibrationError, Predictions, RowScores, VectorScaling,
};
use label_smoothing::rng::SplitMix64;

fn problem(n: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut rng = SplitMix64::new(seed);
    let z: Vec<f32> = (0..n * k).map(|_| (rng.next_f64() * 8.0 - 4.0) as f32).collect();
    let y: Vec<i64> = (0..n).map(|_| rng.below(k as u64) as i64).collect();
    (z, y)
}

fn whole(z: &[f32], y: &[i64], k: usize, t: f64) -> (label_smoothing::calibration::CalibrationReport, RowScores) {
    let probs = softmax_rows(z, k, t).unwrap();
    let mut report = calibration(&probs, y, k, 15).unwrap();
    report.nll = nll_of_logits(z, y, k, t).unwrap();
    (report, RowScores::from_logits(z, y, k, t).unwrap())
}

#[test]
fn blocks_give_the_whole_matrix_numbers_bit_for_bit() {
    // 1 << 16 probabilities per block: K = 3000 gives 21 rows per block, so 800 rows take 39 blocks.
    for (n, k) in [(800, 3000), (37, 10), (1, 2)] {
        let (z, y) = problem(n, k, n as u64 + k as u64);
        for t in [1.0, 0.7] {
            let got = evaluate(
                Predictions::Logits {
                    logits: &z,
                    temperature: t,
                    scaling: None,
                },
                &y,
                k,
                15,
            )
            .unwrap();
            assert_eq!(got, whole(&z, &y, k, t), "n {n} k {k} t {t}");
        }
        let v = VectorScaling {
            weights: (0..k).map(|c| 0.5 + c as f64 / k as f64).collect(),
            biases: (0..k).map(|c| (c % 3) as f64 * 0.1 - 0.1).collect(),
            nll: 0.0,
            iterations: 0,
        };
        let scaled = v.apply(&z).unwrap();
        let got = evaluate(
            Predictions::Logits {
                logits: &z,
                temperature: 1.0,
                scaling: Some(&v),
            },
            &y,
            k,
            15,
        )
        .unwrap();
        assert_eq!(got, whole(&scaled, &y, k, 1.0), "scaled n {n} k {k}");
        let p32: Vec<f32> = softmax_rows(&z, k, 1.0).unwrap().iter().map(|&p| p as f32).collect();
        let p64: Vec<f64> = p32.iter().map(|&p| p as f64).collect();
        let got = evaluate(Predictions::Probs(&p32), &y, k, 15).unwrap();
        let want = (
            calibration(&p64, &y, k, 15).unwrap(),
            RowScores::from_probs(&p64, &y, k).unwrap(),
        );
        assert_eq!(got, want, "probs n {n} k {k}");
    }
}

#[test]
fn bad_predictions_are_the_same_errors() {
    let (z, y) = problem(4, 3, 1);
    let logits = |t| Predictions::Logits {
        logits: &z,
        temperature: t,
        scaling: None,
    };
    assert_eq!(
        evaluate(logits(0.0), &y, 3, 15).unwrap_err(),
        CalibrationError::BadTemperature(0.0)
    );
    assert_eq!(evaluate(logits(1.0), &y, 3, 0).unwrap_err(), CalibrationError::ZeroBins);
    assert!(matches!(
        evaluate(logits(1.0), &[0, 1, 2, 3], 3, 15).unwrap_err(),
        CalibrationError::LabelOutOfRange { row: 3, label: 3, k: 3 }
    ));
    let mut bad = z.clone();
    bad[7] = f32::NAN; // row 2
    let e = evaluate(
        Predictions::Logits {
            logits: &bad,
            temperature: 1.0,
            scaling: None,
        },
        &y,
        3,
        15,
    )
    .unwrap_err();
    // Named as a logit (row 2, class 1), not as the probabilities it spoils.
    assert!(
        matches!(e, CalibrationError::NonFiniteLogit { row: 2, class: 1, .. }),
        "{e:?}"
    );
    // -inf masks a class; a row of them only has no softmax.
    let logits_of = |z: &[f32]| {
        evaluate(
            Predictions::Logits {
                logits: z,
                temperature: 1.0,
                scaling: None,
            },
            &y,
            3,
            15,
        )
    };
    let mut masked = z.clone();
    masked[4] = f32::NEG_INFINITY;
    assert!(logits_of(&masked).is_ok());
    masked[3..6].fill(f32::NEG_INFINITY);
    let e = logits_of(&masked).unwrap_err();
    assert!(
        matches!(e, CalibrationError::NonFiniteLogit { row: 1, class: 0, .. }),
        "{e:?}"
    );
    let probs = [0.5f32, 0.5, 0.0, 0.2, 0.2, 0.2];
    let e = evaluate(Predictions::Probs(&probs), &[0, 1], 3, 15).unwrap_err();
    assert!(matches!(e, CalibrationError::NotADistribution { row: 1, .. }), "{e:?}");
}
