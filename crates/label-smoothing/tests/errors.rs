//! One test per bad-input case of SPEC.md: the error kind, and a message that names the culprit.

use label_smoothing::{GradOutput, LabelSmoothingConfig, LossError, Reduction, Targets};

fn msg(e: &LossError) -> String {
    e.to_string()
}

#[test]
fn fewer_than_two_classes() {
    for k in [0, 1] {
        let e = LabelSmoothingConfig::new().init(k).unwrap_err();
        assert_eq!(e, LossError::TooFewClasses { k });
        assert!(msg(&e).contains(&format!("got {k}")), "{e}");
    }
}

#[test]
fn smoothing_outside_unit_interval_points_to_adaptive() {
    for eps in [-0.1f32, 1.5, f32::NAN, f32::INFINITY] {
        let e = LabelSmoothingConfig::new().with_smoothing(eps).init(5).unwrap_err();
        assert!(matches!(e, LossError::InvalidSmoothing { .. }), "{e:?}");
        assert!(msg(&e).contains(&format!("{}", eps as f64)), "{e}");
        assert!(msg(&e).contains("adaptive"), "{e}");
    }
    assert!(LabelSmoothingConfig::new().with_smoothing(1.0).init(5).is_ok());
    assert!(LabelSmoothingConfig::new().with_smoothing(0.0).init(5).is_ok());
}

#[test]
fn alpha_outside_unit_interval() {
    for alpha in [-0.2f32, 1.01, f32::NAN] {
        let e = LabelSmoothingConfig::new().with_adaptive(alpha).init(5).unwrap_err();
        assert!(matches!(e, LossError::InvalidAlpha { .. }), "{e:?}");
        assert!(msg(&e).contains("alpha"), "{e}");
    }
}

