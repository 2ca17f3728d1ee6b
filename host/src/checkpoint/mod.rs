//! Checkpoints and the write-ahead log: what lets a job resume after a crash with nothing
//! received lost and nothing counted twice, and that refuses to resume rather than give a
//! wrong result.
//!
//! A checkpoint directory holds:
//! - `instance`: the [instance id](instance), made at the job's first start in the
//!   directory (one with neither `wal/` nor `state/`);
//! - `wal/`: the [write-ahead log](wal), segment files of a section per batch: the
//!   records of sources that cannot replay them, then where the batch was cut (and
//!   the event-time watermark each batch computed with, logged as it starts);
//! - `state/`: [state checkpoints](snapshot) every `every` batches: each stateful
//!   operator's state, the batch it covers, where replayable sources resume;
//! - `metadata.json`: the manifest, the components' digests and the last completed batch,
//!   rewritten in place after every batch (for people and `sluice checkpoint inspect`
//!   only: recovery never reads it);
//! - `lock`: held by the [run](lock) that uses the directory.
//!
//! # Format
//!
//! Every file is made of frames (length, CRC-32, bytes: see [`frame`]). The first frame of
//! the instance file, of every batch's section of a segment and of every checkpoint
//! starts with a [format header](mod@format): its kind, the format version
//! ([`format::FORMAT`]) and the release that wrote it, so that a later release can read
//! it or refuse it naming both. Then each says what it is: the instance id; a section its
//! batch number and the digest (SHA-256) of the section before it; a checkpoint the batch
//! it covers, the digest of the checkpoint before it and the digest of the section of its
//! batch. The files of a directory are thus one hash chain: each checkpoint hands on to
//! the section after it, each section to the next. Segments are deleted once the two kept
//! checkpoints cover every batch in them, so the chain is checked from the checkpoint
//! recovery starts from: the log before it is not needed.
//!
//! # Recovery
//!
//! Recovery restores the newest usable state checkpoint, then re-runs every batch cut
//! after it from the log, in order, with the same records and event-time watermarks
//! (computing one afresh only for a batch the log has none for). Outputs of a re-run batch
//! replace the first run's (files are named by batch time and written by rename). First,
//! temporary files (`*.tmp`) left by an interrupted write are removed. Then:
//! - a file of another instance (another job, or another run of this one), a segment or
//!   checkpoint whose contents do not match its name, or a segment that does not continue
//!   its predecessor, is refused, naming the file and what is wrong: it is never used;
//! - a torn write, damage confined to the last frame of the newest segment, is cut back
//!   to the records before it and reported: nothing cut is lost;
//! - a damaged newest checkpoint is set aside and the one before it used, with the log
//!   after it: nothing is lost either;
//! - anything else that would leave batches out (damage in any other frame, a missing
//!   segment, no usable checkpoint for batches the log no longer holds) is a [`Loss`]:
//!   recovery stops, saying which batches and why, unless
//!   [`accept_data_loss`](RecoveryOptions::accept_data_loss) lets it go on without them
//!   (the losses are then in [`Recovery::lost`]).
//!
//! Restoring a whole older copy of the directory is accepted: its files are one chain,
//! and the job resumes from that copy (it rewinds). Mixing files of different copies is
//! refused where the chain breaks.

pub mod codec;
pub mod durable;
pub mod files;
pub mod format;
pub mod frame;
pub mod instance;
pub mod lock;
mod recover;
pub mod snapshot;
pub mod wal;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_abi::Batch;

use crate::job::Job;
use crate::manifest::CheckpointConfig;
use format::{Digest, InstanceId};
pub use lock::DirLock;
use recover::{checked_against, find_base, losses, remove_stale_temporaries};
pub use snapshot::{SavedOperator, Snapshot};
pub use wal::{Cut, OffsetRange, Wal};

