//! Progress bars on stderr, for the commands that can run for minutes (`train`, `compare`, `calibrate`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps (a spinner for `None`) on stderr, drawn with `template` (indicatif's syntax, `=> ` as the
/// bar's characters). indicatif draws it only when stderr is a terminal.
pub fn stderr_bar(len: Option<u64>, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    // The templates are this crate's literals: one that does not parse is a bug here, not bad input.
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}
