//! The seeded generator, shared with the core crate (data splits, label noise, batch order, initialisation).

pub use label_smoothing::rng::SplitMix64;
