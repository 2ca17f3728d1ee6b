//! State checkpoints: every stateful operator's state after a batch, with what is needed
//! to tell whether a (possibly redeployed) job may resume from it. One file per
//! checkpoint, `state/<batch number>.ckpt`, written whole by rename; the newest two are
//! kept, so that a damaged newest one still leaves one to recover from.
//!
//! A checkpoint is one frame: the [format header](super::format), then the [`Snapshot`],
//! which names the instance, the batch it covers, the digest of the checkpoint before it
//! and the digest of the log segment of its batch (which the next segment continues).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bincode::{Decode, Encode};

use super::format::{self, Digest, Hashing, InstanceId, Kind};
use super::{codec, durable, frame};
use crate::disk::DiskQuota;

/// How many checkpoints are kept.
pub const KEPT: usize = 2;

/// A state checkpoint.
#[derive(Debug, Clone, Encode, Decode)]
pub struct Snapshot {
    /// The instance whose state it is.
    pub instance: InstanceId,
    /// The job's name.
    pub job: String,
    /// The last batch it covers.
    pub number: u64,
    /// That batch's time, in milliseconds.
    pub time_ms: i64,
    /// The digest of the checkpoint before it ([`format::NO_DIGEST`] for the first).
    pub previous: Digest,
    /// The digest of the log segment of batch `number`: the segment after it continues it.
    pub log: Digest,
    /// Per source, the position a replayable source resumes from (`None` for others).
    pub positions: Vec<Option<u64>>,
    /// Per source that replays by offset (Kafka), the ranges batch `number` took: the
    /// source resumes at their ends.
    pub ranges: Vec<Vec<super::wal::OffsetRange>>,
    /// Per directory source, the files read as of batch `number`.
    pub files: super::files::SeenBySource,
    /// Every stateful operator's state.
    pub operators: Vec<SavedOperator>,
}

/// One operator's saved state and where it came from.
#[derive(Debug, Clone, Encode, Decode)]
pub struct SavedOperator {
    /// The step, as `stream/step number`.
    pub id: String,
    /// What kind of state it is.
    pub kind: String,
    /// The step's UDFs as `(manifest label, component SHA-256)`.
    pub udfs: Vec<(String, String)>,
    /// How many entries it held.
    pub entries: u64,
    /// The state, as the operator saved it.
    pub state: Vec<u8>,
}

/// The path of the checkpoint of batch `number` in `dir`.
pub fn path_of(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.ckpt"))
}

/// The checkpoint files in `dir`, newest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = super::numbered_files(dir, ".ckpt")?;
    found.reverse();
    Ok(found)
}

/// What a checkpoint written takes.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    /// Its size in bytes.
    pub bytes: u64,
    /// The digest of its file: the next checkpoint names it.
    pub digest: Digest,
}

/// Writes `snapshot` durably and deletes all but the newest [`KEPT`] checkpoints; with a
/// disk quota (a served job's tenant's), refuses to write one that would pass it.
pub fn write(dir: &Path, snapshot: &Snapshot, disk: Option<&DiskQuota>) -> Result<Saved> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = path_of(dir, snapshot.number);
    let mut payload = format::header(Kind::Checkpoint);
    payload.extend_from_slice(&codec::encode(snapshot));
    if let Some(disk) = disk {
        disk.take(frame::framed_len(payload.len()))
            .with_context(|| format!("cannot write checkpoint {}", path.display()))?;
    }
    let written = durable::replace(&path, |file| {
        let mut file = Hashing::new(file);
        frame::write(&mut file, &payload)?;
        Ok(file.digest())
    });
    let digest = written.with_context(|| format!("cannot write checkpoint {}", path.display()))?;
    for (_, old) in list(dir)?.into_iter().skip(KEPT) {
        fs::remove_file(&old).with_context(|| format!("cannot delete {}", old.display()))?;
    }
    Ok(Saved {
        bytes: payload.len() as u64 + 8,
        digest,
    })
}

/// Why a checkpoint cannot be used.
#[derive(Debug)]
pub enum Unusable {
    /// It is unreadable: damaged, cut short, or not there.
    Damaged(String),
    /// It is readable, and not a checkpoint this release may use here: another format,
    /// another instance, another batch than its name says.
    Refused(String),
}

