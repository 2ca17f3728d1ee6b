//! Checkpoints and the write-ahead log: what lets a job resume after a crash with nothing
//! received lost and nothing counted twice.
//!
//! A checkpoint directory holds:
//! - `wal/`: the [write-ahead log](wal), one segment per batch: the records of sources
//!   that cannot replay them, then where the batch was cut;
//! - `state/`: [state checkpoints](snapshot) every `every` batches: each stateful
//!   operator's state, the batch it covers, where replayable sources resume;
//! - `metadata.json`: the manifest, the components' digests and the last completed batch,
//!   rewritten after every batch (for people and `sluice checkpoint inspect`).
//!
//! Recovery restores the newest good state checkpoint, then re-runs every batch cut after
//! it from the log, in order, with the same records. Outputs of a re-run batch replace
//! the first run's (files are named by batch time and written by rename).

pub mod codec;
pub mod frame;
pub mod snapshot;
pub mod wal;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_abi::Batch;

use crate::job::Job;
use crate::manifest::CheckpointConfig;
pub use snapshot::{SavedOperator, Snapshot};
pub use wal::{Cut, Wal};

/// The checkpointing side of a running job.
pub struct Checkpointer {
    config: CheckpointConfig,
    wal: Arc<Mutex<Wal>>,
}

/// What recovery found and must still do.
#[derive(Debug, Default)]
pub struct Recovery {
    /// The state checkpoint restored, as (batch number, batch time).
    pub restored: Option<(u64, i64)>,
    /// Batches cut after it, to re-run in order: each cut with its logged records.
    pub replay: Vec<(Cut, Vec<Batch>)>,
    /// Records logged after the last cut, per source: they go into the next batch.
    pub pending: Vec<Batch>,
    /// Where replayable sources resume.
    pub positions: Vec<Option<u64>>,
    /// The number of the first batch to cut.
    pub next_number: u64,
    /// What was damaged or changed, for the log.
    pub notes: Vec<String>,
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
    /// Opens `config.dir` for `job`: restores the newest good state checkpoint into the
    /// job (steps named in `fresh` start empty instead), reads what the log holds after
    /// it, and opens the log for the batches to come.
    ///
    /// A checkpoint from another job, or one whose state a step of this job cannot take
    /// (a stateful step removed, or of another kind), is refused with what changed,
    /// unless `fresh` names the step.
    pub fn open(
        config: &CheckpointConfig,
        job: &Job,
        fresh: &[String],
    ) -> Result<(Self, Recovery)> {
        let dir = &config.dir;
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the checkpoint directory {}", dir.display()))?;
        let sources = job.config().sources.len();
        let started = Instant::now();
        let (snapshot, mut notes) = snapshot::newest(&state_dir(dir))?;
        let mut recovery = Recovery {
            positions: vec![None; sources],
            ..Recovery::default()
        };
        if let Some(snapshot) = snapshot {
            restore(job, &snapshot, fresh, &mut notes)?;
            recovery.restored = Some((snapshot.number, snapshot.time_ms));
            recovery.positions = snapshot.positions.clone();
            recovery.positions.resize(sources, None);
        }
        recovery.restore_time = started.elapsed();
        let after = recovery.restored.map_or(0, |(number, _)| number);
        let logged = wal::read(&wal_dir(dir), after, sources)?;
        notes.extend(logged.damage);
        if let Some((first, _)) = logged.batches.first()
            && first.number != after + 1
        {
            notes.push(format!(
                "the log starts at batch {} but the state covers batches up to {after}: the batches in between are lost",
                first.number
            ));
        }
        if let Some((last, _)) = logged.batches.last() {
            recovery.positions = last
                .positions
                .iter()
                .map(|position| position.map(|p| p + 1))
                .collect();
            recovery.positions.resize(sources, None);
        }
        recovery.next_number = logged.batches.last().map_or(after, |(cut, _)| cut.number) + 1;
        // Re-run batches keep their numbers (windows slide on them), even after a gap.
        job.resume_after(
            logged
                .batches
                .first()
                .map_or(after, |(cut, _)| cut.number - 1),
        );
        recovery.replay = logged.batches;
        recovery.pending = logged.pending;
        recovery.notes = notes;
        let wal = Wal::open(&wal_dir(dir), config.fsync, recovery.next_number)?;
        Ok((
            Self {
                config: config.clone(),
                wal: Arc::new(Mutex::new(wal)),
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
        let positions: Vec<Option<u64>> = cut
            .positions
            .iter()
            .map(|position| position.map(|p| p + 1))
            .collect();
        write_metadata(&self.config.dir, job, cut)?;
        if !cut.number.is_multiple_of(self.config.every) {
            return Ok(None);
        }
        let started = Instant::now();
        let snapshot = Snapshot {
            job: job.config().name.clone(),
            number: cut.number,
            time_ms: cut.time_ms,
            positions,
            operators: job
                .stateful_steps()
                .iter()
                .map(|step| SavedOperator {
                    id: step.id.to_owned(),
                    kind: step.state.kind().to_owned(),
                    udfs: step.udfs.to_vec(),
                    entries: step.state.entries() as u64,
                    state: step.state.save(),
                })
                .collect(),
        };
        let state_dir = state_dir(&self.config.dir);
        let (_, bytes) = snapshot::write(&state_dir, &snapshot)?;
        let oldest_kept = snapshot::list(&state_dir)?
            .last()
            .map_or(cut.number, |(number, _)| *number);
        self.wal
            .lock()
            .expect("log poisoned")
            .forget_up_to(oldest_kept)?;
        Ok(Some(Written {
            number: cut.number,
            bytes,
            took: started.elapsed(),
        }))
    }
}

/// The files `<number><suffix>` in `dir` (none if it does not exist), by number.
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
            .and_then(|number| number.parse().ok());
        if let Some(number) = number {
            found.push((number, path));
        }
    }
    found.sort();
    Ok(found)
}

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
fn write_metadata(dir: &Path, job: &Job, cut: &Cut) -> Result<()> {
    let components: serde_json::Map<String, serde_json::Value> = job
        .udf_digests()
        .into_iter()
        .map(|(label, digest)| (label.to_owned(), digest.into()))
        .collect();
    let metadata = serde_json::json!({
        "job": job.config().name,
        "manifest": job.config().manifest,
        "components": components,
        "last_completed_batch": { "number": cut.number, "time_ms": cut.time_ms },
        "source_positions": cut.positions,
    });
    let path = dir.join("metadata.json");
    let temporary = dir.join("metadata.json.tmp");
    fs::write(&temporary, serde_json::to_vec_pretty(&metadata)?)
        .and_then(|()| fs::rename(&temporary, &path))
        .with_context(|| format!("cannot write {}", path.display()))
}
