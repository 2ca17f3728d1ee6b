//! What every file of a checkpoint directory says about itself before its contents: what
//! kind of file it is, the format it is written in and the release that wrote it; and the
//! digests that chain the files of one directory together.
//!
//! The header is the start of the file's first frame (so its checksum covers it), laid
//! out so that any later release can read it whatever the format that follows:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | the kind: `SLUICE/I` (instance file), `SLUICE/W` (a batch's section of a log segment), `SLUICE/C` (state checkpoint) |
//! | 4 | the format version, little-endian ([`FORMAT`]) |
//! | 1 + n | the release that wrote it: its length, then its UTF-8 bytes (e.g. `0.1.0`) |
//!
//! Files written before format 1 have no header: they are refused, saying so.
//!
//! Formats: 1, the first with this header; 2, whose log segments may hold the event-time
//! watermark each batch computes with (an entry format 1 does not have, so a release
//! reading format 1 only refuses a format 2 log, naming its release, rather than reading
//! that entry as damage). This release reads both: a format 1 file reads the same.

use std::fmt;
use std::io::{self, Write};

use bincode::{Decode, Encode};
use sha2::{Digest as _, Sha256};

/// The format this release writes.
pub const FORMAT: u32 = 2;

/// The oldest format this release reads (every one from it to [`FORMAT`]).
pub const OLDEST_FORMAT: u32 = 1;

/// The release that writes this format.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The SHA-256 of a file's bytes, as the next file of its chain names it.
pub type Digest = [u8; 32];

/// What a file that continues nothing names as its predecessor.
pub const NO_DIGEST: Digest = [0; 32];

/// The SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// A writer that keeps the digest of everything written through it.
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> Hashing<W> {
    /// Writes to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Counts `bytes` as written before (what the file already holds).
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Starts a new digest: of what is written from here (the next section of a log
    /// segment).
    pub fn restart(&mut self) {
        self.hasher = Sha256::new();
    }

    /// The digest of everything written so far (since the last [restart](Self::restart)).
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finalize().into()
    }

    /// What it writes to.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A short form of `digest` for messages: its first 12 hex digits.
pub fn short(digest: &Digest) -> String {
    hex(&digest[..6])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The files a checkpoint directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `instance`: the id of the job instance the directory belongs to.
    Instance,
    /// `wal/<first batch>.log`: a write-ahead log segment (each batch's section starts
    /// with a header of this kind).
    Segment,
    /// `state/<batch>.ckpt`: a state checkpoint.
    Checkpoint,
}

const KINDS: [Kind; 3] = [Kind::Instance, Kind::Segment, Kind::Checkpoint];

impl Kind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            Kind::Instance => b"SLUICE/I",
            Kind::Segment => b"SLUICE/W",
            Kind::Checkpoint => b"SLUICE/C",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Instance => "an instance file",
            Kind::Segment => "a write-ahead log segment",
            Kind::Checkpoint => "a state checkpoint",
        }
    }
}

/// The header of a file of `kind`, as this release writes it.
pub fn header(kind: Kind) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + RELEASE.len());
    out.extend_from_slice(kind.magic());
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.push(RELEASE.len() as u8);
    out.extend_from_slice(RELEASE.as_bytes());
    out
}

/// What follows the header at the start of `payload` (a file's first frame), or why this
/// release cannot read a file of `kind` from it.
pub fn body(kind: Kind, payload: &[u8]) -> Result<&[u8], String> {
    let Some(magic) = payload.get(..8) else {
        return Err(legacy());
    };
    if magic != kind.magic() {
        return Err(match KINDS.iter().find(|other| other.magic() == magic) {
            Some(other) => format!("it is {}, not {}", other.name(), kind.name()),
            None => legacy(),
        });
    }
    let cut_short = || "its format header is cut short".to_owned();
    let format = u32::from_le_bytes(
        payload
            .get(8..12)
            .ok_or_else(cut_short)?
            .try_into()
            .expect("4 bytes"),
    );
    let release_len = *payload.get(12).ok_or_else(cut_short)? as usize;
    let release = payload.get(13..13 + release_len).ok_or_else(cut_short)?;
    if !(OLDEST_FORMAT..=FORMAT).contains(&format) {
        let release = String::from_utf8_lossy(release);
        return Err(if format > FORMAT {
            format!(
                "it is in checkpoint format {format}, written by Sluice {release}, a newer release than this one ({RELEASE}, which reads formats {OLDEST_FORMAT} to {FORMAT}): run the job with Sluice {release} or later"
            )
        } else {
            format!(
                "it is in checkpoint format {format}, written by Sluice {release}; this release ({RELEASE}) reads formats {OLDEST_FORMAT} to {FORMAT} only: finish the job with Sluice {release}, or move the checkpoint directory away to start the job afresh"
            )
        });
    }
    Ok(&payload[13 + release_len..])
}

