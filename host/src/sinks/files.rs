//! files: one file per batch, Spark's `saveAsTextFiles(prefix, suffix)`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
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

impl Files {
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
        for record in data.records() {
            crate::scheduler::slice::tick()?;
            let line = match self.format {
                FileFormat::Text => display_text(record),
                FileFormat::JsonLines => Value::decode(record)?.to_json(),
                FileFormat::JsonTyped => crate::json::to_json(&Value::decode(record)?),
            };
            writeln!(file, "{line}")?;
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
