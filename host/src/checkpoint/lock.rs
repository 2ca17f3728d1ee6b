//! The lock that gives one run at a time a checkpoint directory.
//!
//! Two runs that shared a directory would both restore its state and both append to its
//! log: each would corrupt what the other wrote. A run holds an exclusive `flock` on
//! `DIR/lock` for as long as it uses the directory. The kernel releases it when the
//! process dies, even on `kill -9`, so a crash never leaves the directory locked; and
//! it conflicts between two opens of the file within one process too, where a host runs
//! many jobs. The pid written into the file serves only the refusal's message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// An exclusive hold on a checkpoint directory, released when dropped.
#[derive(Debug)]
pub struct DirLock {
    file: File,
}

impl DirLock {
    /// Takes the lock of checkpoint directory `dir` (created if missing), or fails naming
    /// the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the checkpoint directory {}", dir.display()))?;
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_owned(),
                    pid => format!("pid {pid}"),
                };
                bail!(
                    "checkpoint directory {} is already in use: a run of this job is already running ({holder}). Stop it first, or give this run its own `[checkpoint] dir`",
                    dir.display()
                );
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        written.with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Unlocking is what closing the file does anyway; doing it first lets the next
        // run in before the file handle is gone.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let refused = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("already running (pid {})", std::process::id())),
            "{refused}"
        );
        drop(first);
        DirLock::acquire(dir.path()).expect("the first hold was released");
    }
}
