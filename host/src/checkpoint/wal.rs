//! The write-ahead log: what the receivers bring, written before it counts as received,
//! and where each batch was cut, so that a restart re-runs the batches the last state
//! checkpoint does not cover, with the same records.
//!
//! The log is a series of segment files, `wal/<first batch>.log`, each holding the
//! sections of consecutive batches. A section's first frame is its header: the
//! [format](mod@super::format), the instance, the batch number and the digest of the
//! section before it (of the last section a state checkpoint covers, for the first one
//! after it). Then the records of that batch as they arrive, then its cut. Between them,
//! the event-time watermark each earlier batch computes with, logged as that batch starts
//! (the cutter runs ahead of the computing, so a batch's watermark is not known at its
//! cut): a re-run uses the logged one rather than the one its replayed data gives.
//!
//! A segment is [rolled](Rolling) (the next batch's section starts a new file) when it
//! reaches a size or an age, and after a state checkpoint, so that what a checkpoint
//! covers is whole files: a file is deleted once no kept checkpoint needs any batch in
//! it. (A file per batch made a host of 1000 jobs spend two thirds of its CPU creating
//! and deleting inodes.)

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bincode::{Decode, Encode};
use sluice_abi::Batch;

use super::codec::{self, SavedBatch};
use super::files::{SeenBySource, SeenFiles, merge_into};
use super::format::{self, Digest, Hashing, InstanceId, Kind};
use super::{Loss, frame};
use crate::disk::DiskQuota;
use crate::failure::{Failing, FailureKind};
use crate::manifest::FsyncPolicy;
use crate::tenancy::HeldBytes;

/// What the log's bytes are to the tenant's `max_host_bytes` (in its quota's error).
const RETAINED: &str = "retained write-ahead log";

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
    /// The event-time watermark batch `batch` (cut before) computes with, logged before
    /// its output reaches a sink: a re-run uses it again. (Last, so that logs written
    /// before it existed read the same.)
    Watermark { batch: u64, watermark_ms: i64 },
}

/// What a batch's section says about itself, after the format header of its first frame.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct SegmentHeader {
    /// The instance whose log it is.
    instance: InstanceId,
    /// The batch it holds.
    number: u64,
    /// The digest of the section of batch `number - 1` ([`format::NO_DIGEST`] for the
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

/// When the log starts a new segment file: at the first cut after a state checkpoint,
/// and at the first cut after the segment reached `max_bytes` or `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    /// The size past which the next batch starts a new segment.
    pub max_bytes: u64,
    /// The age past which the next batch starts a new segment (as Spark's receiver log
    /// rolls, `rollingIntervalSecs`, 60 s by default).
    pub max_age: Duration,
}

impl Rolling {
    /// One segment file per batch.
    pub const EVERY_BATCH: Self = Self {
        max_bytes: 0,
        max_age: Duration::ZERO,
    };
}

impl Default for Rolling {
    /// 64 MiB or 60 s.
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(60),
        }
    }
}

/// Where the log goes on: its instance, and the digests of the finished sections that a
/// state checkpoint may still name.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The directory's instance.
    pub instance: InstanceId,
    /// The digest of the section before the first one written (if that one is new).
    pub previous: Digest,
    /// The digests of finished sections, by batch.
    pub finished: BTreeMap<u64, Digest>,
    /// The files the directory sources had read as of the state checkpoint the log
    /// continues.
    pub files: SeenBySource,
    /// The files read since, by the batch whose section logged them.
    pub files_logged: FilesLogged,
}

/// Files read by directory sources, by the batch whose section logged them.
pub type FilesLogged = BTreeMap<u64, Vec<(u32, SeenFiles)>>;

/// The log's writing end.
pub struct Wal {
    dir: PathBuf,
    fsync: FsyncPolicy,
    rolling: Rolling,
    instance: InstanceId,
    /// The batch being logged.
    number: u64,
    segment: Segment,
    /// The first batches of the segment files on disk (the one written to among them).
    on_disk: BTreeSet<u64>,
    /// The bytes of the segment files on disk but the one written to.
    closed_bytes: u64,
    /// Counts the segment files on disk against the tenant's `max_host_bytes`: what a job
    /// logs stays on the host until a checkpoint lets it go ([`Wal::forget_up_to`]).
    retained: HeldBytes,
    /// The tenant's disk quota, for a served job: what the log appends counts in it.
    disk: Option<Arc<DiskQuota>>,
    /// A state checkpoint was written: the next batch starts a new segment.
    roll_requested: bool,
    finished: BTreeMap<u64, Digest>,
    /// The files read as of the last batch forgotten.
    files: SeenBySource,
    files_logged: FilesLogged,
}

/// The segment file being written, and the section of the batch being logged.
struct Segment {
    /// Its first batch (its name).
    first: u64,
    /// The file; the digest covers the current section only.
    file: Hashing<BufWriter<File>>,
    opened: Instant,
    /// Its length in bytes.
    len: u64,
    /// Where the current section starts.
    section_start: u64,
    /// The digest the current section's header names as its predecessor's.
    previous: Digest,
    /// Whether the current section holds nothing but its header (and watermarks of
    /// earlier batches) yet.
    fresh: bool,
    /// The last batch whose watermark the current section logs.
    watermarks_up_to: Option<u64>,
}

/// The path of the segment whose first batch is `number` in `dir`.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.log"))
}

/// The segments in `dir`, by first batch.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    super::numbered_files(dir, ".log")
}

/// The first frame of the section of batch `number`.
fn section_header(instance: InstanceId, number: u64, previous: Digest) -> Vec<u8> {
    let mut header = format::header(Kind::Segment);
    header.extend_from_slice(&codec::encode(&SegmentHeader {
        instance,
        number,
        previous,
    }));
    header
}

