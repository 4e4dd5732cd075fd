//! The CLI's one progress indicator: a spinner with the elapsed time, drawn on stderr only
//! when it is a terminal (indicatif's rule), so `--json` output and logs stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A ticking spinner showing `message`; `finish_and_clear` it when the work is done.
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message.to_string());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
