//! The file source: a text file's lines, `lines_per_batch` at a time (the whole file at
//! once without it), one batch per cut. The file is read lazily: a scan at the start notes
//! only the byte offset where each batch begins, and each cut reads its batch's bytes
//! then, so memory holds one batch, not the file. The position of a cut is the index of
//! its batch, so any batch can be read again (replay after a failure).
//!
//! Lines end at `\n` or `\r\n`, as [`str::lines`] splits them; bytes that are not UTF-8
//! become U+FFFD, as in the directory source. The file must stay as it was at the start:
//! a batch read from a file that changed since fails, naming the file.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::{Result, bail};
use sluice_abi::Batch;

use super::{Receiver, Replayable, lines_of};

/// A text file's lines, one batch of them per cut; then empty batches.
pub struct FileSource {
    path: PathBuf,
    file: File,
    /// The byte offset where each batch begins; the last batch ends at `size`.
    starts: Vec<u64>,
    /// The file's size and modification time when it was scanned.
    size: u64,
    modified: Option<SystemTime>,
    next: AtomicU64,
}

impl FileSource {
    /// Scans `file` (the file at `path`, already opened: beneath its tenant's directory,
    /// for a served job) for where each batch of `lines_per_batch` lines begins (the whole
    /// file is one batch if `None`). An empty file has no batch.
    pub fn scan(path: &Path, file: File, lines_per_batch: Option<usize>) -> io::Result<Self> {
        let metadata = file.metadata()?;
        let size = metadata.len();
        let mut starts = Vec::new();
        if size > 0 {
            starts.push(0);
        }
        if let Some(per_batch) = lines_per_batch.filter(|_| size > 0) {
            let per_batch = per_batch.max(1);
            let mut reader = BufReader::with_capacity(1 << 20, &file);
            let (mut offset, mut lines) = (0u64, 0usize);
            loop {
                let buffer = reader.fill_buf()?;
                if buffer.is_empty() {
                    break;
                }
                for end in memchr::memchr_iter(b'\n', buffer) {
                    lines += 1;
                    let next = offset + end as u64 + 1;
                    if lines % per_batch == 0 && next < size {
                        starts.push(next);
                    }
                }
                let length = buffer.len();
                offset += length as u64;
                reader.consume(length);
            }
            if offset != size {
                return Err(changed(path, size, offset));
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            starts,
            size,
            modified: metadata.modified().ok(),
            next: AtomicU64::new(0),
        })
    }

    /// How many batches the file holds.
    pub fn batches(&self) -> u64 {
        self.starts.len() as u64
    }

    /// The bytes of batch `index`, checked against the file as it was scanned.
    fn bytes_of(&self, index: usize) -> io::Result<Vec<u8>> {
        let metadata = self.file.metadata()?;
        if metadata.len() != self.size || metadata.modified().ok() != self.modified {
            return Err(changed(&self.path, self.size, metadata.len()));
        }
        let start = self.starts[index];
        let end = self.starts.get(index + 1).copied().unwrap_or(self.size);
        let mut bytes = vec![0; usize::try_from(end - start).map_err(io::Error::other)?];
        self.file
            .read_exact_at(&mut bytes, start)
            .map_err(|_| changed(&self.path, self.size, metadata.len()))?;
        // A batch that is not the last ends a line: if not, the file changed in place.
        if end < self.size && bytes.last() != Some(&b'\n') {
            return Err(changed(&self.path, self.size, metadata.len()));
        }
        Ok(bytes)
    }
}

/// The error for a file that is no longer what the scan at the start saw.
fn changed(path: &Path, scanned: u64, now: u64) -> io::Error {
    io::Error::other(format!(
        "file {} changed after the job started (it held {scanned} bytes then, {now} now): a \
         file source reads a file that stays as it is; write new data to a new file, or use \
         a `directory` source",
        path.display()
    ))
}

impl Receiver for FileSource {
    fn cut(&self) -> Result<Batch> {
        self.records_at(self.next.fetch_add(1, Ordering::AcqRel))
    }

    fn is_drained(&self) -> bool {
        self.next.load(Ordering::Acquire) >= self.batches()
    }

