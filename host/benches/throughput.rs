//! Throughput of WASM UDFs against the same functions compiled natively, through the
//! same engine (`Job::process`), in one run: each pipeline runs `RUNS` (5) times as WASM
//! and as native code, alternating, the order flipping every round, so that a busy moment
//! of a shared machine lands on both. Prints one line per pipeline:
//!
//! `bench NAME: wasm A/B/C rec/s, native D/E/F rec/s, ratio R (min S, max T)`
//!
//! where A/B/C and D/E/F are the min/median/max rates of the 5 runs (records in per second
//! of all batches through `Job::process`), R = the median WASM time / the median native time
//! (the issue's goal is R <= 1.3), and S and T the lowest and highest such ratio of the two
//! runs of one round.
//!
//! Run with `cargo bench -p sluice --bench throughput` after `scripts/setup`; words after
//! `--` keep only the pipelines whose names contain one of them (`-- tokenize`).
//! `SLUICE_BENCH_COMPONENT=<path>` runs another build of the word count component (an
//! unstripped one, for a profile; an older one, for an A/B of a guest change).

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
        component().display()
    )
}

/// The word count component: `$SLUICE_BENCH_COMPONENT`, else the one `scripts/setup` built.
fn component() -> std::path::PathBuf {
    std::env::var_os("SLUICE_BENCH_COMPONENT").map_or_else(common::wordcount, Into::into)
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

/// `RUNS` timings of each job, alternating between them, the order flipping every round.
fn alternating_times(wasm: &Job, native: &Job, input: &[Batch]) -> Vec<(Duration, Duration)> {
    (0..RUNS)
        .map(|round| {
            if round % 2 == 0 {
                let wasm = time(wasm, input);
                (wasm, time(native, input))
            } else {
                let native = time(native, input);
                (time(wasm, input), native)
            }
        })
        .collect()
}

/// The min/median/max of `values`, sorted in place.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    )
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
        let times = alternating_times(&wasm, &native, input);
        let rates = |pick: fn(&(Duration, Duration)) -> Duration| {
            let mut rates: Vec<f64> = times
                .iter()
                .map(|run| RECORDS as f64 / pick(run).as_secs_f64())
                .collect();
            spread(&mut rates)
        };
        let (wasm_min, wasm_median, wasm_max) = rates(|(wasm, _)| *wasm);
        let (native_min, native_median, native_max) = rates(|(_, native)| *native);
        let mut ratios: Vec<f64> = times
            .iter()
            .map(|(wasm, native)| wasm.as_secs_f64() / native.as_secs_f64())
            .collect();
        let (ratio_min, _, ratio_max) = spread(&mut ratios);
        println!(
            "bench {name}: wasm {wasm_min:.0}/{wasm_median:.0}/{wasm_max:.0} rec/s, \
             native {native_min:.0}/{native_median:.0}/{native_max:.0} rec/s, \
             ratio {:.2} (min {ratio_min:.2}, max {ratio_max:.2})",
            native_median / wasm_median
        );
    }
}
