//! Where a stream's batches go: print, per-batch files, or memory.

mod collect;
mod files;
mod print;

pub use collect::Collected;

use anyhow::{Context, Result};

use crate::beneath::JobFiles;
use crate::dataset::Dataset;
use crate::manifest::{JobConfig, SinkConfig, SinkKind};

/// Writes one batch of one stream.
pub trait Sink: Send + Sync {
    /// Writes the batch of time `time_ms`. Every batch is written, empty ones included,
    /// as Spark does (a header, an empty file).
    fn write(&self, time_ms: i64, data: &Dataset) -> Result<()>;
}

/// The sink `config` of job `job` describes; `collected` receives what collect sinks
/// keep. A hosted job's print sinks write to its log, and its files sinks write beneath
/// its tenant's directory.
pub fn build(config: &SinkConfig, collected: &Collected, job: &JobConfig) -> Result<Box<dyn Sink>> {
    Ok(match &config.kind {
        SinkKind::Print { num } => Box::new(print::Print {
            num: *num,
            to: match &job.hosted {
                None => print::PrintTo::Terminal,
                Some(_) => print::PrintTo::Log {
                    tenant: job.tenant.clone().unwrap_or_default(),
                    job: job.name.clone(),
                },
            },
        }),
        SinkKind::Files {
            prefix,
            suffix,
            format,
        } => Box::new(files::Files {
            prefix: prefix.clone(),
            suffix: suffix.clone(),
            format: *format,
            files: JobFiles::of(job).with_context(|| {
                crate::failure::Failing::new(
                    crate::failure::FailureKind::Sink,
                    format!("sink `{}` cannot open the tenant's files", config.name),
                )
            })?,
            quota: job.hosted.as_ref().map(|hosted| hosted.disk.clone()),
        }),
        SinkKind::Collect => Box::new(collected.sink(&config.name)),
        SinkKind::Kafka(kafka) => Box::new(crate::connectors::kafka::KafkaSink::new(
            &config.name,
            kafka,
        )),
    })
}

/// A record as a line of text: strings as themselves, anything else as JSON.
fn display_text(record: &[u8]) -> String {
    sluice_abi::Value::decode(record).map_or_else(
        |error| format!("<undecodable record: {error}>"),
        |value| value.to_display_text(),
    )
}
