//! The queue source (Spark's `queueStream` with `oneAtATime = true`): prepared batches,
//! handed over one per cut. It is replayable: the position of a cut is the index of the
//! batch it took.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use sluice_abi::{Batch, Value};

use super::{Receiver, Replayable, encode_values};
use crate::beneath::JobFiles;

/// Prepared batches, handed over one per cut; then empty batches.
pub struct Queue {
    batches: Vec<Batch>,
    next: AtomicU64,
}

impl Queue {
    fn of(batches: Vec<Batch>) -> Self {
        Self {
            batches,
            next: AtomicU64::new(0),
        }
    }

    /// One batch per element of `batches`.
    pub fn from_values(batches: &[Vec<Value>]) -> Self {
        Self::of(batches.iter().map(|values| encode_values(values)).collect())
    }
}

/// The batches of a queue source's `batches_file`, opened through `files` (beneath its
/// tenant's directory, for a served job): JSON lines, each a batch, as an array of
/// records in typed JSON ([`crate::json`]); blank lines are skipped.
pub fn read_batches_file(path: &Path, files: &JobFiles) -> Result<Vec<Vec<Value>>> {
    let bytes = files
        .read(path)
        .with_context(|| format!("cannot read batches file {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("batches file {} is not UTF-8 text", path.display()))?;
    let mut batches = Vec::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        let place = || format!("batches file {} line {}", path.display(), index + 1);
        match crate::json::parse(line).with_context(|| format!("{} is not typed JSON", place()))? {
            Value::List(records) => batches.push(records),
            other => bail!(
                "{} is {}, not a batch: write each batch as an array of records",
                place(),
                crate::json::to_json(&other)
            ),
        }
    }
    Ok(batches)
}

impl Receiver for Queue {
    fn cut(&self) -> Result<Batch> {
        self.records_at(self.next.fetch_add(1, Ordering::AcqRel))
    }

    fn is_drained(&self) -> bool {
        self.next.load(Ordering::Acquire) >= self.batches.len() as u64
    }

    fn replayable(&self) -> Option<&dyn Replayable> {
        Some(self)
    }
}

impl Replayable for Queue {
    fn position(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    fn records_at(&self, position: u64) -> Result<Batch> {
        Ok(usize::try_from(position)
            .ok()
            .and_then(|index| self.batches.get(index))
            .cloned()
            .unwrap_or_default())
    }

    fn seek(&self, position: u64) {
        self.next.store(position, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batches_file_holds_one_batch_per_line_with_nulls_and_tuples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batches.jsonl");
        std::fs::write(
            &path,
            "[[\"a\", null], {\"$tuple\": [\"b\", 1]}]\n\n[]\n[{\"$bytes\": \"AQI=\"}]\n",
        )
        .unwrap();
        let batches = read_batches_file(&path, &JobFiles::Anywhere).unwrap();
        let text = |text: &str| Value::String(text.to_owned());
        assert_eq!(
            batches,
            [
                vec![
                    Value::List(vec![text("a"), Value::Null]),
                    Value::Tuple(vec![text("b"), Value::Int(1)]),
                ],
                vec![],
                vec![Value::Bytes(vec![1, 2])],
            ]
        );
        std::fs::write(&path, "[1]\n{\"a\": 1}\n").unwrap();
        let error = format!(
            "{:#}",
            read_batches_file(&path, &JobFiles::Anywhere).unwrap_err()
        );
        assert!(
            error.contains("line 2") && error.contains("not a batch"),
            "{error}"
        );
        std::fs::write(&path, "[1]\n[1\n").unwrap();
        let error = format!(
            "{:#}",
            read_batches_file(&path, &JobFiles::Anywhere).unwrap_err()
        );
        assert!(error.contains("line 2 is not typed JSON"), "{error}");
    }
}
