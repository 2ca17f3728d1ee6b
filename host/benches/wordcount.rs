//! The word count end to end (issue 14), every formulation on the same text, in one run.
//!
//! Lines of 10 words drawn uniformly from 10k and then 160k distinct words are generated
//! into `/dev/shm` (files under `/tmp` get evicted from the page cache on these machines).
//! Formulations, alternating, their order flipping every round:
//!
//! - `udf`: Sluice, `flat_map(tokenize)` + `map(with_one)` + `reduce_by_key(sum)` with the
//!   word count's WASM UDFs (udfs/wordcount);
//! - `udf_0.1.0`: the same with the component built against `sluice:udf@0.1.0`
//!   (tests/fixtures), which cannot combine in the guest: what combining gains;
//! - `count_by_value`: Sluice, `flat_map(tokenize)` + the built-in `count_by_value`;
//! - `udf_baseline` (with `SLUICE_BENCH_BASELINE=path/to/wordcount.wasm`): `udf` with
//!   another build of the component, say from before a change to the guest SDK;
//! - `native`: a plain Rust word count of the text in memory (wordcount/native.rs: the same
//!   tokenizer, 2 threads, tables partitioned by hash to stay in L2, short keys inline);
//! - `spark` (with `SLUICE_BENCH_SPARK=1`, never in CI): Spark 3.5.9's Scala DStream word
//!   count (host/benches/spark/wordcount.scala) run by `scripts/spark wordcount`, which
//!   installs Spark under ~/.cache/sluice/spark the first time; local[2], 100 ms interval,
//!   one batch per file of `SLUICE_BENCH_LINES` lines of the same text.
//!
//! Each Sluice run is a child process, `sluice run job.toml --log json` (the binary cargo
//! builds with this bench): a `file` source with `lines_per_batch = SLUICE_BENCH_LINES`
//! and a 10 ms interval, a `files` sink. Every run's output, Sluice's and Spark's, and the
//! native counts are checked against the true counts, kept as the text is generated.
//!
//! Figures, one line per formulation and vocabulary:
//! `bench NAME: min/median/max words/s, peak RSS min/median/max MiB`.
//! - words/s: Sluice's and Spark's is the steady rate, the words of batches 4 to the last
//!   over the time from the end of batch 3 to the end of the last (Sluice: when its
//!   `batch done` log line arrives; Spark: the batch's end as its StreamingListener
//!   reports it), so start-up, compiling and warming up are left out. The native rate is
//!   all the words over the whole count, merging the threads' tables included.
//! - peak RSS: the child process's peak resident memory (wait4's `ru_maxrss`; for Spark
//!   the largest of the launcher scripts and the JVM). The native count runs in the bench
//!   and has none.
//!
//! Then `ratios NAME: A/B X (min Y, max Z)` for the issue's goals: the ratio of the medians,
//! and the lowest and highest ratio of two runs of the same round.
//!
//! Run: `cargo bench -p sluice --bench wordcount` after `scripts/setup`. Settings:
//! `SLUICE_BENCH_LINES` (lines per batch, default 20000), `SLUICE_BENCH_BATCHES` (default
//! 8, over 3), `SLUICE_BENCH_ROUNDS` (default 3), `SLUICE_BENCH_DISTINCT` (vocabularies,
//! default `10000,160000`), `SLUICE_BENCH_DIR` (instead of `/dev/shm`),
//! `SLUICE_BENCH_BASELINE`, `SLUICE_BENCH_SPARK=1`; words after `--` keep only the
//! formulations they name (`-- udf native`). The issue's full size: `SLUICE_BENCH_LINES=200000
//! SLUICE_BENCH_BATCHES=20 SLUICE_BENCH_ROUNDS=5` (40 M words).

mod common;
#[path = "wordcount/native.rs"]
mod native;
#[path = "wordcount/spark.rs"]
mod spark;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::process::{self, Watch};

const WORDS_PER_LINE: usize = 10;
/// Batches before the steady rate is measured.
const WARM_BATCHES: usize = 3;

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

/// One run's figures.
struct Measured {
    /// Words per second.
    rate: f64,
    /// Bytes, for a run in a process of its own.
    peak_rss: Option<u64>,
}

