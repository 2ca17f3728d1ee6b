//! table: a static data set read once at start and offered whole in every batch, the
//! other side of a join with reference data.

use std::path::Path;

use anyhow::{Context, Result, bail};
use sluice_abi::{Batch, Value};

use super::{Receiver, Replayable};
use crate::beneath::JobFiles;
use crate::manifest::TableFormat;

/// The same records at every cut.
pub struct Table {
    records: Batch,
}

impl Table {
    /// Reads the table at `path`, opened through `files`; a line or row that cannot be
    /// read fails the start, naming the line. JSON lines are read as typed JSON
    /// ([`crate::json`]).
    pub fn load(path: &Path, format: TableFormat, files: &JobFiles) -> Result<Self> {
        let text = files
            .read(path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| Ok(String::from_utf8(bytes)?))
            .with_context(|| format!("cannot read table {}", path.display()))?;
        let mut records = Batch::new();
        match format {
            TableFormat::JsonLines => {
                for (index, line) in text
                    .lines()
                    .enumerate()
                    .filter(|(_, line)| !line.trim().is_empty())
                {
                    let value = crate::json::parse(line).with_context(|| {
                        format!(
                            "table {} line {} is not typed JSON (docs/manifest.md, \
                             `JSON values`): fix or remove it",
                            path.display(),
                            index + 1,
                        )
                    })?;
                    records.push_with(|out| value.encode_into(out));
                }
            }
            TableFormat::Csv => {
                let mut reader = csv::Reader::from_reader(text.as_bytes());
                for (index, row) in reader.records().enumerate() {
                    let row = row.with_context(|| {
                        format!(
                            "table {} row {} is not valid CSV",
                            path.display(),
                            index + 2
                        )
                    })?;
                    let mut fields = row.iter().map(|field| Value::String(field.to_owned()));
                    let Some(key) = fields.next() else {
                        bail!("table {} row {} is empty", path.display(), index + 2);
                    };
                    let rest: Vec<Value> = fields.collect();
                    let value = match <[Value; 1]>::try_from(rest) {
                        Ok([single]) => single,
                        Err(rest) => Value::List(rest),
                    };
                    records.push_with(|out| Value::Tuple(vec![key, value]).encode_into(out));
                }
            }
        }
        Ok(Self { records })
    }
}

impl Table {
    /// The table's records.
    pub fn into_records(self) -> Batch {
        self.records
    }
}

impl Receiver for Table {
    fn cut(&self) -> Result<Batch> {
        Ok(self.records.clone())
    }

    /// A table never brings anything new, so it never keeps a job running.
    fn is_drained(&self) -> bool {
        true
    }

    fn replayable(&self) -> Option<&dyn Replayable> {
        Some(self)
    }
}

/// Every position of a table holds the whole table.
impl Replayable for Table {
    fn position(&self) -> u64 {
        0
    }

    fn records_at(&self, _position: u64) -> Result<Batch> {
        Ok(self.records.clone())
    }

    fn seek(&self, _position: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn json_lines_are_read_to_the_depth_limit_and_refused_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.jsonl");
        let limit = sluice_abi::encoding::MAX_DEPTH;
        std::fs::write(&path, format!("[\"k\", 1]\n{}\n", nested(limit))).unwrap();
        let records = Table::load(&path, TableFormat::JsonLines, &JobFiles::Anywhere)
            .unwrap()
            .into_records();
        assert_eq!(records.len(), 2);
        assert!(records.check_records().is_ok());
        std::fs::write(&path, format!("[\"k\", 1]\n{}\n", nested(limit + 1))).unwrap();
        let error = Table::load(&path, TableFormat::JsonLines, &JobFiles::Anywhere)
            .err()
            .expect("one level too deep");
        let error = format!("{error:#}");
        assert!(
            error.contains("line 2") && error.contains("deeper than 1000 levels"),
            "{error}"
        );
    }
}
