//! Charts as self-contained SVG (no scripts, fonts or styles from elsewhere), and the pages of `compare` (HTML,
//! Markdown).

pub mod html;
pub mod lines;
pub mod markdown;
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
