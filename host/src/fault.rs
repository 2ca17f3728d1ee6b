//! Fault injection, for tests that must make the engine slow or fail at an exact place.
//!
//! Each fault is switched on by an environment variable of the process (a test sets it
//! on the `sluice` it starts), read once; none is set in normal use, where each costs one
//! load of a cached value.

use std::sync::OnceLock;
use std::time::Duration;

/// `SLUICE_FAULT_SLOW_LOG_CUT_MS`: how long writing a batch's cut to the write-ahead log
/// takes longer, as on a slow or busy disk.
pub fn slow_log_cut() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("SLUICE_FAULT_SLOW_LOG_CUT_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
    })
}