/// The checkpointing side of a running job.
pub struct Checkpointer {
    config: CheckpointConfig,
    instance: InstanceId,
    wal: Arc<Mutex<Wal>>,
    /// The digest of the newest checkpoint written or restored: the next one names it.
    previous: Mutex<Digest>,
}

/// What recovery may do, and how the log goes on.
#[derive(Debug, Clone, Default)]
pub struct RecoveryOptions {
    /// Stateful steps (`stream/step`) that start empty rather than from their
    /// checkpointed state (`--fresh-state`).
    pub fresh_state: Vec<String>,
    /// Go on when recovery would lose batches (`--accept-data-loss`), rather than refuse.
    pub accept_data_loss: bool,
    /// When the write-ahead log starts a new segment file (a test damaging one batch's
    /// file sets one per batch).
    pub wal_rolling: wal::Rolling,
    /// The run takes over from a run of the same job that has just stopped (a redeploy):
    /// its batch times go on from the last one that run cut, catching up if the handover
    /// took longer than an interval, so that no batch time is skipped. Otherwise the
    /// first batch time is the next interval boundary after the start.
    pub handover: bool,
}

/// Batches recovery cannot re-run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The first batch lost.
    pub first: u64,
    /// The last batch lost.
    pub last: u64,
    /// Why, naming the files.
    pub why: String,
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "batch {} ({})", self.first, self.why)
        } else {
            write!(f, "batches {} to {} ({})", self.first, self.last, self.why)
        }
    }
}

/// What recovery found and must still do.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The directory's instance id, if it was made at this start (a first start).
    pub made_instance: Option<InstanceId>,
    /// The state checkpoint restored, as (batch number, batch time).
    pub restored: Option<(u64, i64)>,
    /// Batches cut after it, to re-run in order: each cut with its logged records.
    pub replay: Vec<(Cut, Vec<Batch>)>,
    /// The event-time watermark each batch to re-run computed with in its first run, by
    /// batch (none for one that did not get to compute, or logged before watermarks were).
    pub watermarks: BTreeMap<u64, i64>,
    /// Records logged after the last cut, per source: they go into the next batch.
    pub pending: Vec<Batch>,
    /// Where replayable sources resume.
    pub positions: Vec<Option<u64>>,
    /// Per source that replays by offset (Kafka), the ranges of the last batch cut: it
    /// resumes at their ends (empty: where its starting offsets say).
    pub ranges: Vec<Vec<wal::OffsetRange>>,
    /// Per directory source, the files read so far (up to the last record logged): it
    /// reads the rest.
    pub files: files::SeenBySource,
    /// The number of the first batch to cut.
    pub next_number: u64,
    /// With [`RecoveryOptions::handover`], the time of the last batch cut before this
    /// start (re-run or checkpointed): the batch times go on from it.
    pub continues_after_ms: Option<i64>,
    /// What was damaged, repaired or changed, for the log.
    pub notes: Vec<String>,
    /// Batches lost, accepted by [`RecoveryOptions::accept_data_loss`].
    pub lost: Vec<Loss>,
    /// How long restoring the state took.
    pub restore_time: Duration,
}

/// What writing a state checkpoint took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The batch it covers.
    pub number: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// How long saving and writing it took.
    pub took: Duration,
}

