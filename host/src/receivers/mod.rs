//! Receivers: where records come from. Each streaming receiver is a tokio task that
//! appends records to its [`Intake`]; the batcher empties every intake once per interval.
//! Bounded receivers (queue, file, table) instead hand over one batch per cut.

mod directory;
mod file;
mod generator;
mod queue;
pub mod rate;
mod socket;
mod stdin;
mod table;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use sluice_abi::{Batch, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::beneath::JobFiles;
use crate::checkpoint::files::{SeenBySource, SeenFiles};
use crate::checkpoint::{Cut, OffsetRange, Wal};
use crate::connectors::kafka::KafkaSource;
use crate::failure::{Failing, FailureKind};
use crate::manifest::{SourceConfig, SourceKind};
use crate::tenancy::HeldBytes;

/// A source of records as the batcher sees it.
pub trait Receiver: Send + Sync {
    /// Takes every record received since the last cut; fails if the source cannot give
    /// them (a file that changed under a file source).
    fn cut(&self) -> Result<Batch>;

    /// Whether no record is waiting and none will ever arrive again.
    fn is_drained(&self) -> bool;

    /// For a source that can give the same records again by position (so that the
    /// write-ahead log need not hold them), its replay side.
    fn replayable(&self) -> Option<&dyn Replayable> {
        None
    }

    /// For a source that gives records again by exact offset ranges (Kafka), that side.
    fn ranged(&self) -> Option<&dyn Ranged> {
        None
    }
}

/// A source whose cuts are exact offset ranges (Kafka): the write-ahead log's cut records
/// them, so a re-run batch reads the same records again and the source resumes after
/// the last batch cut.
pub trait Ranged: Send + Sync {
    /// Takes what was fetched since the last cut, and the ranges it came from (one per
    /// partition with a known position, empty ones included, so that a restart knows
    /// where every partition goes on). Fails if a record could not be decoded.
    fn take(&self) -> Result<(Batch, Vec<OffsetRange>)>;

    /// Reads exactly the records of `ranges` again, in the order [`take`](Self::take)
    /// gave them; refuses if the broker no longer has them.
    fn records_in(&self, ranges: &[OffsetRange]) -> Result<Batch>;

    /// How many records the last [`take`](Self::take) passed over because they could not
    /// be decoded (`on_decode_error = "skip"`).
    fn skipped(&self) -> u64;

    /// Starts reading where `ranges` end (partitions not in them: at the starting offsets).
    fn resume_after(&self, ranges: &[OffsetRange]);

    /// The batch that took `ranges` is complete (as `batch` says): commit them to the
    /// consumer group, and tell the rate limit how fast the job went.
    fn completed(&self, ranges: &[OffsetRange], batch: &Completed);
}

/// How a completed batch went, for the sources' rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    /// Its batch time, in milliseconds since the epoch.
    pub time_ms: i64,
    /// How long computing it took.
    pub processing: std::time::Duration,
    /// How long it waited after its time before it started computing.
    pub scheduling_delay: std::time::Duration,
}

/// A source that can give any earlier cut's records again.
pub trait Replayable {
    /// The position the next cut takes its records from.
    fn position(&self) -> u64;

    /// The records the cut at `position` took (or takes); fails if they cannot be read
    /// again.
    fn records_at(&self, position: u64) -> Result<Batch>;

    /// Makes the next cut take its records from `position`.
    fn seek(&self, position: u64);
}

/// The write-ahead log a job's receivers share.
type SharedWal = Arc<Mutex<Wal>>;

/// The most record bytes a streaming receiver leaves waiting for a cut: past it, the
/// receiver pauses (a socket or stdin is not read, a directory's next piece waits) until
/// the next cut takes them, so memory stays bounded however slow the job is.
pub const MAX_WAITING_BYTES: usize = 64 << 20;

/// The records a job's streaming receivers hold for the next cut, counted as they are
/// delivered and cut (once per delivery or cut, never per record).
#[derive(Debug, Default)]
pub struct Buffered(AtomicU64);

