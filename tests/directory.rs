//! The durable directory source: files moved in while a checkpointed job is down are read
//! after its restart, files present at the first start only with `include_existing`, and
//! `kill -9` at any moment while files arrive loses and duplicates no line.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::run::Run;
use common::wordcount::{
    RUNNING_COUNT, Xorshift, counted, final_counts, stateful_word_count_of, text,
};

/// A checkpointed running word count of the directory `incoming` in `dir`.
fn job(dir: &Path, include_existing: bool) -> PathBuf {
    std::fs::create_dir_all(dir.join("incoming")).unwrap();
    let source =
        format!("kind = \"directory\"\npath = \"incoming\"\ninclude_existing = {include_existing}");
    stateful_word_count_of(dir, "job.toml", "100ms", "", &source, RUNNING_COUNT)
}

/// Writes `text` as `name` beside the watched directory, then moves it in whole.
fn move_in(dir: &Path, name: &str, text: &str) {
    let staged = dir.join(format!(".staging-{name}"));
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, dir.join("incoming").join(name)).unwrap();
}

/// The running totals the job wrote last, if it wrote any.
fn totals(dir: &Path) -> Option<BTreeMap<String, i64>> {
    let has_output = std::fs::read_dir(dir.join("out")).is_ok_and(|mut entries| {
        entries.any(|entry| {
            entry.is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "jsonl"))
        })
    });
    has_output.then(|| final_counts(dir).0)
}

/// Waits until the job's totals are `expected`; on a timeout, shows how they differ.
fn wait_for_totals(dir: &Path, expected: &BTreeMap<String, i64>, limit: Duration, what: &str) {
    if !common::wait::within(limit, || totals(dir).as_ref() == Some(expected)) {
        assert_eq!(
            totals(dir).as_ref(),
            Some(expected),
            "timed out waiting for {what}"
        );
    }
}

const WAIT: Duration = Duration::from_secs(60);

/// Stops `run` with Ctrl-C and checks that it ended well.
fn stop(run: Run) {
    run.signal("INT");
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
}

#[test]
fn files_moved_in_while_the_job_is_down_are_read_after_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = job(dir.path(), false);
    move_in(dir.path(), "before-first-start.txt", "ignored ignored\n");

    let mut run = Run::start(&manifest, &[]);
    run.wait_for("watching");
    move_in(dir.path(), "a.txt", "alpha beta\nbeta\n");
    let mut expected = counted("alpha beta beta");
    wait_for_totals(dir.path(), &expected, WAIT, "a.txt counted");
    stop(run);

    // Down: two files arrive, one of them a file read before under a name used again.
    move_in(dir.path(), "b.txt", "gamma alpha\n");
    std::fs::remove_file(dir.path().join("incoming/a.txt")).unwrap();
    move_in(dir.path(), "a.txt", "delta\n");
    expected = counted("alpha beta beta gamma alpha delta");

    let mut run = Run::start(&manifest, &[]);
    run.wait_for("watching");
    wait_for_totals(
        dir.path(),
        &expected,
        WAIT,
        "the files moved in while down counted",
    );
    move_in(dir.path(), "c.txt", "alpha\n");
    expected = counted("alpha beta beta gamma alpha delta alpha");
    wait_for_totals(dir.path(), &expected, WAIT, "c.txt counted");
    // A few more batches (two polls each), in which a file read twice would show.
    for _ in 0..3 {
        run.wait_for("batch done");
    }
    stop(run);
    assert_eq!(totals(dir.path()), Some(expected), "no file read twice");
}

