//! Throughput of WASM UDFs against the same functions compiled natively, through the
//! same engine (`Job::process`), in one run. Prints one line per pipeline:
//! `bench NAME: wasm X rec/s, native Y rec/s, ratio R` (R = wasm time / native time).
//!
//! Run with `cargo bench -p sluice --bench throughput` after `scripts/setup`; words after
//! `--` keep only the pipelines whose names contain one of them (`-- tokenize`).

mod common;

use std::time::{Duration, Instant};

use sluice::job::Job;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::Batch;

const RECORDS: usize = 10_000_000;
const WORDS_PER_LINE: usize = 10;
const BATCHES: usize = 10;
const RUNS: usize = 5;

const WORDS: &[&str] = &[
    "stream", "river", "gate", "the", "batch", "record", "flow", "a", "sluice", "operator",
    "window", "and", "join", "state",
];

fn manifest(steps: &str) -> String {
    format!(
        "name = \"bench\"\nbatch_interval = \"1s\"\n[udfs]\nwc = \"{}\"\n[[sources]]\nname = \"lines\"\nkind = \"queue\"\nbatches = []\n[[streams]]\nname = \"out\"\nfrom = \"lines\"\nsteps = [{steps}, {{ op = \"count\" }}]\n[[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        common::wordcount().display()
    )
}

/// `count` lines split into `BATCHES` batches, each line built by `line` from a cheap PRNG.
fn generated(
    count: usize,
    mut line: impl FnMut(&mut dyn FnMut() -> &'static str, &mut String),
) -> Vec<Batch> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut word = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        WORDS[(seed % WORDS.len() as u64) as usize]
    };
    let per_batch = count / BATCHES;
    let mut text = String::with_capacity(64);
    (0..BATCHES)
        .map(|_| {
            let mut batch = Batch::with_capacity(per_batch, per_batch * 56);
            for _ in 0..per_batch {
                text.clear();
                line(&mut word, &mut text);
                batch.push(text.as_str()).unwrap();
            }
            batch
        })
        .collect()
}

/// Lines of exactly 50 bytes of words.
fn fifty_byte_lines(count: usize) -> Vec<Batch> {
    generated(count, |word, line| {
        while line.len() < 50 {
            line.push_str(word());
            line.push(' ');
        }
        line.truncate(50);
    })
}

/// Lines of exactly `WORDS_PER_LINE` words.
fn word_lines(words: usize) -> Vec<Batch> {
    generated(words / WORDS_PER_LINE, |word, line| {
        for _ in 0..WORDS_PER_LINE {
            line.push_str(word());
            line.push(' ');
        }
    })
}

/// All batches through `job` once.
fn time(job: &Job, input: &[Batch]) -> Duration {
    let started = Instant::now();
    for (i, batch) in input.iter().enumerate() {
        job.process(i as i64 * 1000, vec![batch.clone()]).unwrap();
    }
    started.elapsed()
}

/// The best of `RUNS` timings of each job, alternating between them so that a busy
/// moment of a shared machine does not land on one side only.
fn best_times(wasm: &Job, native: &Job, input: &[Batch]) -> (Duration, Duration) {
    (0..RUNS)
        .map(|_| (time(wasm, input), time(native, input)))
        .fold((Duration::MAX, Duration::MAX), |(w, n), (run_w, run_n)| {
            (w.min(run_w), n.min(run_n))
        })
}

fn main() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let lines = fifty_byte_lines(RECORDS);
    let words = word_lines(RECORDS);
    let pipelines = [
        (
            "flat_map(tokenize)+filter+map, 10M 50-byte lines",
            r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "filter", udf = "wc#is_long_word" }, { op = "map", udf = "wc#with_one" }"#,
            &lines,
        ),
        (
            "map(uppercase), 10M 50-byte records",
            r#"{ op = "map", udf = "wc#uppercase" }"#,
            &lines,
        ),
        (
            "word count flat_map(tokenize)+map+reduce_by_key, 10M words (rec = word)",
            r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "map", udf = "wc#with_one" }, { op = "reduce_by_key", udf = "wc#sum" }"#,
            &words,
        ),
    ];
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let selected = pipelines.into_iter().filter(|(name, _, _)| {
        wanted.is_empty() || wanted.iter().any(|word| name.contains(word.as_str()))
    });
    for (name, steps, input) in selected {
        let config = sluice::manifest::parse(
            &manifest(steps),
            std::path::Path::new("bench.toml"),
            &runtime,
        )
        .unwrap();
        let wasm = Job::build(config.clone(), &runtime).unwrap();
        let native = Job::build_with(config, &runtime, Some(wordcount::functions())).unwrap();
        let (wasm_time, native_time) = best_times(&wasm, &native, input);
        let rate = |elapsed: Duration| RECORDS as f64 / elapsed.as_secs_f64();
        println!(
            "bench {name}: wasm {:.0} rec/s, native {:.0} rec/s, ratio {:.2}",
            rate(wasm_time),
            rate(native_time),
            wasm_time.as_secs_f64() / native_time.as_secs_f64()
        );
    }
}
