//! Kafka end to end, against a real Kafka-protocol broker: Tansu, which `scripts/kafka`
//! installs and starts on 127.0.0.1. One broker serves the whole test binary (it is never
//! restarted; each test uses its own topics) and dies with it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::kafka::Broker;
use common::run::Run;
use common::wait;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// The backpressure test measures the job's capacity and then its settled rate: no other
/// test of this file runs while it does (they share the 2 cores). The others run side by
/// side, each holding a shared turn.
static MEASURING: RwLock<()> = RwLock::new(());

fn shared_turn() -> RwLockReadGuard<'static, ()> {
    MEASURING
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn alone() -> RwLockWriteGuard<'static, ()> {
    MEASURING
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The broker's `host:port`, started at the first call. The thread that starts it lives
/// as long as the test binary, and the broker is killed when the binary ends
/// (parent-death signal).
fn broker() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| {
        let (started, running) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut broker = Broker::start();
            started.send(broker.address().to_owned()).unwrap();
            // This thread must outlive every test: the death signal follows it.
            let status = broker.wait();
            panic!("the Kafka broker ended: {status:?}");
        });
        running.recv().expect("the broker started")
    })
}

fn client() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker());
    config
}

fn create_topic(name: &str, partitions: i32) {
    common::kafka::create_topic(broker(), name, partitions);
}

/// Produces `records` (key, value) to `topic`; with `one_per_request`, each in a produce
/// request of its own.
fn produce(topic: &str, records: &[(Option<&str>, &[u8])], one_per_request: bool) {
    let producer: ThreadedProducer<DefaultProducerContext> = client()
        .set("linger.ms", if one_per_request { "0" } else { "5" })
        .create()
        .unwrap();
    for (key, value) in records {
        let mut record = BaseRecord::<str, [u8]>::to(topic).payload(*value);
        if let Some(key) = key {
            record = record.key(*key);
        }
        producer.send(record).map_err(|(error, _)| error).unwrap();
        if one_per_request {
            producer.flush(Duration::from_secs(10)).unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// A record read back: partition, key, value and headers.
#[derive(Debug)]
struct Read {
    key: Option<String>,
    value: Option<String>,
    headers: HashMap<String, String>,
}

/// Every record of `topic` (of `partitions` partitions): read from the start until a
/// fetch has come back empty for a second.
fn read_all(topic: &str, partitions: i32) -> Vec<Read> {
    let consumer: BaseConsumer = client().set("group.id", "sluice-tests").create().unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut read = Vec::new();
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(1) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        quiet = Instant::now();
        let text = |bytes: Option<&[u8]>| bytes.map(|b| String::from_utf8_lossy(b).into_owned());
        read.push(Read {
            key: text(message.key()),
            value: text(message.payload()),
            headers: message.headers().map_or_else(HashMap::new, |headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), text(h.value).unwrap_or_default()))
                    .collect()
            }),
        });
    }
    read
}

