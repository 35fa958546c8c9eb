//! `lsmooth train`: one training run.

use std::path::PathBuf;

use crate::cli::TrainArgs;
use crate::io::{atomic, npy};
use crate::run::{self, Verbosity};
use crate::sweep::settings::{config, loss_spec, objective};
use crate::CliError;

/// Runs the command.
pub fn run(args: &TrainArgs, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let verbosity = if args.quiet || args.json {
        Verbosity::Quiet
    } else {
        Verbosity::Epochs
    };
    let (config, dir, resume) = match &args.resume {
        Some(dir) => {
            let mut config = run::read_config(dir)?;
            if let Some(e) = args.flags.epochs {
                config.epochs = e;
            }
            (config, dir.clone(), true)
        }
        None => {
            let config = config(&args.flags, loss_spec(&args.loss)?, objective(&args.loss), args.seed);
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/{}-seed{}", config.describe(), args.seed)));
            (config, dir, false)
        }
    };
    let outcome = run::train(&config, &dir, resume, verbosity, out)?;
    if args.save_features {
        save_features(&outcome, &dir)?;
    }
    let m = &outcome.metrics;
    if args.json {
        let line = serde_json::to_string(m).map_err(|e| CliError::Runtime(format!("encoding the JSON output: {e}")))?;
        return writeln!(out, "{line}").map_err(CliError::Stdout);
    }
    writeln!(
        out,
        "{}: test accuracy {:.2}%, NLL {:.4}, ECE {:.4} ({:.4} at T = {:.3}), Brier {:.4}, train-test gap {:.2} points; \
         written to {}",
        config.describe(),
        100.0 * m.test_accuracy,
        m.test_nll,
        m.test_ece,
        m.test_ece_scaled,
        m.temperature,
        m.test_brier,
        100.0 * m.train_test_gap,
        dir.display()
    )
    .map_err(CliError::Stdout)
}

fn write_labels(path: &std::path::Path, labels: &[u32]) -> Result<(), CliError> {
    let bytes = npy::encode(
        &format!(
            "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
            labels.len()
        ),
        |o| {
            labels
                .iter()
                .for_each(|&y| o.extend_from_slice(&(y as i64).to_le_bytes()))
        },
    );
    atomic::write(path, &bytes)?;
    Ok(())
}

/// Writes the test split's penultimate activations, logits and labels, the validation logits and labels, and the
/// head's weight matrix as `.npy` files.
fn save_features(outcome: &run::Outcome, dir: &std::path::Path) -> Result<(), CliError> {
    let data = &outcome.dataset;
    let (pixels, k) = (data.rows * data.cols, data.classes);
    let (features, d) = run::features_of(&outcome.model, &data.test, pixels)?;
    npy::write_f32(&dir.join("test_features.npy"), &[data.test.len(), d], &features)?;
    let logits = run::logits_of(&outcome.model, &data.test, pixels)?;
    npy::write_f32(&dir.join("test_logits.npy"), &[data.test.len(), k], &logits)?;
    write_labels(&dir.join("test_labels.npy"), &data.test.labels)?;
    let logits = run::logits_of(&outcome.model, &data.validation, pixels)?;
    npy::write_f32(&dir.join("validation_logits.npy"), &[data.validation.len(), k], &logits)?;
    write_labels(&dir.join("validation_labels.npy"), &data.validation.labels)?;
    let w = outcome
        .model
        .head_weight_values()
        .map_err(|e| CliError::Train(e.to_string()))?;
    npy::write_f32(&dir.join("head_weight.npy"), &[k, d], &w)?;
    Ok(())
}
