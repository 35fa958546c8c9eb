//! The relatives of label smoothing, each with its gradient, on the kernel's SIMD softmax ([`rowmath`]):
//! [`mixup`] (mixup and CutMix targets), [`distillation`], [`confidence_penalty`], [`label_relaxation`] and
//! [`online`] (online label smoothing). Re-exported at the crate root.

pub mod confidence_penalty;
pub mod distillation;
pub mod label_relaxation;
pub mod mixup;
pub mod online;
mod rowmath;
