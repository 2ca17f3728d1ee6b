//! Python UDFs (issue 18) against Rust ones, in one run: word count records/s through the
//! same engine (`Job::process`), the Python component's size, its first compile and its
//! cached load, and the time and memory one instance of each takes.
//!
//! Run with `cargo bench -p sluice --bench python` after `scripts/setup`; it builds
//! examples/python-wordcount with `target/release/sluice udf build` if needed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice::job::Job;
use sluice::runtime::{Limits, LoadedComponent, Runtime, RuntimeConfig};
use sluice_abi::Batch;

const WORDS: usize = 400_000;
const WORDS_PER_LINE: usize = 10;
const BATCHES: usize = 4;
const RUNS: usize = 3;
const INSTANCES: usize = 16;

const VOCABULARY: &[&str] = &[
    "stream", "river", "gate", "the", "batch", "record", "flow", "a", "sluice", "operator",
    "window", "and", "join", "state",
];

/// The Python word count component (examples/python-wordcount), built if missing.
fn python_wordcount() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(root.join("target/release/sluice"))
        .args(["udf", "build"])
        .arg(root.join("examples/python-wordcount"))
        .output()
        .expect("target/release/sluice runs: run scripts/setup first");
    assert!(
        output.status.success(),
        "building examples/python-wordcount failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn manifest(component: &Path, steps: &str) -> String {
    format!(
        "name = \"bench\"\nbatch_interval = \"1s\"\n[udfs]\nwc = \"{}\"\n[[sources]]\nname = \"lines\"\nkind = \"queue\"\nbatches = []\n[[streams]]\nname = \"out\"\nfrom = \"lines\"\nsteps = [{steps}]\n[[sinks]]\nfrom = \"out\"\nkind = \"collect\"\n",
        component.display()
    )
}

/// Lines of `WORDS_PER_LINE` words, `WORDS` words in all, in `BATCHES` batches.
fn word_lines() -> Vec<Batch> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let per_batch = WORDS / WORDS_PER_LINE / BATCHES;
    let mut line = String::new();
    (0..BATCHES)
        .map(|_| {
            let mut batch = Batch::new();
            for _ in 0..per_batch {
                line.clear();
                for _ in 0..WORDS_PER_LINE {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    line.push_str(VOCABULARY[(seed % VOCABULARY.len() as u64) as usize]);
                    line.push(' ');
                }
                batch.push(line.as_str()).unwrap();
            }
            batch
        })
        .collect()
}

fn time(job: &Job, input: &[Batch]) -> Duration {
    let started = Instant::now();
    for (i, batch) in input.iter().enumerate() {
        job.process(i as i64 * 1000, vec![batch.clone()]).unwrap();
    }
    started.elapsed()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// The time one instance takes to make, and the guest memory and resident memory each
/// holds, over `INSTANCES` instances kept alive at once.
fn instances(runtime: &Runtime, component: &LoadedComponent, path: &Path) -> (Duration, u64, u64) {
    let config = sluice::manifest::parse(
        &manifest(path, "{ op = \"count\" }"),
        Path::new("bench.toml"),
        runtime,
    )
    .unwrap();
    let placement = runtime
        .tenancy()
        .place(
            &config,
            runtime.scheduler(),
            tokio_util::sync::CancellationToken::new(),
        )
        .unwrap();
    let guest_before = placement.account.memory();
    let rss_before = common::rss();
    let started = Instant::now();
    let made: Vec<_> = (0..INSTANCES)
        .map(|_| {
            component
                .instantiate("bench", Limits::default(), &placement)
                .unwrap()
        })
        .collect();
    let each = started.elapsed() / INSTANCES as u32;
    let guest = (placement.account.memory() - guest_before) / INSTANCES as u64;
    let resident = common::rss().saturating_sub(rss_before) / INSTANCES as u64;
    drop(made);
    (each, guest, resident)
}

fn main() {
    let python = python_wordcount();
    let rust = common::wordcount();
    let size = |path: &Path| std::fs::metadata(path).unwrap().len();
    println!(
        "bench python component size: {:.1} MiB (the Rust word count: {:.2} MiB)",
        mib(size(&python)),
        mib(size(&rust))
    );

    let cache = tempfile::tempdir().unwrap();
    let fresh = || {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.path().to_owned()),
            ..RuntimeConfig::default()
        })
        .unwrap()
    };
    let first = fresh();
    let started = Instant::now();
    first.load(&python).unwrap();
    let compile = started.elapsed();
    drop(first);
    let runtime = fresh();
    let started = Instant::now();
    let python_component = runtime.load(&python).unwrap();
    let cached = started.elapsed();
    println!(
        "bench python load: first compile {:.2} s, cached load {:.0} ms",
        compile.as_secs_f64(),
        cached.as_secs_f64() * 1000.0
    );
    let rust_component = runtime.load(&rust).unwrap();
    for (name, component, path) in [
        ("python", &python_component, &python),
        ("rust", &rust_component, &rust),
    ] {
        let (each, guest, resident) = instances(&runtime, component, path);
        println!(
            "bench {name} instance: {:.2} ms to instantiate, {:.1} MiB guest memory, {:.1} MiB resident (over {INSTANCES} instances)",
            each.as_secs_f64() * 1000.0,
            mib(guest),
            mib(resident)
        );
    }

    let input = word_lines();
    let job = |path: &Path, steps: &str| {
        let config =
            sluice::manifest::parse(&manifest(path, steps), Path::new("bench.toml"), &runtime)
                .unwrap();
        Job::build(config, &runtime).unwrap()
    };
    let python_job = job(
        &python,
        r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "map", udf = "wc#with_one" }, { op = "reduce_by_key", udf = "wc#add" }"#,
    );
    let rust_job = job(
        &rust,
        r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "map", udf = "wc#with_one" }, { op = "reduce_by_key", udf = "wc#sum" }"#,
    );
    let (python_time, rust_time) = (0..RUNS)
        .map(|_| (time(&python_job, &input), time(&rust_job, &input)))
        .fold((Duration::MAX, Duration::MAX), |(p, r), (run_p, run_r)| {
            (p.min(run_p), r.min(run_r))
        });
    let rate = |elapsed: Duration| WORDS as f64 / elapsed.as_secs_f64();
    println!(
        "bench word count flat_map+map+reduce_by_key, {WORDS} words (rec = word): python {:.0} rec/s, rust {:.0} rec/s, rust/python {:.1}x",
        rate(python_time),
        rate(rust_time),
        python_time.as_secs_f64() / rust_time.as_secs_f64()
    );
}
