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

/// What the running stage is doing now ("step 12", "iteration 3"), kept for the one error line
/// a libtorch exception becomes (`rto_cli::main_with`): a panic carries no context chain, so
/// the loops that feed user-shaped data to tensors say where they are.
static ACTIVITY: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Records the current unit of work; cheap enough to call once per step or batch.
pub fn set_activity(what: std::fmt::Arguments<'_>) {
    let mut activity = ACTIVITY.lock().unwrap_or_else(|e| e.into_inner());
    activity.clear();
    std::fmt::Write::write_fmt(&mut *activity, what).expect("writing to a String");
}

/// The last [`set_activity`], if any.
pub fn activity() -> Option<String> {
    let activity = ACTIVITY.lock().unwrap_or_else(|e| e.into_inner());
    (!activity.is_empty()).then(|| activity.clone())
}
