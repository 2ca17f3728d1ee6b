//! Throughput of WASM UDFs against the same functions compiled natively, through the
//! same engine (`Job::process`), in one run. Prints one line per pipeline:
//! `bench NAME: wasm X rec/s, native Y rec/s, ratio R` (R = wasm time / native time).
//!
//! Run with `cargo bench -p sluice --bench throughput` after `scripts/setup`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice::job::Job;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice_abi::Batch;

/// The allocator of the `sluice` binary, so the engine runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LINES: usize = 10_000_000;
const BATCHES: usize = 10;
const RUNS: usize = 3;

const WORDS: &[&str] = &[
    "stream", "river", "gate", "the", "batch", "record", "flow", "a", "sluice", "operator",
    "window", "and", "join", "state",
];

fn component() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../udfs/target/wasm32-wasip2/release/wordcount.wasm");
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup first",
        path.display()
    );
    path
}

fn manifest(steps: &str) -> String {
    format!(
        "name = \"bench\"\nbatch_interval = \"1s\"\n[udfs]\nwc = \"{}\"\n[[sources]]\nname = \"lines\"\nkind = \"queue\"\nbatches = []\n[[streams]]\nname = \"out\"\nfrom = \"lines\"\nsteps = [{steps}, {{ op = \"count\" }}]\n[[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        component().display()
    )
}

/// Lines of about 50 bytes: words from a small vocabulary, chosen by a cheap PRNG.
fn generated_lines(count: usize) -> Vec<Batch> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let per_batch = count / BATCHES;
    (0..BATCHES)
        .map(|_| {
            let mut batch = Batch::with_capacity(per_batch, per_batch * 56);
            let mut line = String::with_capacity(64);
            for _ in 0..per_batch {
                line.clear();
                while line.len() < 48 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    line.push_str(WORDS[(seed % WORDS.len() as u64) as usize]);
                    line.push(' ');
                }
                line.truncate(50);
                batch.push(line.as_str()).unwrap();
            }
            batch
        })
        .collect()
}

/// The best of `RUNS` timings of all batches through `job`.
fn time(job: &Job, input: &[Batch]) -> Duration {
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            for (i, batch) in input.iter().enumerate() {
                job.process(i as i64 * 1000, vec![batch.clone()]).unwrap();
            }
            started.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let input = generated_lines(LINES);
    let pipelines = [
        (
            "flat_map(tokenize)+filter+map",
            r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "filter", udf = "wc#is_long_word" }, { op = "map", udf = "wc#with_one" }"#,
        ),
        (
            "map(uppercase) 50-byte records",
            r#"{ op = "map", udf = "wc#uppercase" }"#,
        ),
    ];
    for (name, steps) in pipelines {
        let config = sluice::manifest::parse(
            &manifest(steps),
            std::path::Path::new("bench.toml"),
            &runtime,
        )
        .unwrap();
        let wasm = Job::build(config.clone(), &runtime).unwrap();
        let native = Job::build_with(config, &runtime, Some(wordcount::functions())).unwrap();
        let (wasm_time, native_time) = (time(&wasm, &input), time(&native, &input));
        let rate = |elapsed: Duration| LINES as f64 / elapsed.as_secs_f64();
        println!(
            "bench {name}: wasm {:.0} rec/s, native {:.0} rec/s, ratio {:.2}",
            rate(wasm_time),
            rate(native_time),
            wasm_time.as_secs_f64() / native_time.as_secs_f64()
        );
    }
}
