//! The checkpoint: parameters, optimiser state and, in the safetensors metadata, the training state, written
//! atomically after every epoch; and its loading for `--resume`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use label_smoothing::online::OnlineLabelSmoothing;
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::metrics::{epochs_csv, EpochMetrics};
use super::{candle_err, io_err, Run};
use crate::io::atomic;
use crate::CliError;
use sha2::{Digest, Sha256};

/// The resumable state written after every epoch, in `checkpoint.safetensors`'s metadata (and, for people,
/// copied to `state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    epochs_done: usize,
    step: u64,
    history: Vec<EpochMetrics>,
    /// The SHA-256 of the configuration the checkpoint was trained with ([`config_hash`]).
    config: String,
}

/// The key of the checkpoint's checksum in its metadata: the SHA-256 of its tensor data and its state.
const CHECKSUM_KEY: &str = "lsmooth.checksum";

/// The SHA-256 of a run's resolved configuration, `epochs` left out (a resumed run may extend it), in hex.
pub(super) fn config_hash(config: &TrainConfig) -> String {
    let mut c = config.clone();
    c.epochs = 0;
    hex(&Sha256::digest(
        serde_json::to_string(&c).expect("serialisable").as_bytes(),
    ))
}

/// The checksum of a checkpoint: the SHA-256 of its safetensors data section and its state text, in hex.
fn checksum(data: &[u8], state_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(data);
    h.update(state_json.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The data section of a safetensors file (everything after its header).
fn data_section(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize);
    bytes.get(8usize.saturating_add(n)..).unwrap_or(&[])
}

/// Writes `bytes` to `path` atomically.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    atomic::write(path, bytes)?;
    Ok(())
}

/// Saves named tensors as safetensors, with string metadata, atomically (flushed, then renamed into place).
pub(super) fn save_tensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), CliError> {
    let bytes = safetensors::serialize(tensors, metadata).map_err(|e| io_err(path, e))?;
    write_atomic(path, &bytes)
}

/// The key of the training state in the checkpoint's safetensors metadata.
pub(super) const STATE_KEY: &str = "lsmooth.state";

impl Run {
    fn tensors(&self) -> HashMap<String, Tensor> {
        let mut map = HashMap::new();
        for ((name, var), state) in self.model.params().iter().zip(&self.optimizer.state) {
            map.insert(format!("param.{name}"), var.as_tensor().clone());
            for (sname, t) in self.optimizer.state_names(name).into_iter().zip(state) {
                map.insert(sname, t.clone());
            }
        }
        map
    }

    pub(super) fn save_checkpoint(&self, dir: &Path) -> Result<(), CliError> {
        let mut tensors = self.tensors();
        let epochs = Tensor::new(&[self.history.len() as u32], &Device::Cpu).map_err(candle_err)?;
        tensors.insert("meta.epochs_done".into(), epochs);
        if let Some(ols) = &self.ols {
            let st = ols.state();
            let k = st.k;
            let counts: Vec<f64> = st.counts.iter().map(|&c| c as f64).collect();
            for (name, data, shape) in [
                ("ols.matrix", st.matrix.clone(), vec![k, k]),
                ("ols.sums", st.sums.clone(), vec![k, k]),
                ("ols.counts", counts, vec![k]),
            ] {
                tensors.insert(
                    name.into(),
                    Tensor::from_vec(data, shape, &Device::Cpu).map_err(candle_err)?,
                );
            }
        }
        let state = State {
            epochs_done: self.history.len(),
            step: self.optimizer.step,
            history: self.history.clone(),
            config: config_hash(&self.config),
        };
        let state_json = serde_json::to_string_pretty(&state).expect("serialisable");
        // The checkpoint holds its own training state: its rename is the one commit point of an epoch, and
        // state.json and epochs.csv, written after it, are copies for people (resume never reads them). Its
        // checksum covers the tensors' bytes (the data section, which the metadata does not change) and the state.
        let path = dir.join("checkpoint.safetensors");
        let mut metadata = HashMap::from([(STATE_KEY.to_string(), state_json.clone())]);
        let unsigned = safetensors::serialize(&tensors, Some(metadata.clone())).map_err(|e| io_err(&path, e))?;
        metadata.insert(CHECKSUM_KEY.to_string(), checksum(data_section(&unsigned), &state_json));
        drop(unsigned);
        save_tensors(&path, &tensors, Some(metadata))?;
        write_atomic(&dir.join("state.json"), state_json.as_bytes())?;
        write_atomic(&dir.join("epochs.csv"), epochs_csv(&self.history).as_bytes())
    }

