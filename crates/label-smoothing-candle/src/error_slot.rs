//! A typed error from inside a candle op, handed back to the caller: candle's error type only carries text.

use std::sync::{Arc, Mutex};

use label_smoothing::LossError;

use crate::Error;

/// Shared between an op (which fails with [`ErrorSlot::fail`]) and its caller (which maps candle's error back
/// with [`ErrorSlot::resolve`]).
#[derive(Clone, Default)]
pub(crate) struct ErrorSlot(Arc<Mutex<Option<LossError>>>);

impl ErrorSlot {
    /// Keeps `e` for the caller and returns candle's error with its text.
    pub(crate) fn fail(&self, e: LossError) -> candle_core::Error {
        let msg = e.to_string();
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(e);
        }
        candle_core::Error::Msg(msg)
    }

    /// The typed error the op kept, or candle's own.
    pub(crate) fn resolve(&self, e: candle_core::Error) -> Error {
        match self.0.lock().ok().and_then(|mut slot| slot.take()) {
            Some(typed) => Error::Loss(typed),
            None => Error::Candle(e),
        }
    }
}
