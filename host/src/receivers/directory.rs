//! directory: lines of the files that appear in a directory, as Spark's `textFileStream`,
//! each file read once, also across restarts: every piece read is logged with the file's
//! identity (name, size, modification time) in the frame that holds its lines.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use sluice_abi::Batch;

use super::{Intake, lines_of};
use crate::beneath::{JobFiles, is_outside};
use crate::checkpoint::files::{FileId, SeenFiles};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The most bytes read from a file at once: a piece ends at the last line end within it
/// (a single longer line is read whole).
pub const PIECE_BYTES: u64 = 16 << 20;

/// What a directory source watches, and how.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The source's name.
    pub source: String,
    /// The watched directory.
    pub dir: PathBuf,
    /// Where its files are opened (beneath the tenant's directory, for a served job).
    pub files: JobFiles,
    /// Whether files present at the first start are read.
    pub include_existing: bool,
    /// How long before the newest file seen a file may have been modified and still be read.
    pub max_file_age: Duration,
}

/// Watches the directory and appends the lines of every file that appears, each file
/// once. `seen` is what the log says was read before a restart (empty at a first start):
/// at a first start, the files already there are recorded as read without their lines
/// unless `include_existing`; after a restart, every file not read yet is read, those that
/// arrived while the job was down included. Hidden files (`.name`, the convention for files
/// still being written) are ignored: move finished files in. A path leading out of the
/// tenant's files (a symbolic link, made at any time) fails the job, naming it.
pub async fn receive(watch: Watch, mut seen: SeenFiles, intake: Arc<Intake>) {
    let source = watch.source.as_str();
    let max_age_ms = i64::try_from(watch.max_file_age.as_millis()).unwrap_or(i64::MAX);
    let mut first = true;
    loop {
        let files = match list(source, &watch.files, &watch.dir) {
            Ok(files) => files,
            Err(refusal) => {
                intake.fail(refusal);
                return;
            }
        };
        let newest = files.iter().map(|(file, _)| file.mtime_ms).max();
        let forget_before_ms = newest
            .map_or(i64::MIN, |newest| newest.saturating_sub(max_age_ms))
            .max(seen.forget_before_ms);
        if !seen.listed {
            let mut listing = SeenFiles {
                listed: true,
                forget_before_ms,
                ..SeenFiles::default()
            };
            if !watch.include_existing {
                listing.read = files
                    .iter()
                    .map(|(file, _)| (file.clone(), file.size))
                    .collect();
            }
            if !intake.append_files(listing.clone(), Batch::new()).await {
                return;
            }
            seen.merge(&listing);
        }
        if first {
            let unread = files
                .iter()
                .filter(|(file, _)| seen.resume_at(file).is_some())
                .count();
            tracing::info!(
                source,
                "watching {} for new files ({} there, {unread} of them to read)",
                watch.dir.display(),
                files.len(),
            );
            first = false;
        }
        for (file, path) in files {
            let Some(start) = seen.resume_at(&file) else {
                continue;
            };
            if !read_file(
                &watch,
                &path,
                &file,
                start,
                forget_before_ms,
                &mut seen,
                &intake,
            )
            .await
            {
                return;
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Appends the lines of `file` from byte `start` on, a piece at a time, each piece logged
/// with how far the file is read; waits for room in the intake before each piece. Returns
/// false if the log could not take a piece (the job then fails at its next cut).
async fn read_file(
    watch: &Watch,
    path: &Path,
    file: &FileId,
    start: u64,
    forget_before_ms: i64,
    seen: &mut SeenFiles,
    intake: &Arc<Intake>,
) -> bool {
    let (source, files) = (watch.source.as_str(), &watch.files);
    let mut offset = start;
    let mut lines = 0;
    while offset < file.size {
        intake.wait_for_room(source).await;
        let piece = {
            let (files, path, file) = (files.clone(), path.to_owned(), file.clone());
            tokio::task::spawn_blocking(move || read_piece(&files, &path, &file, offset)).await
        };
        let bytes = match piece {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) if is_outside(&error) => {
                intake.fail(refused(source, &file.name, &error));
                return false;
            }
            // Not recorded as read: the next poll tries again (if the file is still there).
            Ok(Err(error)) => {
                tracing::warn!(
                    source,
                    "cannot read {}: {error}; will retry",
                    path.display()
                );
                return true;
            }
            Err(error) => {
                tracing::error!(source, "reading {} panicked: {error}", path.display());
                return true;
            }
        };
        let batch = lines_of(&bytes);
        offset += bytes.len() as u64;
        let delta = SeenFiles {
            listed: false,
            read: [(file.clone(), offset)].into(),
            forget_before_ms,
        };
        let count = batch.len();
        if !intake.append_files(delta.clone(), batch).await {
            return false;
        }
        seen.merge(&delta);
        lines += count;
    }
    tracing::info!(source, "read {lines} lines from {}", path.display());
    true
}

/// The bytes of `file` from `offset` to the end of the last line that starts within
/// [`PIECE_BYTES`] of it (or to the file's size as listed).
fn read_piece(files: &JobFiles, path: &Path, file: &FileId, offset: u64) -> io::Result<Vec<u8>> {
    let mut handle = files.open(path)?;
    handle.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    let mut handle = handle.take(file.size - offset);
    loop {
        let before = bytes.len();
        (&mut handle).take(PIECE_BYTES).read_to_end(&mut bytes)?;
        let at_end = (offset + bytes.len() as u64) >= file.size;
        if at_end {
            return Ok(bytes);
        }
        if ((bytes.len() - before) as u64) < PIECE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "it holds {} bytes, fewer than the {} it had when listed",
                    offset + bytes.len() as u64,
                    file.size
                ),
            ));
        }
        if let Some(last) = bytes[before..].iter().rposition(|&byte| byte == b'\n') {
            bytes.truncate(before + last + 1);
            return Ok(bytes);
        }
    }
}