/// A unique topic name for one test.
fn topic(test: &str) -> String {
    format!("{test}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

/// A checkpointed Kafka-to-Kafka word count: lines from `input`, `[word, count]` per
/// batch to `output`, exactly once.
fn word_count(dir: &Path, input: &str, output: &str) -> PathBuf {
    let manifest = format!(
        r#"name = "kafka-wordcount"
batch_interval = "200ms"
partitions = 2

[checkpoint]
dir = "checkpoint"
every = 3

[udfs]
wc = "{wordcount}"

[[sources]]
name = "lines"
kind = "kafka"
brokers = "{broker}"
topics = ["{input}"]
starting_offsets = "earliest"
max_records_per_partition = 7

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
"#,
        wordcount = common::udf("wordcount").display(),
        broker = broker(),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

/// The input lines of the word counts: `n` lines of words from a small vocabulary.
fn lines(from: usize, n: usize) -> Vec<String> {
    let words = ["river", "gate", "sluice", "flow", "canal", "lock", "weir"];
    (from..from + n)
        .map(|i| {
            format!(
                "{} {} {}",
                words[i % 7],
                words[(i * 3 + 1) % 7],
                words[(i * 5 + 2) % 7]
            )
        })
        .collect()
}

fn produce_lines(topic: &str, lines: &[String]) {
    let records: Vec<(Option<String>, &[u8])> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| (Some(format!("k{i}")), line.as_bytes()))
        .collect();
    let records: Vec<(Option<&str>, &[u8])> = records
        .iter()
        .map(|(key, value)| (key.as_deref(), *value))
        .collect();
    produce(topic, &records, false);
}

fn expected(lines: &[String]) -> BTreeMap<String, i64> {
    common::wordcount::counted(&lines.join("\n"))
}

/// The word totals over every output record, after checking that each (instance, batch,
/// sequence) is there once.
fn totals(output: &str) -> BTreeMap<String, i64> {
    let mut seen = HashSet::new();
    let mut totals = BTreeMap::new();
    for record in read_all(output, 3) {
        let id = (
            record.headers["sluice-instance"].clone(),
            record.headers["sluice-batch"].clone(),
            record.headers["sluice-seq"].clone(),
        );
        assert!(seen.insert(id.clone()), "record {id:?} written twice");
        let word: String = serde_json::from_str(record.key.as_deref().unwrap()).unwrap();
        let count: i64 = record.value.as_deref().unwrap().parse().unwrap();
        *totals.entry(word).or_insert(0) += count;
    }
    totals
}

#[test]
fn kafka_word_count_to_kafka_is_exact_and_a_restart_continues() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (topic("wc-in"), topic("wc-out"));
    create_topic(&input, 3);
    create_topic(&output, 3);
    let first = lines(0, 300);
    produce_lines(&input, &first);
    let manifest = word_count(dir.path(), &input, &output);

    let mut run = Run::start(&manifest, &[]);
    run.wait_for("started");
    wait::until(Duration::from_secs(90), "the first lines counted", || {
        totals(&output) == expected(&first)
    });
    run.signal("INT");
    let (status, _) = run.finish();
    assert!(status.success(), "{status:?}");

    // Lines produced while the job is down are counted after the restart, once.
    let second = lines(300, 200);
    produce_lines(&input, &second);
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let mut run = Run::start(&manifest, &[]);
    run.wait_for("started");
    wait::until(Duration::from_secs(90), "every line counted", || {
        totals(&output) == expected(&all)
    });
    run.signal("INT");
    let (status, _) = run.finish();
    assert!(status.success(), "{status:?}");
    assert_eq!(totals(&output), expected(&all));
}

/// A Kafka-to-files job over `topic` starting at `starting_offsets`; its output files are
/// typed JSON lines.
fn to_files(dir: &Path, topic: &str, starting_offsets: &str, extra: &str) -> PathBuf {
    let manifest = format!(
        r#"name = "kafka-files"
batch_interval = "100ms"

[checkpoint]
dir = "checkpoint"

[[sources]]
name = "records"
kind = "kafka"
brokers = "{broker}"
topics = ["{topic}"]
starting_offsets = {starting_offsets}
{extra}

[[sinks]]
from = "records"
kind = "files"
prefix = "out/records"
format = "json_lines"
"#,
        broker = broker(),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

/// Every record the files sink wrote, in batch order.
fn written(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir.join("out")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|file| {
            std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits until the job's output holds exactly records `numbers`, then stops it as Ctrl-C
/// does and checks that it ended well.
fn stop_once_written(run: Run, dir: &Path, numbers: std::ops::Range<i32>) {
    let what = format!("records {} to {}", numbers.start, numbers.end - 1);
    wait::until(Duration::from_secs(60), &what, || {
        written(dir) == values(numbers.clone())
    });
    run.signal("INT");
    assert!(run.finish().0.success());
}

fn values(numbers: std::ops::Range<i32>) -> Vec<serde_json::Value> {
    numbers
        .map(|n| serde_json::Value::String(format!("r{n}")))
        .collect()
}

#[test]
fn starting_offsets_per_partition_are_honoured() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let topic = topic("offsets");
    create_topic(&topic, 1);
    let records: Vec<String> = (0..10).map(|n| format!("r{n}")).collect();
    let records: Vec<(Option<&str>, &[u8])> = records
        .iter()
        .map(|value| (None, value.as_bytes()))
        .collect();
    produce(&topic, &records, false);
    let manifest = to_files(
        dir.path(),
        &topic,
        &format!("{{ \"{topic}\" = {{ \"0\" = 4 }} }}"),
        "",
    );
    let run = Run::start(&manifest, &[]);
    stop_once_written(run, dir.path(), 4..10);
}

/// `latest` starts after what the topic holds. Tested with one record per produce
/// request: Tansu 0.6 answers "latest" wrongly after a produce of several records.
#[test]
fn starting_offsets_latest_skips_what_was_there() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let topic = topic("latest");
    create_topic(&topic, 1);
    let old: Vec<String> = (0..5).map(|n| format!("r{n}")).collect();
    let old: Vec<(Option<&str>, &[u8])> = old.iter().map(|v| (None, v.as_bytes())).collect();
    produce(&topic, &old, true);
    let manifest = to_files(dir.path(), &topic, "\"latest\"", "");
    let mut run = Run::start(&manifest, &[]);
    run.wait_for(&format!("reading {topic} partition 0"));
    // The position is fixed once a batch has been cut after the assignment.
    run.wait_for("batch done");
    run.wait_for("batch done");
    let new: Vec<String> = (5..9).map(|n| format!("r{n}")).collect();
    let new: Vec<(Option<&str>, &[u8])> = new.iter().map(|v| (None, v.as_bytes())).collect();
    produce(&topic, &new, true);
    stop_once_written(run, dir.path(), 5..9);
}

/// An undecodable value fails the job naming topic, partition and offset; with
/// `on_decode_error = "skip"` it is skipped. With `metadata`, records carry where they
/// came from.
#[test]
fn bad_values_fail_or_are_skipped_and_metadata_names_the_origin() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let topic = topic("decode");
    create_topic(&topic, 1);
    let records: [(Option<&str>, &[u8]); 3] = [
        (Some("a"), b"r0"),
        (None, &[0xff, 0xfe]),
        (Some("c"), b"r2"),
    ];
    produce(&topic, &records, false);

    let manifest = to_files(dir.path(), &topic, "\"earliest\"", "");
    let output = common::sluice().arg("run").arg(&manifest).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("topic {topic} partition 0 offset 1"))
            && stderr.contains("on_decode_error"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = to_files(
        dir.path(),
        &topic,
        "\"earliest\"",
        "on_decode_error = \"skip\"\nmetadata = true\nkey_format = \"string\"",
    );
    let run = Run::start(&manifest, &[]);
    wait::until(Duration::from_secs(60), "two records", || {
        written(dir.path()).len() == 2
    });
    run.signal("INT");
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
    let skipped: u64 = log
        .iter()
        .filter(|line| common::run::message_of(line) == "batch done")
        .map(|line| line["fields"]["skipped"].as_u64().unwrap())
        .sum();
    assert_eq!(skipped, 1, "the batch reports count the record skipped");
    let records = written(dir.path());
    assert_eq!(records[0]["topic"], topic.as_str());
    assert_eq!(records[0]["offset"], 0);
    assert_eq!(records[0]["key"], "a");
    assert_eq!(records[0]["value"], "r0");
    assert_eq!(records[1]["offset"], 2);
    assert_eq!(records[1]["value"], "r2");
}

#[test]
fn exactly_once_without_a_checkpoint_is_refused_at_check_time() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        r#"name = "no-checkpoint"
batch_interval = "1s"

[[sources]]
name = "lines"
kind = "queue"
batches = [["a"]]

[[sinks]]
from = "lines"
kind = "kafka"
brokers = "127.0.0.1:9"
topic = "out"
"#,
    )
    .unwrap();
    let output = common::sluice()
        .arg("check")
        .arg(&manifest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[checkpoint]") && stderr.contains("at_least_once"),
        "{stderr}"
    );
}

/// Kafka to word count to Kafka, killed 20 times, then run to the end: 10 kills by the
/// fault-injection hook right after the k-th acknowledged record of a batch, 10 by
/// SIGKILL after a few batches. The output then holds every (batch, sequence) once and
/// the exact totals, and at least 5 restarts found a partly written batch.
#[test]
fn the_exactly_once_sink_survives_20_kills() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (topic("crash-in"), topic("crash-out"));
    create_topic(&input, 3);
    create_topic(&output, 3);
    let all = lines(0, 900);
    produce_lines(&input, &all);
    let manifest = word_count(dir.path(), &input, &output);
    let mut partly_written = 0;
    let mut partial = |log: &[serde_json::Value]| {
        partly_written += log
            .iter()
            .filter(|line| {
                common::run::message_of(line).contains("partly written")
                    && line["fields"]["missing"].as_u64().is_some_and(|m| m > 0)
            })
            .count();
    };
    for kill in 0..20 {
        if kill % 2 == 0 {
            let k = (1 + kill / 2 % 4).to_string();
            let run = Run::start_with_env(
                &manifest,
                &[],
                &[("SLUICE_FAULT_KAFKA_ABORT_AFTER_ACKS", k.as_str())],
            );
            let (status, log) = run.finish();
            assert!(!status.success(), "the fault hook did not fire: {log:#?}");
            partial(&log);
        } else {
            let mut run = Run::start(&manifest, &[]);
            run.wait_for("batch done");
            run.wait_for("batch done");
            run.signal("KILL");
            let (_, log) = run.finish();
            partial(&log);
        }
    }
    let run = Run::start(&manifest, &[]);
    wait::until(Duration::from_secs(120), "every line counted", || {
        totals(&output) == expected(&all)
    });
    run.signal("INT");
    let (status, log) = run.finish();
    assert!(status.success(), "{status:?}");
    partial(&log);
    assert_eq!(totals(&output), expected(&all));
    assert!(
        partly_written >= 5,
        "only {partly_written} restarts found a partly written batch"
    );
}