#[test]
fn label_out_of_range_names_row_and_value() {
    let loss = LabelSmoothingConfig::new()
        .with_ignore_index(Some(-100))
        .init(3)
        .unwrap();
    let logits = [0.0f32; 12];
    for (labels, row, label) in [
        ([0i64, 1, 3, 0], 2, 3),
        ([0, -1, 2, 0], 1, -1),
        ([0, 1, 2, -99], 3, -99),
    ] {
        let e = loss.loss(&logits, Targets::Labels(&labels)).unwrap_err();
        assert_eq!(
            e,
            LossError::LabelOutOfRange {
                row,
                label,
                k: 3,
                ignore_index: Some(-100)
            }
        );
        let m = msg(&e);
        assert!(
            m.contains(&format!("label {label}")) && m.contains(&format!("row {row}")),
            "{m}"
        );
        assert!(m.contains("ignore index -100"), "{m}");
    }
    // The ignore index itself is fine; without one configured, -100 is out of range.
    assert!(loss.loss(&logits, Targets::Labels(&[0, -100, 2, 1])).is_ok());
    let strict = LabelSmoothingConfig::new().init(3).unwrap();
    let e = strict.loss(&logits, Targets::Labels(&[0, -100, 2, 1])).unwrap_err();
    assert!(
        matches!(
            e,
            LossError::LabelOutOfRange {
                row: 1,
                label: -100,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn mismatched_lengths_name_the_buffer() {
    let loss = LabelSmoothingConfig::new()
        .with_reduction(Reduction::None)
        .init(4)
        .unwrap();
    let logits = [0.0f32; 8];
    let cases: Vec<(LossError, &str)> = vec![
        (loss.loss(&[0.0; 7], Targets::Labels(&[0, 1])).unwrap_err(), "logits"),
        (loss.loss(&logits, Targets::Labels(&[0, 1, 2])).unwrap_err(), "labels"),
        (
            loss.loss(&logits, Targets::Soft(&[0.25; 4])).unwrap_err(),
            "soft targets",
        ),
        (
            loss.loss_and_grad(
                &logits,
                Targets::Labels(&[0, 1]),
                GradOutput::PerRow(&[1.0]),
                &mut [0.0; 8],
            )
            .unwrap_err(),
            "grad_output",
        ),
        (
            loss.loss_and_grad(&logits, Targets::Labels(&[0, 1]), GradOutput::ONE, &mut [0.0; 9])
                .unwrap_err(),
            "grad",
        ),
        (
            LabelSmoothingConfig::new()
                .with_weights(Some(vec![1.0; 3]))
                .init(4)
                .unwrap_err(),
            "weights",
        ),
    ];
    for (e, what) in cases {
        match &e {
            LossError::Length { what: w, .. } => assert_eq!(*w, what),
            other => panic!("expected a length error for {what}, got {other:?}"),
        }
        assert!(msg(&e).starts_with(what), "{e}");
    }
}

#[test]
fn bad_class_weights() {
    for (w, class) in [
        (vec![1.0, -0.5, 1.0], 1),
        (vec![f32::NAN, 1.0, 1.0], 0),
        (vec![1.0, 1.0, f32::INFINITY], 2),
    ] {
        let e = LabelSmoothingConfig::new()
            .with_weights(Some(w.clone()))
            .init(3)
            .unwrap_err();
        assert!(
            matches!(e, LossError::InvalidWeight { class: c, .. } if c == class),
            "{e:?}"
        );
        assert!(msg(&e).contains(&format!("class {class}")), "{e}");
    }
    // Zero weights are allowed.
    assert!(LabelSmoothingConfig::new()
        .with_weights(Some(vec![0.0, 1.0, 2.0]))
        .init(3)
        .is_ok());
}

#[test]
fn soft_targets_must_be_distributions() {
    let loss = LabelSmoothingConfig::new().init(3).unwrap();
    let logits = [0.0f32; 6];
    let e = loss
        .loss(&logits, Targets::Soft(&[0.5, 0.5, 0.0, 1.2, -0.2, 0.0]))
        .unwrap_err();
    assert_eq!(
        e,
        LossError::SoftTargetEntry {
            row: 1,
            class: 1,
            value: -0.2f32 as f64
        }
    );
    assert!(msg(&e).contains("row 1") && msg(&e).contains("class 1"), "{e}");

    let e = loss
        .loss(&logits, Targets::Soft(&[0.5, 0.5, 0.0, 0.3, 0.3, 0.3]))
        .unwrap_err();
    assert!(matches!(e, LossError::SoftTargetSum { row: 1, .. }), "{e:?}");
    assert!(msg(&e).contains("row 1") && msg(&e).contains("0.9"), "{e}");

    let e = loss
        .loss(&logits, Targets::Soft(&[0.5, 0.5, 0.0, f32::NAN, 0.5, 0.5]))
        .unwrap_err();
    assert!(
        matches!(e, LossError::SoftTargetEntry { row: 1, class: 0, .. }),
        "{e:?}"
    );

    // Within 1e-4 of 1 is accepted.
    assert!(loss
        .loss(&logits, Targets::Soft(&[0.5, 0.5, 0.00005, 0.2, 0.3, 0.5]))
        .is_ok());
}

#[test]
fn adaptive_smoothing_with_soft_targets() {
    let loss = LabelSmoothingConfig::new().with_adaptive(0.2).init(2).unwrap();
    let e = loss.loss(&[0.0, 1.0], Targets::Soft(&[0.5, 0.5])).unwrap_err();
    assert_eq!(e, LossError::AdaptiveWithSoftTargets);
    assert!(msg(&e).contains("soft targets"), "{e}");
}

#[test]
fn per_row_upstream_gradient_needs_reduction_none() {
    let loss = LabelSmoothingConfig::new()
        .with_reduction(Reduction::Mean)
        .init(2)
        .unwrap();
    let e = loss
        .loss_and_grad(
            &[0.0, 1.0],
            Targets::Labels(&[1]),
            GradOutput::PerRow(&[2.0]),
            &mut [0.0; 2],
        )
        .unwrap_err();
    assert_eq!(
        e,
        LossError::GradOutputShape {
            reduction: "mean",
            got: 1
        }
    );
    assert!(msg(&e).contains("none"), "{e}");
}

#[test]
fn in_place_leaves_logits_untouched_on_error() {
    let loss = LabelSmoothingConfig::new().init(3).unwrap();
    let mut logits = vec![0.5f32, 1.0, -1.0, 2.0, 0.0, 0.1];
    let before = logits.clone();
    let e = loss.loss_and_grad_in_place(&mut logits, Targets::Labels(&[0, 7]), GradOutput::ONE);
    assert!(e.is_err());
    assert_eq!(logits, before);
}