impl Buffered {
    /// How many records they hold now.
    pub fn records(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a streaming receiver's task leaves records until the next cut; with a
/// write-ahead log, records are logged before they count as received.
#[derive(Default)]
pub struct Intake {
    buffer: Mutex<Batch>,
    finished: AtomicBool,
    log: Option<(SharedWal, usize)>,
    failure: Mutex<Option<anyhow::Error>>,
    /// Woken at every cut, for receivers waiting for room.
    room: tokio::sync::Notify,
    /// The most record bytes it holds before its receiver pauses.
    bound: usize,
    /// Counts what it buffers against the tenant's `max_host_bytes`.
    held: Option<Arc<HeldBytes>>,
    /// Counts the records it buffers, with the job's other intakes.
    buffered: Arc<Buffered>,
}

/// The host memory `records` hold in a buffer or a batch: their bytes and their offsets.
pub(crate) fn held_size(records: &Batch) -> u64 {
    (records.data().len() + records.len() * 4) as u64
}

impl Intake {
    fn logged(wal: Option<SharedWal>, source: usize, held: Option<Arc<HeldBytes>>) -> Self {
        Self {
            log: wal.map(|wal| (wal, source)),
            bound: MAX_WAITING_BYTES,
            held,
            ..Self::default()
        }
    }

    /// Appends records (already encoded), taking the lock once for all of them. With a
    /// write-ahead log, they are appended to the log first (the log's lock is held across
    /// both, so that a cut never separates the two); if the log cannot take them, they
    /// are not received and the job fails at its next cut.
    pub async fn append(self: &Arc<Self>, records: Batch) {
        if !records.is_empty() {
            self.deliver_off_async(records, |wal, source, records| wal.records(source, records))
                .await;
        }
    }

    /// Appends records a directory source read with what it read them from (logged in
    /// one frame, even without records: a listing); false if the log could not take them.
    pub async fn append_files(self: &Arc<Self>, files: SeenFiles, records: Batch) -> bool {
        self.deliver_off_async(records, move |wal, source, records| {
            wal.files(source, &files, records)
        })
        .await
    }

    /// [`Intake::deliver`], on a blocking thread if there is a log: logging writes (and
    /// may sync) the log, and waits for its lock, which a cut holds while it syncs the
    /// log; on the async threads, that would stall every other task of the runtime.
    async fn deliver_off_async(
        self: &Arc<Self>,
        records: Batch,
        log: impl FnOnce(&mut Wal, usize, &Batch) -> Result<()> + Send + 'static,
    ) -> bool {
        if self.log.is_none() {
            return self.deliver(&records, |_, _| Ok(()));
        }
        let intake = self.clone();
        let delivered = tokio::task::spawn_blocking(move || {
            intake.deliver(&records, |wal, source| log(wal, source, &records))
        })
        .await;
        delivered.unwrap_or_else(|failed| {
            self.fail_with(anyhow::Error::new(Failing::new(
                FailureKind::Checkpoint,
                format!(
                    "records could not be written to the write-ahead log: logging them failed: \
                     {failed}"
                ),
            )));
            false
        })
    }

    /// Keeps `failure` for the next cut, which fails with it (the first failure wins).
    fn fail(&self, failure: String) {
        self.fail_with(anyhow::Error::new(Failing::new(
            FailureKind::Source,
            failure,
        )));
    }

    /// [`Intake::fail`] with an error, which keeps what kind of failure it is.
    fn fail_with(&self, failure: anyhow::Error) {
        tracing::error!("{failure:#}");
        self.failure
            .lock()
            .expect("intake poisoned")
            .get_or_insert(failure);
    }

    /// Charges `records` to the tenant's `max_host_bytes`; false, keeping the quota's
    /// error for the next cut, if they do not fit.
    fn charge(&self, records: &Batch) -> bool {
        let Some(held) = &self.held else { return true };
        match held.charge(held_size(records), "receiver buffers") {
            Ok(()) => true,
            Err(error) => {
                self.fail_with(error.context(format!(
                    "a receiver cannot buffer {} more records for the next batch",
                    records.len()
                )));
                false
            }
        }
    }

    /// Charges `records` to the tenant's quota, logs them with `log` (if there is a log),
    /// then buffers them, holding the log's lock across both; false if the quota or the
    /// log refused them (the failure is kept for the next cut).
    fn deliver(&self, records: &Batch, log: impl FnOnce(&mut Wal, usize) -> Result<()>) -> bool {
        if !self.charge(records) {
            return false;
        }
        let mut wal = self
            .log
            .as_ref()
            .map(|(wal, source)| (wal.lock().expect("log poisoned"), *source));
        if let Some((wal, source)) = &mut wal
            && let Err(error) = log(wal, *source)
        {
            if let Some(held) = &self.held {
                held.release(held_size(records));
            }
            // The log may refuse them for a quota (its retained bytes): the failure is then
            // the quota's, not the log's.
            let kind = crate::failure::kind_of(&error).unwrap_or(FailureKind::Checkpoint);
            self.fail_with(error.context(Failing::new(
                kind,
                "records could not be written to the write-ahead log",
            )));
            return false;
        }
        self.keep(records);
        drop(wal);
        true
    }

    /// Waits until the records waiting for the next cut are below the intake's bound,
    /// warning once if the receiver has to pause.
    pub async fn wait_for_room(&self, source: &str) {
        let mut warned = false;
        loop {
            let cut = self.room.notified();
            let waiting = self.buffer.lock().expect("intake poisoned").data().len();
            if waiting < self.bound {
                if warned {
                    tracing::info!(source, "resumed reading: the batch took what was waiting");
                }
                return;
            }
            if !warned {
                tracing::warn!(
                    source,
                    waiting_bytes = waiting,
                    "paused reading: {waiting} bytes wait for the next batch (the bound is {}); the job is slower than its input",
                    self.bound
                );
                warned = true;
            }
            cut.await;
        }
    }

    /// Puts back records the log already holds (received before a restart), without
    /// logging them again.
    fn restore(&self, records: &Batch) {
        if !self.charge(records) {
            return;
        }
        self.keep(records);
    }

    /// Buffers `records` for the next cut.
    fn keep(&self, records: &Batch) {
        let mut buffer = self.buffer.lock().expect("intake poisoned");
        buffer.extend_from(records);
        // Counted under the buffer's lock, so that a cut never takes them uncounted.
        self.buffered
            .0
            .fetch_add(records.len() as u64, Ordering::Relaxed);
    }

    /// How many records wait for the next cut.
    pub fn waiting(&self) -> usize {
        self.buffer.lock().expect("intake poisoned").len()
    }

    /// Marks the receiver as finished: nothing more will be appended.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }
}

impl Receiver for Intake {
    fn cut(&self) -> Result<Batch> {
        let records = {
            let mut buffer = self.buffer.lock().expect("intake poisoned");
            self.buffered
                .0
                .fetch_sub(buffer.len() as u64, Ordering::Relaxed);
            std::mem::take(&mut *buffer)
        };
        // The batch counts them from here on.
        if let Some(held) = &self.held {
            held.release(held_size(&records));
        }
        self.room.notify_waiters();
        Ok(records)
    }

    fn is_drained(&self) -> bool {
        self.finished.load(Ordering::Acquire)
            && self.buffer.lock().expect("intake poisoned").is_empty()
    }
}

/// Appends every line `input` sends to `intake` until it ends, handing over what has
/// arrived whenever the read buffer runs dry: one lock per read, not one per line. A line
/// that is not UTF-8 is kept with U+FFFD in place of the bad bytes and reported, never
/// dropped.
pub(crate) async fn read_lines(
    source: &str,
    input: impl AsyncRead + Unpin,
    intake: &Arc<Intake>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut pending = Batch::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        if reader.buffer().is_empty() {
            intake.wait_for_room(source).await;
        }
        if reader.read_until(b'\n', &mut line).await? == 0 {
            intake.append(pending).await;
            return Ok(());
        }
        line_number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let text = String::from_utf8_lossy(text);
        if let std::borrow::Cow::Owned(_) = text {
            tracing::warn!(
                source,
                line_number,
                "line is not valid UTF-8; kept with U+FFFD in place of the bad bytes"
            );
        }
        push_line(&mut pending, &text);
        if reader.buffer().is_empty() {
            intake.append(std::mem::take(&mut pending)).await;
        }
    }
}

/// Appends `line` to `batch` as a string record.
pub(crate) fn push_line(batch: &mut Batch, line: &str) {
    batch.push(line).expect("a string always encodes");
}

/// The lines of `bytes` as string records, split as [`str::lines`] splits them (at `\n` or
/// `\r\n`; a last line without its line end included). Bytes that are not UTF-8 become
/// U+FFFD, as [`String::from_utf8_lossy`] makes them.
pub(crate) fn lines_of(bytes: &[u8]) -> Batch {
    // One check of the whole block is word-at-a-time; the lossy conversion walks byte by
    // byte, so it is kept for a block that needs it.
    let Ok(text) = std::str::from_utf8(bytes) else {
        let mut batch = Batch::new();
        String::from_utf8_lossy(bytes)
            .lines()
            .for_each(|line| push_line(&mut batch, line));
        return batch;
    };
    // Counting the lines first sizes the buffers once, so a batch of a large block is not
    // copied as it grows: a line of up to 250 bytes is encoded as its bytes with a tag and
    // a one-byte length in place of its line end (a longer one takes two bytes more, and
    // the batch grows for it).
    let records = memchr::memchr_iter(b'\n', bytes).count() + 1;
    let mut batch = Batch::with_capacity(records, bytes.len() + 2 * records);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes) {
        let line = &text[start..end];
        push_line(&mut batch, line.strip_suffix('\r').unwrap_or(line));
        start = end + 1;
    }
    if start < text.len() {
        push_line(&mut batch, &text[start..]);
    }
    batch
}