impl Checkpointer {
    /// The bytes the job's write-ahead log holds on disk.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.lock().expect("log poisoned").retained_bytes()
    }

    /// Logs the event-time watermark batch `number` (already cut) computes with, before
    /// its output reaches a sink: a re-run of it uses the same.
    pub fn log_watermark(&self, number: u64, watermark_ms: i64) -> Result<()> {
        self.wal
            .lock()
            .expect("log poisoned")
            .watermark(number, watermark_ms)
    }

    /// Opens `config.dir` for `job`: removes stale temporary files, checks the instance,
    /// restores the newest usable state checkpoint into the job (steps named in
    /// `options.fresh_state` start empty instead), reads what the log holds after it, and
    /// opens the log for the batches to come. The [module docs](self) say what is refused
    /// and what is lost.
    ///
    /// A checkpoint from another job, or one whose state a step of this job cannot take
    /// (a stateful step removed, or of another kind), is refused with what changed,
    /// unless `fresh_state` names the step.
    pub fn open(
        config: &CheckpointConfig,
        job: &Job,
        options: &RecoveryOptions,
    ) -> Result<(Self, Recovery)> {
        let dir = &config.dir;
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the checkpoint directory {}", dir.display()))?;
        let mut notes = remove_stale_temporaries(dir)?;
        let (instance, made) = instance::open(dir)?;
        let sources = job.config().sources.len();
        let started = Instant::now();
        let base = find_base(dir, instance)?;
        let (after, previous, continues) = match &base.restored {
            Some((snapshot, path, _)) => (
                snapshot.number,
                snapshot.log,
                format!("state checkpoint {}", path.display()),
            ),
            None => (0, format::NO_DIGEST, "the start of the log".to_owned()),
        };
        let logged = wal::read(
            &wal_dir(dir),
            after,
            sources,
            instance,
            (previous, &continues),
        )?;
        if !logged.refused.is_empty() {
            bail!(
                "{}. Such files are never replayed: move them out of {} if they do not belong there, then run again ({})",
                logged.refused.join("; "),
                dir.display(),
                checked_against(dir, instance)
            );
        }
        let lost = losses(dir, &base, after, &logged);
        if !lost.is_empty() && !options.accept_data_loss {
            let lost: Vec<String> = lost.iter().map(Loss::to_string).collect();
            bail!(
                "recovery would lose {}, so the job was not started. Nothing in {} was changed. Restore the damaged or missing files if you have them, or run again with --accept-data-loss to go on without those batches",
                lost.join("; "),
                dir.display()
            );
        }
        let mut recovery = Recovery {
            made_instance: made.then_some(instance),
            positions: vec![None; sources],
            ..Recovery::default()
        };
        let mut restored_notes = Vec::new();
        let mut checkpoint_digest = format::NO_DIGEST;
        if let Some((snapshot, _, digest)) = &base.restored {
            restore(job, snapshot, &options.fresh_state, &mut restored_notes)?;
            recovery.restored = Some((snapshot.number, snapshot.time_ms));
            recovery.positions = snapshot.positions.clone();
            recovery.positions.resize(sources, None);
            recovery.ranges = snapshot.ranges.clone();
            recovery.files = snapshot.files.clone();
            checkpoint_digest = *digest;
        }
        recovery.restore_time = started.elapsed();
        // Going on: from here the directory is changed.
        for (_, path, why) in &base.damaged {
            let aside = path.with_extension("ckpt.damaged");
            fs::rename(path, &aside)
                .with_context(|| format!("cannot set aside {}", path.display()))?;
            notes.push(format!(
                "{why}; fell back to the previous checkpoint (kept the damaged one as {})",
                aside.display()
            ));
        }
        logged.repair()?;
        notes.extend(logged.notes.iter().cloned());
        notes.extend(restored_notes);
        if let Some((last, _)) = logged.batches.last() {
            recovery.positions = last
                .positions
                .iter()
                .map(|position| position.map(|p| p + 1))
                .collect();
            recovery.positions.resize(sources, None);
            recovery.ranges = last.ranges.clone();
        }
        recovery.next_number = match logged.batches.last() {
            Some((cut, _)) => cut.number + 1,
            None => logged.first.unwrap_or(after + 1),
        };
        if options.handover {
            recovery.continues_after_ms = logged
                .batches
                .last()
                .map(|(cut, _)| cut.time_ms)
                .or(recovery.restored.map(|(_, time_ms)| time_ms));
        }
        // Re-run batches keep their numbers (windows slide on them), even after a loss.
        job.resume_after(
            logged
                .batches
                .first()
                .map_or(recovery.next_number, |(cut, _)| cut.number)
                - 1,
        );
        let before_next = recovery.next_number - 1;
        let files_at_base = recovery.files.clone();
        for (source, delta) in logged.files.values().flatten() {
            files::merge_into(&mut recovery.files, *source, delta);
        }
        let chain = wal::Chain {
            instance,
            files: files_at_base,
            files_logged: logged.files.clone(),
            previous: match logged.digests.get(&before_next) {
                Some(digest) => *digest,
                None if before_next == after => previous,
                None => format::NO_DIGEST,
            },
            finished: logged.digests,
        };
        recovery.replay = logged.batches;
        recovery.watermarks = logged.watermarks;
        recovery.pending = logged.pending;
        recovery.notes = notes;
        recovery.lost = lost;
        let wal = Wal::open(
            &wal_dir(dir),
            config.fsync,
            options.wal_rolling,
            recovery.next_number,
            chain,
            job.another_held_count(),
        )?
        .with_disk_quota(disk_quota(job));
        Ok((
            Self {
                config: config.clone(),
                instance,
                wal: Arc::new(Mutex::new(wal)),
                previous: Mutex::new(checkpoint_digest),
            },
            recovery,
        ))
    }

    /// The write-ahead log, for the receivers.
    pub fn wal(&self) -> Arc<Mutex<Wal>> {
        self.wal.clone()
    }

    /// Records that batch `cut` is complete: rewrites the metadata, and every `every`
    /// batches writes a state checkpoint and drops the log segments no kept checkpoint
    /// needs.
    pub fn completed(&self, job: &Job, cut: &Cut) -> Result<Option<Written>> {
        write_metadata(&self.config.dir, self.instance, job, cut)?;
        if !cut.number.is_multiple_of(self.config.every) {
            return Ok(None);
        }
        self.checkpoint(job, cut).map(Some)
    }

    /// Writes a state checkpoint of `job` after batch `cut` (the last batch it completed),
    /// whatever `every` says, and drops the log segments no kept checkpoint needs. A run
    /// that is stopped does this last, so that the next start restores rather than
    /// re-runs the batches since the last regular checkpoint.
    pub fn checkpoint(&self, job: &Job, cut: &Cut) -> Result<Written> {
        let positions: Vec<Option<u64>> = cut
            .positions
            .iter()
            .map(|position| position.map(|p| p + 1))
            .collect();
        let started = Instant::now();
        let log = self
            .wal
            .lock()
            .expect("log poisoned")
            .digest_of(cut.number)
            .with_context(|| {
                format!(
                    "the write-ahead log holds no finished segment for batch {}, which the checkpoint must name",
                    cut.number
                )
            })?;
        let mut previous = self.previous.lock().expect("checkpoint digest poisoned");
        let files = self
            .wal
            .lock()
            .expect("log poisoned")
            .files_as_of(cut.number);
        let snapshot = Snapshot {
            instance: self.instance,
            job: job.config().name.clone(),
            number: cut.number,
            time_ms: cut.time_ms,
            previous: *previous,
            log,
            positions,
            ranges: cut.ranges.clone(),
            files,
            operators: job
                .stateful_steps()
                .iter()
                .map(|step| {
                    let state = step.state.save();
                    SavedOperator {
                        id: step.id.to_owned(),
                        kind: step.state.kind().to_owned(),
                        udfs: step.udfs.to_vec(),
                        entries: step.state.entries() as u64,
                        state,
                    }
                })
                .collect(),
        };
        let state_dir = state_dir(&self.config.dir);
        let saved = snapshot::write(&state_dir, &snapshot, disk_quota(job).as_deref())?;
        *previous = saved.digest;
        let oldest_kept = snapshot::list(&state_dir)?
            .last()
            .map_or(cut.number, |(number, _)| *number);
        self.wal
            .lock()
            .expect("log poisoned")
            .forget_up_to(oldest_kept)?;
        Ok(Written {
            number: cut.number,
            bytes: saved.bytes,
            took: started.elapsed(),
        })
    }
}

