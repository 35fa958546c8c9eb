//! The workspace README's Rust examples, compiled and run as doc tests (`cargo test -p
//! label-smoothing-readme-tests --doc`). They live in this unpublished crate because the README sits outside
//! every published package, and the examples need the core crate, candle's adapter and burn's together.

/// The README, whose ```` ```rust ```` blocks are the doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
