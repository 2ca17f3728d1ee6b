//! Kafka end to end on a real broker (Tansu, started by `scripts/kafka` on a free loopback
//! port and stopped at the end), with `sluice run`, in one run:
//!
//! - Kafka → word count (UDFs) → Kafka, in records (input lines) per second, with the
//!   broker's CPU time over the run, next to the same job reading the same lines from a
//!   `file` source;
//! - the exactly-once sink against `delivery = "at_least_once"`: steady throughput, and
//!   the recovery time after a `kill -9` mid-run (from the restart to the output complete).
//!
//! The input topic is prefilled before any timing. Every output is checked: the word totals
//! are exact (each record counted once by its `sluice-instance`/`sluice-batch`/`sluice-seq`
//! headers; the exactly-once sink must hold no record twice).
//!
//! Run with `cargo bench -p sluice --bench kafka` after `scripts/setup`. Sizes:
//! `SLUICE_BENCH_KAFKA_LINES` (default 1000000 lines of 8 words),
//! `SLUICE_BENCH_KAFKA_PARTITIONS` (input partitions, default 4),
//! `SLUICE_BENCH_KAFKA_VOCABULARY` (distinct words, default 5000: the records each batch
//! writes), `SLUICE_BENCH_KAFKA_BATCH` (lines per batch, default 40000).

mod common;
#[path = "../../tests/common/mod.rs"]
mod harness;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::kafka::Broker;
use harness::run::{Run, message_of};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const WORDS_PER_LINE: usize = 8;
/// Partitions of the output topics.
const OUTPUT_PARTITIONS: i32 = 3;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|value| value.parse().unwrap_or_else(|_| panic!("{name}: {value}")))
        .unwrap_or(default)
}

/// The benchmark's sizes.
struct Sizes {
    lines: usize,
    partitions: i32,
    vocabulary: u64,
    batch: usize,
}

struct Bench {
    broker: Broker,
    sizes: Sizes,
    dir: tempfile::TempDir,
    input: String,
    expected: BTreeMap<String, i64>,
}

/// Where a job's lines come from.
#[derive(Clone, Copy)]
enum Source {
    Kafka,
    File,
}

