//! The write-ahead log: what the receivers bring, written before it counts as received,
//! and where each batch was cut, so that a restart re-runs the batches the last state
//! checkpoint does not cover, with the same records.
//!
//! One segment per batch, `wal/<batch number>.log`. Its first frame is its
//! header: the [format](mod@super::format), the instance, the batch number
//! and the digest of the segment before it (of the last segment a state checkpoint
//! covers, for the first segment after one). Then the records of that batch as they
//! arrive, then its cut. A state checkpoint makes the segments it covers unnecessary.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bincode::{Decode, Encode};
use sluice_abi::Batch;

use super::codec::{self, SavedBatch};
use super::files::{SeenBySource, SeenFiles, merge_into};
use super::format::{self, Digest, Hashing, InstanceId, Kind};
use super::{Loss, frame};
use crate::manifest::FsyncPolicy;

/// One record of the log.
#[derive(Debug, Encode, Decode)]
enum Entry {
    /// Records a non-replayable source brought.
    Records { source: u32, records: SavedBatch },
    /// The end of a batch.
    Cut(Cut),
    /// Records a directory source read, with the files (and how far) it read them from.
    Files {
        source: u32,
        files: SeenFiles,
        records: SavedBatch,
    },
}

/// What a segment says about itself, after the format header of its first frame.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct SegmentHeader {
    /// The instance whose log it is.
    instance: InstanceId,
    /// The batch it holds.
    number: u64,
    /// The digest of the segment of batch `number - 1` ([`format::NO_DIGEST`] for the
    /// first batch).
    previous: Digest,
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
    /// Per source: for one that gives records again by offset (Kafka), the exact offset
    /// ranges this batch took, so that a re-run reads the same records (empty for others).
    pub ranges: Vec<Vec<OffsetRange>>,
}

/// The offsets `start..end` of one partition of a topic that a batch took: a re-run reads
/// exactly the records at those offsets again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub struct OffsetRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first offset taken.
    pub start: i64,
    /// One past the last offset taken (where the next batch starts).
    pub end: i64,
}

/// Where the log goes on: its instance, and the digests of the finished segments that a
/// state checkpoint may still name.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The directory's instance.
    pub instance: InstanceId,
    /// The digest of the segment before the first one written (if that one is new).
    pub previous: Digest,
    /// The digests of finished segments, by batch.
    pub finished: BTreeMap<u64, Digest>,
    /// The files the directory sources had read as of the state checkpoint the log
    /// continues.
    pub files: SeenBySource,
    /// The files read since, by the batch whose segment logged them.
    pub files_logged: FilesLogged,
}

/// Files read by directory sources, by the batch whose segment logged them.
pub type FilesLogged = BTreeMap<u64, Vec<(u32, SeenFiles)>>;

/// The log's writing end.
pub struct Wal {
    dir: PathBuf,
    fsync: FsyncPolicy,
    instance: InstanceId,
    number: u64,
    segment: Hashing<BufWriter<File>>,
    finished: BTreeMap<u64, Digest>,
    /// The files read as of the last batch forgotten.
    files: SeenBySource,
    files_logged: FilesLogged,
}

/// The path of the segment of batch `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.log"))
}

/// The segments in `dir`, by batch number.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    super::numbered_files(dir, ".log")
}

/// Opens the segment of batch `number` to append to it: an existing one goes on (its
/// digest so far is read back), a new one starts with its header.
fn open_segment(
    dir: &Path,
    instance: InstanceId,
    number: u64,
    previous: Digest,
) -> Result<Hashing<BufWriter<File>>> {
    let path = segment_path(dir, number);
    let opened = (|| -> io::Result<_> {
        let existing = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut segment = Hashing::new(BufWriter::new(file));
        segment.update(&existing);
        if existing.is_empty() {
            let mut header = format::header(Kind::Segment);
            header.extend_from_slice(&codec::encode(&SegmentHeader {
                instance,
                number,
                previous,
            }));
            frame::write(&mut segment, &header)?;
            segment.flush()?;
        }
        Ok(segment)
    })();
    opened.with_context(|| {
        format!(
            "cannot open write-ahead log segment {} (is the disk full or the directory read-only?)",
            path.display()
        )
    })
}

