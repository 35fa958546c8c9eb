//! Charts as self-contained SVG (no scripts, fonts or styles from elsewhere).

pub mod html;
pub mod lines;
pub mod png;
pub mod projection;
pub mod reliability;

/// Escapes text for SVG and HTML (element content and double-quoted attributes).
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
