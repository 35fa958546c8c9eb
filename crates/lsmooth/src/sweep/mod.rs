//! Sweeps over settings and seeds: parsing the settings and strength grids, and summarising the runs.

pub mod grid;
pub mod settings;
pub mod stats;
pub mod summary;
