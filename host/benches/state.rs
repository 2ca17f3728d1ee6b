//! What state and checkpoints cost, in one run:
//! - a state checkpoint of 1 M keys after a batch that changed 1% of them (full
//!   checkpoints: every key is written each time);
//! - restarting from it (reading, checking and restoring the 1 M keys);
//! - the stateful word count (updateStateByKey) with checkpoints and a write-ahead log of
//!   every record against the same job without them.
//!
//! Run with `cargo bench -p sluice --bench state` after `scripts/setup`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use sluice::checkpoint::{Checkpointer, Cut};
use sluice::job::Job;
use sluice::manifest::JobConfig;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::Batch;

const KEYS: usize = 1_000_000;
const CHANGED_PER_BATCH: usize = KEYS / 100;
const TIMED_CHECKPOINTS: usize = 5;
const WORDCOUNT_BATCHES: u64 = 30;
const LINES_PER_BATCH: usize = 20_000;
const VOCABULARY: u64 = 50_000;

fn config(runtime: &Runtime, dir: &Path, every: u64, steps: &str) -> JobConfig {
    let manifest = format!(
        "name = \"bench\"\nbatch_interval = \"1s\"\n[checkpoint]\ndir = \"{}\"\nevery = {every}\n[udfs]\nwc = \"{}\"\n[[sources]]\nname = \"in\"\nkind = \"socket\"\nport = 9\n[[streams]]\nname = \"out\"\nfrom = \"in\"\nsteps = [{steps}, {{ op = \"count\" }}]\n[[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        dir.display(),
        common::wordcount().display()
    );
    sluice::manifest::parse(&manifest, &dir.join("bench.toml"), runtime).unwrap()
}

fn words(keys: impl Iterator<Item = usize>) -> Batch {
    let mut batch = Batch::new();
    keys.for_each(|key| batch.push(&format!("key{key}")).unwrap());
    batch
}

/// One batch through the job, the way the batcher runs it with a checkpoint directory:
/// logged, cut, computed, completed.
fn step(job: &Job, checkpointer: &Checkpointer, number: u64, input: Batch) -> Option<Duration> {
    let wal = checkpointer.wal();
    let mut wal = wal.lock().unwrap();
    wal.records(0, &input).unwrap();
    let cut = Cut {
        number,
        time_ms: number as i64 * 1000,
        positions: vec![None],
        ranges: vec![Vec::new()],
    };
    wal.cut(cut.clone()).unwrap();
    drop(wal);
    job.process(cut.time_ms, vec![input]).unwrap();
    checkpointer
        .completed(job, &cut)
        .unwrap()
        .map(|written| written.took)
}

fn checkpoint_and_restart(runtime: &Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let steps =
        r#"{ op = "map", udf = "wc#with_one" }, { op = "map_with_state", udf = "wc#count_each" }"#;
    let config = config(runtime, dir.path(), 1, steps);
    let job = Job::build(config.clone(), runtime).unwrap();
    let (checkpointer, _) = Checkpointer::open(
        config.checkpoint.as_ref().unwrap(),
        &job,
        &Default::default(),
    )
    .unwrap();
    step(&job, &checkpointer, 1, words(0..KEYS));
    let mut took = Vec::new();
    for number in 2..2 + TIMED_CHECKPOINTS as u64 {
        let first = (number as usize * 7919 * CHANGED_PER_BATCH) % KEYS;
        let changed = (first..first + CHANGED_PER_BATCH).map(|key| key % KEYS);
        took.push(step(&job, &checkpointer, number, words(changed)).unwrap());
    }
    took.sort();
    let size = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    println!(
        "bench checkpoint write, {KEYS} keys, {CHANGED_PER_BATCH} changed per batch: median {:.1} ms (min {:.1}, max {:.1}), {:.1} MB per checkpoint",
        took[took.len() / 2].as_secs_f64() * 1e3,
        took[0].as_secs_f64() * 1e3,
        took[took.len() - 1].as_secs_f64() * 1e3,
        size as f64 / 1e6
    );
    drop((job, checkpointer));

    let started = Instant::now();
    let job = Job::build(config.clone(), runtime).unwrap();
    let built = started.elapsed();
    let (_, recovery) = Checkpointer::open(
        config.checkpoint.as_ref().unwrap(),
        &job,
        &Default::default(),
    )
    .unwrap();
    let total = started.elapsed();
    let restored = job.stateful_steps()[0].state.entries();
    assert_eq!(restored, KEYS);
    println!(
        "bench restart with {KEYS} keys: {:.0} ms in all ({:.0} ms restoring the state, {:.0} ms building the job)",
        total.as_secs_f64() * 1e3,
        recovery.restore_time.as_secs_f64() * 1e3,
        built.as_secs_f64() * 1e3
    );
}

fn word_count_lines(batch: u64) -> Batch {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ batch;
    let mut lines = Batch::new();
    let mut line = String::new();
    for _ in 0..LINES_PER_BATCH {
        line.clear();
        for _ in 0..10 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            line.push_str(&format!("w{} ", seed % VOCABULARY));
        }
        lines.push(line.as_str()).unwrap();
    }
    lines
}

fn word_count_with_and_without_checkpoints(runtime: &Runtime) {
    let steps = r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "map", udf = "wc#with_one" }, { op = "update_state_by_key", udf = "wc#running_count" }"#;
    let input: Vec<Batch> = (1..=WORDCOUNT_BATCHES).map(word_count_lines).collect();
    let time = |checkpoints: bool| -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let config = config(runtime, dir.path(), 10, steps);
        let job = Job::build(config.clone(), runtime).unwrap();
        let checkpointer = checkpoints.then(|| {
            Checkpointer::open(
                config.checkpoint.as_ref().unwrap(),
                &job,
                &Default::default(),
            )
            .unwrap()
            .0
        });
        let started = Instant::now();
        for (number, batch) in (1..).zip(&input) {
            match &checkpointer {
                Some(checkpointer) => {
                    step(&job, checkpointer, number, batch.clone());
                }
                None => {
                    job.process(number as i64 * 1000, vec![batch.clone()])
                        .unwrap();
                }
            }
        }
        started.elapsed()
    };
    // Alternate, best of three each, so that a busy moment does not land on one side.
    let (mut on, mut off) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        off = off.min(time(false));
        on = on.min(time(true));
    }
    let words = (WORDCOUNT_BATCHES as usize * LINES_PER_BATCH * 10) as f64;
    println!(
        "bench stateful word count ({VOCABULARY} keys, WAL of every record, fsync per batch, state checkpoint every 10 batches): on {:.2} M words/s, off {:.2} M words/s, on costs {:+.1}%",
        words / on.as_secs_f64() / 1e6,
        words / off.as_secs_f64() / 1e6,
        (on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0
    );
}

fn main() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    checkpoint_and_restart(&runtime);
    word_count_with_and_without_checkpoints(&runtime);
}
