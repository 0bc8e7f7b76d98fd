//! Progress and cancellation, as seen by long computations.
//!
//! Library code never prints: it reports progress through this trait, and the
//! command line turns the reports into a progress bar. The same object carries the
//! cancellation flag (Ctrl-C), checked between units of work (one Hessian-vector
//! product, one trial), so an interrupted run stops cleanly without partial output.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Receives progress reports from a long computation and tells it when to stop.
pub trait Progress: Sync {
    /// Announces the total number of work units (0 when unknown).
    fn start(&self, _total: u64, _label: &str) {}
    /// Reports `n` more finished units.
    fn advance(&self, _n: u64) {}
    /// A short status beside the progress (the latest loss, say).
    fn note(&self, _message: &str) {}
    /// Whether the user asked to stop.
    fn is_cancelled(&self) -> bool {
        false
    }
    /// `Err(Error::Cancelled)` once the user asked to stop: call between work units.
    fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Ignores reports and never cancels (tests, library use).
pub struct Silent;

impl Progress for Silent {}

/// A cancellation flag without progress display, e.g. set from a signal handler.
#[derive(Default)]
pub struct CancelFlag(AtomicBool);

impl CancelFlag {
    /// Asks the computation to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Progress for CancelFlag {
    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