/// The running receivers of one job, in source order; their tasks stop when this is dropped.
pub struct Receivers {
    receivers: Vec<Arc<dyn Receiver>>,
    intakes: Vec<Option<Arc<Intake>>>,
    tasks: Vec<JoinHandle<()>>,
    wal: Option<SharedWal>,
    buffered: Arc<Buffered>,
}

impl Receivers {
    /// Starts a receiver for every source. Streaming receivers need a tokio runtime.
    pub fn start(sources: &[SourceConfig]) -> Result<Self> {
        Self::start_logged(sources, None)
    }

    /// Starts a receiver for every source; records of sources that cannot replay them go
    /// to `wal` before they count as received.
    pub fn start_logged(sources: &[SourceConfig], wal: Option<SharedWal>) -> Result<Self> {
        Self::start_recovered(
            sources,
            wal,
            &SeenBySource::new(),
            None,
            &JobFiles::Anywhere,
        )
    }

    /// Starts a receiver for every source as [`start_logged`](Self::start_logged) does;
    /// directory sources go on from the files `files` (from recovery) says they read. With
    /// `held` (the job's count for them), what streaming receivers buffer until a cut is
    /// charged to the tenant's `max_host_bytes`, and going over it fails the next cut.
    /// File, table and directory sources open their files through `opened`.
    pub fn start_recovered(
        sources: &[SourceConfig],
        wal: Option<SharedWal>,
        files: &SeenBySource,
        held: Option<Arc<HeldBytes>>,
        opened: &JobFiles,
    ) -> Result<Self> {
        let mut receivers: Vec<Arc<dyn Receiver>> = Vec::new();
        let mut intakes = Vec::new();
        let mut tasks = Vec::new();
        let buffered = Arc::new(Buffered::default());
        for (index, source) in sources.iter().enumerate() {
            let name = source.name.clone();
            let intake = Arc::new(Intake {
                buffered: buffered.clone(),
                ..Intake::logged(wal.clone(), index, held.clone())
            });
            intakes.push(None);
            let task = match &source.kind {
                SourceKind::Queue { batches } => {
                    receivers.push(Arc::new(queue::Queue::from_values(batches)));
                    continue;
                }
                SourceKind::File {
                    path,
                    lines_per_batch,
                } => {
                    let source = opened
                        .open(path)
                        .and_then(|file| file::FileSource::scan(path, file, *lines_per_batch))
                        .with_context(|| {
                            Failing::new(
                                FailureKind::Source,
                                format!("source `{name}` cannot read {}", path.display()),
                            )
                        })?;
                    receivers.push(Arc::new(source));
                    continue;
                }
                SourceKind::Table { path, format } => {
                    receivers.push(Arc::new(
                        table::Table::load(path, *format, opened).with_context(|| {
                            Failing::new(
                                FailureKind::Source,
                                format!("source `{name}` cannot start"),
                            )
                        })?,
                    ));
                    continue;
                }
                SourceKind::Socket { host, port } => {
                    tokio::spawn(socket::receive(name, host.clone(), *port, intake.clone()))
                }
                SourceKind::Directory {
                    path,
                    include_existing,
                    max_file_age,
                } => tokio::spawn(directory::receive(
                    directory::Watch {
                        source: name,
                        dir: path.clone(),
                        files: opened.clone(),
                        include_existing: *include_existing,
                        max_file_age: *max_file_age,
                    },
                    files.get(&(index as u32)).cloned().unwrap_or_default(),
                    intake.clone(),
                )),
                SourceKind::Generator { rate, limit } => {
                    tokio::spawn(generator::receive(*rate, *limit, intake.clone()))
                }
                SourceKind::Stdin => tokio::spawn(stdin::receive(name, intake.clone())),
                SourceKind::Kafka(config) => {
                    // Without a write-ahead log nothing says where to resume but the group.
                    let kafka =
                        KafkaSource::new(&name, config, wal.is_none()).with_context(|| {
                            Failing::new(
                                FailureKind::Source,
                                format!("source `{name}` cannot start"),
                            )
                        })?;
                    receivers.push(Arc::new(kafka));
                    continue;
                }
            };
            receivers.push(intake.clone());
            intakes[index] = Some(intake);
            tasks.push(task);
        }
        Ok(Self {
            receivers,
            intakes,
            tasks,
            wal,
            buffered,
        })
    }

