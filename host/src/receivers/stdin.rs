//! stdin: lines of standard input, until it closes.

use std::sync::Arc;

use sluice_abi::Batch;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Intake, push_line};

/// Appends every line of standard input; finishes at end of input.
pub async fn receive(source: String, intake: Arc<Intake>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let mut batch = Batch::new();
                push_line(&mut batch, &line);
                intake.append(&batch);
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(source, "cannot read standard input: {error}");
                break;
            }
        }
    }
    intake.finish();
}