fn legacy() -> String {
    format!(
        "it has no format header: it was written by Sluice 0.1.0 before checkpoint files named their format (format 0), or it is not a Sluice file; this release ({RELEASE}) reads formats {OLDEST_FORMAT} to {FORMAT} only: finish the job with the release that wrote it, or move the checkpoint directory away to start the job afresh"
    )
}

/// The id of one job instance: made when a job first starts in a checkpoint directory,
/// and named by every log segment and state checkpoint written there since.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct InstanceId(pub [u8; 16]);

impl InstanceId {
    /// A new id, unique with overwhelming probability: a digest of the OS-seeded hasher
    /// keys, the time, the process and `salt`.
    pub fn new(salt: &[u8]) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = Sha256::new();
        let keyed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        hasher.update(keyed.to_le_bytes());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        hasher.update(now.as_nanos().to_le_bytes());
        hasher.update(std::process::id().to_le_bytes());
        hasher.update(salt);
        let digest: Digest = hasher.finalize().into();
        Self(digest[..16].try_into().expect("16 bytes"))
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_to_what_follows_it() {
        let mut payload = header(Kind::Segment);
        payload.extend_from_slice(b"rest");
        assert_eq!(body(Kind::Segment, &payload), Ok(&b"rest"[..]));
    }

    #[test]
    fn another_kind_a_later_format_and_no_header_are_refused_saying_why() {
        let segment = header(Kind::Segment);
        let error = body(Kind::Checkpoint, &segment).unwrap_err();
        assert!(
            error.contains("it is a write-ahead log segment, not a state checkpoint"),
            "{error}"
        );

        let mut later = header(Kind::Checkpoint);
        later[8..12].copy_from_slice(&7u32.to_le_bytes());
        later[12] = 5;
        later.truncate(13);
        later.extend_from_slice(b"9.9.9");
        let error = body(Kind::Checkpoint, &later).unwrap_err();
        assert!(
            error.contains("format 7, written by Sluice 9.9.9")
                && error.contains("Sluice 9.9.9 or later"),
            "{error}"
        );

        for legacy in [&[0u8, 1, 2][..], &[1; 40]] {
            let error = body(Kind::Segment, legacy).unwrap_err();
            assert!(
                error.contains("no format header") && error.contains("Sluice 0.1.0"),
                "{error}"
            );
        }
        let error = body(Kind::Segment, &segment[..11]).unwrap_err();
        assert!(error.contains("cut short"), "{error}");
    }

    #[test]
    fn every_format_from_the_oldest_reads_and_a_later_one_names_the_newer_release() {
        let with_format = |format: u32| {
            let mut payload = header(Kind::Segment);
            payload[8..12].copy_from_slice(&format.to_le_bytes());
            payload.extend_from_slice(b"rest");
            payload
        };
        for format in OLDEST_FORMAT..=FORMAT {
            assert_eq!(body(Kind::Segment, &with_format(format)), Ok(&b"rest"[..]));
        }
        let error = body(Kind::Segment, &with_format(FORMAT + 1)).unwrap_err();
        assert!(
            error.contains(&format!("checkpoint format {}", FORMAT + 1))
                && error.contains("a newer release than this one"),
            "{error}"
        );
        let error = body(Kind::Segment, &with_format(OLDEST_FORMAT - 1)).unwrap_err();
        assert!(
            error.contains("move the checkpoint directory away"),
            "{error}"
        );
    }

    #[test]
    fn instance_ids_differ() {
        assert_ne!(InstanceId::new(b"dir"), InstanceId::new(b"dir"));
        assert_eq!(InstanceId([0xab; 16]).to_string(), "ab".repeat(16));
    }
}
