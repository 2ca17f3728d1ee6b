//! Files opened inside a directory and never outside it: a tenant's files. Every path is
//! resolved beneath a handle to the directory (cap-std: on Linux, the kernel's `openat2`
//! with `RESOLVE_BENEATH`), so an absolute path, `..` above it, or a symbolic link
//! leading out is refused at the moment of opening, even one made after any check.
//!
//! [`JobFiles`] is where a job opens its files: anywhere for `sluice run`, beneath its
//! tenant's directory for a job a server hosts.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::manifest::JobConfig;

/// A directory that paths are opened beneath.
#[derive(Debug)]
pub struct Beneath {
    dir: Dir,
    path: PathBuf,
}

/// What a path is, once opened.
pub enum Opened {
    /// A regular file.
    File(File),
    /// A directory, with its entries' names (directories end with `/`).
    Directory(Vec<String>),
}

/// A regular file of a listed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name in the directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last modified.
    pub modified: SystemTime,
}

impl Beneath {
    /// Opens the directory at `path`, which is trusted.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            dir: Dir::open_ambient_dir(path, ambient_authority())?,
            path: path.to_owned(),
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `relative` for reading: a file, or a directory's listing.
    pub fn read(&self, relative: &Path) -> io::Result<Opened> {
        let file = self.dir.open(relative).map_err(explain)?.into_std();
        if !file.metadata()?.is_dir() {
            return Ok(Opened::File(file));
        }
        let mut names = Vec::new();
        for entry in self.dir.read_dir(relative).map_err(explain)? {
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

    /// Opens the file `relative` for reading.
    pub fn open_file(&self, relative: &Path) -> io::Result<File> {
        Ok(self.dir.open(relative).map_err(explain)?.into_std())
    }

    /// The regular files of the directory `relative` (also through symbolic links that
    /// stay inside). Refused whole if an entry is a symbolic link leading out, naming it.
    pub fn list(&self, relative: &Path) -> io::Result<Vec<Listed>> {
        let mut files = Vec::new();
        for entry in self.dir.read_dir(relative).map_err(explain)? {
            let entry = entry?;
            let name = entry.file_name();
            let metadata = if entry.file_type()?.is_symlink() {
                self.dir
                    .metadata(relative.join(&name))
                    .map_err(|error| match explain(error) {
                        outside if is_outside(&outside) => io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!(
                                "`{}` is a symbolic link that leads outside the tenant's files",
                                relative.join(&name).display()
                            ),
                        ),
                        other => other,
                    })?
            } else {
                entry.metadata()?
            };
            if metadata.is_file() {
                files.push(Listed {
                    name: name.to_string_lossy().into_owned(),
                    size: metadata.len(),
                    modified: metadata.modified()?.into_std(),
                });
            }
        }
        Ok(files)
    }

    /// Creates the directory `relative` and those on the way to it.
    pub fn create_dir_all(&self, relative: &Path) -> io::Result<()> {
        self.dir.create_dir_all(relative).map_err(|error| {
            // Of a symbolic link leading out, cap-std says only that it exists.
            match self.dir.metadata(relative) {
                Err(outside) if is_outside(&outside) => explain(outside),
                _ => explain(error),
            }
        })
    }

    /// Creates (or empties) the file `relative` for writing.
    pub fn create(&self, relative: &Path) -> io::Result<File> {
        Ok(self.dir.create(relative).map_err(explain)?.into_std())
    }

    /// Renames `from` to `to`, both inside.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.dir.rename(from, &self.dir, to).map_err(explain)
    }

    /// Moves the file at `from` (outside, trusted) to `relative`, making the directories
    /// on the way.
    pub fn place(&self, from: &Path, relative: &Path) -> io::Result<()> {
        let (Some(staging), Some(name)) = (from.parent(), from.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the staged file has no directory",
            ));
        };
        let staging = Dir::open_ambient_dir(staging, ambient_authority())?;
        if let Some(parent) = relative.parent().filter(|parent| *parent != Path::new("")) {
            self.create_dir_all(parent)?;
        }
        staging.rename(name, &self.dir, relative).map_err(explain)
    }

    /// Removes the file or empty directory `relative`.
    pub fn remove(&self, relative: &Path) -> io::Result<()> {
        let metadata = self.dir.symlink_metadata(relative).map_err(explain)?;
        if metadata.is_dir() {
            self.dir.remove_dir(relative).map_err(explain)
        } else {
            self.dir.remove_file(relative).map_err(explain)
        }
    }
}

/// cap-std's refusal of a path leading out, said for a tenant.
fn explain(error: io::Error) -> io::Error {
    if is_outside(&error) {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the path leads outside the tenant's files (an absolute path, `..` or a symbolic \
             link)",
        )
    } else {
        error
    }
}

/// Whether `error` is a refusal of a path leading out (rather than of the system's file
/// permissions, which carry an OS error code).
pub fn is_outside(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied && error.raw_os_error().is_none()
}

/// Where a job opens its files: anywhere its paths lead (`sluice run`), or only beneath
/// its tenant's directory (a job a server hosts, [`crate::manifest::Hosted`]), its paths
/// being inside that directory as written.
#[derive(Debug, Clone, Default)]
pub enum JobFiles {
    /// Anywhere: the user's own files.
    #[default]
    Anywhere,
    /// Beneath a tenant's directory.
    Beneath(Arc<Beneath>),
}