/// The steady rate of a run whose batches ended at `ends` (seconds, from any origin): the
/// words of the batches after the first `WARM_BATCHES` over the time they took.
fn steady_rate(ends: &[f64], sizes: &Sizes) -> f64 {
    assert_eq!(
        ends.len(),
        sizes.batches,
        "one batch per {} lines",
        sizes.lines_per_batch
    );
    let steady = ends[sizes.batches - 1] - ends[WARM_BATCHES - 1];
    let words = (sizes.batches - WARM_BATCHES) * sizes.lines_per_batch * WORDS_PER_LINE;
    words as f64 / steady
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

/// The text of `sizes` words drawn uniformly from `distinct` words, written to `path`,
/// and the true count of each word.
fn generate(path: &Path, sizes: &Sizes, distinct: usize) -> (String, HashMap<String, u64>) {
    let vocabulary: Vec<String> = (0..distinct).map(word).collect();
    for word in &vocabulary {
        // So that the words drawn are the true counts' keys.
        assert!(
            wordcount::tokenize(word).eq([word.as_str()]),
            "{word} is one token"
        );
    }
    let mut drawn = vec![0u64; distinct];
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
            let which = (seed % distinct as u64) as usize;
            drawn[which] += 1;
            text.push_str(&vocabulary[which]);
        }
        text.push('\n');
    }
    std::fs::write(path, &text).unwrap();
    let truth = vocabulary
        .into_iter()
        .zip(drawn)
        .filter(|(_, count)| *count > 0)
        .collect();
    (text, truth)
}

/// Runs the manifest `steps` with `sluice run` over the file at `input`; returns its steady
/// rate and peak memory, and the counts the files sink wrote.
fn sluice_count(
    dir: &Path,
    input: &Path,
    sizes: &Sizes,
    (component, steps): (&Path, &str),
) -> (Measured, HashMap<String, u64>) {
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
    let finished = process::run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", "--log", "json"])
            .arg(&manifest),
        Watch::Stderr,
    );
    let origin = finished
        .lines
        .first()
        .map_or_else(Instant::now, |(at, _)| *at);
    let ends: Vec<f64> = finished
        .lines
        .iter()
        .filter(|(_, line)| is_batch_with_records(line))
        .map(|(at, _)| (*at - origin).as_secs_f64())
        .collect();
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
    let measured = Measured {
        rate: steady_rate(&ends, sizes),
        peak_rss: Some(finished.peak_rss),
    };
    (measured, counts)
}

/// Whether a JSON log line of `sluice run` reports a batch done that read records.
fn is_batch_with_records(line: &str) -> bool {
    let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
        return false;
    };
    let fields = &entry["fields"];
    fields["message"] == "batch done" && fields["records_in"].as_u64().is_some_and(|n| n > 0)
}

/// A run's way of counting.
enum Formulation<'a> {
    /// A Sluice job: its component and steps.
    Sluice(&'a Path, &'a str),
    Native,
    Spark,
}

/// `min/median/max`, each formatted by `format`.
fn spread(values: &mut [f64], format: impl Fn(f64) -> String) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{}/{}/{}",
        format(values[0]),
        format(median(values)),
        format(values[values.len() - 1])
    )
}

