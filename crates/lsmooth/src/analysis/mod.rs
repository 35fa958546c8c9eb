//! Analyses of trained models beyond their metrics.

pub mod projection;
