//! The word count end to end (issue 14): lines generated into `/dev/shm`, read by the
//! `file` source, counted by Sluice with WASM UDFs (`flat_map` + `map` + `reduce_by_key`)
//! and with the built-in `count_by_value`, written by the `files` sink, against a native
//! Rust word count of the same text in memory (the same tokenizer, 2 threads, tables
//! partitioned by hash so that each stays in L2). Every run's output is checked against
//! the native counts. Runs alternate, their order flipping every round; prints
//! `bench NAME: min/median/max words/s` per formulation and vocabulary. `udf_0.1.0` is the
//! UDF word count with the component built against `sluice:udf@0.1.0`
//! (tests/fixtures), which reduces on the host: what combining in the guest gains.
//!
//! Sluice's rate is the steady one: words of batches 4 to the last over the time between
//! the end of batch 3 and the end of the last. The default run is short; the issue's
//! full size is `SLUICE_BENCH_LINES=200000 SLUICE_BENCH_BATCHES=20 SLUICE_BENCH_ROUNDS=5`
//! (lines per batch, batches, rounds). `SLUICE_BENCH_DIR` moves the data from `/dev/shm`,
//! `SLUICE_BENCH_DISTINCT=160000` keeps one vocabulary, and words after `--` keep only the
//! formulations they name (`-- udf native`). `SLUICE_BENCH_BASELINE=path/to/wordcount.wasm`
//! adds `udf_baseline`, the UDF word count with that build of the component.

mod common;

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::{FxBuildHasher, FxHashMap};

const WORDS_PER_LINE: usize = 10;
/// Batches before the steady rate is measured.
const WARM_BATCHES: usize = 3;
/// Tables per thread in the native count: 64 small ones stay in L2 where one big one
/// does not (issue 14: 13.9 M against 31-36 M words/s at 160k words).
const NATIVE_TABLES: usize = 64;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name}={value}: not a count"))
        })
        .unwrap_or(default)
}

struct Sizes {
    lines_per_batch: usize,
    batches: usize,
    rounds: usize,
}

impl Sizes {
    fn words(&self) -> usize {
        self.lines_per_batch * self.batches * WORDS_PER_LINE
    }
}

/// Word `n` of a vocabulary: `n` in base-25 letters (`a` to `y`), padded with `z` to 3
/// to 12 letters, so that words are distinct and their lengths vary.
fn word(mut n: usize) -> String {
    let length = 3 + (n * 7919) % 10;
    let mut word = String::new();
    loop {
        word.push((b'a' + (n % 25) as u8) as char);
        n /= 25;
        if n == 0 {
            break;
        }
    }
    while word.len() < length {
        word.push('z');
    }
    word
}

/// The text of `sizes` words drawn uniformly from `distinct` words, written to `path`.
fn generate(path: &Path, sizes: &Sizes, distinct: usize) -> String {
    let vocabulary: Vec<String> = (0..distinct).map(word).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ distinct as u64;
    let mut text = String::with_capacity(sizes.words() * 9);
    for _ in 0..sizes.lines_per_batch * sizes.batches {
        for index in 0..WORDS_PER_LINE {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if index > 0 {
                text.push(' ');
            }
            text.push_str(&vocabulary[(seed % distinct as u64) as usize]);
        }
        text.push('\n');
    }
    std::fs::write(path, &text).unwrap();
    text
}

