//! The Kafka sink. Exactly-once by default, without Kafka transactions (which not every
//! Kafka-compatible broker isolates):
//! - Sluice picks every record's partition itself ([`partitioner`](super::partitioner)),
//!   so a re-run batch puts each record where the first run did;
//! - every record carries headers: the job's instance id, its batch time, its sequence
//!   number in the batch and a digest of its key and value;
//! - after a batch is fully acknowledged, each output partition's end offset is written
//!   to the checkpoint directory (`sinks/<sink>.offsets`);
//! - the first batch a run writes that is not recorded there (a re-run after a crash, or
//!   the next new one) first fetches every output partition from the recorded end offsets
//!   until a fetch comes back empty (never trusting the broker's "latest" offset), and
//!   then writes only the records of the batch that are not there yet, in order, with the
//!   idempotent producer. A re-run record whose digest differs from the first run's is
//!   reported (a UDF that is not deterministic: the guarantee needs the same components
//!   and deterministic functions).
//!
//! `delivery = "at_least_once"` writes every batch whole, re-runs included.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use sluice_abi::Value;

use super::config::{Delivery, KafkaSinkConfig};
use super::decode::encode;
use super::partitioner::partition;
use crate::checkpoint::durable;
use crate::dataset::Dataset;
use crate::sinks::Sink;

/// The header names every record carries.
const INSTANCE: &str = "sluice-instance";
const BATCH: &str = "sluice-batch";
const SEQUENCE: &str = "sluice-seq";
const DIGEST: &str = "sluice-digest";

/// With this environment variable set to k, the process aborts right after the k-th
/// record of a batch is acknowledged: the crash tests' fault-injection hook. Records are
/// then sent one at a time, each after the one before is acknowledged, so that the abort
/// leaves exactly k records of the batch written.
pub const ABORT_AFTER_ACKS: &str = "SLUICE_FAULT_KAFKA_ABORT_AFTER_ACKS";

/// How long the recovery fetch must go without a record, every partition at its end,
/// before it takes what it read as all there is.
const QUIET: Duration = Duration::from_millis(1500);
/// How long the recovery fetch may take in all before the sink gives up (and fails,
/// rather than risk writing a record twice).
const READ_BACK_LIMIT: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A delivery report: the partition and offset a record got, or why it failed.
type Report = Result<(i32, i64), String>;

/// Delivery reports, each with the index of the record in its batch.
struct Acks(Mutex<mpsc::Sender<(usize, Report)>>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let report = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((error, _)) => Err(error.to_string()),
        };
        // The receiver goes away only with the sink.
        let _ = self.0.lock().expect("acks poisoned").send((*index, report));
    }
}

/// A Kafka sink of one job.
pub struct KafkaSink {
    name: String,
    config: KafkaSinkConfig,
    state: Mutex<Option<Open>>,
}

/// The sink once its first batch opened it.
struct Open {
    producer: ThreadedProducer<Acks>,
    acks: mpsc::Receiver<(usize, Report)>,
    partitions: i32,
    /// Exactly-once: the instance id records carry.
    instance: String,
    /// Exactly-once: the last batch fully written, and each partition's end after it.
    written: Written,
    /// Exactly-once: whether the next batch must first look at what is already there.
    recovering: bool,
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Written {
    batch_time_ms: Option<i64>,
    ends: BTreeMap<i32, i64>,
}

/// One record to write: its place in the batch, partition, key, value and digest.
struct Outgoing {
    sequence: u64,
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    digest: String,
}

impl KafkaSink {
    /// The sink named `name` for `config`; it connects at its first batch.
    pub fn new(name: &str, config: &KafkaSinkConfig) -> Self {
        Self {
            name: name.to_owned(),
            config: config.clone(),
            state: Mutex::new(None),
        }
    }

    fn offsets_path(&self) -> Option<PathBuf> {
        self.config
            .checkpoint
            .as_ref()
            .map(|dir| dir.join("sinks").join(format!("{}.offsets", self.name)))
    }

    fn client(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        for (key, value) in &self.config.properties {
            client.set(key, value);
        }
        client.set("bootstrap.servers", &self.config.brokers);
        client
    }