impl Bench {
    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.broker.address());
        config
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        harness::kafka::create_topic(self.broker.address(), name, partitions);
    }

    /// Produces `lines` to the input topic round robin over its partitions, and writes them
    /// to `input.txt` for the file source.
    fn prefill(&self, lines: &[String]) {
        self.create_topic(&self.input, self.sizes.partitions);
        let producer: ThreadedProducer<DefaultProducerContext> = self
            .client()
            .set("linger.ms", "20")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        for (i, line) in lines.iter().enumerate() {
            let partition = (i % self.sizes.partitions as usize) as i32;
            loop {
                let record = BaseRecord::<str, str>::to(&self.input)
                    .partition(partition)
                    .payload(line);
                match producer.send(record) {
                    Ok(()) => break,
                    Err((error, _)) => {
                        assert_eq!(
                            error.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::QueueFull),
                            "{error}"
                        );
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(120)).unwrap();
        std::fs::write(self.dir.path().join("input.txt"), lines.join("\n") + "\n").unwrap();
    }

    /// The lines each input partition holds: its end offset.
    fn partition_ends(&self) -> Vec<i64> {
        let (lines, partitions) = (self.sizes.lines, self.sizes.partitions as usize);
        (0..partitions)
            .map(|p| (lines / partitions + usize::from(p < lines % partitions)) as i64)
            .collect()
    }

    /// Writes the word count job `name` (its own checkpoint directory, consumer group and
    /// output topic, created here) and returns its manifest and output topic.
    fn job(&self, name: &str, source: Source, delivery: &str) -> (PathBuf, String) {
        let output = format!("{}-{name}", self.input);
        self.create_topic(&output, OUTPUT_PARTITIONS);
        let source = match source {
            Source::Kafka => format!(
                "kind = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"{}\"]\nstarting_offsets = \"earliest\"\nmax_records_per_partition = {}\ngroup_id = \"{output}\"",
                self.broker.address(),
                self.input,
                self.sizes.batch / self.sizes.partitions as usize
            ),
            Source::File => format!(
                "kind = \"file\"\npath = \"../input.txt\"\nlines_per_batch = {}",
                self.sizes.batch
            ),
        };
        let manifest = format!(
            r#"name = "{name}"
batch_interval = "100ms"
partitions = 2

[checkpoint]
dir = "checkpoint"

[udfs]
wc = "{wordcount}"

[[sources]]
name = "lines"
{source}

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "flat_map", udf = "wc#tokenize" }},
  {{ op = "map", udf = "wc#with_one" }},
  {{ op = "reduce_by_key", udf = "wc#sum" }},
]

[[sinks]]
from = "counts"
kind = "kafka"
brokers = "{broker}"
topic = "{output}"
format = "json"
pairs = true
delivery = "{delivery}"
"#,
            wordcount = common::wordcount().display(),
            broker = self.broker.address(),
        );
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("job.toml");
        std::fs::write(&path, manifest).unwrap();
        (path, output)
    }

    /// The word totals of `output`, each (instance, batch, sequence) counted once, and how
    /// many records were there more than once.
    fn totals(&self, output: &str) -> (BTreeMap<String, i64>, usize) {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "sluice-bench-reader")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in 0..OUTPUT_PARTITIONS {
            assignment
                .add_partition_offset(output, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut seen = HashSet::new();
        let mut totals = BTreeMap::new();
        let mut duplicates = 0;
        let mut at_end = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while at_end.len() < OUTPUT_PARTITIONS as usize {
            assert!(Instant::now() < deadline, "reading {output} took over 60 s");
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = match message {
                Ok(message) => message,
                Err(rdkafka::error::KafkaError::PartitionEOF(partition)) => {
                    at_end.insert(partition);
                    continue;
                }
                Err(error) => panic!("reading {output}: {error}"),
            };
            at_end.remove(&message.partition());
            let headers = message.headers().expect("the sink's headers");
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|header| header.key == name)
                    .and_then(|header| header.value)
                    .map(|value| String::from_utf8_lossy(value).into_owned())
                    .unwrap_or_else(|| panic!("no {name} header"))
            };
            let id = (
                header("sluice-instance"),
                header("sluice-batch"),
                header("sluice-seq"),
            );
            if !seen.insert(id) {
                duplicates += 1;
                continue;
            }
            let word: String = serde_json::from_slice(message.key().unwrap()).unwrap();
            let count: i64 = serde_json::from_slice(message.payload().unwrap()).unwrap();
            *totals.entry(word).or_insert(0) += count;
        }
        (totals, duplicates)
    }

    /// Checks that `output` holds the exact word totals; with `exactly_once`, no record
    /// twice. Returns the records written more than once.
    fn check(&self, output: &str, exactly_once: bool) -> usize {
        let (totals, duplicates) = self.totals(output);
        assert!(
            totals == self.expected,
            "{output}: the word totals are not exact ({} words, {} expected)",
            totals.len(),
            self.expected.len()
        );
        assert!(
            !exactly_once || duplicates == 0,
            "{output}: {duplicates} records written twice by the exactly-once sink"
        );
        duplicates
    }

    /// Whether the consumer group `group` has committed every input partition's end.
    fn committed_to_the_end(&self, group: &str) -> bool {
        let consumer: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut partitions = TopicPartitionList::new();
        for partition in 0..self.sizes.partitions {
            partitions.add_partition(&self.input, partition);
        }
        let Ok(committed) = consumer.committed_offsets(partitions, Duration::from_secs(10)) else {
            return false;
        };
        self.partition_ends()
            .iter()
            .enumerate()
            .all(|(partition, &end)| {
                committed
                    .find_partition(&self.input, partition as i32)
                    .is_some_and(|p| p.offset() == Offset::Offset(end))
            })
    }
}

/// What one run to the end measured.
struct Timed {
    /// From the `started` log line to the last batch done.
    elapsed: Duration,
    /// Records per second after the first batch with records (whose time holds the
    /// start-up: connecting, and the exactly-once sink's read-back of its output).
    steady: f64,
    /// The broker's CPU time over `elapsed`.
    broker_cpu: Duration,
}

impl Timed {
    fn rate(&self, records: usize) -> f64 {
        records as f64 / self.elapsed.as_secs_f64()
    }
}

fn records_in(line: &serde_json::Value) -> usize {
    line["fields"]["records_in"]
        .as_u64()
        .unwrap_or_else(|| panic!("no records_in in {line}")) as usize
}

/// How a run ends once its batches have taken what was asked.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// `kill -9`.
    Kill,
    /// Ctrl-C (a Kafka source never ends).
    Interrupt,
    /// By itself (a bounded source).
    Drained,
}

/// Runs `manifest` until its batches have taken `records` records, timed from its
/// `started` log line, then ends it as `end` says: a kill comes half a batch's time after
/// the batch that took the records, so that it lands in the middle of a batch.
fn run_until(bench: &Bench, manifest: &Path, records: usize, end: End) -> Timed {
    let mut run = Run::start(manifest, &[]);
    run.wait_for("started");
    let (started, cpu_before) = (Instant::now(), bench.broker.cpu_time());
    let (mut taken, mut first) = (0, None);
    while taken < records {
        let batch = records_in(&run.wait_for("batch done"));
        taken += batch;
        if batch > 0 && first.is_none() {
            first = Some((Instant::now(), taken));
        }
    }
    let elapsed = started.elapsed();
    let (first_done, first_taken) = first.expect("a batch with records");
    let timed = Timed {
        elapsed,
        steady: (taken - first_taken) as f64 / first_done.elapsed().as_secs_f64(),
        broker_cpu: bench.broker.cpu_time() - cpu_before,
    };
    match end {
        End::Kill => {
            let batches = (taken / bench.sizes.batch).max(1) as u32;
            std::thread::sleep(elapsed / batches / 2);
            run.signal("KILL");
        }
        End::Interrupt => run.signal("INT"),
        End::Drained => {}
    }
    let (status, log) = run.finish();
    assert!(
        end == End::Kill || status.success(),
        "{manifest:?}: {log:#?}"
    );
    timed
}

