//! print: Spark's `DStream.print(num)`.

use anyhow::Result;

use super::{Sink, display_text};
use crate::dataset::Dataset;

/// Prints a header with the batch time and the first `num` records, then `...` if
/// there are more, then a blank line: the layout of Spark's `print()`.
pub struct Print {
    pub num: usize,
    pub to: PrintTo,
}

/// Where printed batches go.
pub enum PrintTo {
    /// Standard output (`sluice run`).
    Terminal,
    /// The log of the job, one event per line naming the job and its tenant: a server's
    /// jobs have no terminal, and their logs are read with `GET /v1/jobs/{job}/logs`.
    Log { tenant: String, job: String },
}

impl Sink for Print {
    fn write(&self, time_ms: i64, data: &Dataset) -> Result<()> {
        let rule = "-------------------------------------------";
        let mut text = format!("{rule}\nTime: {time_ms} ms\n{rule}\n");
        for record in data.records().take(self.num) {
            crate::scheduler::slice::tick()?;
            text.push_str(&display_text(record));
            text.push('\n');
        }
        if data.len() > self.num {
            text.push_str("...\n");
        }
        text.push('\n');
        match &self.to {
            // Through the terminal, so that a status line is never in the middle of it.
            PrintTo::Terminal => crate::scheduler::slice::paused(|| {
                crate::terminal::terminal().print(text.as_bytes())
            })?,
            PrintTo::Log { tenant, job } => {
                for line in text.lines().filter(|line| !line.is_empty()) {
                    tracing::info!(target: "sluice::print", tenant, job, "{line}");
                }
            }
        }
        Ok(())
    }
}
