//! print: Spark's `DStream.print(num)`.

use anyhow::Result;

use super::{Sink, display_text};
use crate::dataset::Dataset;

/// Prints a header with the batch time and the first `num` records, then `...` if
/// there are more, then a blank line: the layout of Spark's `print()`.
pub struct Print {
    pub num: usize,
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
        // Through the terminal, so that a status line is never in the middle of it.
        crate::scheduler::slice::paused(|| crate::terminal::terminal().print(text.as_bytes()))?;
        Ok(())
    }
}