    fn open(&self) -> Result<Open> {
        super::check_brokers(
            &format!("sink `{}`", self.name),
            &self.client(),
            self.config.allowed_brokers.as_deref(),
            REQUEST_TIMEOUT,
        )?;
        let (sender, acks) = mpsc::channel();
        let producer: ThreadedProducer<Acks> = self
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .create_with_context(Acks(Mutex::new(sender)))
            .with_context(|| format!("sink `{}` cannot create a Kafka producer", self.name))?;
        let metadata = producer
            .client()
            .fetch_metadata(Some(&self.config.topic), REQUEST_TIMEOUT)
            .with_context(|| {
                format!("sink `{}` cannot reach {}", self.name, self.config.brokers)
            })?;
        super::check_advertised(
            &format!("sink `{}`", self.name),
            &metadata,
            self.config.allowed_brokers.as_deref(),
        )?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|topic| topic.name() == self.config.topic && topic.error().is_none())
            .map_or(0, |topic| topic.partitions().len() as i32);
        if partitions == 0 {
            bail!(
                "sink `{}`: topic `{}` does not exist on {}: create it first (with the partitions it should have)",
                self.name,
                self.config.topic,
                self.config.brokers
            );
        }
        let (instance, written) = match (&self.config.checkpoint, self.config.delivery) {
            (Some(dir), Delivery::ExactlyOnce) => {
                let instance =
                    crate::checkpoint::instance::read(&crate::checkpoint::instance::path(dir))?;
                let path = self.offsets_path().expect("checkpointed");
                let written = match std::fs::read(&path) {
                    Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                        format!("sink `{}`: {} is damaged", self.name, path.display())
                    })?,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        Written::default()
                    }
                    Err(error) => {
                        return Err(error)
                            .with_context(|| format!("cannot read {}", path.display()));
                    }
                };
                (instance.to_string(), written)
            }
            _ => (String::new(), Written::default()),
        };
        Ok(Open {
            producer,
            acks,
            partitions,
            instance,
            written,
            recovering: self.config.delivery == Delivery::ExactlyOnce,
        })
    }

    /// The records of a batch as they go out.
    fn outgoing(&self, data: &Dataset, partitions: i32) -> Result<Vec<Outgoing>> {
        let format = self.config.format;
        data.records()
            .enumerate()
            .map(|(sequence, record)| {
                crate::scheduler::slice::tick()?;
                let record = Value::decode(record)?;
                let (key, value) = match (self.config.pairs, record) {
                    (true, Value::Tuple(mut pair) | Value::List(mut pair)) if pair.len() == 2 => {
                        let value = pair.pop().expect("two");
                        (
                            encode(&pair.pop().expect("two"), format),
                            encode(&value, format),
                        )
                    }
                    (true, other) => bail!(
                        "sink `{}` writes [key, value] pairs, and got {}",
                        self.name,
                        other.to_display_text()
                    ),
                    (false, record) => (None, encode(&record, format)),
                };
                let sequence = sequence as u64;
                let mut hash = Sha256::new();
                for part in [&key, &value] {
                    hash.update((part.as_ref().map_or(0, Vec::len) as u64).to_le_bytes());
                    hash.update(part.as_deref().unwrap_or_default());
                }
                Ok(Outgoing {
                    sequence,
                    partition: partition(key.as_deref(), sequence, partitions),
                    digest: hash.finalize()[..8]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                    key,
                    value,
                })
            })
            .collect()
    }

    /// What batch `time_ms` of this instance already has in the topic, by sequence number
    /// (with its digest): every partition fetched from where the last written batch ended
    /// until a fetch of it has come back empty (librdkafka's partition end) after its last
    /// record, and no record came for [`QUIET`]. Both are needed: a slow start (a busy
    /// machine) delivers nothing for a while before the first fetch, and some brokers
    /// (Tansu 0.6) report a partition's end too early, before records that follow.
    fn present(&self, open: &Open, time_ms: i64) -> Result<HashMap<u64, String>> {
        let reader: BaseConsumer = self
            .client()
            .set("group.id", format!("sluice-sink-{}", self.name))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .create()
            .with_context(|| format!("sink `{}` cannot create a Kafka consumer", self.name))?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..open.partitions {
            let offset = open
                .written
                .ends
                .get(&partition)
                .map_or(Offset::Beginning, |end| Offset::Offset(*end));
            assignment.add_partition_offset(&self.config.topic, partition, offset)?;
        }
        reader.assign(&assignment)?;
        let batch = time_ms.to_string();
        let mut present = HashMap::new();
        let started = Instant::now();
        let mut quiet_since = Instant::now();
        let mut at_end = vec![false; open.partitions as usize];
        while quiet_since.elapsed() < QUIET || !at_end.iter().all(|&end| end) {
            if started.elapsed() > READ_BACK_LIMIT {
                bail!(
                    "sink `{}` could not read topic `{}` back to its end within {} s, so it cannot tell which records of the batch it wrote before the restart; nothing was written. Check the broker and run again",
                    self.name,
                    self.config.topic,
                    READ_BACK_LIMIT.as_secs()
                );
            }
            let message = match reader.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    if let Some(end) = at_end.get_mut(partition as usize) {
                        *end = true;
                    }
                    continue;
                }
                Some(message) => message.with_context(|| {
                    format!(
                        "sink `{}` cannot read back topic `{}`",
                        self.name, self.config.topic
                    )
                })?,
            };
            quiet_since = Instant::now();
            if let Some(end) = at_end.get_mut(message.partition() as usize) {
                *end = false;
            }
            let Some(headers) = message.headers() else {
                continue;
            };
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|header| header.key == name)
                    .and_then(|header| header.value)
                    .map(|value| String::from_utf8_lossy(value).into_owned())
            };
            if header(INSTANCE).as_deref() == Some(open.instance.as_str())
                && header(BATCH).as_deref() == Some(batch.as_str())
                && let Some(sequence) = header(SEQUENCE).and_then(|seq| seq.parse().ok())
            {
                present.insert(sequence, header(DIGEST).unwrap_or_default());
            }
        }
        Ok(present)
    }
}