/// The native word count: each of 2 threads scatters its half of the lines' words by
/// hash into `NATIVE_TABLES` tables, then the threads' tables are merged per hash range.
fn native_count(text: &str) -> FxHashMap<Cow<'_, str>, u64> {
    let middle = text[..text.len() / 2].rfind('\n').map_or(0, |at| at + 1);
    let halves = [&text[..middle], &text[middle..]];
    let tables: Vec<Vec<FxHashMap<Cow<'_, str>, u64>>> = std::thread::scope(|scope| {
        let threads: Vec<_> = halves
            .iter()
            .map(|half| {
                scope.spawn(move || {
                    let mut tables: Vec<FxHashMap<Cow<'_, str>, u64>> =
                        (0..NATIVE_TABLES).map(|_| FxHashMap::default()).collect();
                    for line in half.lines() {
                        for word in wordcount::tokenize(line) {
                            let table = FxBuildHasher.hash_one(&*word) as usize % NATIVE_TABLES;
                            *tables[table].entry(word).or_insert(0) += 1;
                        }
                    }
                    tables
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut tables = tables.into_iter();
    let mut merged = tables.next().unwrap_or_default();
    for other in tables {
        for (table, counts) in merged.iter_mut().zip(other) {
            for (word, count) in counts {
                *table.entry(word).or_insert(0) += count;
            }
        }
    }
    merged.into_iter().flatten().collect()
}

/// Runs the manifest `steps` over the file at `input`; returns the steady rate in words
/// per second and the counts the files sink wrote.
fn sluice_count(
    dir: &Path,
    input: &Path,
    sizes: &Sizes,
    (component, steps): (&Path, &str),
) -> (f64, HashMap<String, u64>) {
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let manifest = dir.join("job.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"wordcount-bench\"\nbatch_interval = \"10ms\"\n[udfs]\nwc = \"{}\"\n\
             [[sources]]\nname = \"lines\"\nkind = \"file\"\npath = \"{}\"\nlines_per_batch = {}\n\
             [[streams]]\nname = \"counts\"\nfrom = \"lines\"\nsteps = [{steps}]\n\
             [[sinks]]\nfrom = \"counts\"\nkind = \"files\"\nprefix = \"{}\"\nformat = \"json_lines\"\n",
            component.display(),
            input.display(),
            sizes.lines_per_batch,
            out.join("counts").display()
        ),
    )
    .unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let ends = tokio.block_on(async {
        let host = sluice::host::Host::new(sluice::runtime::RuntimeConfig::default()).unwrap();
        let job = Arc::new(host.load(&manifest).unwrap());
        let receivers = sluice::receivers::Receivers::start(&job.config().sources).unwrap();
        let options = sluice::batcher::RunOptions {
            max_batches: None,
            stop: Default::default(),
            phase: Default::default(),
        };
        let mut ends = Vec::new();
        sluice::batcher::run(job, receivers, None, options, |report| {
            if report.stats.records_in > 0 {
                ends.push(Instant::now());
            }
        })
        .await
        .unwrap();
        ends
    });
    assert_eq!(
        ends.len(),
        sizes.batches,
        "one batch per {} lines",
        sizes.lines_per_batch
    );
    let steady = ends[sizes.batches - 1] - ends[WARM_BATCHES - 1];
    let words = (sizes.batches - WARM_BATCHES) * sizes.lines_per_batch * WORDS_PER_LINE;
    let mut counts = HashMap::new();
    for file in std::fs::read_dir(&out).unwrap() {
        for line in std::fs::read_to_string(file.unwrap().path())
            .unwrap()
            .lines()
        {
            let (word, count): (String, u64) = serde_json::from_str(line).unwrap();
            *counts.entry(word).or_insert(0) += count;
        }
    }
    (words as f64 / steady.as_secs_f64(), counts)
}

fn summary(rates: &mut [f64]) -> String {
    rates.sort_by(f64::total_cmp);
    format!(
        "{:.0}/{:.0}/{:.0} words/s",
        rates[0],
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    )
}

fn main() {
    let sizes = Sizes {
        lines_per_batch: setting("SLUICE_BENCH_LINES", 20_000),
        batches: setting("SLUICE_BENCH_BATCHES", 8),
        rounds: setting("SLUICE_BENCH_ROUNDS", 3),
    };
    assert!(
        sizes.batches > WARM_BATCHES,
        "SLUICE_BENCH_BATCHES must be over {WARM_BATCHES}"
    );
    let root = PathBuf::from(std::env::var("SLUICE_BENCH_DIR").unwrap_or("/dev/shm".into()))
        .join(format!("sluice-bench-wordcount-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let udf_steps = r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "map", udf = "wc#with_one" }, { op = "reduce_by_key", udf = "wc#sum" }"#;
    let wordcount = common::wordcount();
    // The same word count built against sluice:udf@0.1.0, which cannot combine in the
    // guest: what combining gains.
    let uncombined = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/udf-0.1.0/wordcount.wasm");
    // Another build of the word count component (say, from before a change to the guest
    // SDK), run as `udf_baseline` in the same alternation.
    let baseline = std::env::var_os("SLUICE_BENCH_BASELINE").map(PathBuf::from);
    let mut formulations: Vec<(&str, (&Path, &str))> = vec![
        ("udf", (&wordcount, udf_steps)),
        ("udf_0.1.0", (&uncombined, udf_steps)),
        (
            "count_by_value",
            (
                &wordcount,
                r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "count_by_value" }"#,
            ),
        ),
    ];
    if let Some(baseline) = &baseline {
        formulations.push(("udf_baseline", (baseline, udf_steps)));
    }
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let vocabularies: Vec<usize> = std::env::var("SLUICE_BENCH_DISTINCT")
        .unwrap_or("10000,160000".into())
        .split(',')
        .map(|count| {
            count
                .trim()
                .parse()
                .expect("SLUICE_BENCH_DISTINCT: counts, comma-separated")
        })
        .collect();
    for distinct in vocabularies {
        let input = root.join(format!("words-{distinct}.txt"));
        let text = generate(&input, &sizes, distinct);
        let truth: HashMap<String, u64> = native_count(&text)
            .into_iter()
            .map(|(word, count)| (word.into_owned(), count))
            .collect();
        let mut rates: Vec<(String, Vec<f64>)> = formulations
            .iter()
            .map(|(name, _)| name.to_string())
            .chain(["native".to_string()])
            .map(|name| (format!("{name} {}k words", distinct / 1000), Vec::new()))
            .collect();
        for round in 0..sizes.rounds {
            let mut order: Vec<usize> = (0..rates.len())
                .filter(|&which| {
                    let name = formulations.get(which).map_or("native", |(name, _)| name);
                    wanted.is_empty() || wanted.iter().any(|word| word == name)
                })
                .collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for which in order {
                let rate = match formulations.get(which) {
                    Some((_, job)) => {
                        let (rate, counts) = sluice_count(&root, &input, &sizes, *job);
                        assert!(counts == truth, "{} counted wrong", rates[which].0);
                        rate
                    }
                    None => {
                        let started = Instant::now();
                        let counts = native_count(&text);
                        let rate = sizes.words() as f64 / started.elapsed().as_secs_f64();
                        assert_eq!(counts.len(), truth.len());
                        rate
                    }
                };
                rates[which].1.push(rate);
            }
        }
        for (name, rates) in rates.iter_mut().filter(|(_, rates)| !rates.is_empty()) {
            println!("bench {name}: {}", summary(rates));
        }
        std::fs::remove_file(&input).unwrap();
    }
    std::fs::remove_dir_all(&root).unwrap();
}
