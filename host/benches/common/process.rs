//! A child process run to its end, measured from outside: the lines it printed on one
//! stream, each with the moment the bench read it, and its peak resident memory.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

/// The stream whose lines are kept with their times; the other is kept whole, for errors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Stdout,
    Stderr,
}

/// What a child process printed and how much memory it took.
pub struct Finished {
    /// The watched stream's lines, each with when the bench read it.
    pub lines: Vec<(Instant, String)>,
    /// The peak resident memory of the process and of the descendants it waited for (a
    /// JVM under its launcher scripts), in bytes: wait4's `ru_maxrss`, so other children
    /// of the bench do not count.
    pub peak_rss: u64,
}

/// Runs `command` to its end; panics, with what it printed, unless it exits with 0.
// The child is reaped by wait4, not `Child::wait`, which gives no rusage.
#[allow(clippy::zombie_processes)]
pub fn run(command: &mut Command, watch: Watch) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let (watched, other): (Box<dyn Read + Send>, Box<dyn Read + Send>) = match watch {
        Watch::Stdout => (
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ),
        Watch::Stderr => (
            Box::new(child.stderr.take().unwrap()),
            Box::new(child.stdout.take().unwrap()),
        ),
    };
    let other = std::thread::spawn(move || {
        let mut text = String::new();
        BufReader::new(other).read_to_string(&mut text).ok();
        text
    });
    let lines: Vec<(Instant, String)> = BufReader::new(watched)
        .lines()
        .map_while(Result::ok)
        .map(|line| (Instant::now(), line))
        .collect();
    let other = other.join().unwrap();
    let (status, peak_rss) = wait(child.id());
    if !status.success() {
        let tail = |text: &str| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let watched: Vec<&str> = lines.iter().map(|(_, line)| line.as_str()).collect();
        panic!(
            "{command:?} ended with {status}:\n{}\n{}",
            tail(&watched.join("\n")),
            tail(&other)
        );
    }
    Finished { lines, peak_rss }
}

/// Reaps process `pid`: its exit status and peak resident memory in bytes.
fn wait(pid: u32) -> (ExitStatus, u64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 writes only `status` and `usage`.
    let mut usage = unsafe { std::mem::zeroed::<libc::rusage>() };
    loop {
        // SAFETY: as above.
        let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if waited == pid as libc::pid_t {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4({pid}): {error}"
        );
    }
    (ExitStatus::from_raw(status), usage.ru_maxrss as u64 * 1024)
}