    /// The count of the records its streaming receivers hold for the next cut.
    pub fn buffered(&self) -> Arc<Buffered> {
        self.buffered.clone()
    }

    /// Cuts every receiver for batch `number` of time `time_ms` and logs the cut (with
    /// the replayable sources' positions) in the write-ahead log, if there is one. Fails
    /// if the log could not take a receiver's records since the last cut.
    pub fn cut_batch(&self, number: u64, time_ms: i64) -> Result<(Cut, Vec<Batch>)> {
        let mut wal = self
            .wal
            .as_ref()
            .map(|wal| wal.lock().expect("log poisoned"));
        for intake in self.intakes.iter().flatten() {
            if let Some(failure) = intake.failure.lock().expect("intake poisoned").take() {
                return Err(failure);
            }
        }
        let positions = self
            .receivers
            .iter()
            .map(|receiver| receiver.replayable().map(Replayable::position))
            .collect();
        let mut ranges = Vec::with_capacity(self.receivers.len());
        let mut inputs = Vec::with_capacity(self.receivers.len());
        for receiver in &self.receivers {
            let (batch, taken) = match receiver.ranged() {
                Some(ranged) => ranged.take().context(Failing::new(
                    FailureKind::Source,
                    "a source could not give its records",
                ))?,
                None => (
                    receiver.cut().context(Failing::new(
                        FailureKind::Source,
                        "a source could not give its records",
                    ))?,
                    Vec::new(),
                ),
            };
            inputs.push(batch);
            ranges.push(taken);
        }
        let cut = Cut {
            number,
            time_ms,
            positions,
            ranges,
        };
        if let Some(wal) = &mut wal {
            wal.cut(cut.clone())?;
        }
        Ok((cut, inputs))
    }

