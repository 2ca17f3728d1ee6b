//! What metrics cost: (1) the throughput of a word count of small batches with each
//! batch's report counted (and a scrape every 10 batches) against the same job without,
//! in one run of 5 runs each, alternating: the medians, their ratio, and each side's
//! spread (slowest over fastest); (2) one scrape of 1,000 jobs that have each run 1,000 batches: its size
//! and time, against the targets (under 5 MB and 100 ms).
//!
//! Run with `cargo bench -p sluice --bench metrics` after `scripts/setup`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::batcher::BatchReport;
use sluice::job::{BatchStats, Job};
use sluice::metrics::{JobMetrics, Jobs, StepMeter};
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::Batch;

const WORDS: usize = 2_000_000;
const BATCHES: usize = 400;
const RUNS: usize = 5;
const JOBS: usize = 1000;

fn main() {
    overhead();
    scrape();
}

fn overhead() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let manifest = format!(
        "name = \"bench\"\nbatch_interval = \"1s\"\n[udfs]\nwc = \"{}\"\n[[sources]]\nname = \"lines\"\nkind = \"queue\"\nbatches = []\n[[streams]]\nname = \"out\"\nfrom = \"lines\"\nsteps = [{{ op = \"flat_map\", udf = \"wc#tokenize\" }}, {{ op = \"map\", udf = \"wc#with_one\" }}, {{ op = \"reduce_by_key\", udf = \"wc#sum\" }}]\n[[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        common::wordcount().display()
    );
    let config =
        sluice::manifest::parse(&manifest, std::path::Path::new("bench.toml"), &runtime).unwrap();
    let job = Job::build(config, &runtime).unwrap();
    let jobs = Jobs::default();
    let metrics = jobs.add(JobMetrics::new(&job));
    let input = lines();
    let run = |counted: bool| {
        let started = Instant::now();
        for (index, batch) in input.iter().enumerate() {
            let stats = job
                .process(index as i64 * 1000, vec![batch.clone()])
                .unwrap();
            if counted {
                metrics.record(&report(index as u64 + 1, stats));
                if index % 10 == 0 {
                    std::hint::black_box(jobs.encode(None));
                }
            }
        }
        started.elapsed()
    };
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        off.push(run(false));
        on.push(run(true));
    }
    let median = |runs: &mut Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let spread = |runs: &[Duration]| runs[runs.len() - 1].as_secs_f64() / runs[0].as_secs_f64();
    let (on_median, off_median) = (median(&mut on), median(&mut off));
    let rate = |elapsed: Duration| WORDS as f64 / elapsed.as_secs_f64();
    let ratio = on_median.as_secs_f64() / off_median.as_secs_f64();
    println!(
        "bench metrics overhead, word count of {WORDS} words in {BATCHES} batches, {RUNS} runs \
         each, alternating: counted median {:.0} words/s (spread {:.3}), not counted median \
         {:.0} words/s (spread {:.3}), ratio of medians {ratio:.4} ({:.2} ms a batch; target \
         under 1.02: {})",
        rate(on_median),
        spread(&on),
        rate(off_median),
        spread(&off),
        off_median.as_secs_f64() * 1e3 / BATCHES as f64,
        if ratio < 1.02 { "met" } else { "MISSED" }
    );
    // What the counted runs add, apart and per batch, which a loaded machine's noise
    // (the runs' spread) does not blur: a report counted, and a tenth of a scrape.
    let reports = 100_000u64;
    let started = Instant::now();
    for number in 0..reports {
        let stats = BatchStats {
            records_in: 5000,
            records_out: 8,
            processing: Duration::from_micros(650),
        };
        metrics.record(&report(number + 1, stats));
    }
    let per_report = started.elapsed() / reports as u32;
    let scrapes = 10_000u32;
    let started = Instant::now();
    for _ in 0..scrapes {
        std::hint::black_box(jobs.encode(None));
    }
    let per_scrape = started.elapsed() / scrapes;
    let added = per_report + per_scrape / 10;
    println!(
        "bench metrics per batch: a report counted in {} ns, a scrape of the job in {:.1} us: \
         {:.3}% of the median uncounted batch ({:.2} ms)",
        per_report.as_nanos(),
        per_scrape.as_secs_f64() * 1e6,
        added.as_secs_f64() / (off_median.as_secs_f64() / BATCHES as f64) * 100.0,
        off_median.as_secs_f64() * 1e3 / BATCHES as f64
    );
    // The step meters count in both runs (the engine's own counting): their cost apart.
    let meter = StepMeter::default();
    let calls = 10_000_000u32;
    let started = Instant::now();
    for _ in 0..calls {
        let call = Instant::now();
        meter.call(std::hint::black_box(call.elapsed()), false);
    }
    let per_call = started.elapsed() / calls;
    println!(
        "bench metrics step meter: {} ns per UDF call (clock read and counted), for calls of \
         up to 4096 records",
        per_call.as_nanos()
    );
}

