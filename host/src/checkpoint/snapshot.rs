//! State checkpoints: every stateful operator's state after a batch, with what is needed
//! to tell whether a (possibly redeployed) job may resume from it. One file per
//! checkpoint, `state/<batch number>.ckpt`, written whole by rename; the newest two are
//! kept, so that a damaged newest one still leaves one to recover from.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bincode::{Decode, Encode};

use super::{codec, frame};

/// How many checkpoints are kept.
pub const KEPT: usize = 2;

/// A state checkpoint.
#[derive(Debug, Clone, Encode, Decode)]
pub struct Snapshot {
    /// The job's name.
    pub job: String,
    /// The last batch it covers.
    pub number: u64,
    /// That batch's time, in milliseconds.
    pub time_ms: i64,
    /// Per source, the position a replayable source resumes from (`None` for others).
    pub positions: Vec<Option<u64>>,
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

fn path_of(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.ckpt"))
}

/// The checkpoint files in `dir`, newest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = super::numbered_files(dir, ".ckpt")?;
    found.reverse();
    Ok(found)
}

/// Writes `snapshot` durably and deletes all but the newest [`KEPT`] checkpoints; returns
/// the file and its size.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<(PathBuf, u64)> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = path_of(dir, snapshot.number);
    let temporary = path.with_extension("ckpt.tmp");
    let payload = codec::encode(snapshot);
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::File::create(&temporary)?;
        frame::write(&mut file, &payload)?;
        file.flush()?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        fs::File::open(dir)?.sync_all()
    })();
    written.with_context(|| format!("cannot write checkpoint {}", path.display()))?;
    for (_, old) in list(dir)?.into_iter().skip(KEPT) {
        fs::remove_file(&old).with_context(|| format!("cannot delete {}", old.display()))?;
    }
    Ok((path, payload.len() as u64 + 8))
}

/// Reads the checkpoint at `path`, checking its checksum.
pub fn read(path: &Path) -> Result<Snapshot> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (frames, damage) = frame::read(&bytes);
    if let Some(damage) = damage {
        bail!("{} is damaged: {}", path.display(), damage.reason);
    }
    let [payload] = frames[..] else {
        bail!(
            "{} holds {} records instead of one",
            path.display(),
            frames.len()
        );
    };
    codec::decode(payload).with_context(|| format!("{} does not decode", path.display()))
}

/// The newest readable checkpoint in `dir`, with a warning for each newer one that is
/// damaged (it is renamed `.damaged`, so that it is not tried again).
pub fn newest(dir: &Path) -> Result<(Option<Snapshot>, Vec<String>)> {
    let mut warnings = Vec::new();
    for (_, path) in list(dir)? {
        match read(&path) {
            Ok(snapshot) => return Ok((Some(snapshot), warnings)),
            Err(error) => {
                let aside = path.with_extension("ckpt.damaged");
                fs::rename(&path, &aside)
                    .with_context(|| format!("cannot set aside {}", path.display()))?;
                warnings.push(format!(
                    "{error:#}; fell back to the previous checkpoint (kept the damaged one as {})",
                    aside.display()
                ));
            }
        }
    }
    Ok((None, warnings))
}
