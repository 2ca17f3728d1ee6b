//! Receivers: where records come from. Each streaming receiver is a tokio task that
//! appends records to its [`Intake`]; the batcher empties every intake once per interval.
//! Bounded receivers (queue, file) instead hand over one prepared batch per cut.

mod directory;
mod generator;
mod queue;
mod socket;
mod stdin;
mod table;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use sluice_abi::{Batch, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::checkpoint::{Cut, Wal};
use crate::manifest::{SourceConfig, SourceKind};

/// A source of records as the batcher sees it.
pub trait Receiver: Send + Sync {
    /// Takes every record received since the last cut.
    fn cut(&self) -> Batch;

    /// Whether no record is waiting and none will ever arrive again.
    fn is_drained(&self) -> bool;

    /// For a source that can give the same records again by position (so that the
    /// write-ahead log need not hold them), its replay side.
    fn replayable(&self) -> Option<&dyn Replayable> {
        None
    }
}

/// A source that can give any earlier cut's records again.
pub trait Replayable {
    /// The position the next cut takes its records from.
    fn position(&self) -> u64;

    /// The records the cut at `position` took (or takes).
    fn records_at(&self, position: u64) -> Batch;

    /// Makes the next cut take its records from `position`.
    fn seek(&self, position: u64);
}

/// The write-ahead log a job's receivers share.
type SharedWal = Arc<Mutex<Wal>>;

/// Where a streaming receiver's task leaves records until the next cut; with a
/// write-ahead log, records are logged before they count as received.
#[derive(Default)]
pub struct Intake {
    buffer: Mutex<Batch>,
    finished: AtomicBool,
    log: Option<(SharedWal, usize)>,
    failure: Mutex<Option<String>>,
}

impl Intake {
    fn logged(wal: Option<SharedWal>, source: usize) -> Self {
        Self {
            log: wal.map(|wal| (wal, source)),
            ..Self::default()
        }
    }

    /// Appends records (already encoded), taking the lock once for all of them. With a
    /// write-ahead log, they are appended to the log first (the log's lock is held across
    /// both, so that a cut never separates the two); if the log cannot take them, they
    /// are not received and the job fails at its next cut.
    pub fn append(&self, records: &Batch) {
        if records.is_empty() {
            return;
        }
        let mut log = self
            .log
            .as_ref()
            .map(|(wal, source)| (wal.lock().expect("log poisoned"), *source));
        if let Some((wal, source)) = &mut log
            && let Err(error) = wal.records(*source, records)
        {
            tracing::error!("{error:#}");
            self.failure
                .lock()
                .expect("intake poisoned")
                .get_or_insert(format!("{error:#}"));
            return;
        }
        self.buffer
            .lock()
            .expect("intake poisoned")
            .extend_from(records);
        drop(log);
    }

    /// Puts back records the log already holds (received before a restart), without
    /// logging them again.
    fn restore(&self, records: &Batch) {
        self.buffer
            .lock()
            .expect("intake poisoned")
            .extend_from(records);
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
    fn cut(&self) -> Batch {
        std::mem::take(&mut *self.buffer.lock().expect("intake poisoned"))
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
    intake: &Intake,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    let mut pending = Batch::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            intake.append(&pending);
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
            intake.append(&std::mem::take(&mut pending));
        }
    }
}

/// Appends `line` to `batch` as a string record.
pub(crate) fn push_line(batch: &mut Batch, line: &str) {
    batch.push(line).expect("a string always encodes");
}

/// The running receivers of one job, in source order; their tasks stop when this is dropped.
pub struct Receivers {
    receivers: Vec<Arc<dyn Receiver>>,
    intakes: Vec<Option<Arc<Intake>>>,
    tasks: Vec<JoinHandle<()>>,
    wal: Option<SharedWal>,
}

impl Receivers {
    /// Starts a receiver for every source. Streaming receivers need a tokio runtime.
    pub fn start(sources: &[SourceConfig]) -> Result<Self> {
        Self::start_logged(sources, None)
    }

    /// Starts a receiver for every source; records of sources that cannot replay them go
    /// to `wal` before they count as received.
    pub fn start_logged(sources: &[SourceConfig], wal: Option<SharedWal>) -> Result<Self> {
        let mut receivers: Vec<Arc<dyn Receiver>> = Vec::new();
        let mut intakes = Vec::new();
        let mut tasks = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            let name = source.name.clone();
            let intake = Arc::new(Intake::logged(wal.clone(), index));
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
                    let text = std::fs::read(path).with_context(|| {
                        format!("source `{name}` cannot read {}", path.display())
                    })?;
                    receivers.push(Arc::new(queue::Queue::from_text(
                        &String::from_utf8_lossy(&text),
                        *lines_per_batch,
                    )));
                    continue;
                }
                SourceKind::Table { path, format } => {
                    receivers.push(Arc::new(
                        table::Table::load(path, *format)
                            .with_context(|| format!("source `{name}` cannot start"))?,
                    ));
                    continue;
                }
                SourceKind::Socket { host, port } => {
                    tokio::spawn(socket::receive(name, host.clone(), *port, intake.clone()))
                }
                SourceKind::Directory { path } => {
                    tokio::spawn(directory::receive(name, path.clone(), intake.clone()))
                }
                SourceKind::Generator { rate, limit } => {
                    tokio::spawn(generator::receive(*rate, *limit, intake.clone()))
                }
                SourceKind::Stdin => tokio::spawn(stdin::receive(name, intake.clone())),
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
        })
    }

    /// Cuts every receiver: one batch of records per source.
    pub fn cut(&self) -> Vec<Batch> {
        self.receivers
            .iter()
            .map(|receiver| receiver.cut())
            .collect()
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
                bail!("records could not be written to the write-ahead log: {failure}");
            }
        }
        let cut = Cut {
            number,
            time_ms,
            positions: self
                .receivers
                .iter()
                .map(|receiver| receiver.replayable().map(Replayable::position))
                .collect(),
        };
        let inputs = self.cut();
        if let Some(wal) = &mut wal {
            wal.cut(cut.clone())?;
        }
        Ok((cut, inputs))
    }

    /// The inputs of a logged batch: replayable sources' records again from their
    /// positions, the others' from the log.
    pub fn replay(&self, cut: &Cut, logged: Vec<Batch>) -> Vec<Batch> {
        self.receivers
            .iter()
            .zip(cut.positions.iter().chain(std::iter::repeat(&None)))
            .zip(logged)
            .map(
                |((receiver, position), logged)| match (receiver.replayable(), position) {
                    (Some(replayable), Some(position)) => replayable.records_at(*position),
                    _ => logged,
                },
            )
            .collect()
    }

    /// Continues after a restart: replayable sources from `positions`, and records logged
    /// after the last cut back in their intakes.
    pub fn resume(&self, positions: &[Option<u64>], pending: Vec<Batch>) {
        for (receiver, position) in self.receivers.iter().zip(positions) {
            if let (Some(replayable), Some(position)) = (receiver.replayable(), position) {
                replayable.seek(*position);
            }
        }
        for (intake, records) in self.intakes.iter().zip(pending) {
            if let Some(intake) = intake {
                intake.restore(&records);
            }
        }
    }

    /// Whether every receiver is drained (so the job can end).
    pub fn all_drained(&self) -> bool {
        self.receivers.iter().all(|receiver| receiver.is_drained())
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// The records of a table file (JSON lines or CSV), as a table source reads them.
pub fn load_table(path: &std::path::Path, format: crate::manifest::TableFormat) -> Result<Batch> {
    Ok(table::Table::load(path, format)?.into_records())
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
