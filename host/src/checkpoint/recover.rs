//! Deciding what recovery may do before it does anything: which checkpoint to start
//! from, which files to refuse, which batches would be lost.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::format::{Digest, InstanceId};
use super::{Loss, Snapshot, instance, snapshot, state_dir, wal, wal_dir};

/// The checkpoint recovery starts from, and the newer ones it could not use.
pub(super) struct Base {
    /// The newest usable checkpoint, its file and its file's digest.
    pub restored: Option<(Snapshot, PathBuf, Digest)>,
    /// Newer checkpoints that are damaged: (batch, file, why).
    pub damaged: Vec<(u64, PathBuf, String)>,
}

/// Finds the newest usable checkpoint in `dir`: a damaged one is passed over for the one
/// before it, one that does not belong is refused.
pub(super) fn find_base(dir: &Path, instance: InstanceId) -> Result<Base> {
    let mut base = Base {
        restored: None,
        damaged: Vec::new(),
    };
    for (number, path) in snapshot::list(&state_dir(dir))? {
        match snapshot::read(&path, instance) {
            Ok((snapshot, digest)) => {
                base.restored = Some((snapshot, path, digest));
                break;
            }
            Err(snapshot::Unusable::Damaged(why)) => base.damaged.push((number, path, why)),
            Err(snapshot::Unusable::Refused(why)) => bail!(
                "{why}. It is never used: move it out of {} if it does not belong there, then run again ({})",
                dir.display(),
                checked_against(dir, instance)
            ),
        }
    }
    Ok(base)
}

/// Where the instance files are checked against comes from: if that file is the one
/// from elsewhere, every other file looks foreign.
pub(super) fn checked_against(dir: &Path, instance: InstanceId) -> String {
    format!(
        "files are checked against instance {instance}, from {}",
        instance::path(dir).display()
    )
}

/// The batches that recovery from `base` (covering batches up to `after`) with what the
/// log holds cannot re-run.
pub(super) fn losses(dir: &Path, base: &Base, after: u64, logged: &wal::Logged) -> Vec<Loss> {
    let damaged = || {
        base.damaged
            .iter()
            .map(|(_, _, why)| why.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let starts_from = match &base.restored {
        Some((_, path, _)) if base.damaged.is_empty() => {
            format!("the log after state checkpoint {}", path.display())
        }
        Some((_, path, _)) => format!(
            "the newer checkpoint is unusable ({}), and the log after state checkpoint {}",
            damaged(),
            path.display()
        ),
        None if base.damaged.is_empty() => "there is no state checkpoint, and the log".to_owned(),
        None => format!("no state checkpoint is usable ({}), and the log", damaged()),
    };
    let mut lost = Vec::new();
    if let Some(first) = logged.first.filter(|first| *first > after + 1) {
        let missing = |number| {
            wal::segment_path(&wal_dir(dir), number)
                .display()
                .to_string()
        };
        let missing = if first - 1 == after + 1 {
            format!("segment {} is missing", missing(after + 1))
        } else {
            format!(
                "segments {} to {} are missing",
                missing(after + 1),
                missing(first - 1)
            )
        };
        lost.push(Loss {
            first: after + 1,
            last: first - 1,
            why: format!("{starts_from} starts at batch {first}: {missing}"),
        });
    }
    lost.extend(logged.lost.clone());
    // A damaged checkpoint covered batches that the log must still hold.
    let covered = base.damaged.iter().map(|(number, _, _)| *number).max();
    let reached = logged.batches.last().map_or(after, |(cut, _)| cut.number);
    if let Some(covered) = covered
        && covered > reached
        && lost.is_empty()
    {
        lost.push(Loss {
            first: reached + 1,
            last: covered,
            why: format!("{starts_from} ends at batch {reached}"),
        });
    }
    lost
}

/// Removes the temporary files (`*.tmp`) an interrupted write left in `dir` (a crash, or
/// a full disk, while writing a checkpoint or the metadata); says which.
pub(super) fn remove_stale_temporaries(dir: &Path) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for dir in [dir.to_owned(), state_dir(dir), wal_dir(dir)] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "tmp") && path.is_file() {
                fs::remove_file(&path)
                    .with_context(|| format!("cannot remove the stale {}", path.display()))?;
                notes.push(format!(
                    "removed {}, left by a write that was interrupted (a crash or a full disk)",
                    path.display()
                ));
            }
        }
    }
    Ok(notes)
}
