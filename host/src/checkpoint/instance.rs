//! The instance file, `DIR/instance`: the id every log segment and state checkpoint of
//! the directory names, so that a file from another job, or from another run of this
//! one, is recognised and refused rather than replayed.
//!
//! It is made at a job's first start in a directory, which is one with neither `wal/` nor
//! `state/`; it is never made again for a directory that holds them, since a new id would
//! make every file there look foreign (or, worse, hide that some are).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::format::{self, InstanceId, Kind};
use super::{codec, durable, frame};

/// Where the instance file of `dir` is.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("instance")
}

/// The instance id of checkpoint directory `dir`, and whether it was made now (at a first
/// start).
pub fn open(dir: &Path) -> Result<(InstanceId, bool)> {
    let path = path(dir);
    if path.exists() {
        return Ok((read(&path)?, false));
    }
    let holds_data = ["wal", "state"].iter().any(|sub| dir.join(sub).exists());
    if holds_data {
        if let Some(legacy) = legacy_file(dir) {
            bail!(
                "{} cannot be resumed by this release: {}: {}",
                dir.display(),
                legacy.0.display(),
                legacy.1
            );
        }
        bail!(
            "{} is missing, but {} holds a log or state checkpoints (wal/, state/): restore the file from a backup of this directory, or move the directory away to start the job afresh. A new instance id is not made for a directory with data, since every file in it would then be refused as another run's",
            path.display(),
            dir.display()
        );
    }
    let id = InstanceId::new(dir.as_os_str().as_encoded_bytes());
    write(&path, id)?;
    Ok((id, true))
}

/// Reads the instance file at `path`.
pub fn read(path: &Path) -> Result<InstanceId> {
    let restore = "restore it from a backup of this directory, or move the directory away to start the job afresh";
    let bytes =
        fs::read(path).with_context(|| format!("cannot read {}: {restore}", path.display()))?;
    let (frames, damage) = frame::read(&bytes);
    if let Some(damage) = damage {
        bail!(
            "{} is damaged ({}): {restore}",
            path.display(),
            damage.reason
        );
    }
    let [payload] = frames[..] else {
        bail!(
            "{} holds {} frames instead of one: {restore}",
            path.display(),
            frames.len()
        );
    };
    let body = format::body(Kind::Instance, payload)
        .map_err(|why| anyhow::anyhow!("{} cannot be read: {why}", path.display()))?;
    codec::decode(body).with_context(|| format!("{} does not decode: {restore}", path.display()))
}

fn write(path: &Path, id: InstanceId) -> Result<()> {
    let mut payload = format::header(Kind::Instance);
    payload.extend_from_slice(&codec::encode(&id));
    durable::replace(path, |file| frame::write(file, &payload))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A log segment or checkpoint of `dir` without a format header, if there is one: the
/// mark of a directory written before instance files existed.
fn legacy_file(dir: &Path) -> Option<(PathBuf, String)> {
    let files = super::numbered_files(&dir.join("wal"), ".log")
        .into_iter()
        .flatten()
        .map(|(_, path)| (path, Kind::Segment))
        .chain(
            super::numbered_files(&dir.join("state"), ".ckpt")
                .into_iter()
                .flatten()
                .map(|(_, path)| (path, Kind::Checkpoint)),
        );
    for (path, kind) in files {
        let Ok(bytes) = fs::read(&path) else { continue };
        if let (frames, _) = frame::read(&bytes)
            && let Some(first) = frames.first()
            && let Err(why) = format::body(kind, first)
        {
            return Some((path, why));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_at_a_first_start_and_read_back_after() {
        let dir = tempfile::tempdir().unwrap();
        let (id, made) = open(dir.path()).unwrap();
        assert!(made);
        assert_eq!(open(dir.path()).unwrap(), (id, false));
    }

    #[test]
    fn never_made_again_for_a_directory_with_data() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("state")).unwrap();
        let error = open(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(&format!("{} is missing", path(dir.path()).display())),
            "{error}"
        );
        assert!(!path(dir.path()).exists());
    }

    #[test]
    fn a_damaged_one_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).unwrap();
        let mut bytes = fs::read(path(dir.path())).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(path(dir.path()), bytes).unwrap();
        let error = open(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(&format!("{} is damaged", path(dir.path()).display())),
            "{error}"
        );
    }

    #[test]
    fn a_directory_of_the_release_before_is_refused_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("wal")).unwrap();
        let mut segment = Vec::new();
        frame::write(&mut segment, &[1, 2, 3]).unwrap();
        fs::write(dir.path().join(format!("wal/{:020}.log", 1)), segment).unwrap();
        let error = format!("{:#}", open(dir.path()).unwrap_err());
        assert!(
            error.contains("no format header") && error.contains("00001.log"),
            "{error}"
        );
    }
}