/// The visible regular files of `dir` with their identities, oldest first (then by name).
/// A directory that cannot be listed now is listed again at the next poll; one whose
/// path leads out of the tenant's files is refused (the error says why).
fn list(source: &str, files: &JobFiles, dir: &Path) -> Result<Vec<(FileId, PathBuf)>, String> {
    let listed = match files.list(dir) {
        Ok(listed) => listed,
        Err(error) if is_outside(&error) => return Err(refused(source, "", &error)),
        Err(error) => {
            tracing::warn!(source, "cannot list {}: {error}", dir.display());
            return Ok(Vec::new());
        }
    };
    let mut files: Vec<(FileId, PathBuf)> = listed
        .into_iter()
        .filter(|listed| !listed.name.starts_with('.'))
        .map(|listed| {
            let mtime_ms = listed
                .modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as i64);
            let path = dir.join(&listed.name);
            let file = FileId {
                name: listed.name,
                size: listed.size,
                mtime_ms,
            };
            (file, path)
        })
        .collect();
    files.sort_by(|(a, _), (b, _)| (a.mtime_ms, &a.name).cmp(&(b.mtime_ms, &b.name)));
    Ok(files)
}

/// Why source `source` stops: a path (file `name` of the watched directory, if one) leads
/// out of the tenant's files.
fn refused(source: &str, name: &str, error: &io::Error) -> String {
    let file = if name.is_empty() {
        String::new()
    } else {
        format!(" (file `{name}`)")
    };
    format!(
        "directory source `{source}` stopped{file}: {error}; a served job reads only the \
         tenant's own files: remove the link or copy the file in (PUT /v1/files/PATH)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(path: &Path) -> FileId {
        FileId {
            name: "f".to_owned(),
            size: std::fs::metadata(path).unwrap().len(),
            mtime_ms: 0,
        }
    }

    #[test]
    fn a_piece_ends_at_a_line_end_and_pieces_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let line = "x".repeat(999) + "\n";
        let text = line.repeat((2 * PIECE_BYTES as usize) / line.len() + 3) + "tail";
        std::fs::write(&path, &text).unwrap();
        let file = identity(&path);
        let mut offset = 0;
        let mut lines = 0;
        while offset < file.size {
            let piece = read_piece(&JobFiles::Anywhere, &path, &file, offset).unwrap();
            assert!(piece.len() as u64 <= PIECE_BYTES);
            assert!(piece.ends_with(b"\n") || offset + piece.len() as u64 == file.size);
            lines += lines_of(&piece).len();
            offset += piece.len() as u64;
        }
        assert_eq!(offset, file.size);
        assert_eq!(lines, text.lines().count());
    }

    #[test]
    fn a_line_longer_than_a_piece_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let long = PIECE_BYTES as usize + 10;
        let text = "y".repeat(long) + "\n" + &"short\n".repeat(PIECE_BYTES as usize / 6);
        std::fs::write(&path, &text).unwrap();
        let file = identity(&path);
        let piece = read_piece(&JobFiles::Anywhere, &path, &file, 0).unwrap();
        assert!(piece.len() > long && piece.len() < file.size as usize);
        assert!(piece.ends_with(b"\n"));
        let lines = lines_of(&piece);
        assert_eq!(lines.len(), 1 + (piece.len() - long - 1) / 6);
    }

    #[test]
    fn a_file_shorter_than_listed_is_an_error_not_a_silent_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a\n").unwrap();
        let mut file = identity(&path);
        file.size = 100;
        let error = read_piece(&JobFiles::Anywhere, &path, &file, 0).unwrap_err();
        assert!(error.to_string().contains("fewer than the 100"), "{error}");
    }
}
