//! The files a directory source has read, as its log keeps them (Structured Streaming's
//! file source keeps such a log too): each piece of a file is logged in the same frame as
//! its lines, so a restart knows exactly which files, and how much of each, the job has,
//! and reads the rest, each file once.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

/// A file of a watched directory. A file rewritten under the same name (another size or
/// modification time) is another file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct FileId {
    /// Its name in the directory.
    pub name: String,
    /// Its size in bytes when listed.
    pub size: u64,
    /// Its modification time, in milliseconds since the epoch.
    pub mtime_ms: i64,
}

/// What one directory source has read: how far into each file, and which files are too
/// old to be looked at again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct SeenFiles {
    /// Whether the first listing of the directory is recorded: files present then were
    /// either read or, without `include_existing`, recorded as read without their lines.
    pub listed: bool,
    /// How many bytes of each file were read (its size once read whole).
    pub read: BTreeMap<FileId, u64>,
    /// Files modified before this time (milliseconds since the epoch) are forgotten and
    /// never read: `max_file_age` before the newest file seen.
    pub forget_before_ms: i64,
}

/// The seen files of every directory source of a job, by source index.
pub type SeenBySource = BTreeMap<u32, SeenFiles>;

impl SeenFiles {
    /// Adds what `delta` records (a piece read, a listing): the furthest read of each file
    /// wins; then forgets what is too old.
    pub fn merge(&mut self, delta: &SeenFiles) {
        self.listed |= delta.listed;
        self.forget_before_ms = self.forget_before_ms.max(delta.forget_before_ms);
        for (file, end) in &delta.read {
            let read = self.read.entry(file.clone()).or_insert(0);
            *read = (*read).max(*end);
        }
        let forget_before_ms = self.forget_before_ms;
        self.read
            .retain(|file, _| file.mtime_ms >= forget_before_ms);
    }

    /// Where reading `file` goes on: `None` if it was read whole or is too old to read.
    pub fn resume_at(&self, file: &FileId) -> Option<u64> {
        if file.mtime_ms < self.forget_before_ms {
            return None;
        }
        match self.read.get(file) {
            Some(&end) if end >= file.size => None,
            Some(&end) => Some(end),
            None => Some(0),
        }
    }
}

/// Merges `delta` into the entry of `source` in `all`.
pub fn merge_into(all: &mut SeenBySource, source: u32, delta: &SeenFiles) {
    all.entry(source).or_default().merge(delta);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64, mtime_ms: i64) -> FileId {
        FileId {
            name: name.to_owned(),
            size,
            mtime_ms,
        }
    }

    fn read(file: &FileId, end: u64) -> SeenFiles {
        SeenFiles {
            read: BTreeMap::from([(file.clone(), end)]),
            ..SeenFiles::default()
        }
    }

    #[test]
    fn a_file_resumes_after_its_furthest_piece_and_is_done_at_its_size() {
        let a = file("a.txt", 100, 5);
        let mut seen = SeenFiles::default();
        assert_eq!(seen.resume_at(&a), Some(0));
        seen.merge(&read(&a, 40));
        seen.merge(&read(&a, 10));
        assert_eq!(seen.resume_at(&a), Some(40));
        seen.merge(&read(&a, 100));
        assert_eq!(seen.resume_at(&a), None);
    }

    #[test]
    fn the_same_name_with_another_size_or_time_is_another_file() {
        let mut seen = SeenFiles::default();
        seen.merge(&read(&file("a.txt", 100, 5), 100));
        assert_eq!(seen.resume_at(&file("a.txt", 120, 5)), Some(0));
        assert_eq!(seen.resume_at(&file("a.txt", 100, 6)), Some(0));
    }

    #[test]
    fn files_older_than_the_age_limit_are_forgotten_and_never_read() {
        let mut seen = SeenFiles::default();
        let old = file("old.txt", 1, 10);
        seen.merge(&read(&old, 1));
        seen.merge(&SeenFiles {
            forget_before_ms: 20,
            ..SeenFiles::default()
        });
        assert!(seen.read.is_empty());
        assert_eq!(seen.resume_at(&old), None);
        assert_eq!(seen.resume_at(&file("new.txt", 1, 20)), Some(0));
    }
}
