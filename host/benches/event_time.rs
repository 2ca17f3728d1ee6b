//! Event-time aggregation through the engine, from pre-generated batches (no source in
//! the way): 10k keys, 10k events per 10 s of event time (each of a key drawn at
//! random, at a time drawn at random in those 10 s), 5% of events delayed
//! uniformly by 0-8 s, a count per 10 s tumbling window per key with a 5 s watermark.
//! Prints events/s with the event time read by the built-in field extractor and by a map
//! UDF (`conformance#event_ms_of_t`), and the largest state (rows) over windows 50-100
//! and 500-1000: eviction keeps state bounded when the two are close.
//!
//! Before timing, each extractor's job runs the first [`CHECKED`] batches into a collect
//! sink, and every count it emitted is checked against a count of the generated events
//! (less the rows late by the watermark, computed here from the event times): a wrong
//! count fails the bench.
//!
//! Run with `cargo bench -p sluice --bench event_time [-- built-in|UDF]` (an argument
//! runs only the extractors whose name holds it; `EVENT_TIME_WINDOWS=n` times n batches
//! rather than 1000, for a quick look).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice::job::Job;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::{Batch, Value};

const KEYS: usize = 10_000;
const WINDOWS: usize = 1_000;
const WINDOW_MS: i64 = 10_000;
const DELAY_MS: i64 = 5_000;
/// Batches whose output is checked.
const CHECKED: usize = 120;

/// A small deterministic generator (xorshift), so that every run measures the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One batch of `(key, event ms)` per window of event time: as many events as keys, each
/// of a uniform key at a uniform time in the window, 5% of them held back by 0-8 s (so
/// some land in the next batch, some late).
fn events(windows: usize) -> Vec<Vec<(i64, i64)>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut held: Vec<(i64, (i64, i64))> = Vec::new();
    let mut out = Vec::with_capacity(windows);
    for window in 0..windows as i64 {
        let end = (window + 1) * WINDOW_MS;
        let mut batch = Vec::with_capacity(KEYS);
        let (due, later): (Vec<_>, Vec<_>) = held.drain(..).partition(|(at, _)| *at < end);
        held = later;
        for _ in 0..KEYS {
            let key = (rng.next() % KEYS as u64) as i64;
            let time = window * WINDOW_MS + (rng.next() % WINDOW_MS as u64) as i64;
            if rng.next().is_multiple_of(20) {
                held.push((time + (rng.next() % 8_001) as i64, (key, time)));
            } else {
                batch.push((key, time));
            }
        }
        batch.extend(due.into_iter().map(|(_, event)| event));
        out.push(batch);
    }
    out
}

/// The records `{key, t}` of a batch.
fn encoded(events: &[(i64, i64)]) -> Batch {
    let mut batch = Batch::with_capacity(events.len(), events.len() * 16);
    for &(key, time) in events {
        let record = Value::Struct(vec![
            ("key".into(), Value::Int(key)),
            ("t".into(), Value::Int(time)),
        ]);
        batch.push_with(|bytes| record.encode_into(bytes));
    }
    batch
}

/// The job: event time from `extractor` (a step's settings), a count per window and key
/// in append mode, into the sink `sink` (its settings).
fn job(runtime: &Runtime, dir: &std::path::Path, extractor: &str, sink: &str) -> Job {
    let manifest = format!(
        r#"name = "bench"
batch_interval = "1s"
[checkpoint]
dir = "{checkpoint}"
[udfs]
c = "{udfs}"
[[sources]]
name = "in"
kind = "stdin"
[[streams]]
name = "counts"
from = "in"
steps = [{{ op = "event_time", {extractor}, delay = "5s" }}, {{ op = "event_aggregate", keys = ["key"], window = "10s", aggregates = ["count"], output_mode = "append" }}]
[[sinks]]
name = "out"
from = "counts"
{sink}
"#,
        checkpoint = dir.join("checkpoint").display(),
        udfs = common::component("conformance").display(),
    );
    let config = sluice::manifest::parse(&manifest, &dir.join("bench.toml"), runtime).unwrap();
    Job::build(config, runtime).unwrap()
}

