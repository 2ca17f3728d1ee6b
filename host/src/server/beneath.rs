//! Files opened inside a directory and never outside it: the kernel resolves every path
//! beneath a handle to the directory (`openat2` with `RESOLVE_BENEATH`), so an absolute
//! path, `..` above it, or a symbolic link leading out is refused at the moment of
//! opening, even one made after any check.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A directory that paths are opened beneath.
pub struct Beneath {
    dir: OwnedFd,
    path: PathBuf,
}

/// What a path is, once opened.
pub enum Opened {
    /// A regular file.
    File(File),
    /// A directory, with its entries' names (directories end with `/`).
    Directory(Vec<String>),
}

impl Beneath {
    /// Opens the directory at `path`, which is trusted.
    pub fn open(path: &Path) -> io::Result<Self> {
        let dir = File::open(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        Ok(Self {
            dir: dir.into(),
            path: path.to_owned(),
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `relative` for reading: a file, or a directory's listing.
    pub fn read(&self, relative: &Path) -> io::Result<Opened> {
        let fd = self.openat(
            self.dir.as_raw_fd(),
            relative,
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )?;
        let file = File::from(fd);
        if !file.metadata()?.is_dir() {
            return Ok(Opened::File(file));
        }
        // Listing through /proc would leave the handle: read the directory by its fd.
        let listing = std::fs::read_dir(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry?;
            let mut name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                name.push('/');
            }
            names.push(name);
        }
        names.sort();
        Ok(Opened::Directory(names))
    }

    /// Moves the file at `from` (outside, trusted) to `relative`, making the directories
    /// on the way.
    pub fn place(&self, from: &Path, relative: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(relative, true)?;
        let from = c_path(from)?;
        // SAFETY: both paths are NUL-terminated and `parent` is an open directory.
        let renamed = unsafe {
            libc::renameat(
                libc::AT_FDCWD,
                from.as_ptr(),
                parent.as_raw_fd(),
                name.as_ptr(),
            )
        };
        if renamed != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes the file or empty directory `relative`.
    pub fn remove(&self, relative: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(relative, false)?;
        // SAFETY: `name` is NUL-terminated and `parent` is an open directory.
        let mut removed = unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), 0) };
        if removed != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EISDIR) {
            // SAFETY: as above.
            removed =
                unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
        }
        if removed != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The directory holding `relative` (made when `make`) and the last name of it.
    fn parent(&self, relative: &Path, make: bool) -> io::Result<(OwnedFd, CString)> {
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for part in relative.components() {
            match part {
                Component::Normal(name) => parts.push(name),
                Component::CurDir => {}
                _ => return Err(outside()),
            }
        }
        let name = parts
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
        let mut dir = self.openat(
            self.dir.as_raw_fd(),
            Path::new("."),
            libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )?;
        for part in parts {
            let c_part = c_path(Path::new(part))?;
            if make {
                // SAFETY: `c_part` is NUL-terminated and `dir` is an open directory.
                let made = unsafe { libc::mkdirat(dir.as_raw_fd(), c_part.as_ptr(), 0o755) };
                if made != 0 && io::Error::last_os_error().kind() != io::ErrorKind::AlreadyExists {
                    return Err(io::Error::last_os_error());
                }
            }
            dir = self.openat(
                dir.as_raw_fd(),
                Path::new(part),
                libc::O_DIRECTORY | libc::O_CLOEXEC,
                0,
            )?;
        }
        Ok((dir, c_path(Path::new(name))?))
    }

    /// `openat2(dir, path, flags, RESOLVE_BENEATH)`: resolved by the kernel, which refuses
    /// any step outside this directory.
    fn openat(&self, dir: i32, path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let c_path = c_path(path)?;
        // SAFETY: open_how is plain integers, for which zero is valid (and the kernel
        // requires every field it does not know to be zero).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.mode = u64::from(mode);
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: `how` is a valid open_how of the size passed, `c_path` NUL-terminated.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            let error = io::Error::last_os_error();
            return Err(if error.raw_os_error() == Some(libc::EXDEV) {
                outside()
            } else {
                error
            });
        }
        // SAFETY: the kernel just returned this descriptor to us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// The error of a path that leads outside.
fn outside() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the path leads outside the tenant's files (an absolute path, `..` or a symbolic link)",
    )
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn nothing_outside_is_reached() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::write(dir.path().join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("in/link")).unwrap();
        std::os::unix::fs::symlink("../../", root.join("in/up")).unwrap();
        let beneath = Beneath::open(&root).unwrap();
        let staged = dir.path().join("staged");
        std::fs::write(&staged, "hello").unwrap();
        beneath.place(&staged, Path::new("a/b/c.txt")).unwrap();
        let Opened::File(mut file) = beneath.read(Path::new("a/b/c.txt")).unwrap() else {
            panic!("a file")
        };
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
        let Opened::Directory(names) = beneath.read(Path::new("a")).unwrap() else {
            panic!("a directory")
        };
        assert_eq!(names, ["b/"]);
        for escape in [
            "../secret",
            "/etc/passwd",
            "in/link",
            "in/up/secret",
            "a/../../secret",
        ] {
            let error = beneath.read(Path::new(escape)).err().unwrap();
            assert_eq!(
                error.kind(),
                io::ErrorKind::PermissionDenied,
                "{escape}: {error}"
            );
        }
        std::fs::write(&staged, "x").unwrap();
        let error = beneath
            .place(&staged, Path::new("in/up/planted"))
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(!dir.path().join("planted").exists());
        beneath.remove(Path::new("a/b/c.txt")).unwrap();
        beneath.remove(Path::new("a/b")).unwrap();
        assert!(beneath.remove(Path::new("../secret")).is_err());
        assert!(dir.path().join("secret").exists());
    }

    #[test]
    fn usage_counts_every_file_below() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/one"), "1").unwrap();
        std::fs::write(dir.path().join("a/b/three"), "333").unwrap();
        assert_eq!(usage(dir.path()).unwrap(), 4);
        assert_eq!(usage(&dir.path().join("missing")).unwrap(), 0);
    }
}