/// Restarts `manifest` after a kill and times it from the restart to its consumer group
/// having committed every input partition's end (the output is checked after).
fn recover(bench: &Bench, manifest: &Path, group: &str) -> (Duration, usize) {
    let restarted = Instant::now();
    let mut run = Run::start(manifest, &[]);
    let mut reran_partly = 0;
    let elapsed = loop {
        let line = run.wait_for("batch");
        if message_of(&line).contains("partly written") {
            reran_partly += 1;
        }
        if message_of(&line) == "batch done" && bench.committed_to_the_end(group) {
            break restarted.elapsed();
        }
    };
    run.signal("INT");
    let (status, log) = run.finish();
    assert!(status.success(), "{manifest:?}: {log:#?}");
    (elapsed, reran_partly)
}

/// `count` lines of `WORDS_PER_LINE` words `w0` .. `w<vocabulary - 1>`.
fn lines(count: usize, vocabulary: u64) -> Vec<String> {
    let mut random = harness::wordcount::Xorshift(0x2545_f491_4f6c_dd1d);
    (0..count)
        .map(|_| {
            (0..WORDS_PER_LINE)
                .map(|_| format!("w{}", random.next() % vocabulary))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn main() {
    let sizes = Sizes {
        lines: setting("SLUICE_BENCH_KAFKA_LINES", 1_000_000),
        partitions: setting("SLUICE_BENCH_KAFKA_PARTITIONS", 4) as i32,
        vocabulary: setting("SLUICE_BENCH_KAFKA_VOCABULARY", 5000) as u64,
        batch: setting("SLUICE_BENCH_KAFKA_BATCH", 40_000),
    };
    let text = lines(sizes.lines, sizes.vocabulary);
    let bench = Bench {
        broker: Broker::start(),
        expected: harness::wordcount::counted(&text.join("\n")),
        input: format!("bench-{}", std::process::id()),
        dir: tempfile::tempdir().unwrap(),
        sizes,
    };
    let n = bench.sizes.lines;
    println!(
        "bench kafka: {n} lines of {WORDS_PER_LINE} words ({} distinct) in {} partitions, batches of {} lines every 100 ms, 2 job partitions",
        bench.sizes.vocabulary, bench.sizes.partitions, bench.sizes.batch
    );
    let prefill = Instant::now();
    bench.prefill(&text);
    println!(
        "bench kafka: topic prefilled in {:.1} s",
        prefill.elapsed().as_secs_f64()
    );

    // Throughput, exactly-once then at-least-once, each from Kafka and from the file.
    for delivery in ["exactly_once", "at_least_once"] {
        for (source, label, end) in [
            (Source::Kafka, "kafka", End::Interrupt),
            (Source::File, "file", End::Drained),
        ] {
            let name = format!("{label}-{}", delivery.replace('_', "-"));
            let (manifest, output) = bench.job(&name, source, delivery);
            let timed = run_until(&bench, &manifest, n, end);
            bench.check(&output, delivery == "exactly_once");
            println!(
                "bench {label} -> word count -> kafka ({delivery}): {:.0} records/s ({:.0} words/s) over {:.2} s, steady after the first batch {:.0} records/s; broker CPU {:.2} s",
                timed.rate(n),
                timed.rate(n * WORDS_PER_LINE),
                timed.elapsed.as_secs_f64(),
                timed.steady,
                timed.broker_cpu.as_secs_f64()
            );
        }
    }

    // Recovery after a kill -9 mid-run.
    for delivery in ["exactly_once", "at_least_once"] {
        let name = format!("recovery-{}", delivery.replace('_', "-"));
        let (manifest, output) = bench.job(&name, Source::Kafka, delivery);
        let before = run_until(&bench, &manifest, n / 2, End::Kill);
        let (recovery, partly) = recover(&bench, &manifest, &output);
        let duplicates = bench.check(&output, delivery == "exactly_once");
        println!(
            "bench recovery ({delivery}): kill -9 mid-batch after {:.2} s (over {} of {n} lines done), restart to output complete {:.2} s; {partly} partly written batches completed, {duplicates} records written twice",
            before.elapsed.as_secs_f64(),
            n / 2,
            recovery.as_secs_f64()
        );
    }
}