/// The median of sorted `values`.
fn median(values: &[f64]) -> f64 {
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

/// The figures of one formulation and vocabulary, one per round.
struct Figures {
    name: String,
    rates: Vec<f64>,
    peak_rss: Vec<f64>,
}

impl Figures {
    fn print(&self) {
        let mut rates = self.rates.clone();
        let mut line = format!(
            "bench {}: {} words/s",
            self.name,
            spread(&mut rates, |rate| format!("{rate:.0}"))
        );
        if !self.peak_rss.is_empty() {
            let mut peaks = self.peak_rss.clone();
            line += &format!(
                ", peak RSS {} MiB",
                spread(&mut peaks, |bytes| format!(
                    "{:.0}",
                    bytes / (1 << 20) as f64
                ))
            );
        }
        println!("{line}");
    }
}

/// `ratios`: how much faster formulation `a` is than `b`, the ratio of their medians and
/// the lowest and highest ratio of their runs in the same round.
fn print_ratio(figures: &[Figures], a: &str, b: &str, vocabulary: &str) {
    let find = |name: &str| {
        figures
            .iter()
            .find(|figures| figures.name == format!("{name} {vocabulary}"))
            .filter(|figures| !figures.rates.is_empty())
    };
    let (Some(a_figures), Some(b_figures)) = (find(a), find(b)) else {
        return;
    };
    let mut per_round: Vec<f64> = a_figures
        .rates
        .iter()
        .zip(&b_figures.rates)
        .map(|(a, b)| a / b)
        .collect();
    per_round.sort_by(f64::total_cmp);
    let median_of = |rates: &[f64]| {
        let mut rates = rates.to_vec();
        rates.sort_by(f64::total_cmp);
        median(&rates)
    };
    println!(
        "ratios {vocabulary}: {a}/{b} {:.2} (min {:.2}, max {:.2})",
        median_of(&a_figures.rates) / median_of(&b_figures.rates),
        per_round[0],
        per_round[per_round.len() - 1]
    );
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
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let with_spark = std::env::var("SLUICE_BENCH_SPARK").is_ok_and(|value| value == "1");
    assert!(
        with_spark || !wanted.iter().any(|name| name == "spark"),
        "the spark formulation runs with SLUICE_BENCH_SPARK=1 only"
    );
    let root = PathBuf::from(std::env::var("SLUICE_BENCH_DIR").unwrap_or("/dev/shm".into()))
        .join(format!("sluice-bench-wordcount-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let udf_steps = r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "map", udf = "wc#with_one" }, { op = "reduce_by_key", udf = "wc#sum" }"#;
    let count_by_value_steps =
        r#"{ op = "flat_map", udf = "wc#tokenize" }, { op = "count_by_value" }"#;
    let wordcount = common::wordcount();
    let uncombined = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/udf-0.1.0/wordcount.wasm");
    let baseline = std::env::var_os("SLUICE_BENCH_BASELINE").map(PathBuf::from);
    let mut formulations: Vec<(&str, Formulation)> = vec![
        ("udf", Formulation::Sluice(&wordcount, udf_steps)),
        ("udf_0.1.0", Formulation::Sluice(&uncombined, udf_steps)),
        (
            "count_by_value",
            Formulation::Sluice(&wordcount, count_by_value_steps),
        ),
    ];
    if let Some(baseline) = &baseline {
        formulations.push(("udf_baseline", Formulation::Sluice(baseline, udf_steps)));
    }
    formulations.push(("native", Formulation::Native));
    if with_spark {
        formulations.push(("spark", Formulation::Spark));
    }
    formulations.retain(|(name, _)| wanted.is_empty() || wanted.iter().any(|word| word == name));
    if with_spark && formulations.iter().any(|(name, _)| *name == "spark") {
        spark::install();
    }
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
        let vocabulary = format!("{}k words", distinct / 1000);
        let input = root.join(format!("words-{distinct}.txt"));
        let (text, truth) = generate(&input, &sizes, distinct);
        let spark_input = root.join(format!("spark-{distinct}"));
        if formulations.iter().any(|(name, _)| *name == "spark") {
            spark::write_batches(&spark_input, &text, &sizes);
        }
        let mut figures: Vec<Figures> = formulations
            .iter()
            .map(|(name, _)| Figures {
                name: format!("{name} {vocabulary}"),
                rates: Vec::new(),
                peak_rss: Vec::new(),
            })
            .collect();
        for round in 0..sizes.rounds {
            let mut order: Vec<usize> = (0..formulations.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for which in order {
                let name = &figures[which].name;
                let measured = match &formulations[which].1 {
                    Formulation::Sluice(component, steps) => {
                        let (measured, counts) =
                            sluice_count(&root, &input, &sizes, (component, steps));
                        assert!(counts == truth, "{name} counted wrong");
                        measured
                    }
                    Formulation::Native => {
                        let started = Instant::now();
                        let counts = native::count(&text);
                        let rate = sizes.words() as f64 / started.elapsed().as_secs_f64();
                        assert!(
                            counts.len() == truth.len()
                                && counts
                                    .iter()
                                    .all(|(word, count)| truth.get(word) == Some(&count)),
                            "{name} counted wrong"
                        );
                        Measured {
                            rate,
                            peak_rss: None,
                        }
                    }
                    Formulation::Spark => {
                        let (measured, counts) =
                            spark::count(&spark_input, &root.join("spark-out"), &sizes);
                        assert!(counts == truth, "{name} counted wrong");
                        measured
                    }
                };
                let figures = &mut figures[which];
                figures.rates.push(measured.rate);
                figures
                    .peak_rss
                    .extend(measured.peak_rss.map(|bytes| bytes as f64));
            }
        }
        for figures in &figures {
            figures.print();
        }
        for (a, b) in [
            ("udf", "count_by_value"),
            ("udf", "native"),
            ("count_by_value", "native"),
            ("udf", "spark"),
            ("udf", "udf_baseline"),
        ] {
            print_ratio(&figures, a, b, &vocabulary);
        }
        std::fs::remove_file(&input).unwrap();
        let _ = std::fs::remove_dir_all(&spark_input);
    }
    std::fs::remove_dir_all(&root).unwrap();
}