impl Segment {
    /// Starts segment `number` (an empty file of that name is filled) with the section of
    /// batch `number`.
    fn create(dir: &Path, instance: InstanceId, number: u64, previous: Digest) -> Result<Self> {
        let path = segment_path(dir, number);
        let opened = (|| -> io::Result<_> {
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let len = file.metadata()?.len();
            Ok(Self {
                first: number,
                file: Hashing::new(BufWriter::new(file)),
                opened: Instant::now(),
                len,
                section_start: len,
                previous,
                fresh: true,
                watermarks_up_to: None,
            })
        })();
        let mut segment = opened.with_context(|| open_failed(&path))?;
        segment
            .start_section(instance, number, previous)
            .with_context(|| open_failed(&path))?;
        Ok(segment)
    }

    /// Goes on with segment `first` if its last section is batch `number`'s (not cut yet)
    /// or it ends with the cut of the batch before: `None` if it does neither.
    fn resume(
        dir: &Path,
        first: u64,
        instance: InstanceId,
        number: u64,
        previous: Digest,
    ) -> Result<Option<Self>> {
        let path = segment_path(dir, first);
        let bytes = fs::read(&path).with_context(|| open_failed(&path))?;
        let Some(tail) = last_section(&bytes) else {
            return Ok(None);
        };
        let goes_on = tail.number == number && !tail.cut;
        let follows = tail.cut && tail.number + 1 == number;
        if !(goes_on || follows) {
            return Ok(None);
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| open_failed(&path))?;
        let mut segment = Self {
            first,
            file: Hashing::new(BufWriter::new(file)),
            opened: Instant::now(),
            len: bytes.len() as u64,
            section_start: tail.start as u64,
            previous: tail.previous,
            fresh: tail.only_header,
            watermarks_up_to: None,
        };
        if goes_on {
            segment.file.update(&bytes[tail.start..]);
        } else {
            segment
                .start_section(instance, number, previous)
                .with_context(|| open_failed(&path))?;
        }
        Ok(Some(segment))
    }

    /// Appends the header of batch `number`'s section.
    fn start_section(
        &mut self,
        instance: InstanceId,
        number: u64,
        previous: Digest,
    ) -> io::Result<()> {
        self.file.restart();
        self.section_start = self.len;
        self.previous = previous;
        self.fresh = true;
        self.watermarks_up_to = None;
        self.write(&section_header(instance, number, previous))
    }

    fn write(&mut self, payload: &[u8]) -> io::Result<()> {
        frame::write(&mut self.file, payload)?;
        self.file.flush()?;
        self.len += frame::framed_len(payload.len());
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.file.get_ref().get_ref().sync_data()
    }
}

fn open_failed(path: &Path) -> String {
    format!(
        "cannot open write-ahead log segment {} (is the disk full or the directory read-only?)",
        path.display()
    )
}

/// The last section of a segment file's good frames.
struct Tail {
    number: u64,
    previous: Digest,
    /// Where it starts.
    start: usize,
    cut: bool,
    only_header: bool,
}

/// The last section of `bytes` (a segment file), if its frames are all good.
fn last_section(bytes: &[u8]) -> Option<Tail> {
    let (frames, damage) = frame::read(bytes);
    if damage.is_some() {
        return None;
    }
    let mut offset = 0;
    let mut tail: Option<Tail> = None;
    for payload in &frames {
        if let Ok(body) = format::body(Kind::Segment, payload) {
            let header: SegmentHeader = codec::decode(body).ok()?;
            tail = Some(Tail {
                number: header.number,
                previous: header.previous,
                start: offset,
                cut: false,
                only_header: true,
            });
        } else if let Some(tail) = tail.as_mut() {
            tail.only_header = false;
        }
        offset += 8 + payload.len();
    }
    let mut tail = tail?;
    if !tail.only_header {
        let last = frames.last()?;
        tail.cut = matches!(codec::decode::<Entry>(last), Ok(Entry::Cut(_)));
    }
    Some(tail)
}

