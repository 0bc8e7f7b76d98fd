//! The terminal side of [`crate::progress::Progress`]: an indicatif bar plus Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::Progress;

/// A progress bar on stderr that also records Ctrl-C as a cancellation request.
pub struct BarProgress {
    bar: ProgressBar,
    cancelled: Arc<AtomicBool>,
}

impl BarProgress {
    /// A hidden bar until [`Progress::start`] is called; installs the Ctrl-C handler
    /// on first use (later calls share the same flag).
    pub fn new() -> Self {
        BarProgress {
            bar: ProgressBar::hidden(),
            cancelled: interrupt_flag(),
        }
    }
}

impl Default for BarProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for BarProgress {
    fn start(&self, total: u64, label: &str) {
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.set_length(total);
        self.bar.set_position(0);
        let style = ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed}, eta {eta})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        self.bar.set_style(style);
        self.bar.set_message(label.to_string());
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn note(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// The process-wide Ctrl-C flag. The first Ctrl-C asks the computation to stop at
/// its next check (so no partial output is written); a second one exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = Arc::clone(&flag);
        // If a handler is already installed (only possible in embedding programs),
        // Ctrl-C keeps its default meaning; cancellation then simply never triggers.
        let _ = ctrlc::set_handler(move || {
            if handler_flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
        flag
    })
    .clone()
}