    /// The inputs of a logged batch: replayable sources' records again from their
    /// positions or offset ranges, the others' from the log. Fails if a source cannot
    /// give its records again (a broker that deleted them).
    pub fn replay(&self, cut: &Cut, logged: Vec<Batch>) -> Result<Vec<Batch>> {
        self.receivers
            .iter()
            .enumerate()
            .zip(logged)
            .map(|((index, receiver), logged)| {
                if let Some(ranged) = receiver.ranged() {
                    let ranges = cut.ranges.get(index).map_or(&[][..], Vec::as_slice);
                    return ranged.records_in(ranges).with_context(|| {
                        format!("cannot re-run batch {} from its offsets", cut.number)
                    });
                }
                match (
                    receiver.replayable(),
                    cut.positions.get(index).copied().flatten(),
                ) {
                    (Some(replayable), Some(position)) => replayable
                        .records_at(position)
                        .with_context(|| format!("cannot re-run batch {}", cut.number)),
                    _ => Ok(logged),
                }
            })
            .collect()
    }

    /// What tells the sources that a batch is complete (Kafka commits its offsets), for
    /// the computing side while the receivers are with the cutter.
    pub fn completion(&self) -> Completion {
        Completion(
            self.receivers
                .iter()
                .enumerate()
                .filter(|(_, receiver)| receiver.ranged().is_some())
                .map(|(index, receiver)| (index, receiver.clone()))
                .collect(),
        )
    }