impl Wal {
    /// Opens the log in `dir` to log batch `number`: the newest segment goes on if it
    /// holds that batch's section or ends with the batch before; otherwise a segment
    /// starts with it, continuing `chain.previous`. The segment files count against the
    /// tenant's `max_host_bytes` in `retained`, from those on disk now on: a log over the
    /// quota refuses what it is given to log.
    pub fn open(
        dir: &Path,
        fsync: FsyncPolicy,
        rolling: Rolling,
        number: u64,
        chain: Chain,
        retained: HeldBytes,
    ) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut on_disk: BTreeSet<u64> = segments(dir)?.into_iter().map(|(n, _)| n).collect();
        let resumed = match on_disk.last() {
            Some(&newest) => Segment::resume(dir, newest, chain.instance, number, chain.previous)?,
            None => None,
        };
        let segment = match resumed {
            Some(segment) => segment,
            None => Segment::create(dir, chain.instance, number, chain.previous)?,
        };
        on_disk.insert(segment.first);
        let closed_bytes = on_disk
            .iter()
            .filter(|first| **first != segment.first)
            .map(|first| fs::metadata(segment_path(dir, *first)).map_or(0, |file| file.len()))
            .sum();
        let wal = Self {
            dir: dir.to_owned(),
            fsync,
            rolling,
            instance: chain.instance,
            number,
            segment,
            on_disk,
            closed_bytes,
            retained,
            disk: None,
            roll_requested: false,
            finished: chain.finished,
            files: chain.files,
            files_logged: chain.files_logged,
        };
        wal.count_retained().with_context(|| {
            format!("cannot go on with the write-ahead log in {}", dir.display())
        })?;
        Ok(wal)
    }

    /// Counts what the log appends in the tenant's disk quota `disk` (a served job's), and
    /// refuses to append past it.
    pub fn with_disk_quota(mut self, disk: Option<Arc<DiskQuota>>) -> Self {
        self.disk = disk;
        self
    }

    /// The bytes of the segment files on disk.
    pub fn retained_bytes(&self) -> u64 {
        self.closed_bytes + self.segment.len
    }

    /// Brings the log's count against the tenant's `max_host_bytes` up to date (segment
    /// headers, segments deleted); fails if the log has grown over the quota.
    fn count_retained(&self) -> Result<()> {
        self.retained.hold(self.retained_bytes(), RETAINED)
    }

    /// Appends `entry`, unless the tenant's `max_host_bytes` has no room for it.
    fn append(&mut self, entry: &Entry) -> Result<()> {
        let payload = codec::encode(entry);
        let framed = frame::framed_len(payload.len());
        self.retained.charge(framed, RETAINED)?;
        if let Some(disk) = &self.disk {
            disk.take(framed).with_context(|| {
                format!(
                    "cannot append to the write-ahead log in {}",
                    self.dir.display()
                )
            })?;
        }
        match entry {
            Entry::Watermark { batch, .. } => self.segment.watermarks_up_to = Some(*batch),
            _ => self.segment.fresh = false,
        }
        self.segment
            .write(&payload)
            .with_context(|| {
                Failing::new(
                    FailureKind::Checkpoint,
                    format!(
                        "cannot append to the write-ahead log in {} (is the disk full or the directory read-only?)",
                        self.dir.display()
                    ),
                )
            })
    }

    fn sync(&mut self) -> Result<()> {
        self.segment.sync().with_context(|| {
            Failing::new(
                FailureKind::Checkpoint,
                format!(
                    "cannot sync the write-ahead log in {} (is the disk full or failing?)",
                    self.dir.display()
                ),
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

    /// Logs the event-time watermark batch `batch` (already cut) computes with, durably
    /// (unless the policy is never to), before its output reaches a sink.
    pub fn watermark(&mut self, batch: u64, watermark_ms: i64) -> Result<()> {
        self.append(&Entry::Watermark {
            batch,
            watermark_ms,
        })?;
        if self.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
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

    /// Logs the cut of the current batch, makes the log durable (unless the policy is
    /// never to), and starts the next batch's section: in a new segment if this one is
    /// due to [roll](Rolling).
    pub fn cut(&mut self, cut: Cut) -> Result<()> {
        debug_assert_eq!(cut.number, self.number);
        if let Some(delay) = crate::fault::slow_log_cut() {
            std::thread::sleep(delay);
        }
        self.append(&Entry::Cut(cut))?;
        if self.fsync != FsyncPolicy::Never {
            self.sync()?;
        }
        let digest = self.segment.file.digest();
        self.finished.insert(self.number, digest);
        self.number += 1;
        let due = self.roll_requested
            || self.segment.len >= self.rolling.max_bytes
            || self.segment.opened.elapsed() >= self.rolling.max_age;
        if due {
            self.roll(digest)?;
        } else {
            let number = self.number;
            self.segment
                .start_section(self.instance, number, digest)
                .with_context(|| open_failed(&segment_path(&self.dir, self.segment.first)))?;
        }
        self.count_retained()
    }

    /// Starts a new segment with the section of the current batch, which continues
    /// `previous`.
    fn roll(&mut self, previous: Digest) -> Result<()> {
        let segment = Segment::create(&self.dir, self.instance, self.number, previous)?;
        self.closed_bytes += std::mem::replace(&mut self.segment, segment).len;
        self.on_disk.insert(self.number);
        self.roll_requested = false;
        Ok(())
    }

    /// The digest of the finished section of batch `number`, if the log still has it.
    pub fn digest_of(&self, number: u64) -> Option<Digest> {
        self.finished.get(&number).copied()
    }

    /// Forgets the batches up to `number` (a kept checkpoint covers them): deletes the
    /// segments that hold no later batch, and has the next batch start a new segment, so
    /// that the next checkpoint frees whole files. The current batch starts one at once if
    /// nothing is logged for it yet.
    pub fn forget_up_to(&mut self, number: u64) -> Result<()> {
        let firsts: Vec<u64> = self.on_disk.iter().copied().collect();
        for pair in firsts.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            if next <= number + 1 && first != self.segment.first {
                let path = segment_path(&self.dir, first);
                let bytes = fs::metadata(&path).map_or(0, |file| file.len());
                match fs::remove_file(&path) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => {
                        return Err(error)
                            .with_context(|| format!("cannot delete {}", path.display()));
                    }
                    _ => {}
                }
                self.on_disk.remove(&first);
                self.closed_bytes = self.closed_bytes.saturating_sub(bytes);
            }
        }
        self.finished.retain(|batch, _| *batch > number);
        self.files = self.files_as_of(number);
        self.files_logged.retain(|batch, _| *batch > number);
        self.roll_requested = true;
        // Watermarks of forgotten batches are not needed by any re-run.
        let needed = self
            .segment
            .watermarks_up_to
            .is_some_and(|batch| batch > number);
        if self.segment.fresh && !needed {
            if self.segment.section_start == 0 {
                self.roll_requested = false;
            } else {
                // The section holds only its header (and watermarks no longer needed): it
                // moves to a segment of its own.
                let path = segment_path(&self.dir, self.segment.first);
                let start = self.segment.section_start;
                self.segment
                    .file
                    .flush()
                    .and_then(|()| self.segment.file.get_ref().get_ref().set_len(start))
                    .with_context(|| format!("cannot roll {}", path.display()))?;
                self.segment.len = start;
                self.roll(self.segment.previous)?;
            }
        }
        self.count_retained()
    }
}

/// What the log holds after a given batch, and what reading it found.
#[derive(Debug, Default)]
pub struct Logged {
    /// Batches that were cut, in order, each with the records logged per source.
    pub batches: Vec<(Cut, Vec<Batch>)>,
    /// Records logged per source after the last cut: they belong to the next batch.
    pub pending: Vec<Batch>,
    /// The files directory sources read, by the batch whose section logged them.
    pub files: FilesLogged,
    /// The event-time watermark each batch computed with, by batch, as logged.
    pub watermarks: BTreeMap<u64, i64>,
    /// The first batch logged after the given batch, if any.
    pub first: Option<u64>,
    /// The digests of the sections read, as they stand once repaired, by batch.
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
    /// The watermark a batch computed with.
    Watermark { batch: u64, watermark_ms: i64 },
}

/// The kinds of [`Entry`], in the order of its variants (as they are encoded).
const ENTRY_KINDS: [&str; 4] = ["records", "cut", "files", "watermark"];

/// The kind of entry `payload` holds, if this release does not know it.
fn unknown_kind(payload: &[u8]) -> Option<u32> {
    let (kind, _): (u32, _) =
        bincode::decode_from_slice(payload, bincode::config::standard()).ok()?;
    (kind as usize >= ENTRY_KINDS.len()).then_some(kind)
}

/// One batch's section of a segment file, read back.
struct Section {
    header: SegmentHeader,
    entries: Vec<Read>,
    /// Where its bytes start and where its good frames end.
    start: usize,
    end: usize,
    cut: bool,
}

/// What one segment file holds.
struct Parsed {
    sections: Vec<Section>,
    /// How many bytes hold good frames.
    good: usize,
    /// What stopped the reading before the end, and whether only the last frame is bad.
    damage: Option<(String, bool)>,
}

/// Reads a segment file; an error is a file that does not belong (never replayed).
fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let (frames, damage) = frame::read(bytes);
    let mut damage = damage.map(|damage| {
        (
            format!("{} at byte {}", damage.reason, damage.offset),
            damage.last_frame,
        )
    });
    let torn_tail = damage.is_none();
    let mut sections: Vec<Section> = Vec::new();
    let mut good = 0;
    for (index, payload) in frames.iter().enumerate() {
        let last = index + 1 == frames.len() && torn_tail;
        match sections.last() {
            None | Some(Section { cut: true, .. }) => {
                let header = format::body(Kind::Segment, payload).and_then(|header| {
                    codec::decode::<SegmentHeader>(header)
                        .map_err(|error| format!("its header does not decode: {error:#}"))
                });
                match (header, sections.last()) {
                    (Ok(header), _) => sections.push(Section {
                        header,
                        entries: Vec::new(),
                        start: good,
                        end: good,
                        cut: false,
                    }),
                    (Err(why), None) => return Err(why),
                    (Err(why), Some(before)) => {
                        damage = Some((
                            format!(
                                "the frame at byte {good}, after the cut of batch {}, is not the next batch's header ({why})",
                                before.header.number
                            ),
                            last,
                        ));
                        break;
                    }
                }
            }
            Some(_) => {
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
                        Entry::Watermark {
                            batch,
                            watermark_ms,
                        } => Read::Watermark {
                            batch,
                            watermark_ms,
                        },
                    })
                });
                let section = sections.last_mut().expect("matched above");
                match entry {
                    Ok(entry) => {
                        section.cut = matches!(entry, Read::Cut(_));
                        section.entries.push(entry);
                    }
                    Err(error) => {
                        let why = match unknown_kind(payload) {
                            Some(kind) => format!(
                                "a record at byte {good} is an entry of kind {kind}, which this release ({}) does not know (it knows {}): a newer Sluice wrote it without changing the log's format, or it is damaged",
                                format::RELEASE,
                                ENTRY_KINDS.join(", ")
                            ),
                            None => format!("a record at byte {good} does not decode ({error:#})"),
                        };
                        damage = Some((why, last));
                        break;
                    }
                }
            }
        }
        good += 8 + payload.len();
        sections.last_mut().expect("pushed above").end = good;
    }
    if frames.is_empty() && damage.is_none() {
        damage = Some(("it is empty".to_owned(), true));
    }
    Ok(Parsed {
        sections,
        good,
        damage,
    })
}

