//! stdin: lines of standard input, until it closes.

use std::sync::Arc;

use super::{Intake, read_lines};

/// Appends every line of standard input; finishes at end of input.
pub async fn receive(source: String, intake: Arc<Intake>) {
    if let Err(error) = read_lines(&source, tokio::io::stdin(), &intake).await {
        tracing::warn!(source, "cannot read standard input: {error}");
    }
    intake.finish();
}
