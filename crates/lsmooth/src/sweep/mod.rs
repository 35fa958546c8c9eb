//! Sweeps over settings and seeds: parsing the settings, and summarising the runs.

pub mod settings;
pub mod summary;