#[test]
fn include_existing_reads_the_files_present_at_the_first_start_once() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = job(dir.path(), true);
    move_in(dir.path(), "old-1.txt", "alpha beta\n");
    move_in(dir.path(), "old-2.txt", "beta\n");
    let expected = counted("alpha beta beta");

    let mut run = Run::start(&manifest, &[]);
    run.wait_for("watching");
    wait_for_totals(dir.path(), &expected, WAIT, "the existing files counted");
    stop(run);

    let mut run = Run::start(&manifest, &[]);
    let watching = run.wait_for("watching");
    assert!(
        common::run::message_of(&watching).contains("0 of them to read"),
        "after a restart the files read at the first start are not read again: {watching}"
    );
    move_in(dir.path(), "new.txt", "gamma\n");
    let expected = counted("alpha beta beta gamma");
    wait_for_totals(dir.path(), &expected, WAIT, "the new file counted");
    stop(run);
}

/// Moves files with random lines into the watched directory, one every few tens of
/// milliseconds, until stopped; returns every text it moved in.
fn feeder(dir: PathBuf, stop: Arc<AtomicBool>, seed: u64) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut random = Xorshift(seed | 1);
        let mut all = String::new();
        let mut number = 0;
        while !stop.load(Ordering::Acquire) {
            let lines = 1 + (random.next() % 20) as usize;
            let text = text(lines, &mut random) + "\n";
            move_in(&dir, &format!("file-{number:06}.txt"), &text);
            all.push_str(&text);
            number += 1;
            std::thread::sleep(Duration::from_millis(20 + random.next() % 60));
        }
        all
    })
}

#[test]
fn killed_again_and_again_while_files_arrive_the_totals_are_exact() {
    let seed: u64 = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0xd1_5eed);
    let kills_wanted: usize = std::env::var("SLUICE_DIRECTORY_KILLS")
        .ok()
        .and_then(|kills| kills.parse().ok())
        .unwrap_or(50);
    let budget = Duration::from_secs(
        std::env::var("SLUICE_DIRECTORY_KILL_SECONDS")
            .ok()
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or(60),
    );
    println!(
        "seed {seed}, up to {kills_wanted} kills in {budget:?} (SLUICE_CRASH_SEED, SLUICE_DIRECTORY_KILLS, SLUICE_DIRECTORY_KILL_SECONDS)"
    );
    let mut random = Xorshift(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let manifest = job(dir.path(), false);

    // The first start records what is there (nothing); files arrive from then on.
    let mut run = Run::start(&manifest, &[]);
    run.wait_for("watching");
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeding = feeder(dir.path().to_owned(), stop_feeding.clone(), seed);
    std::thread::sleep(Duration::from_millis(random.next() % 500));
    run.child.kill().unwrap();
    run.child.wait().unwrap();

    let started = Instant::now();
    let mut kills = 1;
    while kills < kills_wanted && started.elapsed() < budget {
        let mut child = common::sluice()
            .args(["run", manifest.to_str().unwrap(), "--log", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Sometimes while it loads, sometimes while it recovers, reads or computes.
        std::thread::sleep(Duration::from_millis(100 + random.next() % 1100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended by itself after {kills} kills (seed {seed})"
        );
        child.kill().unwrap(); // SIGKILL: no chance to clean up.
        child.wait().unwrap();
        kills += 1;
        // The feeder goes on while the job is down, too.
        std::thread::sleep(Duration::from_millis(random.next() % 300));
    }
    stop_feeding.store(true, Ordering::Release);
    let fed = feeding.join().unwrap();
    assert!(
        kills >= 10,
        "only {kills} kills fit in {budget:?}: the machine is too slow for this test"
    );

    let expected = counted(&fed);
    let mut run = Run::start(&manifest, &[]);
    run.wait_for("watching");
    wait_for_totals(
        dir.path(),
        &expected,
        Duration::from_secs(120),
        &format!("the totals of every line moved in, after {kills} kills (seed {seed})"),
    );
    for _ in 0..3 {
        run.wait_for("batch done");
    }
    stop(run);
    assert_eq!(
        totals(dir.path()).as_ref(),
        Some(&expected),
        "after {kills} kills the totals differ from an independent count of every line moved in (seed {seed})"
    );
    println!(
        "{kills} kills in {:?}; {} lines, {} words moved in",
        started.elapsed(),
        fed.lines().count(),
        expected.values().sum::<i64>()
    );
}