impl Sink for KafkaSink {
    fn write(&self, time_ms: i64, data: &Dataset) -> Result<()> {
        let mut state = self.state.lock().expect("kafka sink poisoned");
        if state.is_none() {
            *state = Some(self.open()?);
        }
        let open = state.as_mut().expect("opened above");
        let exactly_once = self.config.delivery == Delivery::ExactlyOnce;
        if exactly_once
            && open
                .written
                .batch_time_ms
                .is_some_and(|written| written >= time_ms)
        {
            tracing::info!(
                sink = self.name,
                time_ms,
                "batch already written to Kafka; not written again"
            );
            return Ok(());
        }
        let mut outgoing = self.outgoing(data, open.partitions)?;
        if exactly_once && std::mem::take(&mut open.recovering) {
            let present = self.present(open, time_ms)?;
            let differing = outgoing
                .iter()
                .filter(|record| {
                    present
                        .get(&record.sequence)
                        .is_some_and(|digest| *digest != record.digest)
                })
                .count();
            if differing > 0 {
                tracing::warn!(
                    sink = self.name,
                    time_ms,
                    differing,
                    "re-run records differ from what the first run wrote (a UDF that is not deterministic?); the first run's stay"
                );
            }
            if !present.is_empty() {
                tracing::info!(
                    sink = self.name,
                    time_ms,
                    present = present.len(),
                    missing = outgoing.len().saturating_sub(present.len()),
                    "batch partly written before a restart: writing only what is missing"
                );
            }
            outgoing.retain(|record| !present.contains_key(&record.sequence));
        }
        // Waiting for the broker's acknowledgements holds no run slot.
        crate::scheduler::slice::paused(|| {
            send(&self.name, &self.config.topic, open, time_ms, &outgoing)
        })?;
        if let Some(path) = self.offsets_path().filter(|_| exactly_once) {
            open.written.batch_time_ms = Some(time_ms);
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(path.parent().expect("in sinks/"))?;
                let written = serde_json::to_vec(&open.written)?;
                durable::replace(&path, |file| file.write_all(&written))
            };
            write()
                .with_context(|| format!("sink `{}` cannot write {}", self.name, path.display()))?;
        }
        Ok(())
    }
}

/// Produces `outgoing` and waits until every record is acknowledged, noting each
/// partition's new end.
fn send(
    name: &str,
    topic: &str,
    open: &mut Open,
    time_ms: i64,
    outgoing: &[Outgoing],
) -> Result<()> {
    let abort_after: Option<usize> = std::env::var(ABORT_AFTER_ACKS)
        .ok()
        .and_then(|k| k.parse().ok());
    let batch = time_ms.to_string();
    let mut acknowledged = 0;
    for (index, record) in outgoing.iter().enumerate() {
        let sequence = record.sequence.to_string();
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: INSTANCE,
                value: Some(open.instance.as_bytes()),
            })
            .insert(Header {
                key: BATCH,
                value: Some(batch.as_bytes()),
            })
            .insert(Header {
                key: SEQUENCE,
                value: Some(sequence.as_bytes()),
            })
            .insert(Header {
                key: DIGEST,
                value: Some(record.digest.as_bytes()),
            });
        let mut message = BaseRecord::with_opaque_to(topic, Box::new(index))
            .partition(record.partition)
            .headers(headers);
        if let Some(key) = &record.key {
            message = message.key(key);
        }
        if let Some(value) = &record.value {
            message = message.payload(value);
        }
        loop {
            match open.producer.send(message) {
                Ok(()) if abort_after.is_some() => {
                    acknowledge(name, topic, open, time_ms, &mut acknowledged, abort_after)?;
                    break;
                }
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    bail!("sink `{name}` cannot write to topic `{topic}`: {error}")
                }
            }
        }
    }
    while acknowledged < outgoing.len() {
        acknowledge(name, topic, open, time_ms, &mut acknowledged, abort_after)?;
    }
    Ok(())
}

/// Waits for the next acknowledgement and notes its partition's new end; the fault hook
/// aborts after the `abort_after`-th.
fn acknowledge(
    name: &str,
    topic: &str,
    open: &mut Open,
    time_ms: i64,
    acknowledged: &mut usize,
    abort_after: Option<usize>,
) -> Result<()> {
    let (_, report) = open
        .acks
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| {
            anyhow::anyhow!("sink `{name}`: no acknowledgement from the broker for 120 s")
        })?;
    let (partition, offset) = report
        .map_err(|error| anyhow::anyhow!("sink `{name}`: a record to `{topic}` failed: {error}"))?;
    let end = open.written.ends.entry(partition).or_insert(0);
    *end = (*end).max(offset + 1);
    *acknowledged += 1;
    if abort_after == Some(*acknowledged) {
        eprintln!(
            "fault injection: aborting after {acknowledged} acknowledged records of batch {time_ms}"
        );
        std::process::abort();
    }
    Ok(())
}
