//! Standard error that may go away.
//!
//! `sluice run` reports on stderr, often into a pipe (`sluice run job.toml 2>&1 | head`, a
//! log shipper that restarts). `eprint!` panics once the reading end is closed, which
//! would kill every job of the process over a lost log line. Everything the CLI writes
//! to stderr goes through [`Stderr`] instead: a failed write is dropped, and the run is
//! told, through [`lost`], so that it stops as on Ctrl-C and exits with an error.
//!
//! Writes go through the process's [`terminal`], so that the live status line is erased
//! before a log line and drawn again after it.

use std::io::{self, Write};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice::terminal::terminal;
use tokio::sync::Notify;

/// Set once a write to stderr has failed.
static BROKEN: AtomicBool = AtomicBool::new(false);

/// Wakes whoever waits in [`lost`].
static LOST: LazyLock<Notify> = LazyLock::new(Notify::new);

/// The process's stderr; writes that fail are dropped and remembered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !BROKEN.load(Ordering::Relaxed)
            && let Err(error) = terminal().eprint(buf)
        {
            mark_lost(&error);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !BROKEN.load(Ordering::Relaxed)
            && let Err(error) = io::stderr().flush()
        {
            mark_lost(&error);
        }
        Ok(())
    }
}

fn mark_lost(error: &io::Error) {
    // Interrupted writes are retried by write_all; anything else means nobody reads.
    if error.kind() != io::ErrorKind::Interrupted && !BROKEN.swap(true, Ordering::Relaxed) {
        LOST.notify_one();
    }
}

/// Whether stderr has been lost.
pub fn is_lost() -> bool {
    BROKEN.load(Ordering::Relaxed)
}

/// Completes once a write to stderr has failed.
pub async fn lost() {
    if !is_lost() {
        LOST.notified().await;
    }
}