/// `WORDS` words in `BATCHES` batches of 10-word lines.
fn lines() -> Vec<Batch> {
    const VOCABULARY: [&str; 8] = [
        "stream", "river", "gate", "batch", "record", "flow", "sluice", "window",
    ];
    let per_batch = WORDS / 10 / BATCHES;
    (0..BATCHES)
        .map(|batch_index| {
            let mut batch = Batch::with_capacity(per_batch, per_batch * 64);
            for line_index in 0..per_batch {
                let line: Vec<&str> = (0..10)
                    .map(|word| VOCABULARY[(batch_index + line_index * 3 + word * 7) % 8])
                    .collect();
                batch.push(line.join(" ").as_str()).unwrap();
            }
            batch
        })
        .collect()
}

fn report(number: u64, stats: BatchStats) -> BatchReport {
    BatchReport {
        job: "bench".into(),
        tenant: "default".into(),
        number,
        time_ms: number as i64 * 1000,
        scheduling_delay: Duration::from_micros(number % 5000),
        queued: 0,
        stats,
        replayed: false,
        skipped: 0,
        checkpoint: None,
        source_records: vec![stats.records_in as u64],
        wal_bytes: Some(1 << 20),
        buffered_records: 0,
        late_rows: 0,
        event_time: None,
    }
}

fn scrape() {
    let jobs = Jobs::default();
    for index in 0..JOBS {
        let steps = (1..=3).map(|step| {
            let meter = Arc::new(StepMeter::default());
            meter.step(1000, Duration::from_micros(300));
            meter.call(Duration::from_micros(200), false);
            meter.memory(2 << 20);
            (format!("counts/{step}"), meter)
        });
        let metrics = jobs.add(
            JobMetrics::named(
                &format!("tenant-{}", index % 10),
                &format!("job-{index:04}"),
                Duration::from_secs(1),
                ["lines".to_owned()],
                steps,
            )
            .with_stateful(["counts/3".to_owned()]),
        );
        for number in 1..=1000u64 {
            metrics.record(&report(
                number,
                BatchStats {
                    records_in: 1000,
                    records_out: 10,
                    processing: Duration::from_micros(100 + number * 37 % 5000),
                },
            ));
        }
    }
    let mut best = Duration::MAX;
    let mut bytes = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let text = jobs.encode(None);
        best = best.min(started.elapsed());
        bytes = text.len();
    }
    let within = bytes < 5_000_000 && best < Duration::from_millis(100);
    println!(
        "bench metrics scrape of {JOBS} jobs (3 steps, one of them stateful, 1 source, 1000 \
         batches each): \
         {:.2} MB in {:.1} ms (targets: under 5 MB and 100 ms: {})",
        bytes as f64 / 1e6,
        best.as_secs_f64() * 1e3,
        if within { "met" } else { "MISSED" }
    );
    assert!(within, "the scrape is over its targets");
}
