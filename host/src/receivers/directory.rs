//! directory: lines of the files that appear in a directory, as Spark's `textFileStream`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_abi::Batch;

use super::{Intake, push_line};

const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Watches `dir` and appends the lines of every file that appears after the start, each
/// file once. As in Spark, files present at the start and hidden files (`.name`, the
/// convention for files still being written) are ignored: move finished files in.
pub async fn receive(source: String, dir: PathBuf, intake: Arc<Intake>) {
    let mut seen: HashSet<PathBuf> = list(&source, &dir).into_iter().collect();
    tracing::info!(
        source,
        "watching {} for new files ({} already there are not read)",
        dir.display(),
        seen.len()
    );
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let mut new_files: Vec<PathBuf> = list(&source, &dir)
            .into_iter()
            .filter(|path| !seen.contains(path))
            .collect();
        new_files.sort();
        for path in new_files {
            match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    let mut batch = Batch::new();
                    String::from_utf8_lossy(&bytes)
                        .lines()
                        .for_each(|line| push_line(&mut batch, line));
                    tracing::info!(source, "read {} lines from {}", batch.len(), path.display());
                    intake.append(&batch);
                    seen.insert(path);
                }
                // Not marked as seen: the next poll tries again.
                Err(error) => tracing::warn!(
                    source,
                    "cannot read {}: {error}; will retry",
                    path.display()
                ),
            }
        }
    }
}

fn list(source: &str, dir: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(source, "cannot list {}: {error}", dir.display());
            return Vec::new();
        }
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .collect()
}
