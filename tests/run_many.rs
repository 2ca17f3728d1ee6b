//! `sluice run a.toml b.toml ...`: several jobs in one process, each on its own checkpoint
//! directory; a failing job leaves the others running; a healthy tenant's job keeps its
//! schedule next to a hostile tenant's sleeping and spinning jobs, and Ctrl-C ends them all.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::run::{Run, message_of};
use common::wordcount::{counted, final_counts, slow_input, slow_word_count};
use serde_json::Value as Json;

/// The healthy job's scheduling delays are measured: its test runs alone, and so does each
/// of the others.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A job named `name` of `tenant` on a generator of `rate` records/s, a batch every 100 ms
/// in `partitions`, through `steps`, into a collect sink; its manifest is `dir/{name}.toml`.
fn generated_job(
    dir: &Path,
    name: &str,
    tenant: &str,
    partitions: u32,
    rate: u32,
    steps: &str,
) -> PathBuf {
    let manifest = format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\nbatch_interval = \"100ms\"\npartitions = {partitions}\n\
         [limits]\ncall_timeout = \"1h\"\n\
         [udfs]\nf = \"{}\"\nc = \"{}\"\n\
         [[sources]]\nname = \"in\"\nkind = \"generator\"\nrate = {rate}\n\
         [[streams]]\nname = \"out\"\nfrom = \"in\"\nsteps = [{steps}]\n\
         [[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        common::udf("faulty").display(),
        common::udf("conformance").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The batch lines of job `name`.
fn batches_of<'a>(log: &'a [Json], name: &str) -> Vec<&'a Json> {
    log.iter()
        .filter(|line| message_of(line) == "batch done" && line["fields"]["job"] == name)
        .collect()
}

/// The line saying how job `name` ended.
fn ending_of<'a>(log: &'a [Json], name: &str) -> &'a Json {
    log.iter()
        .find(|line| {
            line["fields"]["job"] == name
                && (message_of(line).starts_with("finished")
                    || message_of(line).starts_with("failed"))
        })
        .unwrap_or_else(|| panic!("no line says how job `{name}` ended: {log:#?}"))
}

/// The text of everything the run wrote.
fn text_of(log: &[Json]) -> String {
    log.iter().map(message_of).collect::<Vec<_>>().join("\n")
}

#[test]
fn two_jobs_run_side_by_side_to_their_ends() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let first = slow_word_count(&a, "first");
    let second = slow_word_count(&b, "second");
    let (status, log) = Run::start(&first, &[arg(&second)]).finish();
    assert!(status.success(), "{status}: {log:#?}");
    for (dir, name) in [(&a, "first"), (&b, "second")] {
        assert_eq!(final_counts(dir).0, counted(&slow_input()), "job `{name}`");
        let batches = batches_of(&log, name);
        assert!(
            !batches.is_empty(),
            "job `{name}` reports its batches: {log:#?}"
        );
        assert!(
            batches
                .iter()
                .all(|line| line["fields"]["tenant"] == "default")
        );
        assert!(
            message_of(ending_of(&log, name)).contains("its sources are drained"),
            "{log:#?}"
        );
    }
}

#[test]
fn jobs_on_one_checkpoint_directory_are_refused_before_either_starts() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.toml");
    std::fs::rename(slow_word_count(dir.path(), "first"), &first).unwrap();
    let second = slow_word_count(dir.path(), "second");
    let (status, log) = Run::start(&first, &[arg(&second)]).finish();
    let text = text_of(&log);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "jobs `first` ({}) and `second` ({}) both use checkpoint directory",
            first.display(),
            second.display()
        )) && text.contains("give each job its own `[checkpoint] dir`"),
        "{text}"
    );
    assert!(!dir.path().join("checkpoint").exists(), "no job started");
    assert!(!dir.path().join("out").exists(), "no job started");
}

#[test]
fn a_manifest_that_cannot_load_fails_the_run_before_any_job_starts() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let good = slow_word_count(dir.path(), "good");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"bad\"\nbatch_interval = \"soon\"\n").unwrap();
    let (status, log) = Run::start(&good, &[arg(&bad)]).finish();
    let text = text_of(&log);
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(text.contains(&bad.display().to_string()), "{text}");
    assert!(!dir.path().join("checkpoint").exists(), "no job started");
}

#[test]
fn a_failing_job_leaves_its_neighbour_running_to_its_end() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let counting = slow_word_count(dir.path(), "counting");
    let failing = generated_job(
        dir.path(),
        "failing",
        "default",
        1,
        20,
        "{ op = \"map\", udf = \"f#panic_on_three\" }",
    );
    let (status, log) = Run::start(&counting, &[arg(&failing)]).finish();
    assert_eq!(status.code(), Some(1), "{log:#?}");
    let failed = ending_of(&log, "failing");
    assert!(
        message_of(failed).starts_with("failed: job `failing` failed on the batch")
            && message_of(failed).contains("three is not allowed"),
        "{failed:#?}"
    );
    let counted_to_the_end = ending_of(&log, "counting");
    assert!(
        message_of(counted_to_the_end).contains("its sources are drained"),
        "{counted_to_the_end:#?}"
    );
    assert_eq!(final_counts(dir.path()).0, counted(&slow_input()));
    let failed_at = log.iter().position(|line| line == failed).unwrap();
    assert!(
        batches_of(&log[failed_at..], "counting").len() > 1,
        "the neighbour ran on after the failure: {log:#?}"
    );
}

