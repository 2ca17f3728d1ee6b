//! Progress of `sluice run`: a live status line on a terminal, structured log lines
//! otherwise.

use std::io::{IsTerminal, Write};

use sluice::batcher::BatchReport;

use super::LogFormat;
use super::stderr::Stderr;

pub struct Status {
    live: bool,
}

impl Status {
    pub fn new(format: LogFormat) -> Self {
        Self {
            live: format == LogFormat::Auto && std::io::stderr().is_terminal(),
        }
    }

    pub fn batch(&mut self, report: &BatchReport) {
        let stats = report.stats;
        if let Some(written) = report.checkpoint {
            self.message(&format!(
                "{} ({}): state checkpoint after batch {}: {} bytes in {} ms",
                report.job,
                report.tenant,
                written.number,
                written.bytes,
                written.took.as_millis()
            ));
        }
        if self.live {
            let _ = write!(
                Stderr,
                "\r\x1b[2K{} ({}) batch {}{} | time {} ms | in {} | out {} | processing {} ms | scheduling delay {} ms | queued {}",
                report.job,
                report.tenant,
                report.number,
                if report.replayed { " (re-run)" } else { "" },
                report.time_ms,
                stats.records_in,
                stats.records_out,
                stats.processing.as_millis(),
                report.scheduling_delay.as_millis(),
                report.queued
            );
            let _ = Stderr.flush();
        } else {
            tracing::info!(
                job = &*report.job,
                tenant = &*report.tenant,
                batch = report.number,
                time_ms = report.time_ms,
                records_in = stats.records_in,
                records_out = stats.records_out,
                processing_ms = stats.processing.as_millis() as u64,
                scheduling_delay_ms = report.scheduling_delay.as_millis() as u64,
                queued = report.queued,
                replayed = report.replayed,
                "batch done"
            );
        }
    }

    pub fn message(&mut self, text: &str) {
        self.finish();
        tracing::info!("{text}");
    }

    pub fn finish(&mut self) {
        if self.live {
            let _ = writeln!(Stderr);
        }
    }
}
