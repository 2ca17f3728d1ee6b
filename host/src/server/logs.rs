//! Each job's log: the log lines that name the job and its tenant (its start, recovery,
//! failures, restarts and end), kept in memory up to [`KEPT_BYTES`] per job, oldest
//! dropped first, and sent on to followers as they come.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

/// The most log text kept per job, in bytes.
pub const KEPT_BYTES: usize = 8 << 20;

/// Lines a follower may fall behind before it misses some.
const FOLLOW_BACKLOG: usize = 1024;

/// The logs of every job of a server.
#[derive(Default)]
pub struct JobLogs {
    jobs: Mutex<HashMap<(String, String), Arc<JobLog>>>,
}

/// One job's log.
struct JobLog {
    lines: Mutex<(VecDeque<String>, usize)>,
    follow: broadcast::Sender<String>,
}

impl JobLogs {
    /// No logs yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The tracing layer that files log lines naming a job and its tenant under it.
    pub fn layer(self: &Arc<Self>) -> JobLogLayer {
        JobLogLayer { logs: self.clone() }
    }

    fn log(&self, tenant: &str, job: &str) -> Arc<JobLog> {
        self.jobs
            .lock()
            .expect("logs poisoned")
            .entry((tenant.to_owned(), job.to_owned()))
            .or_insert_with(|| {
                Arc::new(JobLog {
                    lines: Mutex::new((VecDeque::new(), 0)),
                    follow: broadcast::channel(FOLLOW_BACKLOG).0,
                })
            })
            .clone()
    }

    /// Adds a line to the job's log.
    pub fn push(&self, tenant: &str, job: &str, line: String) {
        let log = self.log(tenant, job);
        let mut kept = log.lines.lock().expect("log poisoned");
        kept.1 += line.len() + 1;
        while kept.1 > KEPT_BYTES {
            let Some(oldest) = kept.0.pop_front() else {
                break;
            };
            kept.1 -= oldest.len() + 1;
        }
        let _ = log.follow.send(line.clone());
        kept.0.push_back(line);
    }

    /// The job's log so far, one line each, and what comes after it.
    pub fn read(&self, tenant: &str, job: &str) -> (Vec<String>, broadcast::Receiver<String>) {
        let log = self.log(tenant, job);
        let kept = log.lines.lock().expect("log poisoned");
        // Subscribed under the lock: no line is missed or seen twice.
        (kept.0.iter().cloned().collect(), log.follow.subscribe())
    }

    /// Forgets the job's log.
    pub fn remove(&self, tenant: &str, job: &str) {
        self.jobs
            .lock()
            .expect("logs poisoned")
            .remove(&(tenant.to_owned(), job.to_owned()));
    }
}

/// Files log lines with `job` and `tenant` fields under their job (see [`JobLogs`]).
pub struct JobLogLayer {
    logs: Arc<JobLogs>,
}

impl<S: tracing::Subscriber> Layer<S> for JobLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (Some(tenant), Some(job)) = (fields.tenant, fields.job) else {
            return;
        };
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let line = format!(
            "{time} {} {}{}",
            event.metadata().level(),
            fields.message,
            fields.rest
        );
        self.logs.push(&tenant, &job, line);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    job: Option<String>,
    tenant: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "job" => self.job = Some(value.to_owned()),
            "tenant" => self.tenant = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "job" => self.job = Some(text),
            "tenant" => self.tenant = Some(text),
            "message" => self.message = text,
            name => {
                let _ = write!(self.rest, " {name}={text}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn lines_naming_a_job_are_kept_under_it_up_to_the_limit() {
        let logs = JobLogs::new();
        let subscriber = tracing_subscriber::registry().with(logs.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(job = "count", tenant = "a", batch = 3, "restored");
            tracing::warn!(job = %"count", tenant = %"b", "b's");
            tracing::info!("no job");
        });
        let (lines, mut follow) = logs.read("a", "count");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with(" INFO restored batch=3"), "{}", lines[0]);
        assert_eq!(logs.read("b", "count").0.len(), 1);
        let line = "x".repeat(KEPT_BYTES / 4);
        for _ in 0..10 {
            logs.push("a", "count", line.clone());
        }
        let (kept, _) = logs.read("a", "count");
        assert_eq!(kept.len(), 3, "the oldest lines went");
        assert_eq!(follow.try_recv().unwrap(), line);
    }
}