#[test]
fn a_healthy_tenants_job_keeps_its_schedule_next_to_sleeping_and_spinning_jobs() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host.toml");
    std::fs::write(
        &host,
        "[[tenants]]\nname = \"a\"\n[[tenants]]\nname = \"b\"\n",
    )
    .unwrap();
    let healthy = generated_job(
        dir.path(),
        "healthy",
        "b",
        2,
        200,
        "{ op = \"map\", udf = \"c#add_10\" }, { op = \"count\" }",
    );
    let mut neighbours = Vec::new();
    for (name, udf) in [("spin1", "spin"), ("spin2", "spin"), ("nap", "nap")] {
        let steps = format!("{{ op = \"map\", udf = \"f#{udf}\" }}");
        neighbours.push(generated_job(dir.path(), name, "a", 2, 10, &steps));
    }
    let mut args: Vec<&str> = neighbours.iter().map(|path| arg(path)).collect();
    args.extend(["--host-config", arg(&host)]);
    let mut run = Run::start(&healthy, &args);
    let mut delays = Vec::new();
    while delays.len() < 100 {
        let line = run.wait_for("batch done");
        if line["fields"]["job"] != "healthy" {
            continue; // a neighbour's batch without records
        }
        assert_eq!(line["fields"]["tenant"], "b");
        delays.push(line["fields"]["scheduling_delay_ms"].as_u64().unwrap());
    }
    let interrupted = Instant::now();
    run.signal("INT");
    let mut child_exit = None;
    common::wait::until(Duration::from_secs(10), "the run to end", || {
        child_exit = run.child.try_wait().unwrap();
        child_exit.is_some()
    });
    let took = interrupted.elapsed();
    let (status, log) = run.finish();
    delays.sort_unstable();
    let (p50, p99, max) = (delays[50], delays[98], delays[99]);
    eprintln!(
        "healthy next to spinning and sleeping jobs: scheduling delay p50 {p50} ms, p99 {p99} ms, \
         max {max} ms; the run ended {took:?} after Ctrl-C"
    );
    assert!(p99 < 100, "p99 {p99} ms");
    assert!(max < 300, "max {max} ms");
    assert!(
        took < Duration::from_secs(5),
        "the run took {took:?} to end after Ctrl-C"
    );
    assert!(status.success(), "{status}: {log:#?}");
    assert!(message_of(ending_of(&log, "healthy")).contains("it was stopped"));
    for name in ["spin1", "spin2", "nap"] {
        assert!(
            message_of(ending_of(&log, name)).contains("stopped by force"),
            "{name}: {log:#?}"
        );
    }
}

#[test]
fn a_second_ctrl_c_stops_every_job_at_once_even_a_sleeping_one() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let counting = slow_word_count(dir.path(), "counting");
    // One record, in the first batch, cut at most one 20 ms interval (and phase) after the
    // start: its 60 s nap is in flight long before `counting`, whose batches each take
    // 50 ms, has reported three.
    let napping = dir.path().join("napping.toml");
    std::fs::write(
        &napping,
        format!(
            "name = \"napping\"\nbatch_interval = \"20ms\"\n[limits]\ncall_timeout = \"1h\"\n\
             [udfs]\nf = \"{}\"\n[[sources]]\nname = \"in\"\nkind = \"queue\"\nbatches = [[1]]\n\
             [[streams]]\nname = \"out\"\nfrom = \"in\"\nsteps = [{{ op = \"map\", udf = \"f#nap\" }}]\n\
             [[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
            common::udf("faulty").display()
        ),
    )
    .unwrap();
    let mut run = Run::start(&counting, &[arg(&napping)]);
    for _ in 0..3 {
        while run.wait_for("batch done")["fields"]["job"] != "counting" {}
    }
    run.signal("INT");
    run.wait_for("stopping after the batch in flight");
    let second = Instant::now();
    run.signal("INT");
    let mut exited = None;
    common::wait::until(Duration::from_secs(10), "the run to end", || {
        exited = run.child.try_wait().unwrap();
        exited.is_some()
    });
    let took = second.elapsed();
    let (status, log) = run.finish();
    eprintln!("second Ctrl-C: the run ended {took:?} after it");
    assert_eq!(status.code(), Some(130), "{log:#?}");
    assert!(took < Duration::from_secs(2), "took {took:?} to stop");
    assert!(text_of(&log).contains("stopped at once"), "{log:#?}");
    let (status, log) = Run::start(&counting, &[]).finish();
    assert!(status.success(), "the restart failed: {log:#?}");
    assert_eq!(final_counts(dir.path()).0, counted(&slow_input()));
}

#[test]
fn a_job_that_cannot_start_stops_those_started_before_it() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let first = slow_word_count(&a, "first");
    let second = slow_word_count(&b, "second");
    // Another run holds the second job's checkpoint directory.
    let mut holder = Run::start(&second, &[]);
    holder.wait_for("batch done");
    let (status, log) = Run::start(&first, &[arg(&second)]).finish();
    let text = text_of(&log);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("already running (pid {})", holder.child.id())),
        "{text}"
    );
    assert!(
        message_of(ending_of(&log, "first")).contains("it was stopped"),
        "the job started first is stopped: {text}"
    );
    holder.signal("TERM");
    assert!(holder.finish().0.success());
    for dir in [&a, &b] {
        let (status, log) = Run::start(&dir.join("job.toml"), &[]).finish();
        assert!(status.success(), "{log:#?}");
        assert_eq!(final_counts(dir).0, counted(&slow_input()));
    }
}
