//! Replacing a file whole, so that a crash leaves its old contents or its new ones, never
//! a torn mix, and the new ones survive a power loss once written.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Replaces `path` with what `fill` writes: into `<path>.tmp`, which is synced, renamed
/// over `path`, and then the directory is synced so the rename itself is durable. On
/// failure the temporary is removed: a full disk must not leave a partial file behind.
pub fn replace<T>(path: &Path, fill: impl FnOnce(&mut fs::File) -> io::Result<T>) -> io::Result<T> {
    let temporary = temporary_of(path);
    let written = (|| -> io::Result<T> {
        let mut file = fs::File::create(&temporary)?;
        let filled = fill(&mut file)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        Ok(filled)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    let filled = written?;
    fs::File::open(path.parent().expect("a file inside a directory"))?.sync_all()?;
    Ok(filled)
}

/// `<path>.tmp`: beside `path`, so the rename stays within one file system.
fn temporary_of(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("end.offsets");
        fs::write(&path, "old").unwrap();
        replace(&path, |file| file.write_all(b"new")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("end.offsets");
        fs::write(&path, "old").unwrap();
        let failed = replace(&path, |_| -> io::Result<()> {
            Err(io::Error::other("full"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
