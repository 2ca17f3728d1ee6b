//! Waiting for a condition or a process, with a limit: tests poll what they wait for
//! (a file's content, a port, an exit), never sleep a fixed time and hope.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `done` holds, failing after `limit`, naming `what` was awaited.
pub fn until(limit: Duration, what: &str, done: impl FnMut() -> bool) {
    assert!(within(limit, done), "timed out waiting for {what}");
}

/// Waits until `done` holds: `false` if it still does not after `limit`, for callers
/// that show what they found instead.
pub fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// Waits for `child` to exit; after `limit` it is killed and `None` returned.
pub fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(POLL);
    }
}
