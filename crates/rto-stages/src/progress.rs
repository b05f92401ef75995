//! Progress bars on stderr (hidden automatically when stderr is not a terminal, so logs and
//! CI output stay clean).

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} (eta {eta}) {msg}")
            .expect("static template"),
    );
    bar.set_prefix(label.to_string());
    bar
}
