//! Operating `sluice run` as a supervisor or a person does: SIGTERM, SIGHUP and Ctrl-C in
//! the middle of a batch, a second Ctrl-C, a closed log pipe, two runs on one checkpoint
//! directory, and `--batches` after a recovery.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::run::{Run, message_of};
use common::wordcount::{counted, final_counts, slow_input as input, slow_word_count};
use serde_json::Value as Json;

fn batch_reports(log: &[Json]) -> Vec<&Json> {
    log.iter()
        .filter(|line| message_of(line) == "batch done")
        .collect()
}

/// Runs the job to the end of its input and returns its totals.
fn run_to_the_end(dir: &Path, manifest: &Path) -> BTreeMap<String, i64> {
    restart_to_the_end(dir, manifest).0
}

/// Runs the job to the end of its input; returns its totals and its log.
fn restart_to_the_end(dir: &Path, manifest: &Path) -> (BTreeMap<String, i64>, Vec<Json>) {
    let (status, log) = Run::start(manifest, &[]).finish();
    assert!(status.success(), "the restart failed: {log:#?}");
    (final_counts(dir).0, log)
}

/// One stop signal in the middle of a batch: the batch in flight finishes, at most one
/// report follows, the process exits 0 soon after, and a restart counts every word once.
fn stops_after_the_batch_in_flight(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = slow_word_count(dir.path(), "slow-wordcount");
    let mut run = Run::start(&manifest, &[]);
    run.wait_for("batch done");
    run.wait_for("batch done");
    let signalled = Instant::now();
    run.signal(signal);
    let (status, log) = run.finish();
    let took = signalled.elapsed();
    assert!(status.success(), "{signal}: {status}; {log:#?}");
    let stopping = log
        .iter()
        .position(|line| message_of(line).contains("stopping after the batch in flight"))
        .unwrap_or_else(|| panic!("{signal}: no stopping message: {log:#?}"));
    let after = batch_reports(&log[stopping..]);
    assert!(
        after.len() <= 1,
        "{signal}: {} batch reports after the signal: {after:#?}",
        after.len()
    );
    let in_flight = after
        .first()
        .and_then(|report| report["fields"]["processing_ms"].as_u64())
        .unwrap_or(0);
    assert!(
        took <= Duration::from_millis(in_flight + 1000),
        "{signal}: the process took {took:?} to exit after a batch of {in_flight} ms"
    );
    let last = batch_reports(&log)
        .last()
        .and_then(|report| report["fields"]["batch"].as_u64())
        .expect("batches were computed");
    assert!(
        log.iter().any(|line| message_of(line)
            .starts_with(&format!("state checkpoint after batch {last} on stopping"))),
        "{signal}: the state after the last batch is checkpointed on stopping: {log:#?}"
    );
    let (totals, restart) = restart_to_the_end(dir.path(), &manifest);
    assert_eq!(totals, counted(&input()));
    let restored = restart
        .iter()
        .find(|line| message_of(line) == "restored the state checkpoint")
        .unwrap_or_else(|| panic!("{signal}: the restart restores a checkpoint: {restart:#?}"));
    assert_eq!(restored["fields"]["batch"], last, "{restart:#?}");
}

#[test]
fn sigterm_finishes_the_batch_in_flight_and_a_restart_is_exact() {
    stops_after_the_batch_in_flight("TERM");
}

#[test]
fn sighup_finishes_the_batch_in_flight_and_a_restart_is_exact() {
    stops_after_the_batch_in_flight("HUP");
}

#[test]
fn ctrl_c_finishes_the_batch_in_flight_and_a_restart_is_exact() {
    stops_after_the_batch_in_flight("INT");
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_the_abandoned_batch_is_re_run() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = slow_word_count(dir.path(), "slow-wordcount");
    let mut run = Run::start(&manifest, &[]);
    run.wait_for("batch done");
    run.signal("INT");
    run.wait_for("stopping after the batch in flight");
    let second = Instant::now();
    run.signal("INT");
    let (status, log) = run.finish();
    let took = second.elapsed();
    assert_eq!(status.code(), Some(130), "{log:#?}");
    assert!(took < Duration::from_secs(1), "took {took:?} to stop");
    assert!(
        log.iter()
            .any(|line| message_of(line).contains("stopped at once")),
        "{log:#?}"
    );
    assert_eq!(run_to_the_end(dir.path(), &manifest), counted(&input()));
}

#[test]
fn a_closed_log_pipe_stops_the_run_with_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = slow_word_count(dir.path(), "slow-wordcount");
    let mut run = Run::start(&manifest, &[]);
    run.wait_for("batch done");
    // Dropping the only reader closes the pipe: the next log line cannot be written.
    let Run {
        mut child, lines, ..
    } = run;
    drop(lines);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
    assert_eq!(run_to_the_end(dir.path(), &manifest), counted(&input()));
}

#[test]
fn a_second_run_on_the_same_checkpoint_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = slow_word_count(dir.path(), "slow-wordcount");
    let mut first = Run::start(&manifest, &[]);
    first.wait_for("batch done");
    let (status, log) = Run::start(&manifest, &[]).finish();
    assert!(!status.success());
    let refusal = log.iter().map(message_of).collect::<Vec<_>>().join("\n");
    assert!(
        refusal.contains(&format!("already running (pid {})", first.child.id())),
        "{refusal}"
    );
    first.signal("TERM");
    let (status, _) = first.finish();
    assert!(status.success());
    assert_eq!(run_to_the_end(dir.path(), &manifest), counted(&input()));
}

#[test]
fn batch_limit_after_a_recovery_counts_only_new_batches() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = slow_word_count(dir.path(), "slow-wordcount");
    let mut crashed = Run::start(&manifest, &[]);
    for _ in 0..4 {
        crashed.wait_for("batch done");
    }
    crashed.child.kill().unwrap(); // SIGKILL: the log holds 4 or more batches to re-run.
    crashed.finish();

    let (status, log) = Run::start(&manifest, &["--batches", "2"]).finish();
    assert!(status.success(), "{log:#?}");
    let reports = batch_reports(&log);
    let replayed = reports
        .iter()
        .filter(|report| report["fields"]["replayed"] == true)
        .count();
    let new = reports.len() - replayed;
    assert!(replayed >= 4, "{replayed} batches re-run: {log:#?}");
    assert_eq!(new, 2, "{log:#?}");
    let finished = log
        .iter()
        .find(|line| message_of(line).starts_with("finished"))
        .expect("a finished line");
    assert_eq!(finished["fields"]["batches"], 2);
    assert_eq!(finished["fields"]["replayed"], replayed);
    assert_eq!(run_to_the_end(dir.path(), &manifest), counted(&input()));
}
