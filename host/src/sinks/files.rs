//! files: one file per batch, Spark's `saveAsTextFiles(prefix, suffix)`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rayon::prelude::*;
use sluice_abi::Value;

use super::{Sink, display_text};
use crate::beneath::JobFiles;
use crate::dataset::Dataset;
use crate::disk::DiskQuota;
use crate::manifest::FileFormat;

/// Writes batch `t` to `prefix-t.suffix`, through a hidden temporary file renamed into
/// place, so a reader never sees half a file and a re-run of the batch replaces it. Files
/// are made through `files` (beneath the tenant's directory, for a served job).
pub struct Files {
    pub prefix: PathBuf,
    pub suffix: String,
    pub format: FileFormat,
    pub files: JobFiles,
    /// The tenant's disk quota, for a served job.
    pub quota: Option<std::sync::Arc<DiskQuota>>,
}

/// Records turned into lines at a time: the lines of a window are made in parallel (a
/// piece of [`PIECE`] records per task) and written in order, so that a batch's text is
/// never all in memory.
const WINDOW: usize = 16 * 1024;
/// Records one task of a window turns into lines.
const PIECE: usize = 1024;

impl Files {
    /// The lines of `records`, each ending in a line break. JSON lines are written
    /// straight from the records' encoding, building no [`Value`].
    fn lines(&self, records: &[&[u8]]) -> Result<Vec<u8>> {
        let mut text = String::with_capacity(records.len() * 24);
        for record in records {
            crate::scheduler::slice::tick()?;
            match self.format {
                FileFormat::Text => text.push_str(&display_text(record)),
                FileFormat::JsonLines => Value::write_json_of(record, &mut text)?,
                FileFormat::JsonTyped => {
                    text.push_str(&crate::json::to_json(&Value::decode(record)?));
                }
            }
            text.push('\n');
        }
        Ok(text.into_bytes())
    }

    fn path(&self, time_ms: i64) -> PathBuf {
        let mut name = self.prefix.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-{time_ms}"));
        if !self.suffix.is_empty() {
            name.push(format!(".{}", self.suffix));
        }
        self.prefix.with_file_name(name)
    }
}

impl Sink for Files {
    fn write(&self, time_ms: i64, data: &Dataset) -> Result<()> {
        let path = self.path(time_ms);
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        self.files
            .create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        let temporary = dir.join(format!(
            ".{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let mut file = std::io::BufWriter::new(
            self.files
                .create(&temporary)
                .with_context(|| format!("cannot write {}", temporary.display()))?,
        );
        let mut records = data.records();
        let mut window = Vec::with_capacity(WINDOW);
        loop {
            window.clear();
            window.extend(records.by_ref().take(WINDOW));
            if window.is_empty() {
                break;
            }
            let pieces: Vec<Result<Vec<u8>>> = window
                .par_chunks(PIECE)
                .map(|piece| self.lines(piece))
                .collect();
            for piece in pieces {
                file.write_all(&piece?)?;
            }
        }
        let file = file.into_inner()?;
        if let Some(quota) = &self.quota {
            let kept = quota.take(file.metadata()?.len());
            if let Err(error) = kept {
                drop(file);
                let _ = self.files.remove(&temporary);
                return Err(error.context(format!("cannot keep {}", path.display())));
            }
        }
        // Waiting for the disk holds no run slot.
        crate::scheduler::slice::paused(|| file.sync_all())?;
        self.files
            .rename(&temporary, &path)
            .with_context(|| format!("cannot move output into {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_abi::Batch;

    use super::*;
    use crate::manifest::TableFormat;

    #[test]
    fn lines_made_in_parallel_are_written_in_the_records_order() {
        let mut records = Batch::new();
        (0..3 * WINDOW as i64 + 7).for_each(|n| records.push(&(format!("w{n}"), n)).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let sink = Files {
            prefix: dir.path().join("out"),
            suffix: String::new(),
            format: FileFormat::JsonLines,
            files: JobFiles::Anywhere,
            quota: None,
        };
        let data = Dataset::split(records, 3);
        sink.write(1000, &data).unwrap();
        let written = std::fs::read_to_string(dir.path().join("out-1000")).unwrap();
        let expected: String = data
            .records()
            .map(|record| Value::decode(record).unwrap().to_json() + "\n")
            .collect();
        assert_eq!(written, expected);
    }

    #[test]
    fn json_typed_files_read_back_as_the_same_records() {
        let text = |text: &str| Value::String(text.to_owned());
        let values = [
            Value::Tuple(vec![
                Value::Tuple(vec![text("a"), Value::Int(1)]),
                Value::Null,
            ]),
            Value::List(vec![
                Value::Int(1),
                Value::Float(1.0),
                Value::Float(f64::NAN),
            ]),
            Value::Bytes(vec![0, 255]),
            Value::Map(vec![(Value::Int(1), text("$one"))]),
            Value::Map(vec![(text("$tuple"), Value::Bool(true))]),
            Value::Struct(vec![("$x".into(), Value::Tuple(vec![]))]),
            text("line\nbreak"),
        ];
        let mut records = Batch::new();
        values
            .iter()
            .for_each(|value| records.push_with(|out| value.encode_into(out)));
        let dir = tempfile::tempdir().unwrap();
        let sink = Files {
            prefix: dir.path().join("out"),
            suffix: "jsonl".into(),
            format: FileFormat::JsonTyped,
            files: JobFiles::Anywhere,
            quota: None,
        };
        sink.write(1000, &Dataset::split(records.clone(), 2))
            .unwrap();
        let read = crate::receivers::load_table(
            &dir.path().join("out-1000.jsonl"),
            TableFormat::JsonLines,
            &JobFiles::Anywhere,
        )
        .unwrap();
        assert_eq!(read, records);
    }
}