impl Wal {
    /// Appends to the segment of batch `number` in `dir` (created, continuing
    /// `chain.previous`, if missing or empty).
    pub fn open(dir: &Path, fsync: FsyncPolicy, number: u64, chain: Chain) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            fsync,
            instance: chain.instance,
            number,
            segment: open_segment(dir, chain.instance, number, chain.previous)?,
            finished: chain.finished,
            files: chain.files,
            files_logged: chain.files_logged,
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
        self.segment
            .get_ref()
            .get_ref()
            .sync_data()
            .with_context(|| {
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

    /// Logs records a directory source read, with the files (and how far) it read them
    /// from, in one frame: the files count as read exactly when their lines are logged.
    pub fn files(&mut self, source: usize, files: &SeenFiles, records: &Batch) -> Result<()> {
        self.append(&Entry::Files {
            source: source as u32,
            files: files.clone(),
            records: SavedBatch::from(records),
        })?;
        if self.fsync == FsyncPolicy::Record {
            self.sync()?;
        }
        self.files_logged
            .entry(self.number)
            .or_default()
            .push((source as u32, files.clone()));
        Ok(())
    }

    /// The files the directory sources had read when batch `number` was cut.
    pub fn files_as_of(&self, number: u64) -> SeenBySource {
        let mut files = self.files.clone();
        for (source, delta) in self.files_logged.range(..=number).flat_map(|(_, d)| d) {
            merge_into(&mut files, *source, delta);
        }
        files
    }

    /// Logs the cut of the current batch, makes the segment durable (unless the policy is
    /// never to), and starts the next batch's segment.
    pub fn cut(&mut self, cut: Cut) -> Result<()> {
        debug_assert_eq!(cut.number, self.number);
        if let Some(delay) = crate::fault::slow_log_cut() {
            std::thread::sleep(delay);
        }
        self.append(&Entry::Cut(cut))?;
        if self.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        let digest = self.segment.digest();
        self.finished.insert(self.number, digest);
        self.number += 1;
        self.segment = open_segment(&self.dir, self.instance, self.number, digest)?;
        Ok(())
    }

    /// The digest of the finished segment of batch `number`, if the log still has it.
    pub fn digest_of(&self, number: u64) -> Option<Digest> {
        self.finished.get(&number).copied()
    }

    /// Deletes the segments of batches up to `number`: a checkpoint covers them.
    pub fn forget_up_to(&mut self, number: u64) -> Result<()> {
        for (segment, path) in segments(&self.dir)? {
            if segment <= number {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot delete {}", path.display()))?;
            }
        }
        self.finished.retain(|segment, _| *segment > number);
        self.files = self.files_as_of(number);
        self.files_logged.retain(|segment, _| *segment > number);
        Ok(())
    }
}

/// What the log holds after a given batch, and what reading it found.
#[derive(Debug, Default)]
pub struct Logged {
    /// Batches that were cut, in order, each with the records logged per source.
    pub batches: Vec<(Cut, Vec<Batch>)>,
    /// Records logged per source after the last cut: they belong to the next batch.
    pub pending: Vec<Batch>,
    /// The files directory sources read, by the batch whose segment logged them.
    pub files: FilesLogged,
    /// The first segment after the given batch, if any.
    pub first: Option<u64>,
    /// The digests of the segments read, as they stand once repaired, by batch.
    pub digests: BTreeMap<u64, Digest>,
    /// Torn tails found, cut back when [repaired](Self::repair).
    pub notes: Vec<String>,
    /// Batches that cannot be re-run, and why.
    pub lost: Option<Loss>,
    /// Segments that do not belong where they are (never replayed), and why.
    pub refused: Vec<String>,
    repairs: Vec<Repair>,
}

/// A change to the log that going on after damage needs.
#[derive(Debug)]
enum Repair {
    /// Keep the first `keep` bytes of the segment, saving the rest beside it.
    CutBack { path: PathBuf, keep: usize },
    /// Rename a segment that cannot be re-run out of the log.
    SetAside { path: PathBuf },
}

impl Logged {
    /// Cuts damaged segments back to their good records (the rest is saved beside them as
    /// `.damaged`) and sets the segments after a loss aside as `.skipped`.
    pub fn repair(&self) -> Result<()> {
        for repair in &self.repairs {
            match repair {
                Repair::CutBack { path, keep } => {
                    let bytes = fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let kept = path.with_extension("log.damaged");
                    fs::write(&kept, &bytes[*keep..]).with_context(|| {
                        format!("cannot save the damaged tail of {}", path.display())
                    })?;
                    OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|file| file.set_len(*keep as u64))
                        .with_context(|| {
                            format!("cannot cut {} back to its good records", path.display())
                        })?;
                }
                Repair::SetAside { path } => {
                    fs::rename(path, path.with_extension("log.skipped"))
                        .with_context(|| format!("cannot set aside {}", path.display()))?;
                }
            }
        }
        Ok(())
    }
}

/// A record of the log, read back and checked.
enum Read {
    /// Records of a source (a directory source's with the files it read them from).
    Records {
        source: u32,
        records: Batch,
        files: Option<SeenFiles>,
    },
    /// The end of a batch.
    Cut(Cut),
}

/// What one segment holds.
struct Segment {
    header: SegmentHeader,
    entries: Vec<Read>,
    /// How many bytes hold the header and `entries`.
    good: usize,
    /// What stopped the reading before the end, and whether only the last frame is bad.
    damage: Option<(String, bool)>,
}

/// Reads a segment; an error is a segment that does not belong (never replayed).
fn parse(bytes: &[u8]) -> Result<Segment, String> {
    let (frames, damage) = frame::read(bytes);
    let mut damage = damage.map(|damage| {
        (
            format!("{} at byte {}", damage.reason, damage.offset),
            damage.last_frame,
        )
    });
    let Some((first, rest)) = frames.split_first() else {
        return Ok(Segment {
            header: SegmentHeader {
                instance: InstanceId([0; 16]),
                number: 0,
                previous: format::NO_DIGEST,
            },
            entries: Vec::new(),
            good: 0,
            damage: Some(damage.unwrap_or_else(|| ("it is empty".to_owned(), true))),
        });
    };
    let header = format::body(Kind::Segment, first)?;
    let header =
        codec::decode(header).map_err(|error| format!("its header does not decode: {error:#}"))?;
    let mut good = 8 + first.len();
    let mut entries = Vec::new();
    for (index, payload) in rest.iter().enumerate() {
        if matches!(entries.last(), Some(Read::Cut(_))) {
            damage = Some((
                format!("it holds a frame after its cut, at byte {good}"),
                false,
            ));
            break;
        }
        let entry = codec::decode::<Entry>(payload).and_then(|entry| {
            Ok(match entry {
                Entry::Records { source, records } => Read::Records {
                    source,
                    records: records.into_batch()?,
                    files: None,
                },
                Entry::Files {
                    source,
                    files,
                    records,
                } => Read::Records {
                    source,
                    records: records.into_batch()?,
                    files: Some(files),
                },
                Entry::Cut(cut) => Read::Cut(cut),
            })
        });
        match entry {
            Ok(entry) => entries.push(entry),
            Err(error) => {
                let last = index + 1 == rest.len() && damage.is_none();
                damage = Some((
                    format!("a record at byte {good} does not decode ({error:#})"),
                    last,
                ));
                break;
            }
        }
        good += 8 + payload.len();
    }
    Ok(Segment {
        header,
        entries,
        good,
        damage,
    })
}

/// Reads the log in `dir` from batch `after + 1` on, for instance `instance` and a job
/// with `sources` sources, without changing anything. The first segment must continue
/// `previous` (the digest `continues` names), each other one the segment before it.
///
/// A torn write (damage confined to the last frame of the newest segment) is cut back at
/// [repair](Logged::repair). Damage anywhere else, a missing segment or a segment without
/// its cut stops the reading there: the batches from it on are [lost](Logged::lost), and
/// the later segments are set aside at repair. A segment of another instance, or whose
/// header names another batch or another predecessor, is [refused](Logged::refused).
pub fn read(
    dir: &Path,
    after: u64,
    sources: usize,
    instance: InstanceId,
    (previous, continues): (Digest, &str),
) -> Result<Logged> {
    let mut logged = Logged {
        pending: vec![Batch::new(); sources],
        ..Logged::default()
    };
    let all = segments(dir)?;
    let Some(&(newest, _)) = all.last() else {
        return Ok(logged);
    };
    let mut expected = (after + 1, Some((previous, continues.to_owned())));
    for (number, path) in all.into_iter().filter(|(number, _)| *number > after) {
        let first = *logged.first.get_or_insert(number);
        if number != expected.0 {
            if number == first {
                // A gap at the start: the caller knows why (the checkpoints) and says so.
                expected = (number, None);
            } else if logged.lost.is_none() {
                logged.lost = Some(Loss {
                    first: expected.0,
                    last: newest,
                    why: format!(
                        "write-ahead log segment {} is missing (the log jumps from batch {} to {number})",
                        segment_path(dir, expected.0).display(),
                        expected.0 - 1
                    ),
                });
            }
        }
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let segment = match parse(&bytes) {
            Ok(segment) => segment,
            Err(why) => {
                logged.refused.push(format!("{}: {why}", path.display()));
                continue;
            }
        };
        let header = &segment.header;
        if segment.good > 0 {
            let problem = if header.instance != instance {
                Some(format!(
                    "it belongs to instance {}, not to this directory's ({instance}): it comes from another job or another run of this one",
                    header.instance
                ))
            } else if header.number != number {
                Some(format!(
                    "it holds batch {}, not {number} as its name says: it was copied or renamed",
                    header.number
                ))
            } else {
                match &expected.1 {
                    Some((digest, what)) if *digest != header.previous && number == expected.0 => {
                        Some(format!(
                            "it continues a predecessor with digest {}, but {what} has digest {}: the two come from different copies of this directory",
                            format::short(&header.previous),
                            format::short(digest)
                        ))
                    }
                    _ => None,
                }
            };
            if let Some(problem) = problem {
                logged
                    .refused
                    .push(format!("{}: {problem}", path.display()));
                continue;
            }
        }
        if logged.lost.is_some() {
            logged.repairs.push(Repair::SetAside { path });
            continue;
        }
        let cut = segment
            .entries
            .iter()
            .any(|entry| matches!(entry, Read::Cut(_)));
        for entry in segment.entries {
            match entry {
                Read::Records {
                    source,
                    records,
                    files,
                } => {
                    let Some(pending) = logged.pending.get_mut(source as usize) else {
                        logged.refused.push(format!(
                            "{}: it logs records of source {source}, but the job has {sources} sources",
                            path.display()
                        ));
                        break;
                    };
                    pending.extend_from(&records);
                    if let Some(files) = files {
                        logged
                            .files
                            .entry(number)
                            .or_default()
                            .push((source, files));
                    }
                }
                Read::Cut(cut) if cut.number != number => {
                    logged.refused.push(format!(
                        "{}: it holds the cut of batch {}, not of batch {number}",
                        path.display(),
                        cut.number
                    ));
                    break;
                }
                Read::Cut(cut) => {
                    let inputs =
                        std::mem::replace(&mut logged.pending, vec![Batch::new(); sources]);
                    logged.batches.push((cut, inputs));
                }
            }
        }
        let digest = format::digest(&bytes[..segment.good]);
        logged.digests.insert(number, digest);
        // A damaged segment's digest is not the one its successor named when it was
        // written: the successor is not replayed, and only its identity is checked.
        let continued = segment
            .damage
            .is_none()
            .then(|| (digest, format!("segment {}", path.display())));
        expected = (number + 1, continued);
        match segment.damage {
            Some((why, last_frame)) if last_frame && number == newest => {
                logged.notes.push(format!(
                    "write-ahead log segment {}: {why} (a torn write); used its first {} bytes and skipped {} bytes (saved as {})",
                    path.display(),
                    segment.good,
                    bytes.len() - segment.good,
                    path.with_extension("log.damaged").display()
                ));
                logged.repairs.push(Repair::CutBack {
                    path,
                    keep: segment.good,
                });
            }
            Some((why, _)) => {
                logged.lost = Some(Loss {
                    first: number,
                    last: newest,
                    why: format!(
                        "write-ahead log segment {} is damaged: {why}",
                        path.display()
                    ),
                });
                logged.repairs.push(Repair::CutBack {
                    path,
                    keep: segment.good,
                });
            }
            None if !cut && number != newest => {
                logged.lost = Some(Loss {
                    first: number,
                    last: newest,
                    why: format!(
                        "write-ahead log segment {} ends before the cut of its batch, though later segments exist",
                        path.display()
                    ),
                });
            }
            None => {}
        }
    }
    Ok(logged)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const INSTANCE: InstanceId = InstanceId([7; 16]);

    fn header(number: u64) -> Vec<u8> {
        let mut header = format::header(Kind::Segment);
        header.extend_from_slice(&codec::encode(&SegmentHeader {
            instance: INSTANCE,
            number,
            previous: format::NO_DIGEST,
        }));
        header
    }

    /// A log record as the log writes it, or any bytes.
    fn entry() -> impl Strategy<Value = Vec<u8>> {
        let records = (
            0u32..3,
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u32>(), 0..8),
        )
            // Encoded as `Entry::Records` is (variant 0, then the fields in order), with
            // record ends that need not fit the data.
            .prop_map(|(source, data, ends)| codec::encode(&(0u32, source, data, ends)));
        let cut = (
            0u64..4,
            any::<i64>(),
            prop::collection::vec(any::<Option<u64>>(), 0..4),
        )
            .prop_map(|(number, time_ms, positions)| {
                codec::encode(&Entry::Cut(Cut {
                    number,
                    time_ms,
                    positions,
                    ranges: Vec::new(),
                }))
            });
        prop_oneof![records, cut, prop::collection::vec(any::<u8>(), 0..64)]
    }