    fn replayable(&self) -> Option<&dyn Replayable> {
        Some(self)
    }
}

impl Replayable for FileSource {
    fn position(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    fn records_at(&self, position: u64) -> Result<Batch> {
        let Some(index) = usize::try_from(position)
            .ok()
            .filter(|&index| index < self.starts.len())
        else {
            return Ok(Batch::new());
        };
        let bytes = match self.bytes_of(index) {
            Ok(bytes) => bytes,
            Err(error) => bail!(
                "cannot read batch {} of file {}: {error}",
                index + 1,
                self.path.display()
            ),
        };
        Ok(lines_of(&bytes))
    }

    fn seek(&self, position: u64) {
        self.next.store(position, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(text: &[u8], lines_per_batch: Option<usize>) -> (tempfile::TempDir, FileSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        std::fs::write(&path, text).unwrap();
        let source = FileSource::scan(&path, File::open(&path).unwrap(), lines_per_batch).unwrap();
        (dir, source)
    }

    fn lines(batch: &Batch) -> Vec<String> {
        batch
            .iter()
            .map(|record| match sluice_abi::Value::decode(record).unwrap() {
                sluice_abi::Value::String(line) => line,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn all(source: &FileSource) -> Vec<Vec<String>> {
        let mut batches = Vec::new();
        while !source.is_drained() {
            batches.push(lines(&source.cut().unwrap()));
        }
        batches
    }

    #[test]
    fn batches_begin_every_lines_per_batch_lines_and_split_as_str_lines() {
        let (_dir, source) = scanned(b"a\r\nb\n\nc\nd\ne", Some(2));
        assert_eq!(source.starts, [0, 5, 8]);
        assert_eq!(
            all(&source),
            [vec!["a", "b"], vec!["", "c"], vec!["d", "e"]]
        );
        assert!(lines(&source.cut().unwrap()).is_empty());

        let (_dir, source) = scanned(b"a\nb\nc\nd\n", Some(2));
        assert_eq!(
            source.starts,
            [0, 4],
            "no empty batch after the last line end"
        );
        assert_eq!(all(&source), [vec!["a", "b"], vec!["c", "d"]]);

        let (_dir, source) = scanned(b"a\nb\nc", None);
        assert_eq!(all(&source), [vec!["a", "b", "c"]]);

        let (_dir, source) = scanned(b"\n", Some(3));
        assert_eq!(all(&source), [vec![""]]);
    }

    #[test]
    fn an_empty_file_has_no_batch() {
        for per_batch in [None, Some(2)] {
            let (_dir, source) = scanned(b"", per_batch);
            assert_eq!(source.batches(), 0);
            assert!(source.is_drained());
            assert!(lines(&source.cut().unwrap()).is_empty());
        }
    }

    #[test]
    fn a_batch_read_again_by_position_gives_the_same_records() {
        let (_dir, source) = scanned(b"a\nb\nc\nd\ne\n", Some(2));
        let first = all(&source);
        for (position, batch) in first.iter().enumerate() {
            assert_eq!(&lines(&source.records_at(position as u64).unwrap()), batch);
        }
        source.seek(1);
        assert_eq!(lines(&source.cut().unwrap()), ["c", "d"]);
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        let (_dir, source) = scanned(b"a\xffb\nc\n", Some(1));
        assert_eq!(all(&source), [vec!["a\u{fffd}b"], vec!["c"]]);

        let (_dir, source) = scanned(b"a\r\nb\xffc\r\n\nd\r", Some(3));
        assert_eq!(
            all(&source),
            [vec!["a", "b\u{fffd}c", ""], vec!["d\r"]],
            "only the bad bytes change; lines still end at \\n or \\r\\n"
        );
    }

    #[test]
    fn a_file_changed_after_the_scan_fails_naming_it() {
        let (dir, source) = scanned(b"a\nb\nc\nd\n", Some(2));
        let path = dir.path().join("in.txt");
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(5)
            .unwrap();
        let error = format!("{:#}", source.records_at(1).unwrap_err());
        assert!(
            error.contains("in.txt") && error.contains("changed after the job started"),
            "{error}"
        );
    }
}