impl JobFiles {
    /// Where job `config` opens its files: a handle to its tenant's directory, opened now,
    /// when a server hosts it.
    pub fn of(config: &JobConfig) -> io::Result<Self> {
        Ok(match &config.hosted {
            None => Self::Anywhere,
            Some(hosted) => Self::Beneath(Arc::new(Beneath::open(&hosted.files)?)),
        })
    }

    /// `path` inside the tenant's directory, or why it is not.
    fn inside<'a>(beneath: &Beneath, path: &'a Path) -> io::Result<&'a Path> {
        match path.strip_prefix(beneath.path()) {
            Ok(relative) if relative == Path::new("") => Ok(Path::new(".")),
            Ok(relative) => Ok(relative),
            Err(_) => Err(explain(io::Error::from(io::ErrorKind::PermissionDenied))),
        }
    }

    /// Opens the file at `path` for reading.
    pub fn open(&self, path: &Path) -> io::Result<File> {
        match self {
            Self::Anywhere => File::open(path),
            Self::Beneath(beneath) => beneath.open_file(Self::inside(beneath, path)?),
        }
    }

    /// The bytes of the file at `path`.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut self.open(path)?, &mut bytes)?;
        Ok(bytes)
    }

    /// The regular files of the directory at `dir` (see [`Beneath::list`]).
    pub fn list(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        let beneath = match self {
            Self::Beneath(beneath) => beneath,
            Self::Anywhere => {
                let mut files = Vec::new();
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    let metadata = entry.metadata()?;
                    if metadata.is_file() {
                        files.push(Listed {
                            name: entry.file_name().to_string_lossy().into_owned(),
                            size: metadata.len(),
                            modified: metadata.modified()?,
                        });
                    }
                }
                return Ok(files);
            }
        };
        beneath.list(Self::inside(beneath, dir)?)
    }

    /// Creates the directory `dir` and those on the way to it.
    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        match self {
            Self::Anywhere => std::fs::create_dir_all(dir),
            Self::Beneath(beneath) => beneath.create_dir_all(Self::inside(beneath, dir)?),
        }
    }

    /// Creates (or empties) the file at `path` for writing.
    pub fn create(&self, path: &Path) -> io::Result<File> {
        match self {
            Self::Anywhere => File::create(path),
            Self::Beneath(beneath) => beneath.create(Self::inside(beneath, path)?),
        }
    }

    /// Removes the file at `path`.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        match self {
            Self::Anywhere => std::fs::remove_file(path),
            Self::Beneath(beneath) => beneath.remove(Self::inside(beneath, path)?),
        }
    }

    /// Renames `from` to `to`.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self {
            Self::Anywhere => std::fs::rename(from, to),
            Self::Beneath(beneath) => {
                beneath.rename(Self::inside(beneath, from)?, Self::inside(beneath, to)?)
            }
        }
    }
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
            assert!(
                error.kind() == io::ErrorKind::PermissionDenied
                    && error.to_string().contains("outside the tenant's files"),
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
    fn a_jobs_files_are_listed_read_and_written_only_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("in")).unwrap();
        std::fs::write(root.join("in/a.txt"), "a").unwrap();
        std::fs::write(root.join("b.txt"), "bb").unwrap();
        std::os::unix::fs::symlink("../b.txt", root.join("in/b.txt")).unwrap();
        std::fs::write(dir.path().join("secret"), "secret").unwrap();
        let files = JobFiles::Beneath(Arc::new(Beneath::open(&root).unwrap()));
        let mut listed = files.list(&root.join("in")).unwrap();
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<_> = listed.iter().map(|file| (&*file.name, file.size)).collect();
        assert_eq!(
            names,
            [("a.txt", 1), ("b.txt", 2)],
            "a link inside is followed"
        );
        assert_eq!(files.read(&root.join("in/b.txt")).unwrap(), b"bb");

        files.create_dir_all(&root.join("out/x")).unwrap();
        std::io::Write::write_all(&mut files.create(&root.join("out/x/.t")).unwrap(), b"1")
            .unwrap();
        files
            .rename(&root.join("out/x/.t"), &root.join("out/x/t"))
            .unwrap();
        assert_eq!(std::fs::read(root.join("out/x/t")).unwrap(), b"1");

        // A link made now, leading out, refuses the listing naming it and is never read.
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("in/leak")).unwrap();
        let error = files.list(&root.join("in")).unwrap_err();
        assert!(
            is_outside(&error) && error.to_string().contains("`in/leak`"),
            "{error}"
        );
        let error = files.read(&root.join("in/leak")).unwrap_err();
        assert!(is_outside(&error), "{error}");
        std::os::unix::fs::symlink(dir.path(), root.join("away")).unwrap();
        for refused in [
            files.create(&root.join("away/planted")).map(drop),
            files.create_dir_all(&root.join("away/d")),
            files.create_dir_all(&root.join("away")),
            files.read(&dir.path().join("secret")).map(drop),
        ] {
            assert!(is_outside(&refused.unwrap_err()));
        }
        assert!(!dir.path().join("planted").exists() && !dir.path().join("d").exists());
    }
}