/// What is wrong with where segment `name` (at `path`) stands, if anything: each section
/// must be of this instance, hold the batch after the one before it (the first the batch
/// the file is named after) and continue the section before it in the file.
fn misplaced(bytes: &[u8], parsed: &Parsed, name: u64, instance: InstanceId) -> Option<String> {
    let mut before: Option<&Section> = None;
    for (index, section) in parsed.sections.iter().enumerate() {
        let header = &section.header;
        let number = name + index as u64;
        let problem = if header.instance != instance {
            Some(format!(
                "it belongs to instance {}, not to this directory's ({instance}): it comes from another job or another run of this one",
                header.instance
            ))
        } else if header.number != number && index == 0 {
            Some(format!(
                "it holds batch {}, not {number} as its name says: it was copied or renamed",
                header.number
            ))
        } else if header.number != number {
            Some(format!(
                "its section after batch {} holds batch {}",
                number - 1,
                header.number
            ))
        } else {
            before
                .map(|before| format::digest(&bytes[before.start..before.end]))
                .filter(|digest| *digest != header.previous)
                .map(|_| {
                    format!("its section of batch {number} does not continue the one before it")
                })
        };
        if problem.is_some() {
            return problem;
        }
        before = Some(section);
    }
    None
}

/// Reads the log in `dir` from batch `after + 1` on, for instance `instance` and a job
/// with `sources` sources, without changing anything. The first section must continue
/// `previous` (the digest `continues` names), each other one the section before it.
///
/// A torn write (damage confined to the last frame of the newest segment) is cut back at
/// [repair](Logged::repair). Damage anywhere else, a missing segment or a section without
/// its cut stops the reading there: the batches from it on are [lost](Logged::lost), and
/// the later segments are set aside at repair. A segment of another instance, or whose
/// sections name other batches or other predecessors, is [refused](Logged::refused).
/// Segments whose batches are all `after` or before are not read.
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
    // A segment is needed unless the next one starts by batch `after + 1`.
    let needed: Vec<(u64, PathBuf)> = all
        .iter()
        .enumerate()
        .filter(|(index, _)| all.get(index + 1).is_none_or(|(next, _)| *next > after + 1))
        .map(|(_, segment)| segment.clone())
        .collect();
    let mut files = Vec::with_capacity(needed.len());
    for (name, path) in needed {
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let parsed = parse(&bytes);
        files.push((name, path, bytes, parsed));
    }
    let Some(newest) = files
        .iter()
        .map(|(name, _, bytes, parsed)| match parsed {
            Ok(parsed) => (name + parsed.sections.len().saturating_sub(1) as u64)
                .max(batch_beyond(bytes, parsed.good, instance)),
            Err(_) => *name,
        })
        .max()
    else {
        return Ok(logged);
    };
    let newest_file = files.last().map(|(name, ..)| *name);
    let mut expected = (after + 1, Some((previous, continues.to_owned())));
    for (name, path, bytes, parsed) in files {
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(why) => {
                logged.refused.push(format!("{}: {why}", path.display()));
                continue;
            }
        };
        let mut problem = misplaced(&bytes, &parsed, name, instance);
        let first_read = parsed
            .sections
            .iter()
            .find(|section| section.header.number > after);
        if let (None, Some(section), Some((digest, what))) = (&problem, first_read, &expected.1)
            && section.header.number == expected.0
            && *digest != section.header.previous
        {
            problem = Some(format!(
                "it continues a predecessor with digest {}, but {what} has digest {}: the two come from different copies of this directory",
                format::short(&section.header.previous),
                format::short(digest)
            ));
        }
        if let Some(problem) = problem {
            logged
                .refused
                .push(format!("{}: {problem}", path.display()));
            continue;
        }
        if logged.lost.is_some() {
            logged.repairs.push(Repair::SetAside { path });
            continue;
        }
        if parsed.sections.is_empty() && name > after {
            arrive(&mut logged, &mut expected, name, newest, dir);
            expected = (name + 1, None);
        }
        if logged.lost.is_some() {
            // The log jumped to this file.
            logged.repairs.push(Repair::SetAside { path });
            continue;
        }
        let sections = parsed.sections.len();
        // The batch where the reading of this file stops: its last section's, or the
        // one after if that one is complete and damage follows it.
        let mut stopped_at = name.max(after + 1);
        let mut jumped = false;
        for (index, section) in parsed.sections.into_iter().enumerate() {
            let number = section.header.number;
            stopped_at = if section.cut && parsed.damage.is_some() && index + 1 == sections {
                number + 1
            } else {
                number
            }
            .max(after + 1);
            if number <= after {
                continue;
            }
            arrive(&mut logged, &mut expected, number, newest, dir);
            if logged.lost.is_some() {
                // The log jumped to this file (sections within one follow each other).
                jumped = true;
                break;
            }
            for entry in section.entries {
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
                    Read::Watermark {
                        batch,
                        watermark_ms,
                    } => {
                        logged.watermarks.insert(batch, watermark_ms);
                    }
                }
            }
            let digest = format::digest(&bytes[section.start..section.end]);
            logged.digests.insert(number, digest);
            // A damaged section's digest is not the one its successor named when it was
            // written: the successor is not replayed, and only its identity is checked.
            let damaged = parsed.damage.is_some() && index + 1 == sections;
            let continued = (!damaged).then(|| (digest, format!("segment {}", path.display())));
            expected = (number + 1, continued);
            if !section.cut
                && index + 1 == sections
                && newest_file != Some(name)
                && parsed.damage.is_none()
            {
                logged.lost = Some(Loss {
                    first: number,
                    last: newest,
                    why: format!(
                        "write-ahead log segment {} ends before the cut of batch {number}, though later segments exist",
                        path.display()
                    ),
                });
            }
        }
        if jumped {
            logged.repairs.push(Repair::SetAside { path });
            continue;
        }
        match parsed.damage {
            Some((why, last_frame)) if last_frame && newest_file == Some(name) => {
                logged.notes.push(format!(
                    "write-ahead log segment {}: {why} (a torn write); used its first {} bytes and skipped {} bytes (saved as {})",
                    path.display(),
                    parsed.good,
                    bytes.len() - parsed.good,
                    path.with_extension("log.damaged").display()
                ));
                logged.repairs.push(Repair::CutBack {
                    path,
                    keep: parsed.good,
                });
            }
            Some((why, _)) => {
                logged.lost = Some(Loss {
                    first: stopped_at,
                    last: newest.max(stopped_at),
                    why: format!(
                        "write-ahead log segment {} is damaged: {why}",
                        path.display()
                    ),
                });
                logged.repairs.push(Repair::CutBack {
                    path,
                    keep: parsed.good,
                });
            }
            None => {}
        }
    }
    Ok(logged)
}