/// A job that reads `topic` and passes each record through `faulty#toil` (200 µs each)
/// to files, a batch every 200 ms, with `rate` (its rate keys).
fn toiling(dir: &Path, topic: &str, rate: &str) -> PathBuf {
    let manifest = format!(
        r#"name = "kafka-toil"
batch_interval = "200ms"
partitions = 1

[udfs]
faulty = "{faulty}"

[[sources]]
name = "records"
kind = "kafka"
brokers = "{broker}"
topics = ["{topic}"]
starting_offsets = "earliest"
{rate}

[[streams]]
name = "toiled"
from = "records"
steps = [{{ op = "map", udf = "faulty#toil" }}]

[[sinks]]
from = "toiled"
kind = "files"
prefix = "out/records"
format = "json_lines"
"#,
        faulty = common::udf("faulty").display(),
        broker = broker(),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

/// Produces `per_partition` records `"P-I"` to each of the 2 partitions of `topic`.
fn produce_numbered(topic: &str, per_partition: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        client().set("linger.ms", "5").create().unwrap();
    for partition in 0..2 {
        for i in 0..per_partition {
            let value = format!("{partition}-{i}");
            loop {
                let record = BaseRecord::<str, str>::to(topic)
                    .partition(partition)
                    .payload(&value);
                match producer.send(record) {
                    Ok(()) => break,
                    // The producer's queue is full: let it drain.
                    Err((error, _)) => {
                        assert!(
                            matches!(
                                error.rdkafka_error_code(),
                                Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                            ),
                            "{error}"
                        );
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// A field of a `batch done` log line, as a number.
fn report_field(line: &serde_json::Value, name: &str) -> u64 {
    line["fields"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// Runs `manifest` until `batches` batches with records are done; returns their `batch
/// done` lines.
fn batches_with_records(manifest: &Path, batches: usize) -> Vec<serde_json::Value> {
    let mut run = Run::start(manifest, &[]);
    let mut reports = Vec::new();
    while reports.len() < batches {
        let line = run.wait_for("batch done");
        if report_field(&line, "records_in") > 0 || !reports.is_empty() {
            reports.push(line);
        }
    }
    run.signal("INT");
    let (status, log) = run.finish();
    assert!(status.success(), "{log:#?}");
    reports
}

/// Records per second of processing over `reports`.
fn processing_rate(reports: &[serde_json::Value]) -> f64 {
    let records: u64 = reports.iter().map(|r| report_field(r, "records_in")).sum();
    let processing_us: u64 = reports
        .iter()
        .map(|r| report_field(r, "processing_us"))
        .sum();
    records as f64 / (processing_us as f64 / 1e6)
}

/// Backpressure, as the issue asks: the job's capacity is measured alone, then a backlog
/// of 3 times what it can process in the 50 batches watched waits in the topic. From the
/// 21st batch on, for 30 batches, the scheduling delay stays under 2 intervals and the
/// rate taken is within 30% of the capacity; what was taken is every partition's records
/// from the start, each once.
#[test]
fn backpressure_settles_at_the_jobs_capacity_without_delay_or_loss() {
    let _alone = alone();
    let interval_s = 0.2;
    // The capacity, alone: batches of 400 records, more than an interval's work.
    let calibration = topic("capacity");
    create_topic(&calibration, 2);
    produce_numbered(&calibration, 4000);
    let dir = tempfile::tempdir().unwrap();
    let manifest = toiling(dir.path(), &calibration, "max_records_per_partition = 200");
    let capacity = processing_rate(&batches_with_records(&manifest, 10)[2..]);
    println!("capacity alone: {capacity:.0} records/s");

    let backlog = (3.0 * capacity * 50.0 * interval_s) as usize;
    let topic = topic("backpressure");
    create_topic(&topic, 2);
    produce_numbered(&topic, backlog / 2);
    let dir = tempfile::tempdir().unwrap();
    let manifest = toiling(
        dir.path(),
        &topic,
        &format!(
            "backpressure = true\ninitial_rate = {}",
            (capacity / 4.0) as u64
        ),
    );
    let reports = batches_with_records(&manifest, 50);
    let settled = &reports[20..];
    for report in settled {
        let delay_ms = report_field(report, "scheduling_delay_ms");
        assert!(
            delay_ms < 400,
            "batch {} waited {delay_ms} ms, 2 intervals or more: {settled:#?}",
            report["fields"]["batch"]
        );
    }
    let taken: u64 = settled.iter().map(|r| report_field(r, "records_in")).sum();
    let rate = taken as f64 / (settled.len() as f64 * interval_s);
    println!("settled at {rate:.0} records/s for a capacity of {capacity:.0} (backlog {backlog})");
    assert!(
        (rate - capacity).abs() / capacity < 0.3,
        "settled at {rate:.0} records/s, not within 30% of the capacity {capacity:.0}"
    );

    // Nothing lost or doubled: each partition's records from its start, once.
    let records = written(dir.path());
    let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for record in &records {
        let (partition, i) = record.as_str().unwrap().split_once('-').unwrap();
        by_partition
            .entry(partition.parse().unwrap())
            .or_default()
            .push(i.parse().unwrap());
    }
    for (partition, mut numbers) in by_partition {
        numbers.sort_unstable();
        assert!(
            numbers.iter().enumerate().all(|(at, &n)| at == n),
            "partition {partition}: the records taken are not 0, 1, 2, ... each once"
        );
    }
    let reported: u64 = reports.iter().map(|r| report_field(r, "records_in")).sum();
    assert!(records.len() as u64 >= reported);
}

/// Produces `values` to partition `partition` of `topic`, each with its timestamp.
fn produce_at(topic: &str, partition: i32, values: &[(&str, i64)]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        client().set("linger.ms", "0").create().unwrap();
    for (value, timestamp) in values {
        let record = BaseRecord::<str, str>::to(topic)
            .partition(partition)
            .payload(*value)
            .timestamp(*timestamp);
        producer.send(record).map_err(|(error, _)| error).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }
}

/// `starting_offsets = { timestamp = MS }` starts each partition at its first record at
/// or after that time (Tansu 0.6 answers offset 0 for any time: the source passes over
/// the records before it).
#[test]
fn starting_offsets_by_timestamp_start_at_the_first_record_at_or_after_it() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let topic = topic("by-time");
    create_topic(&topic, 1);
    let base = 1_700_000_000_000;
    let records: Vec<(String, i64)> = (0..5).map(|n| (format!("r{n}"), base + n * 1000)).collect();
    let records: Vec<(&str, i64)> = records.iter().map(|(v, t)| (v.as_str(), *t)).collect();
    produce_at(&topic, 0, &records);
    let manifest = to_files(
        dir.path(),
        &topic,
        &format!("{{ timestamp = {} }}", base + 1500),
        "",
    );
    let run = Run::start(&manifest, &[]);
    stop_once_written(run, dir.path(), 2..5);
}

/// With `topic_pattern`, topics created while the job runs are read from their start.
/// (Partitions added to a topic are found the same way, by polling the metadata; Tansu 0.6
/// does not support CreatePartitions, so this broker cannot show it.)
#[test]
fn topic_pattern_finds_topics_created_while_the_job_runs() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let prefix = topic("pattern");
    let first = format!("{prefix}-a");
    create_topic(&first, 1);
    produce_at(&first, 0, &[("r0", 1)]);
    let manifest = to_files(
        dir.path(),
        "unused",
        "\"earliest\"",
        &format!("topic_pattern = \"{prefix}-.*\""),
    )
    .to_owned();
    // `to_files` names a topic list; the pattern replaces it.
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("topics = [\"unused\"]\n", "");
    std::fs::write(&manifest, text).unwrap();
    let run = Run::start(&manifest, &[]);
    wait::until(Duration::from_secs(60), "the first topic's record", || {
        written(dir.path()) == values(0..1)
    });

    let second = format!("{prefix}-b");
    create_topic(&second, 1);
    produce_at(&second, 0, &[("r1", 1)]);
    stop_once_written(run, dir.path(), 0..2);
}

/// After each batch the source commits its offsets to the job's group (`sluice-<job>` by
/// default), so standard Kafka tooling shows the lag: once every record is written, the
/// group's committed offsets are each partition's end.
#[test]
fn offsets_are_committed_to_the_jobs_group_after_each_batch() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let topic = topic("committed");
    create_topic(&topic, 2);
    let per_partition = 7;
    produce_numbered(&topic, per_partition);
    let manifest = to_files(dir.path(), &topic, "\"earliest\"", "");
    let run = Run::start(&manifest, &[]);
    wait::until(Duration::from_secs(60), "every record written", || {
        written(dir.path()).len() == 2 * per_partition
    });
    let group: BaseConsumer = client()
        .set("group.id", "sluice-kafka-files")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in 0..2 {
        partitions.add_partition(&topic, partition);
    }
    let committed = || -> Vec<Offset> {
        let offsets = group
            .committed_offsets(partitions.clone(), Duration::from_secs(10))
            .unwrap();
        (0..2)
            .map(|partition| offsets.find_partition(&topic, partition).unwrap().offset())
            .collect()
    };
    let end = Offset::Offset(per_partition as i64);
    wait::until(Duration::from_secs(30), "offsets committed", || {
        committed() == [end, end]
    });
    run.signal("INT");
    assert!(run.finish().0.success());
    assert_eq!(committed(), [end, end], "a clean stop keeps them");
}

/// `properties` reach the client: a property librdkafka does not know fails the job
/// naming it, and a valid one (`client.id`) works.
#[test]
fn properties_are_passed_through_to_the_client() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let topic = topic("properties");
    create_topic(&topic, 1);
    produce(&topic, &[(None, b"r0")], false);

    let manifest = to_files(
        dir.path(),
        &topic,
        "\"earliest\"",
        r#"properties = { "client.id" = "sluice-test", "no.such.property" = "1" }"#,
    );
    let output = common::sluice().arg("run").arg(&manifest).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no.such.property"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let manifest = to_files(
        dir.path(),
        &topic,
        "\"earliest\"",
        r#"properties = { "client.id" = "sluice-test" }"#,
    );
    let run = Run::start(&manifest, &[]);
    stop_once_written(run, dir.path(), 0..1);
}

/// A re-run batch whose records differ from what the first run wrote (here `faulty#stamp`,
/// which appends the clock) is reported: the exactly-once guarantee needs deterministic
/// UDFs, and the first run's records are the ones kept.
#[test]
fn a_rerun_record_that_differs_is_reported() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (topic("stamp-in"), topic("stamp-out"));
    create_topic(&input, 1);
    create_topic(&output, 1);
    produce_lines(&input, &lines(0, 5));
    let manifest = format!(
        r#"name = "kafka-stamp"
batch_interval = "200ms"

[checkpoint]
dir = "checkpoint"

[udfs]
faulty = "{faulty}"

[[sources]]
name = "lines"
kind = "kafka"
brokers = "{broker}"
topics = ["{input}"]
starting_offsets = "earliest"

[[streams]]
name = "stamped"
from = "lines"
steps = [{{ op = "map", udf = "faulty#stamp" }}]

[[sinks]]
from = "stamped"
kind = "kafka"
brokers = "{broker}"
topic = "{output}"
format = "string"
"#,
        faulty = common::udf("faulty").display(),
        broker = broker(),
    );
    let manifest_path = dir.path().join("job.toml");
    std::fs::write(&manifest_path, manifest).unwrap();
    // Two of the batch's records are acknowledged, then the run ends: the restart re-runs
    // the batch, whose stamps are new.
    let run = Run::start_with_env(
        &manifest_path,
        &[],
        &[("SLUICE_FAULT_KAFKA_ABORT_AFTER_ACKS", "2")],
    );
    let (status, log) = run.finish();
    assert!(!status.success(), "the fault hook did not fire: {log:#?}");

    let mut run = Run::start(&manifest_path, &[]);
    let reported = run.wait_for("re-run records differ");
    // At least the two acknowledged before the end (more may have been in flight).
    assert!(
        reported["fields"]["differing"].as_u64().unwrap() >= 2,
        "{reported}"
    );
    run.signal("INT");
    assert!(run.finish().0.success());
    assert_eq!(read_all(&output, 1).len(), 5, "no record twice, none lost");
}

/// Late rows of an event-time aggregation to a Kafka topic: each late row once, also
/// when the first run dies between the two records of a batch's late rows and the
/// restart re-runs that batch.
#[test]
fn late_rows_reach_a_kafka_topic_once_across_a_restart() {
    let _turn = shared_turn();
    let dir = tempfile::tempdir().unwrap();
    let output = topic("late-rows");
    create_topic(&output, 1);
    // Watermark 25 s from batch 2 on: in batch 3, 14 s and 3 s are late (22 s and 27 s
    // are not); in batch 4, 1 s is.
    let batches = [
        r#"[{"k": "a", "seconds": 30}]"#,
        "[]",
        r#"[{"k": "a", "seconds": 14}, {"k": "a", "seconds": 22}, {"k": "b", "seconds": 3}, {"k": "a", "seconds": 27}]"#,
        r#"[{"k": "c", "seconds": 1}, {"k": "a", "seconds": 26}]"#,
    ];
    std::fs::write(dir.path().join("batches.jsonl"), batches.join("\n")).unwrap();
    let manifest = dir.path().join("job.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"name = "late-rows-to-kafka"
batch_interval = "50ms"
[checkpoint]
dir = "checkpoint"
every = 2
[[sources]]
name = "in"
kind = "queue"
batches_file = "batches.jsonl"
[[streams]]
name = "counts"
from = "in"
steps = [
  {{ op = "event_time", field = "seconds", unit = "s", delay = "5s" }},
  {{ op = "event_aggregate", keys = ["k"], window = "10s", aggregates = ["count"],
    output_mode = "update", late_rows = "late" }},
]
[[sinks]]
from = "late"
kind = "kafka"
brokers = "{broker}"
topic = "{output}"
format = "json"
"#,
            broker = broker(),
        ),
    )
    .unwrap();
    // Batch 3's first late row is acknowledged, then the run dies before the second.
    let run = Run::start_with_env(
        &manifest,
        &[],
        &[("SLUICE_FAULT_KAFKA_ABORT_AFTER_ACKS", "1")],
    );
    let (status, log) = run.finish();
    assert!(!status.success(), "the fault hook did not fire: {log:#?}");
    let values = || -> Vec<String> {
        read_all(&output, 1)
            .into_iter()
            .map(|record| record.value.unwrap_or_default())
            .collect()
    };
    assert_eq!(values(), [r#"{"k":"a","seconds":14}"#]);
    // The restart re-runs batch 3 from the log (the checkpoint is of batch 2), writes
    // the late row the first run did not, then runs batch 4; the queue then ends.
    let (status, log) = Run::start(&manifest, &[]).finish();
    assert!(status.success(), "{log:#?}");
    assert!(
        log.iter().any(|line| {
            common::run::message_of(line).contains("partly written")
                && line["fields"]["missing"].as_u64() == Some(1)
        }),
        "{log:#?}"
    );
    assert_eq!(
        values(),
        [
            r#"{"k":"a","seconds":14}"#,
            r#"{"k":"b","seconds":3}"#,
            r#"{"k":"c","seconds":1}"#
        ]
    );
}
