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

use anyhow::{Context, Result};
use sluice_abi::{Batch, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::manifest::{SourceConfig, SourceKind};

/// A source of records as the batcher sees it.
pub trait Receiver: Send + Sync {
    /// Takes every record received since the last cut.
    fn cut(&self) -> Batch;

    /// Whether no record is waiting and none will ever arrive again.
    fn is_drained(&self) -> bool;
}

/// Where a streaming receiver's task leaves records until the next cut.
#[derive(Default)]
pub struct Intake {
    buffer: Mutex<Batch>,
    finished: AtomicBool,
}

impl Intake {
    /// Appends records (already encoded), taking the lock once for all of them.
    pub fn append(&self, records: &Batch) {
        if !records.is_empty() {
            self.buffer
                .lock()
                .expect("intake poisoned")
                .extend_from(records);
        }
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
    tasks: Vec<JoinHandle<()>>,
}

impl Receivers {
    /// Starts a receiver for every source. Streaming receivers need a tokio runtime.
    pub fn start(sources: &[SourceConfig]) -> Result<Self> {
        let mut receivers: Vec<Arc<dyn Receiver>> = Vec::new();
        let mut tasks = Vec::new();
        for source in sources {
            let name = source.name.clone();
            let intake = Arc::new(Intake::default());
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
            receivers.push(intake);
            tasks.push(task);
        }
        Ok(Self { receivers, tasks })
    }

    /// Cuts every receiver: one batch of records per source.
    pub fn cut(&self) -> Vec<Batch> {
        self.receivers
            .iter()
            .map(|receiver| receiver.cut())
            .collect()
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

/// Encodes manifest values as records.
pub(crate) fn encode_values(values: &[Value]) -> Batch {
    let mut batch = Batch::new();
    values
        .iter()
        .for_each(|value| batch.push_with(|out| value.encode_into(out)));
    batch
}