    /// Restores the state of `dir/checkpoint.safetensors`; returns false when there is none yet (a run
    /// interrupted before its first epoch ended starts from the beginning).
    pub(super) fn load_checkpoint(&mut self, dir: &Path) -> Result<bool, CliError> {
        let ckpt = dir.join("checkpoint.safetensors");
        let bytes = match std::fs::read(&ckpt) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(&ckpt, e)),
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| io_err(&ckpt, e))?;
        let text = meta.metadata().as_ref().and_then(|m| m.get(STATE_KEY)).ok_or_else(|| {
            io_err(
                &ckpt,
                format!("no training state ({STATE_KEY}) in the metadata: not a checkpoint of lsmooth train"),
            )
        })?;
        let sum = meta.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY));
        if sum.map(String::as_str) != Some(checksum(data_section(&bytes), text).as_str()) {
            return Err(io_err(
                &ckpt,
                "its checksum does not match its tensors and state (a damaged checkpoint, or one without a \
                 checksum): start the run afresh with --out in an empty directory",
            ));
        }
        let state: State = serde_json::from_str(text).map_err(|e| io_err(&ckpt, format!("its training state: {e}")))?;
        if state.config != config_hash(&self.config) {
            return Err(io_err(
                &ckpt,
                format!(
                    "was trained with another configuration than {}'s run.json: --resume the directory it was \
                     trained in, or start afresh with --out in an empty directory",
                    dir.display()
                ),
            ));
        }
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| io_err(&ckpt, e))?;
        let saved_epochs = tensors
            .get("meta.epochs_done")
            .and_then(|t| t.to_vec1::<u32>().ok())
            .and_then(|v| v.first().copied());
        if saved_epochs != Some(state.epochs_done as u32) || state.history.len() != state.epochs_done {
            return Err(io_err(
                &ckpt,
                format!(
                    "holds epoch {saved_epochs:?}, its state says {} ({} epochs of history): a damaged checkpoint",
                    state.epochs_done,
                    state.history.len()
                ),
            ));
        }
        self.model
            .load(|name| tensors.remove(&format!("param.{name}")))
            .map_err(|e| io_err(&ckpt, e))?;
        let names: Vec<Vec<String>> = self
            .model
            .params()
            .iter()
            .map(|(n, _)| self.optimizer.state_names(n))
            .collect();
        for (snames, state_tensors) in names.into_iter().zip(&mut self.optimizer.state) {
            for (sname, slot) in snames.into_iter().zip(state_tensors.iter_mut()) {
                let t = tensors
                    .remove(&sname)
                    .ok_or_else(|| io_err(&ckpt, format!("no tensor {sname}")))?;
                if t.dims() != slot.dims() {
                    return Err(io_err(
                        &ckpt,
                        format!("{sname}: shape {:?}, expected {:?}", t.dims(), slot.dims()),
                    ));
                }
                *slot = t;
            }
        }
        if let Some(ols) = &mut self.ols {
            let mut get = |name: &str| -> Result<Vec<f64>, CliError> {
                tensors
                    .remove(name)
                    .and_then(|t| t.flatten_all().ok())
                    .and_then(|t| t.to_vec1::<f64>().ok())
                    .ok_or_else(|| io_err(&ckpt, format!("no f64 tensor {name} (online label smoothing state)")))
            };
            let mut st = ols.state().clone();
            st.matrix = get("ols.matrix")?;
            st.sums = get("ols.sums")?;
            st.counts = get("ols.counts")?.iter().map(|&c| c as u64).collect();
            *ols = OnlineLabelSmoothing::from_state(st).map_err(|e| io_err(&ckpt, e.to_string()))?;
        }
        self.optimizer.step = state.step;
        self.history = state.history;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value of the history goes through the state's JSON and back with its bits: a diverged epoch's
    /// infinite or NaN metrics included (JSON `null` would make the checkpoint unreadable).
    #[test]
    fn the_state_round_trips_non_finite_metrics() {
        let epoch = |train_loss: f64, test_nll: f64| EpochMetrics {
            epoch: 1,
            train_loss,
            train_accuracy: 0.5,
            validation_accuracy: 0.25,
            test_accuracy: 0.1,
            test_nll,
            test_ece: 0.3,
            test_brier: 1.0 / 3.0,
            seconds: 1e-300,
        };
        let state = State {
            epochs_done: 3,
            step: 7,
            history: vec![
                epoch(0.1, 2.0),
                epoch(f64::INFINITY, f64::NAN),
                epoch(f64::NAN, f64::NEG_INFINITY),
            ],
            config: "abc".into(),
        };
        let json = serde_json::to_string(&state).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        let bits = |s: &State| -> Vec<u64> {
            s.history
                .iter()
                .flat_map(|e| [e.train_loss, e.test_nll, e.test_brier, e.seconds])
                .map(|v| if v.is_nan() { f64::NAN.to_bits() } else { v.to_bits() })
                .collect()
        };
        assert_eq!(bits(&back), bits(&state), "{json}");
        assert!(
            json.contains(r#""train_loss":"inf""#) && json.contains(r#""test_nll":"-inf""#),
            "{json}"
        );
    }
}
