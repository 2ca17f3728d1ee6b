//! The write-ahead log: what the receivers bring, written before it counts as received,
//! and where each batch was cut, so that a restart re-runs the batches the last state
//! checkpoint does not cover, with the same records.
//!
//! One segment per batch, `wal/<batch number>.log`: the records of that batch as they
//! arrive, then its cut. A state checkpoint makes the segments it covers unnecessary.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bincode::{Decode, Encode};
use sluice_abi::Batch;

use super::codec::{self, SavedBatch};
use super::frame;
use crate::manifest::FsyncPolicy;

/// One record of the log.
#[derive(Debug, Encode, Decode)]
enum Entry {
    /// Records a non-replayable source brought.
    Records { source: u32, records: SavedBatch },
    /// The end of a batch.
    Cut(Cut),
}

/// Where a batch was cut.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Cut {
    /// The batch number (1 for the job's first batch).
    pub number: u64,
    /// The batch time, in milliseconds.
    pub time_ms: i64,
    /// Per source: for a replayable one, the position of the records it gave this batch
    /// (they are not in the log); `None` for the others (their records are).
    pub positions: Vec<Option<u64>>,
}

/// The log's writing end.
pub struct Wal {
    dir: PathBuf,
    fsync: FsyncPolicy,
    number: u64,
    segment: BufWriter<File>,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.log"))
}

/// The segments in `dir`, by batch number.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    super::numbered_files(dir, ".log")
}

fn open_segment(dir: &Path, number: u64) -> Result<BufWriter<File>> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open write-ahead log segment {}", path.display()))?;
    Ok(BufWriter::new(file))
}

impl Wal {
    /// Appends to the segment of batch `number` in `dir` (created if missing).
    pub fn open(dir: &Path, fsync: FsyncPolicy, number: u64) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            fsync,
            number,
            segment: open_segment(dir, number)?,
        })
    }

    fn append(&mut self, entry: &Entry) -> Result<()> {
        frame::write(&mut self.segment, &codec::encode(entry))
            .and_then(|()| self.segment.flush())
            .with_context(|| {
                format!(
                    "cannot append to the write-ahead log in {} (is the disk full or the directory read-only?)",
                    self.dir.display()
                )
            })
    }

    fn sync(&mut self) -> Result<()> {
        self.segment.get_ref().sync_data().with_context(|| {
            format!(
                "cannot sync the write-ahead log in {} (is the disk full or failing?)",
                self.dir.display()
            )
        })
    }

    /// Logs records of source `source` (before they count as received).
    pub fn records(&mut self, source: usize, records: &Batch) -> Result<()> {
        self.append(&Entry::Records {
            source: source as u32,
            records: SavedBatch::from(records),
        })?;
        if self.fsync == FsyncPolicy::Record {
            self.sync()?;
        }
        Ok(())
    }

    /// Logs the cut of the current batch, makes the segment durable (unless the policy is
    /// never to), and starts the next batch's segment.
    pub fn cut(&mut self, cut: Cut) -> Result<()> {
        debug_assert_eq!(cut.number, self.number);
        self.append(&Entry::Cut(cut))?;
        if self.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        self.number += 1;
        self.segment = open_segment(&self.dir, self.number)?;
        Ok(())
    }

    /// Deletes the segments of batches up to `number`: a checkpoint covers them.
    pub fn forget_up_to(&self, number: u64) -> Result<()> {
        for (segment, path) in segments(&self.dir)? {
            if segment <= number {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot delete {}", path.display()))?;
            }
        }
        Ok(())
    }
}

/// What the log holds after a given batch.
#[derive(Debug, Default)]
pub struct Logged {
    /// Batches that were cut, in order, each with the records logged per source.
    pub batches: Vec<(Cut, Vec<Batch>)>,
    /// Records logged per source after the last cut: they belong to the next batch.
    pub pending: Vec<Batch>,
    /// What could not be read, and where it went.
    pub damage: Vec<String>,
}

/// Reads the log in `dir` from batch `after + 1` on, for a job with `sources` sources.
/// A torn or corrupt segment is cut back to its last good record (the bad bytes are saved
/// beside it as `.damaged`); segments after it are set aside as `.skipped`, because the
/// batches in between cannot be re-run.
pub fn read(dir: &Path, after: u64, sources: usize) -> Result<Logged> {
    let mut logged = Logged {
        pending: vec![Batch::new(); sources],
        ..Logged::default()
    };
    if !dir.exists() {
        return Ok(logged);
    }
    let mut stopped = false;
    for (number, path) in segments(dir)?.into_iter().filter(|(n, _)| *n > after) {
        if stopped {
            let aside = path.with_extension("log.skipped");
            fs::rename(&path, &aside)
                .with_context(|| format!("cannot set aside {}", path.display()))?;
            logged.damage.push(format!(
                "segment of batch {number} not replayed (an earlier segment is damaged); kept as {}",
                aside.display()
            ));
            continue;
        }
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let (frames, damage) = frame::read(&bytes);
        let mut good = 0;
        for payload in frames {
            let Ok(entry) = codec::decode::<Entry>(payload) else {
                break;
            };
            good += 1;
            match entry {
                Entry::Records { source, records } => {
                    let records = records.into_batch()?;
                    let pending = logged.pending.get_mut(source as usize).with_context(|| {
                        format!(
                            "{} logs records of source {source}, but the job has {sources} sources",
                            path.display()
                        )
                    })?;
                    pending.extend_from(&records);
                }
                Entry::Cut(cut) => {
                    let inputs =
                        std::mem::replace(&mut logged.pending, vec![Batch::new(); sources]);
                    logged.batches.push((cut, inputs));
                }
            }
        }
        let good_len = offset_after(&bytes, good);
        if good_len < bytes.len() {
            let reason = damage.map_or("a record does not decode", |damage| damage.reason);
            let kept = path.with_extension("log.damaged");
            fs::write(&kept, &bytes[good_len..])
                .with_context(|| format!("cannot save the damaged tail of {}", path.display()))?;
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_len(good_len as u64))
                .with_context(|| {
                    format!("cannot cut {} back to its good records", path.display())
                })?;
            logged.damage.push(format!(
                "write-ahead log segment {}: {reason}; used its first {good} records ({good_len} bytes) and skipped {} bytes (saved as {})",
                path.display(),
                bytes.len() - good_len,
                kept.display()
            ));
            stopped = true;
        }
    }
    Ok(logged)
}

/// The length of the first `frames` frames of `bytes` (all of them good).
fn offset_after(bytes: &[u8], frames: usize) -> usize {
    let mut offset = 0;
    for _ in 0..frames {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        offset += 8 + len as usize;
    }
    offset
}