    /// Continues after a restart: replayable sources from `positions`, sources cut by
    /// offset ranges after `ranges`, and records logged after the last cut back in their
    /// intakes.
    pub fn resume(
        &self,
        positions: &[Option<u64>],
        ranges: &[Vec<OffsetRange>],
        pending: Vec<Batch>,
    ) {
        for (receiver, position) in self.receivers.iter().zip(positions) {
            if let (Some(replayable), Some(position)) = (receiver.replayable(), position) {
                replayable.seek(*position);
            }
        }
        for (index, receiver) in self.receivers.iter().enumerate() {
            if let Some(ranged) = receiver.ranged() {
                ranged.resume_after(ranges.get(index).map_or(&[][..], Vec::as_slice));
            }
        }
        for (intake, records) in self.intakes.iter().zip(pending) {
            if let Some(intake) = intake {
                intake.restore(&records);
            }
        }
    }

    /// How many records the sources passed over in the last cut because they could not
    /// be decoded.
    pub fn skipped(&self) -> u64 {
        self.receivers
            .iter()
            .filter_map(|receiver| receiver.ranged())
            .map(Ranged::skipped)
            .sum()
    }

    /// Whether every receiver is drained (so the job can end).
    pub fn all_drained(&self) -> bool {
        self.receivers.iter().all(|receiver| receiver.is_drained())
    }
}

/// Tells the sources cut by offset ranges that a batch is complete.
#[derive(Clone)]
pub struct Completion(Vec<(usize, Arc<dyn Receiver>)>);

