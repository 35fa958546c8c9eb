//! Charts as self-contained SVG (no scripts, fonts or styles from elsewhere).

pub mod reliability;
pub mod lines;
pub mod projection;
pub mod html;
