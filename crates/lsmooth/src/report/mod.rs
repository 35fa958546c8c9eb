//! Charts as self-contained SVG (no scripts, fonts or styles from elsewhere).

pub mod html;
pub mod lines;
pub mod png;
pub mod projection;
pub mod reliability;