/// The disk quota of a served job's tenant: its checkpoints and log count in it.
fn disk_quota(job: &Job) -> Option<Arc<crate::disk::DiskQuota>> {
    job.config()
        .hosted
        .as_ref()
        .map(|hosted| hosted.disk.clone())
}

/// The files `<number><suffix>` in `dir` (none if it does not exist), by number; only
/// names as Sluice writes them (20 digits) count, others are not its files.
fn numbered_files(dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(suffix))
            .filter(|number| number.len() == 20 && number.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|number| number.parse().ok());
        if let Some(number) = number {
            found.push((number, path));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests;

fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

/// Restores every saved operator into the step of the same id, after checking that the
/// job can take it.
fn restore(
    job: &Job,
    snapshot: &Snapshot,
    fresh: &[String],
    notes: &mut Vec<String>,
) -> Result<()> {
    if snapshot.job != job.config().name {
        bail!(
            "the checkpoint directory holds job `{}`, not `{}`: give this job its own directory",
            snapshot.job,
            job.config().name
        );
    }
    let steps = job.stateful_steps();
    let mut refused = Vec::new();
    for saved in &snapshot.operators {
        let step = steps.iter().find(|step| step.id == saved.id);
        let problem = match step {
            None => Some(format!(
                "step `{}` ({}) kept state, and this manifest has no stateful step there",
                saved.id, saved.kind
            )),
            Some(step) if step.state.kind() != saved.kind => Some(format!(
                "step `{}` kept {} state, and is now a {} step",
                saved.id,
                saved.kind,
                step.state.kind()
            )),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            if fresh.contains(&saved.id) {
                notes.push(format!("{problem}: its state is dropped (--fresh-state)"));
            } else {
                refused.push(problem);
            }
            continue;
        }
        let step = step.expect("checked above");
        if fresh.contains(&saved.id) {
            notes.push(format!(
                "step `{}` starts with fresh state (--fresh-state)",
                saved.id
            ));
            continue;
        }
        for (label, digest) in step.udfs {
            let before = saved
                .udfs
                .iter()
                .find(|(saved_label, _)| saved_label == label);
            if let Some((_, old)) = before.filter(|(_, old)| old != digest) {
                notes.push(format!(
                    "step `{}`: {label} was redeployed (component {} -> {}); its state carries over",
                    saved.id,
                    &old[..12.min(old.len())],
                    &digest[..12.min(digest.len())]
                ));
            }
        }
        step.state
            .restore(&saved.state)
            .with_context(|| format!("cannot restore the state of step `{}`", saved.id))?;
    }
    if !refused.is_empty() {
        bail!(
            "this manifest cannot resume from the checkpoint: {}. Restore the step, or start it with empty state by running again with `--fresh-state STEP` for each step named",
            refused.join("; ")
        );
    }
    Ok(())
}

/// The metadata file: what a person (or `sluice checkpoint inspect`) wants to know
/// without decoding a checkpoint.
fn write_metadata(dir: &Path, instance: InstanceId, job: &Job, cut: &Cut) -> Result<()> {
    let components: serde_json::Map<String, serde_json::Value> = job
        .udf_digests()
        .into_iter()
        .map(|(label, digest)| (label.to_owned(), digest.into()))
        .collect();
    let metadata = serde_json::json!({
        "job": job.config().name,
        "instance": instance.to_string(),
        "format": format::FORMAT,
        "manifest": job.config().manifest,
        "components": components,
        "last_completed_batch": { "number": cut.number, "time_ms": cut.time_ms },
        "source_positions": cut.positions,
    });
    // Rewritten in place, not renamed over: a new file per batch cost a host of 1000 jobs
    // an inode made and freed per batch. Recovery never reads it, so a write torn by a
    // crash harms nothing (the next batch writes it whole again).
    let path = dir.join("metadata.json");
    fs::write(&path, serde_json::to_vec_pretty(&metadata)?)
        .with_context(|| format!("cannot write {}", path.display()))
}
