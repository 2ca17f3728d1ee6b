//! Event-time aggregation through the engine, from pre-generated batches (no source in
//! the way): 10k keys, every key once per 10 s of event time, 5% of events delayed
//! uniformly by 0-8 s, a count per 10 s tumbling window per key with a 5 s watermark, the
//! event time read by the built-in field extractor. Prints events/s and the largest state
//! (rows) over windows 50-100 and 500-1000: eviction keeps state bounded when the two are
//! close.
//!
//! Run with `cargo bench -p sluice --bench event_time`.

use std::time::{Duration, Instant};

use sluice::job::Job;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::{Batch, Value};

const KEYS: usize = 10_000;
const WINDOWS: usize = 1_000;
const WINDOW_MS: i64 = 10_000;

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

/// One batch per window of event time: each key once at a uniform time in it, 5% of
/// them held back by 0-8 s (so some land in the next batch, some late).
fn batches() -> Vec<Batch> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut held: Vec<(i64, Value)> = Vec::new();
    let mut out = Vec::with_capacity(WINDOWS);
    for window in 0..WINDOWS as i64 {
        let end = (window + 1) * WINDOW_MS;
        let mut batch = Batch::with_capacity(KEYS, KEYS * 32);
        let (due, later): (Vec<_>, Vec<_>) = held.drain(..).partition(|(at, _)| *at < end);
        held = later;
        for key in 0..KEYS {
            let time = window * WINDOW_MS + (rng.next() % WINDOW_MS as u64) as i64;
            let record = Value::Struct(vec![
                ("key".into(), Value::Int(key as i64)),
                ("t".into(), Value::Int(time)),
            ]);
            if rng.next().is_multiple_of(20) {
                held.push((time + (rng.next() % 8_001) as i64, record));
            } else {
                batch.push_with(|bytes| record.encode_into(bytes));
            }
        }
        due.iter()
            .for_each(|(_, record)| batch.push_with(|bytes| record.encode_into(bytes)));
        out.push(batch);
    }
    out
}

fn main() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "name = \"bench\"\nbatch_interval = \"1s\"\n[checkpoint]\ndir = \"{}\"\n[[sources]]\nname = \"in\"\nkind = \"stdin\"\n[[streams]]\nname = \"counts\"\nfrom = \"in\"\nsteps = [{{ op = \"event_time\", field = \"t\", delay = \"5s\" }}, {{ op = \"event_aggregate\", keys = [\"key\"], window = \"10s\", aggregates = [\"count\"], output_mode = \"append\" }}]\n[[sinks]]\nfrom = \"counts\"\nkind = \"print\"\nnum = 1\n",
        dir.path().join("checkpoint").display()
    );
    let config =
        sluice::manifest::parse(&manifest, &dir.path().join("bench.toml"), &runtime).unwrap();
    let job = Job::build(config, &runtime).unwrap();
    let batches = batches();
    let events: usize = batches.iter().map(Batch::len).sum();
    let (mut early, mut late) = (0, 0);
    let mut busy = Duration::ZERO;
    for (index, batch) in batches.into_iter().enumerate() {
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
    println!(
        "bench event_time built-in extractor: {:.2} M events/s ({events} events in {:.2} s)",
        events as f64 / busy.as_secs_f64() / 1e6,
        busy.as_secs_f64()
    );
    println!(
        "bench event_time state: max rows over windows 50-100 {early}, over windows 500-1000 {late} (ratio {:.3})",
        late as f64 / early as f64
    );
}