impl Completion {
    /// Batch `cut` is complete, as `batch` says.
    pub fn completed(&self, cut: &Cut, batch: &Completed) {
        for (index, receiver) in &self.0 {
            if let (Some(ranged), Some(ranges)) = (receiver.ranged(), cut.ranges.get(*index)) {
                ranged.completed(ranges, batch);
            }
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// The records of a table file (JSON lines or CSV), as a table source reads them.
pub fn load_table(
    path: &std::path::Path,
    format: crate::manifest::TableFormat,
    files: &JobFiles,
) -> Result<Batch> {
    Ok(table::Table::load(path, format, files)?.into_records())
}

pub use queue::read_batches_file;

/// Encodes manifest values as records.
pub(crate) fn encode_values(values: &[Value]) -> Batch {
    let mut batch = Batch::new();
    values
        .iter()
        .for_each(|value| batch.push_with(|out| value.encode_into(out)));
    batch
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::tenancy::{HostConfig, Quotas, Tenancy, TenantConfig};

    /// What a receiver buffers counts against its tenant's `max_host_bytes` until a cut
    /// takes it; records that would go over are refused, and the quota's error waits for
    /// the next cut.
    #[tokio::test]
    async fn buffered_records_count_against_the_tenants_host_bytes_until_the_cut() {
        let tenancy = Tenancy::new(&HostConfig {
            max_instances: 10,
            tenants: vec![TenantConfig {
                quotas: Quotas {
                    max_host_bytes: Some(100),
                    ..Quotas::default()
                },
                ..TenantConfig::named("t")
            }],
        })
        .unwrap();
        let account = tenancy.account("t").unwrap();
        let held = Arc::new(HeldBytes::new(account.clone(), "j"));
        let intake = Arc::new(Intake::logged(None, 0, Some(held)));
        let mut lines = Batch::new();
        (0..4).for_each(|_| push_line(&mut lines, "0123456789"));
        let size = held_size(&lines);
        assert!(
            size > 50 && size <= 100,
            "one batch fits, two do not: {size}"
        );

        intake.append(lines.clone()).await;
        assert_eq!(account.host_bytes(), size);
        assert!(intake.failure.lock().unwrap().is_none());
        intake.append(lines).await;
        assert_eq!(
            intake.waiting(),
            4,
            "the records over the quota are refused"
        );
        assert_eq!(account.host_bytes(), size);
        let failure = intake.failure.lock().unwrap().take().unwrap();
        assert_eq!(
            crate::failure::kind_of(&failure),
            Some(crate::failure::FailureKind::Quota)
        );
        let failure = format!("{failure:#}");
        assert!(
            failure.contains("`max_host_bytes` is 100 bytes")
                && failure.contains("this job's receiver buffers"),
            "{failure}"
        );
        assert_eq!(intake.cut().unwrap().len(), 4);
        assert_eq!(
            account.host_bytes(),
            0,
            "the cut hands the bytes to the batch"
        );
    }

    /// A reader faster than the job: its intake never holds much more than its bound (one
    /// read buffer more), the writer is held back, and every line arrives, once, in order.
    #[tokio::test]
    async fn a_receiver_pauses_at_its_bound_and_goes_on_after_each_cut() {
        const LINES: usize = 100_000;
        let intake = Arc::new(Intake {
            bound: 1024,
            ..Intake::default()
        });
        let (mut writer, reader) = tokio::io::duplex(4096);
        let reading = {
            let intake = intake.clone();
            tokio::spawn(async move { read_lines("test", reader, &intake).await })
        };
        let writing = tokio::spawn(async move {
            for line in 0..LINES {
                writer
                    .write_all(format!("{line:09}\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        let mut received = Vec::new();
        let mut cuts = 0;
        while !reading.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let waiting = intake.buffer.lock().unwrap().data().len();
            // The bound, plus what one read of the 8 KiB read buffer can bring.
            assert!(waiting < 1024 + 8192 + 16, "{waiting} bytes wait");
            received.extend(intake.cut().unwrap().iter().map(<[u8]>::to_vec));
            cuts += 1;
        }
        writing.await.unwrap();
        reading.await.unwrap().unwrap();
        received.extend(intake.cut().unwrap().iter().map(<[u8]>::to_vec));
        assert!(cuts > 10, "the writer was held back over {cuts} cuts");
        let mut expected = Batch::new();
        for line in 0..LINES {
            push_line(&mut expected, &format!("{line:09}"));
        }
        let expected: Vec<Vec<u8>> = expected.iter().map(<[u8]>::to_vec).collect();
        assert!(received == expected, "every line once, in order");
    }

    fn strings(batch: &Batch) -> Vec<String> {
        batch
            .iter()
            .map(|record| match Value::decode(record).unwrap() {
                Value::String(line) => line,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn lines_split_as_str_lines_split_them() {
        let cases: [(&[u8], &[&str]); 9] = [
            (b"", &[]),
            (b"\n", &[""]),
            (b"a\n\nb\n", &["a", "", "b"]),
            (b"a\r\nb\r\n", &["a", "b"]),
            (b"a\r\r\n\r\n", &["a\r", ""]),
            (b"a\rb\nc", &["a\rb", "c"]),
            (b"last without end", &["last without end"]),
            (b"a\nlast\r", &["a", "last\r"]),
            (
                "\u{e9}t\u{e9}\r\n\u{1f600}".as_bytes(),
                &["\u{e9}t\u{e9}", "\u{1f600}"],
            ),
        ];
        for (bytes, expected) in cases {
            let split = strings(&lines_of(bytes));
            assert_eq!(split, expected, "{bytes:?}");
            let reference: Vec<&str> = std::str::from_utf8(bytes).unwrap().lines().collect();
            assert_eq!(split, reference, "{bytes:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters_in_their_line_only() {
        let bytes = b"ok\r\nbad \xff\xe2\x82 here\r\n\xf0\x9f\n\nlast \xe9\r";
        let expected = [
            "ok",
            "bad \u{fffd}\u{fffd} here",
            "\u{fffd}",
            "",
            "last \u{fffd}\r",
        ];
        assert_eq!(strings(&lines_of(bytes)), expected);
        let reference: Vec<String> = String::from_utf8_lossy(bytes)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(strings(&lines_of(bytes)), reference);
    }
}