/// Reads the checkpoint at `path`, checking its checksum, its format and that it is the
/// checkpoint of instance `instance` and of the batch its name says; returns it with the
/// digest of its file.
pub fn read(path: &Path, instance: InstanceId) -> Result<(Snapshot, Digest), Unusable> {
    let named = |why: String| format!("{}: {why}", path.display());
    let bytes = fs::read(path)
        .map_err(|error| Unusable::Damaged(named(format!("cannot be read ({error})"))))?;
    let (frames, damage) = frame::read(&bytes);
    if let Some(damage) = damage {
        return Err(Unusable::Damaged(named(format!(
            "it is damaged: {}",
            damage.reason
        ))));
    }
    let [payload] = frames[..] else {
        return Err(Unusable::Damaged(named(format!(
            "it holds {} frames instead of one",
            frames.len()
        ))));
    };
    let body =
        format::body(Kind::Checkpoint, payload).map_err(|why| Unusable::Refused(named(why)))?;
    let snapshot: Snapshot = codec::decode(body)
        .map_err(|error| Unusable::Damaged(named(format!("it does not decode: {error:#}"))))?;
    if snapshot.instance != instance {
        return Err(Unusable::Refused(named(format!(
            "it belongs to instance {}, not to this directory's ({instance}): it comes from another job or another run of this one",
            snapshot.instance
        ))));
    }
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_suffix(".ckpt"))
        .and_then(|number| number.parse::<u64>().ok());
    if name != Some(snapshot.number) {
        return Err(Unusable::Refused(named(format!(
            "it covers batches up to {}, which its name does not say: it was copied or renamed",
            snapshot.number
        ))));
    }
    Ok((snapshot, format::digest(&bytes)))
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Damaged(why) | Unusable::Refused(why) => f.write_str(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const INSTANCE: InstanceId = InstanceId([3; 16]);

    fn snapshot() -> impl Strategy<Value = Vec<u8>> {
        let operator = (
            "[a-z/0-9]{0,8}",
            prop::collection::vec(("[a-z#]{0,6}", "[0-9a-f]{0,6}"), 0..3),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..32),
        )
            .prop_map(|(id, udfs, entries, state)| SavedOperator {
                id,
                kind: "update_state_by_key".to_owned(),
                udfs,
                entries,
                state,
            });
        (
            0u64..4,
            prop::collection::vec(any::<Option<u64>>(), 0..3),
            prop::collection::vec(operator, 0..3),
        )
            .prop_map(|(number, positions, operators)| {
                codec::encode(&Snapshot {
                    instance: INSTANCE,
                    job: "job".to_owned(),
                    number,
                    time_ms: 0,
                    previous: format::NO_DIGEST,
                    log: format::NO_DIGEST,
                    positions,
                    ranges: Vec::new(),
                    files: Default::default(),
                    operators,
                })
            })
    }

    #[test]
    fn a_checkpoint_past_the_disk_quota_is_refused_and_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = |number, state: Vec<u8>| Snapshot {
            instance: INSTANCE,
            job: "job".to_owned(),
            number,
            time_ms: 0,
            previous: format::NO_DIGEST,
            log: format::NO_DIGEST,
            positions: Vec::new(),
            ranges: Vec::new(),
            files: Default::default(),
            operators: vec![SavedOperator {
                id: "counts/1".to_owned(),
                kind: "update_state_by_key".to_owned(),
                udfs: Vec::new(),
                entries: 1,
                state,
            }],
        };
        let quota = DiskQuota::new(dir.path().to_owned(), 10_000);
        write(dir.path(), &snapshot(1, vec![1; 1000]), Some(&quota)).unwrap();
        let error = write(dir.path(), &snapshot(2, vec![2; 20_000]), Some(&quota)).unwrap_err();
        assert!(
            format!("{error:#}").contains("disk quota `max_disk_bytes` of 10000 bytes is used up"),
            "{error:#}"
        );
        assert_eq!(
            crate::failure::kind_of(&error),
            Some(crate::failure::FailureKind::Quota)
        );
        assert_eq!(
            list(dir.path()).unwrap().len(),
            1,
            "the refused one is not kept"
        );
    }

    /// A checkpoint whose frame checksum is good but whose contents were changed in up to
    /// 4 bytes reaches the decoder: reading it answers without a panic or a huge
    /// allocation.
    #[test]
    fn reading_any_framed_checkpoint_never_panics_nor_allocates_much() {
        let changed = snapshot().prop_flat_map(|body| {
            let len = body.len();
            (
                Just(body),
                prop::collection::vec((0..len, any::<u8>()), 0..4),
            )
        });
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 5000,
            ..ProptestConfig::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let path = path_of(dir.path(), 2);
        runner
            .run(&changed, |(mut body, changes)| {
                for (at, byte) in changes {
                    body[at] = byte;
                }
                let mut payload = format::header(Kind::Checkpoint);
                payload.extend_from_slice(&body);
                let mut bytes = Vec::new();
                frame::write(&mut bytes, &payload).unwrap();
                fs::write(&path, bytes).unwrap();
                let _ = read(&path, INSTANCE);
                Ok(())
            })
            .unwrap();
        super::super::tests::assert_peak_memory_below(2 << 30);
    }
}