    /// `payload` with up to 4 bytes changed: what a record that passes its checksum but
    /// was not written by the log looks like (its lengths and tags among them).
    fn mutated(payload: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = payload.len().max(1);
        prop::collection::vec((0..len, any::<u8>()), 0..4).prop_map(move |changes| {
            let mut payload = payload.clone();
            for (at, byte) in changes {
                if let Some(slot) = payload.get_mut(at) {
                    *slot = byte;
                }
            }
            payload
        })
    }

    /// Frames with good checksums reach the header and record decoders: whatever they
    /// hold, reading the log answers without a panic or a huge allocation.
    #[test]
    fn reading_any_framed_segment_never_panics_nor_allocates_much() {
        let segment = (
            (1u64..3).prop_flat_map(|number| mutated(header(number))),
            prop::collection::vec(entry().prop_flat_map(mutated), 0..6),
            prop::collection::vec(any::<u8>(), 0..12),
        );
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 5000,
            ..ProptestConfig::default()
        });
        runner
            .run(&segment, |(header, entries, tail)| {
                let dir = tempfile::tempdir().unwrap();
                let mut bytes = Vec::new();
                frame::write(&mut bytes, &header).unwrap();
                for entry in &entries {
                    frame::write(&mut bytes, entry).unwrap();
                }
                bytes.extend_from_slice(&tail);
                fs::write(segment_path(dir.path(), 1), &bytes).unwrap();
                fs::write(segment_path(dir.path(), 2), &bytes).unwrap();
                let start = (format::NO_DIGEST, "the start");
                if let Ok(logged) = read(dir.path(), 0, 2, INSTANCE, start) {
                    logged.repair().unwrap();
                }
                Ok(())
            })
            .unwrap();
        super::super::tests::assert_peak_memory_below(2 << 30);
    }
}