/// What the job must emit after `batches`: per `(window start, key)`, the events of
/// windows the watermark closed, less those late when they came. The watermark a batch
/// evicts and emits with is the largest event time of the batches before it less the
/// delay; it drops rows late by the one of the batch before (Spark's order).
fn expected(batches: &[Vec<(i64, i64)>]) -> BTreeMap<(i64, i64), i64> {
    let mut counts = BTreeMap::new();
    let (mut seen, mut emit_with) = (0, 0);
    for batch in batches {
        let late_with = emit_with;
        emit_with = emit_with.max(seen - DELAY_MS);
        for &(key, time) in batch {
            let start = time - time.rem_euclid(WINDOW_MS);
            if start + WINDOW_MS > late_with {
                *counts.entry((start, key)).or_insert(0) += 1;
            }
        }
        seen = seen.max(batch.iter().map(|&(_, time)| time).max().unwrap_or(0));
    }
    counts.retain(|(start, _), _| start + WINDOW_MS <= emit_with);
    counts
}

/// Runs the first [`CHECKED`] batches into a collect sink and compares every count.
fn check(runtime: &Runtime, extractor: &str, batches: &[Vec<(i64, i64)>]) {
    let dir = tempfile::tempdir().unwrap();
    let job = job(runtime, dir.path(), extractor, r#"kind = "collect""#);
    let batches = &batches[..CHECKED.min(batches.len())];
    for (index, batch) in batches.iter().enumerate() {
        job.process((index as i64 + 1) * 1000, vec![encoded(batch)])
            .unwrap();
    }
    let int = |record: &Value, path: &[&str]| {
        let value = path
            .iter()
            .try_fold(record, |value, name| value.field(name));
        match value {
            Some(Value::Int(n)) => *n,
            _ => panic!("no {path:?} in {}", record.to_json()),
        }
    };
    let mut emitted = BTreeMap::new();
    for record in job
        .collected()
        .batches("out")
        .into_iter()
        .flat_map(|(_, b)| b)
    {
        let group = (
            int(&record, &["window", "start"]),
            int(&record, &["key", "key"]),
        );
        assert_eq!(
            int(&record, &["window", "end"]),
            group.0 + WINDOW_MS,
            "a 10 s window"
        );
        let count = int(&record, &["count"]);
        assert!(
            emitted.insert(group, count).is_none(),
            "{group:?} emitted twice"
        );
    }
    let expected = expected(batches);
    assert_eq!(
        emitted.len(),
        expected.len(),
        "groups emitted ({extractor})"
    );
    assert!(
        emitted == expected,
        "the counts of {extractor} differ from the events'"
    );
    println!(
        "bench event_time {extractor}: {} counts of {} batches checked",
        emitted.len(),
        batches.len()
    );
}

/// Times every batch through a job with a print sink (printing one record a batch); returns
/// the time spent and the largest state over windows 50-100 and 500-1000.
fn time(
    runtime: &Runtime,
    extractor: &str,
    batches: &[Vec<(i64, i64)>],
) -> (Duration, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let job = job(runtime, dir.path(), extractor, "kind = \"print\"\nnum = 1");
    let encoded: Vec<Batch> = batches.iter().map(|batch| encoded(batch)).collect();
    let (mut early, mut late) = (0, 0);
    let mut busy = Duration::ZERO;
    for (index, batch) in encoded.into_iter().enumerate() {
        let started = Instant::now();
        job.process((index as i64 + 1) * 1000, vec![batch]).unwrap();
        busy += started.elapsed();
        let rows = job.event_time_report().unwrap().steps[0].state_rows;
        match index {
            50..=100 => early = early.max(rows),
            500..=1000 => late = late.max(rows),
            _ => {}
        }
    }
    (busy, early, late)
}

fn main() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let windows = std::env::var("EVENT_TIME_WINDOWS").map_or(WINDOWS, |windows| {
        windows.parse().expect("a number of windows")
    });
    let batches = events(windows);
    let events: usize = batches.iter().map(Vec::len).sum();
    // `cargo bench` passes `--bench`.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    for (name, extractor) in [
        ("built-in extractor", r#"field = "t""#),
        ("UDF extractor", r#"udf = "c#event_ms_of_t""#),
    ] {
        if !only.is_empty() && !only.iter().any(|only| name.contains(only.as_str())) {
            continue;
        }
        check(&runtime, extractor, &batches);
        let (busy, early, late) = time(&runtime, extractor, &batches);
        println!(
            "bench event_time {name}: {:.2} M events/s ({events} events in {:.2} s)",
            events as f64 / busy.as_secs_f64() / 1e6,
            busy.as_secs_f64()
        );
        println!(
            "bench event_time {name} state: max rows over windows 50-100 {early}, over windows 500-1000 {late} (ratio {:.3})",
            late as f64 / early as f64
        );
    }
}
