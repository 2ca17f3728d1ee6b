//! Progress of `sluice run`: a live status line on a terminal, structured log lines
//! otherwise.
//!
//! The status line shows the last batch done, or, while a batch has been computing for a
//! while, where it is ("batch 12 running 4.2 s in `counts` step 2, wc#slow"), read from
//! the job's [`BatchProgress`] by a ticker thread. It is drawn through the process's
//! [`terminal`], which erases it before anything else is printed.

use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice::batcher::BatchReport;
use sluice::progress::BatchProgress;
use sluice::terminal::terminal;

use super::LogFormat;
use super::stderr;

/// How often the status line looks at the batch in flight.
const TICK: Duration = Duration::from_millis(100);

/// A batch computing for longer than this is shown in flight; a quicker one would only
/// make the line flicker.
const SHOW_IN_FLIGHT_AFTER: Duration = Duration::from_millis(300);

pub struct Status {
    live: Option<Live>,
}

/// The status line and the thread that keeps it current.
struct Live {
    board: Arc<Mutex<Board>>,
    /// Dropped to stop the ticker.
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<JoinHandle<()>>,
}

/// What the status line is made of.
#[derive(Default)]
struct Board {
    /// The last batch done.
    last: String,
    /// The jobs whose batches in flight are shown, by name.
    jobs: Vec<(String, Arc<BatchProgress>)>,
    /// The line on the screen.
    shown: String,
}

impl Status {
    pub fn new(format: LogFormat) -> Self {
        let live = (format == LogFormat::Auto && std::io::stderr().is_terminal()).then(|| {
            let board = Arc::new(Mutex::new(Board::default()));
            let (stop, stopped) = mpsc::channel::<()>();
            let ticker = std::thread::Builder::new()
                .name("status line".into())
                .spawn({
                    let board = board.clone();
                    move || {
                        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                            redraw(&board);
                        }
                    }
                })
                .ok();
            Live {
                board,
                stop: Some(stop),
                ticker,
            }
        });
        Self { live }
    }

    /// Shows job `name`'s batch in flight on the status line while it takes long.
    pub fn watch(&mut self, name: &str, progress: Arc<BatchProgress>) {
        if let Some(live) = &self.live {
            lock(&live.board).jobs.push((name.to_owned(), progress));
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
        let total_delay = report.scheduling_delay + stats.processing;
        if let Some(live) = &self.live {
            lock(&live.board).last = format!(
                "{} ({}) batch {}{} | time {} ms | in {} | out {} | processing {} | scheduling delay {} | queued {}",
                report.job,
                report.tenant,
                report.number,
                if report.replayed { " (re-run)" } else { "" },
                report.time_ms,
                stats.records_in,
                stats.records_out,
                millis(stats.processing),
                millis(report.scheduling_delay),
                report.queued
            );
            redraw(&live.board);
        } else {
            let event_time = report.event_time.as_ref();
            tracing::info!(
                job = &*report.job,
                tenant = &*report.tenant,
                batch = report.number,
                time_ms = report.time_ms,
                records_in = stats.records_in,
                records_out = stats.records_out,
                processing_ms = stats.processing.as_millis() as u64,
                processing_us = stats.processing.as_micros() as u64,
                scheduling_delay_ms = report.scheduling_delay.as_millis() as u64,
                scheduling_delay_us = report.scheduling_delay.as_micros() as u64,
                total_delay_us = total_delay.as_micros() as u64,
                queued = report.queued,
                replayed = report.replayed,
                skipped = report.skipped,
                watermark_ms = event_time.map(|report| report.watermark_ms),
                event_time_min_ms = event_time
                    .and_then(|report| report.event_time)
                    .map(|t| t.min),
                event_time_max_ms = event_time
                    .and_then(|report| report.event_time)
                    .map(|t| t.max),
                event_time_avg_ms = event_time
                    .and_then(|report| report.event_time)
                    .map(|t| t.avg),
                state_operators = event_time.map(state_operators),
                late_rows = report.late_rows,
                "batch done"
            );
        }
    }

    pub fn message(&mut self, text: &str) {
        tracing::info!("{text}");
    }

    /// Stops updating the status line and leaves the last one on the screen.
    pub fn finish(&mut self) {
        if let Some(mut live) = self.live.take() {
            live.stop_ticker();
            let _ = terminal().keep_status();
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Live {
    fn stop_ticker(&mut self) {
        drop(self.stop.take());
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Draws the status line again if what it shows changed.
fn redraw(board: &Mutex<Board>) {
    let mut board = lock(board);
    let line = board.line(SHOW_IN_FLIGHT_AFTER);
    if line != board.shown && !stderr::is_lost() {
        let _ = terminal().set_status(&line);
        board.shown = line;
    }
}

impl Board {
    /// The batches in flight for `show_after` or longer, else the last batch done.
    fn line(&self, show_after: Duration) -> String {
        let slow: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|(job, progress)| {
                let batch = progress.in_flight()?;
                (batch.running >= show_after).then(|| {
                    format!(
                        "{job} batch {} running {:.1} s {}",
                        batch.number,
                        batch.running.as_secs_f64(),
                        batch.doing
                    )
                })
            })
            .collect();
        if slow.is_empty() {
            self.last.clone()
        } else {
            slow.join(" | ")
        }
    }
}

/// A duration in milliseconds, with the decimals that make a short one readable:
/// `0.42 ms`, `12.5 ms`, `480 ms`.
fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Each stateful event-time step's state rows and drops, in graph order, as a JSON array
/// for the `batch done` line (Spark's `stateOperators`).
fn state_operators(report: &sluice::event_time::BatchReport) -> String {
    let steps: Vec<serde_json::Value> = report
        .steps
        .iter()
        .map(|step| {
            serde_json::json!({
                "step": step.id,
                "state_rows": step.state_rows,
                "rows_dropped_by_watermark": step.rows_dropped_by_watermark,
                "late_rows_dropped": step.late_rows_dropped,
            })
        })
        .collect();
    serde_json::Value::from(steps).to_string()
}

fn lock(board: &Mutex<Board>) -> std::sync::MutexGuard<'_, Board> {
    board.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_keep_their_decimals() {
        assert_eq!(millis(Duration::from_micros(420)), "0.42 ms");
        assert_eq!(millis(Duration::from_micros(12_500)), "12.5 ms");
        assert_eq!(millis(Duration::from_millis(480)), "480 ms");
    }

    #[test]
    fn a_long_batch_in_flight_is_shown_instead_of_the_last_one_done() {
        let progress = Arc::new(BatchProgress::new(vec!["`counts` step 1, wc#slow".into()]));
        let board = Board {
            last: "wc (default) batch 11 | time 11000 ms".into(),
            jobs: vec![("wc".into(), progress.clone())],
            shown: String::new(),
        };
        let last = "wc (default) batch 11 | time 11000 ms";
        assert_eq!(board.line(Duration::ZERO), last);
        progress.begin(12, 12_000);
        progress.step(0);
        assert_eq!(board.line(Duration::from_secs(3600)), last);
        let line = board.line(Duration::ZERO);
        assert!(
            line.starts_with("wc batch 12 running 0.")
                && line.ends_with(" s in `counts` step 1, wc#slow"),
            "{line}"
        );
        progress.end();
        assert_eq!(board.line(Duration::ZERO), last);
    }
}
