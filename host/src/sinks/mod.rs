//! Where a stream's batches go: print, per-batch files, or memory.

mod collect;
mod files;
mod print;

pub use collect::Collected;

use anyhow::Result;

use crate::dataset::Dataset;
use crate::manifest::{SinkConfig, SinkKind};

/// Writes one batch of one stream.
pub trait Sink: Send + Sync {
    /// Writes the batch of time `time_ms`. Every batch is written, empty ones included,
    /// as Spark does (a header, an empty file).
    fn write(&self, time_ms: i64, data: &Dataset) -> Result<()>;
}

/// The sink `config` describes; `collected` receives what collect sinks keep.
pub fn build(config: &SinkConfig, collected: &Collected) -> Box<dyn Sink> {
    match &config.kind {
        SinkKind::Print { num } => Box::new(print::Print { num: *num }),
        SinkKind::Files {
            prefix,
            suffix,
            format,
        } => Box::new(files::Files {
            prefix: prefix.clone(),
            suffix: suffix.clone(),
            format: *format,
        }),
        SinkKind::Collect => Box::new(collected.sink(&config.name)),
        SinkKind::Kafka(kafka) => Box::new(crate::connectors::kafka::KafkaSink::new(
            &config.name,
            kafka,
        )),
    }
}

/// A record as a line of text: strings as themselves, anything else as JSON.
fn display_text(record: &[u8]) -> String {
    sluice_abi::Value::decode(record).map_or_else(
        |error| format!("<undecodable record: {error}>"),
        |value| value.to_display_text(),
    )
}