/// The newest batch whose section header follows the damaged frame at `damaged` in
/// `bytes` (0 if none can be read): how far the batches a damage loses go.
fn batch_beyond(bytes: &[u8], damaged: usize, instance: InstanceId) -> u64 {
    let Some(len) = bytes.get(damaged..damaged + 4) else {
        return 0;
    };
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let Some(rest) = bytes.get(damaged + 8 + len..) else {
        return 0;
    };
    frame::read(rest)
        .0
        .into_iter()
        .filter_map(|payload| {
            let header = format::body(Kind::Segment, payload).ok()?;
            codec::decode::<SegmentHeader>(header).ok()
        })
        .filter(|header| header.instance == instance)
        .map(|header| header.number)
        .max()
        .unwrap_or(0)
}

/// Takes note that the log goes on with batch `number`: a jump from the batch expected is
/// a missing segment, unless it is the first batch read (the caller knows why: the
/// checkpoints).
fn arrive(
    logged: &mut Logged,
    expected: &mut (u64, Option<(Digest, String)>),
    number: u64,
    newest: u64,
    dir: &Path,
) {
    let first = *logged.first.get_or_insert(number);
    if number == expected.0 {
        return;
    }
    if number == first {
        *expected = (number, None);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::tenancy::{Account, HostConfig, Quotas, Tenancy, TenantConfig};

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

    /// A fresh log in `dir` with `rolling`, at batch 1, of a tenant with no quota.
    fn fresh(dir: &Path, rolling: Rolling) -> Wal {
        fresh_counted(dir, rolling, counted(None).1)
    }

    /// A fresh log in `dir` with `rolling`, at batch 1, whose files count in `retained`.
    fn fresh_counted(dir: &Path, rolling: Rolling, retained: HeldBytes) -> Wal {
        let chain = Chain {
            instance: INSTANCE,
            previous: format::NO_DIGEST,
            finished: BTreeMap::new(),
            files: SeenBySource::default(),
            files_logged: FilesLogged::new(),
        };
        Wal::open(dir, FsyncPolicy::Never, rolling, 1, chain, retained).unwrap()
    }

    /// A job's count of host bytes for a tenant with `max_host_bytes`, and its account.
    fn counted(max_host_bytes: Option<usize>) -> (Arc<Account>, HeldBytes) {
        let tenancy = Tenancy::new(&HostConfig {
            tenants: vec![TenantConfig {
                quotas: Quotas {
                    max_host_bytes,
                    ..Quotas::default()
                },
                ..TenantConfig::named("t")
            }],
            ..HostConfig::default()
        })
        .unwrap();
        let account = tenancy.account("t").unwrap();
        (account.clone(), HeldBytes::new(account, "j"))
    }

    /// The bytes of the segment files in `dir`.
    fn bytes_on_disk(dir: &Path) -> u64 {
        segments(dir)
            .unwrap()
            .iter()
            .map(|(_, path)| fs::metadata(path).unwrap().len())
            .sum()
    }

    #[test]
    fn the_segments_on_disk_count_against_max_host_bytes_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (account, retained) = counted(Some(4096));
        let mut wal = fresh_counted(dir.path(), Rolling::EVERY_BATCH, retained);
        log(&mut wal, 1..=4);
        let logged = bytes_on_disk(dir.path());
        assert_eq!(
            (account.host_bytes(), wal.retained_bytes()),
            (logged, logged)
        );

        wal.forget_up_to(3).unwrap();
        let kept = bytes_on_disk(dir.path());
        assert!(kept < logged, "{kept} of {logged} bytes kept");
        assert_eq!(account.host_bytes(), kept, "deleted segments are released");

        let mut big = Batch::new();
        big.push(&"x".repeat(5000)).unwrap();
        let refused = format!("{:#}", wal.records(0, &big).unwrap_err());
        assert!(
            refused.contains("`max_host_bytes` is 4096 bytes")
                && refused.contains("this job's retained write-ahead log"),
            "{refused}"
        );
        assert_eq!(
            bytes_on_disk(dir.path()),
            kept,
            "nothing refused was written"
        );
        assert_eq!(account.host_bytes(), kept);
        log(&mut wal, 5..=5);
        assert_eq!(account.host_bytes(), bytes_on_disk(dir.path()));
        drop(wal);
        assert_eq!(account.host_bytes(), 0, "a closed log holds nothing");
    }

    /// Logs one record (`"b<number>"`) for each batch of `batches`, and cuts it.
    fn log(wal: &mut Wal, batches: std::ops::RangeInclusive<u64>) {
        for number in batches {
            let mut records = Batch::new();
            records.push(&format!("b{number}")).unwrap();
            wal.records(0, &records).unwrap();
            wal.cut(Cut {
                number,
                time_ms: number as i64,
                positions: vec![None],
                ranges: Vec::new(),
            })
            .unwrap();
        }
    }

    fn names(dir: &Path) -> Vec<u64> {
        segments(dir).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    fn cut_numbers(logged: &Logged) -> Vec<u64> {
        logged.batches.iter().map(|(cut, _)| cut.number).collect()
    }

    fn read_all(dir: &Path) -> Logged {
        read(dir, 0, 1, INSTANCE, (format::NO_DIGEST, "the start")).unwrap()
    }

    #[test]
    fn a_segment_holds_batches_until_it_reaches_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let rolling = Rolling {
            max_bytes: 300,
            max_age: Duration::from_secs(3600),
        };
        let mut wal = fresh(dir.path(), rolling);
        log(&mut wal, 1..=12);
        let names = names(dir.path());
        assert!(
            names.len() > 2 && names.len() < 12,
            "several batches per segment: {names:?}"
        );
        for (name, path) in segments(dir.path()).unwrap() {
            let parsed = parse(&fs::read(&path).unwrap()).unwrap();
            assert_eq!(parsed.sections[0].header.number, name);
            assert!(parsed.damage.is_none());
        }
        let logged = read_all(dir.path());
        assert_eq!(cut_numbers(&logged), (1..=12).collect::<Vec<_>>());
        assert!(logged.lost.is_none() && logged.notes.is_empty() && logged.refused.is_empty());
        // The digests read back are those the writer handed to checkpoints.
        for number in 1..=12 {
            assert_eq!(logged.digests.get(&number), wal.digest_of(number).as_ref());
        }
    }

    #[test]
    fn a_segment_rolls_when_it_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let rolling = Rolling {
            max_bytes: u64::MAX,
            max_age: Duration::ZERO,
        };
        let mut wal = fresh(dir.path(), rolling);
        log(&mut wal, 1..=3);
        assert_eq!(names(dir.path()), [1, 2, 3, 4]);
        let mut wal = fresh(tempfile::tempdir().unwrap().path(), Rolling::default());
        log(&mut wal, 1..=3);
        assert_eq!(wal.segment.first, 1, "young and small: one segment");
    }

    #[test]
    fn forgetting_deletes_a_segment_only_once_every_batch_in_it_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = fresh(dir.path(), Rolling::default());
        log(&mut wal, 1..=3);
        let mut late = Batch::new();
        late.push("b4").unwrap();
        wal.records(0, &late).unwrap();
        // Batch 4 is under way: the segment goes on until its cut.
        wal.forget_up_to(2).unwrap();
        assert_eq!(names(dir.path()), [1]);
        wal.cut(Cut {
            number: 4,
            time_ms: 4,
            positions: vec![None],
            ranges: Vec::new(),
        })
        .unwrap();
        assert_eq!(
            names(dir.path()),
            [1, 5],
            "rolled at the cut after a checkpoint"
        );
        log(&mut wal, 5..=6);
        wal.forget_up_to(3).unwrap();
        assert_eq!(
            names(dir.path()),
            [1, 5, 7],
            "segment 1 still holds batch 4"
        );
        let four = wal.digest_of(4).unwrap();
        wal.forget_up_to(4).unwrap();
        assert_eq!(names(dir.path()), [5, 7]);
        assert_eq!(wal.digest_of(4), None);
        let logged = read(dir.path(), 4, 1, INSTANCE, (four, "checkpoint 4")).unwrap();
        assert_eq!(cut_numbers(&logged), [5, 6]);
        assert!(logged.lost.is_none() && logged.refused.is_empty());
    }

    #[test]
    fn a_checkpoint_with_nothing_logged_since_moves_the_next_section_to_a_segment_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = fresh(dir.path(), Rolling::default());
        log(&mut wal, 1..=3);
        let covered = wal.digest_of(3).unwrap();
        wal.forget_up_to(3).unwrap();
        assert_eq!(names(dir.path()), [1, 4]);
        let first = parse(&fs::read(segment_path(dir.path(), 1)).unwrap()).unwrap();
        assert_eq!(
            first.sections.len(),
            3,
            "segment 1 ends with the cut of batch 3"
        );
        assert!(first.sections.iter().all(|section| section.cut));
        let logged = read(dir.path(), 3, 1, INSTANCE, (covered, "checkpoint 3")).unwrap();
        assert!(logged.batches.is_empty() && logged.refused.is_empty() && logged.lost.is_none());
        assert_eq!(logged.first, Some(4));
    }

    #[test]
    fn watermarks_are_read_back_by_batch_and_forgotten_with_their_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = fresh(dir.path(), Rolling::default());
        log(&mut wal, 1..=2);
        // Batches compute after their cut: their watermarks land in batch 3's section.
        wal.watermark(1, 5_000).unwrap();
        wal.watermark(2, 35_000).unwrap();
        let logged = read_all(dir.path());
        assert_eq!(logged.watermarks, BTreeMap::from([(1, 5_000), (2, 35_000)]));
        assert_eq!(cut_numbers(&logged), [1, 2]);
        assert!(logged.lost.is_none() && logged.refused.is_empty() && logged.notes.is_empty());

        // A checkpoint of batch 2 needs neither: batch 3's section still moves to a
        // segment of its own, so that segment 1 can go.
        let covered = wal.digest_of(2).unwrap();
        wal.forget_up_to(2).unwrap();
        assert_eq!(names(dir.path()), [1, 3]);
        let logged = read(dir.path(), 2, 1, INSTANCE, (covered, "checkpoint 2")).unwrap();
        assert!(logged.watermarks.is_empty() && logged.batches.is_empty());
        assert!(logged.lost.is_none() && logged.refused.is_empty());

        // One a re-run needs is kept in the section it is in.
        log(&mut wal, 3..=3);
        wal.watermark(3, 40_000).unwrap();
        wal.forget_up_to(2).unwrap();
        log(&mut wal, 4..=4);
        let logged = read(dir.path(), 2, 1, INSTANCE, (covered, "checkpoint 2")).unwrap();
        assert_eq!(logged.watermarks, BTreeMap::from([(3, 40_000)]));
        assert_eq!(cut_numbers(&logged), [3, 4]);
    }

    #[test]
    fn the_log_goes_on_in_its_newest_segment_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = fresh(dir.path(), Rolling::default());
        log(&mut wal, 1..=2);
        let mut early = Batch::new();
        early.push("early").unwrap();
        wal.records(0, &early).unwrap();
        drop(wal);
        let logged = read_all(dir.path());
        assert_eq!(cut_numbers(&logged), [1, 2]);
        let chain = Chain {
            instance: INSTANCE,
            previous: logged.digests[&2],
            finished: logged.digests.clone(),
            files: SeenBySource::default(),
            files_logged: FilesLogged::new(),
        };
        let (account, retained) = counted(None);
        let mut wal = Wal::open(
            dir.path(),
            FsyncPolicy::Never,
            Rolling::default(),
            3,
            chain,
            retained,
        )
        .unwrap();
        assert_eq!(
            account.host_bytes(),
            bytes_on_disk(dir.path()),
            "a reopened log counts the segments it finds"
        );
        log(&mut wal, 3..=3);
        assert_eq!(names(dir.path()), [1]);
        let logged = read_all(dir.path());
        assert_eq!(cut_numbers(&logged), [1, 2, 3]);
        assert_eq!(
            logged.batches[2].1[0].len(),
            2,
            "the record before the restart is kept"
        );
        assert_eq!(logged.digests.get(&3), wal.digest_of(3).as_ref());
    }

    #[test]
    fn damage_inside_a_segment_of_many_batches_loses_the_batches_from_it_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = fresh(dir.path(), Rolling::default());
        log(&mut wal, 1..=4);
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let clean = fs::read(&path).unwrap();
        // The record of batch 2: the first frame after the cut of batch 1 and the header
        // of batch 2.
        let two = &parse(&clean).unwrap().sections[1];
        let (frames, _) = frame::read(&clean[two.start..two.end]);
        let mut bytes = clean.clone();
        bytes[two.start + 8 + frames[0].len() + 8 + 1] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let logged = read_all(dir.path());
        let lost = logged.lost.as_ref().expect("a loss");
        assert_eq!((lost.first, lost.last), (2, 5), "{lost:?}");
        assert!(lost.why.contains(&path.display().to_string()), "{lost:?}");
        assert_eq!(cut_numbers(&logged), [1]);

        // A torn last frame of the newest segment loses nothing.
        let mut torn = clean.clone();
        torn.extend_from_slice(&[40, 0, 0, 0, 1, 2]);
        fs::write(&path, &torn).unwrap();
        let logged = read_all(dir.path());
        assert!(logged.lost.is_none(), "{:?}", logged.lost);
        assert_eq!(cut_numbers(&logged), [1, 2, 3, 4]);
        assert!(logged.notes[0].contains("torn"), "{:?}", logged.notes);
        logged.repair().unwrap();
        assert_eq!(fs::read(&path).unwrap(), clean, "the tear is cut off");
    }

    #[test]
    fn a_section_that_does_not_continue_the_one_before_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = fresh(dir.path(), Rolling::default());
        log(&mut wal, 1..=3);
        drop(wal);
        let path = segment_path(dir.path(), 1);
        let bytes = fs::read(&path).unwrap();
        let parsed = parse(&bytes).unwrap();
        // Batch 3's section swapped for batch 2's: framed well, in the wrong place.
        let (two, three) = (&parsed.sections[1], &parsed.sections[2]);
        let mut swapped = bytes[..three.start].to_vec();
        swapped.extend_from_slice(&bytes[two.start..two.end]);
        fs::write(&path, &swapped).unwrap();
        let logged = read_all(dir.path());
        assert!(
            logged.refused[0].contains(&path.display().to_string())
                && logged.refused[0].contains("holds batch 2"),
            "{:?}",
            logged.refused
        );
    }

    #[test]
    fn a_format_1_log_reads_the_same_and_a_later_format_is_refused_naming_its_release() {
        // What this release writes is of its format.
        let dir = tempfile::tempdir().unwrap();
        log(&mut fresh(dir.path(), Rolling::default()), 1..=1);
        let written = fs::read(segment_path(dir.path(), 1)).unwrap();
        let (frames, _) = frame::read(&written);
        assert_eq!(frames[0][8..12], format::FORMAT.to_le_bytes());
        // A section with `entry`, as a release of `format` writes it.
        let section = |format: u32, entry: &[u8]| {
            let mut first = header(1);
            first[8..12].copy_from_slice(&format.to_le_bytes());
            let mut bytes = Vec::new();
            frame::write(&mut bytes, &first).unwrap();
            frame::write(&mut bytes, entry).unwrap();
            let cut = Entry::Cut(Cut {
                number: 1,
                time_ms: 1,
                positions: vec![None],
                ranges: Vec::new(),
            });
            frame::write(&mut bytes, &codec::encode(&cut)).unwrap();
            bytes
        };
        let watermark = codec::encode(&Entry::Watermark {
            batch: 1,
            watermark_ms: 5_000,
        });
        let segment = |format: u32| section(format, &watermark);
        // The last kind is the last variant.
        assert_eq!(usize::from(watermark[0]), ENTRY_KINDS.len() - 1);
        for format in format::OLDEST_FORMAT..=format::FORMAT {
            let dir = tempfile::tempdir().unwrap();
            fs::write(segment_path(dir.path(), 1), segment(format)).unwrap();
            let logged = read_all(dir.path());
            assert_eq!(cut_numbers(&logged), [1], "format {format}");
            assert_eq!(logged.watermarks, BTreeMap::from([(1, 5_000)]));
            assert!(logged.refused.is_empty(), "{:?}", logged.refused);
        }
        // An entry of a kind this release does not know is named as such.
        let mut unknown = codec::encode(&9u32);
        unknown.extend_from_slice(&[1, 2]);
        let (damage, _) = parse(&section(format::FORMAT, &unknown))
            .unwrap()
            .damage
            .unwrap();
        assert!(
            damage.contains("an entry of kind 9, which this release")
                && damage.contains("records, cut, files, watermark")
                && damage.contains("a newer Sluice"),
            "{damage}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        fs::write(&path, segment(format::FORMAT + 1)).unwrap();
        let logged = read_all(dir.path());
        assert!(logged.batches.is_empty() && logged.watermarks.is_empty());
        let refused = &logged.refused[0];
        for part in [
            path.display().to_string(),
            format!("checkpoint format {}", format::FORMAT + 1),
            "a newer release than this one".to_owned(),
        ] {
            assert!(refused.contains(&part), "`{part}` is not in: {refused}");
        }
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
        let watermark = (0u64..4, any::<i64>()).prop_map(|(batch, watermark_ms)| {
            codec::encode(&Entry::Watermark {
                batch,
                watermark_ms,
            })
        });
        prop_oneof![
            records,
            cut,
            watermark,
            prop::collection::vec(any::<u8>(), 0..64)
        ]
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
