//! A tenant's disk: what everything under its directory takes, and its quota, checked
//! while its jobs run (before files sinks, state checkpoints and the write-ahead log keep
//! what they write; job logs, at most 8 MiB each, are counted) as well as at upload.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::failure::Failing;

/// How long a measurement of a tenant's directory is trusted (plus what was written
/// since): walking the directory for every batch would cost as much as the batch.
const MEASURED_FOR: Duration = Duration::from_secs(1);

/// The bytes of everything under `dir` (symbolic links not followed).
pub fn usage(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let metadata = entry.path().symlink_metadata()?;
        total += if metadata.is_dir() {
            usage(&entry.path())?
        } else {
            metadata.len()
        };
    }
    Ok(total)
}

/// A tenant's disk quota, as its jobs check it before they keep what they write: files
/// sinks' output, state checkpoints and the write-ahead log. Shared by all of the
/// tenant's jobs ([`DiskQuotas`]), so that one measurement serves them all.
#[derive(Debug)]
pub struct DiskQuota {
    /// The tenant's directory (its files, checkpoints and logs).
    dir: PathBuf,
    /// The most bytes it may hold (`max_disk_bytes`).
    limit: u64,
    /// The last measurement: when, and the bytes then plus those written since.
    measured: Mutex<Option<(Instant, u64)>>,
}

impl DiskQuota {
    /// The quota of `limit` bytes on everything under `dir`.
    pub fn new(dir: PathBuf, limit: u64) -> Self {
        Self {
            dir,
            limit,
            measured: Mutex::new(None),
        }
    }

    /// Counts `bytes` about to be kept, or refuses them, naming the quota, when they
    /// would take the tenant's directory past it.
    pub fn take(&self, bytes: u64) -> Result<()> {
        let mut measured = self.measured.lock().expect("disk measurement poisoned");
        let used = match *measured {
            Some((at, used)) if at.elapsed() < MEASURED_FOR => used,
            _ => {
                let used = usage(&self.dir)?;
                *measured = Some((Instant::now(), used));
                used
            }
        };
        if used + bytes > self.limit {
            return Err(Failing::quota(format!(
                "the tenant's disk quota `max_disk_bytes` of {} bytes is used up ({used} bytes \
                 under its directory: files, checkpoints, write-ahead logs and job logs; \
                 {bytes} more to write): delete files (DELETE /v1/files/PATH) or jobs, or ask \
                 the operator for a larger quota",
                self.limit
            )));
        }
        if let Some((_, used)) = measured.as_mut() {
            *used += bytes;
        }
        Ok(())
    }
}

/// The disk quotas of a server's tenants, one per tenant directory.
#[derive(Debug, Default)]
pub struct DiskQuotas {
    quotas: Mutex<HashMap<PathBuf, Arc<DiskQuota>>>,
}

impl DiskQuotas {
    /// The quota of `limit` bytes on `dir`: the one every job of the tenant shares, or a
    /// new one when there is none yet or its limit changed.
    pub fn of(&self, dir: &Path, limit: u64) -> Arc<DiskQuota> {
        let mut quotas = self.quotas.lock().expect("disk quotas poisoned");
        let quota = quotas
            .entry(dir.to_owned())
            .or_insert_with(|| Arc::new(DiskQuota::new(dir.to_owned(), limit)));
        if quota.limit != limit {
            *quota = Arc::new(DiskQuota::new(dir.to_owned(), limit));
        }
        quota.clone()
    }

    /// Forgets the quota of `dir` (its tenant is gone).
    pub fn remove(&self, dir: &Path) {
        self.quotas
            .lock()
            .expect("disk quotas poisoned")
            .remove(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_every_file_below() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/one"), "1").unwrap();
        std::fs::write(dir.path().join("a/b/three"), "333").unwrap();
        assert_eq!(usage(dir.path()).unwrap(), 4);
        assert_eq!(usage(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn what_would_pass_the_quota_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("there"), "0123456789").unwrap();
        let quota = DiskQuota::new(dir.path().to_owned(), 100);
        quota.take(60).unwrap();
        // Counted without measuring again: 10 + 60 + 40 > 100.
        let error = quota.take(40).unwrap_err().to_string();
        assert!(
            error.contains("`max_disk_bytes` of 100 bytes") && error.contains("70 bytes"),
            "{error}"
        );
        quota.take(30).unwrap();
        assert_eq!(
            crate::failure::kind_of(&quota.take(1).unwrap_err()),
            Some(crate::failure::FailureKind::Quota)
        );
    }

    #[test]
    fn a_tenants_jobs_share_its_quota_until_its_limit_changes() {
        let quotas = DiskQuotas::default();
        let one = quotas.of(Path::new("/t/a"), 100);
        assert!(Arc::ptr_eq(&one, &quotas.of(Path::new("/t/a"), 100)));
        assert!(!Arc::ptr_eq(&one, &quotas.of(Path::new("/t/b"), 100)));
        let larger = quotas.of(Path::new("/t/a"), 200);
        assert_eq!(larger.limit, 200);
        assert!(Arc::ptr_eq(&larger, &quotas.of(Path::new("/t/a"), 200)));
    }
}
