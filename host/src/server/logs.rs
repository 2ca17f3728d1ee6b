//! Each job's log: the log lines that name the job and its tenant (its start, recovery,
//! failures, restarts and end), kept up to [`KEPT_BYTES`] per job, oldest dropped first
//! (and a notice saying so put first), and sent on to followers as they come. Once told
//! the data directory ([`JobLogs::keep_in`]), each line is also appended to the job's log
//! file, in two halves (`log`, and `log.1` before it): the log outlives a restart.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::data::DataDir;

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

/// The most log text kept per job, in bytes.
pub const KEPT_BYTES: usize = 8 << 20;

/// Lines a follower may fall behind before it misses some.
const FOLLOW_BACKLOG: usize = 1024;

/// The line put first in a log whose oldest lines were dropped.
pub const DROPPED_NOTICE: &str =
    "[earlier lines were dropped: at most 8 MiB of a job's log is kept]";

/// The logs of every job of a server.
#[derive(Default)]
pub struct JobLogs {
    jobs: Mutex<HashMap<(String, String), Arc<JobLog>>>,
    /// Where the logs are kept on disk, once known.
    data: OnceLock<DataDir>,
}

/// One job's log.
struct JobLog {
    kept: Mutex<Kept>,
    follow: broadcast::Sender<String>,
}

/// A job's log lines in memory, and the file they are appended to.
#[derive(Default)]
struct Kept {
    lines: VecDeque<String>,
    bytes: usize,
    /// Whether older lines were dropped.
    dropped: bool,
    file: Option<LogFile>,
}

/// A job's log on disk: lines are appended to `log` until it holds half of
/// [`KEPT_BYTES`]; it then becomes `log.1` (the one before it is dropped).
struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    bytes: u64,
}

impl LogFile {
    /// Opens the log at `path` (making its directory) and reads back what it and its
    /// older half hold: the lines, and whether older ones were dropped.
    fn open(path: PathBuf) -> std::io::Result<(Self, Vec<String>, bool)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut lines = Vec::new();
        let older = older(&path);
        for half in [&older, &path] {
            match std::fs::read_to_string(half) {
                Ok(text) => lines.extend(text.lines().map(str::to_owned)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        let dropped = lines.first().is_some_and(|line| line == DROPPED_NOTICE);
        if dropped {
            lines.remove(0);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        Ok((Self { path, file, bytes }, lines, dropped))
    }

    /// Appends `line`, first turning a full `log` into `log.1`.
    fn append(&mut self, line: &str) -> std::io::Result<()> {
        if self.bytes > 0 && self.bytes + line.len() as u64 + 1 > KEPT_BYTES as u64 / 2 {
            let older = older(&self.path);
            let dropping = older.exists();
            std::fs::rename(&self.path, &older)?;
            if dropping {
                // What `log.1` held is gone: its reader is told so.
                let text = std::fs::read_to_string(&older)?;
                std::fs::write(&older, format!("{DROPPED_NOTICE}\n{text}"))?;
            }
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.bytes = 0;
        }
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }
}

/// The older half of the log at `path`.
fn older(path: &std::path::Path) -> PathBuf {
    path.with_extension("1")
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

    /// Keeps each job's log in its file under `data` from now on, reading back what a
    /// job's file holds when its log is first used.
    pub fn keep_in(&self, data: DataDir) {
        let _ = self.data.set(data);
    }

    fn log(&self, tenant: &str, job: &str) -> Arc<JobLog> {
        self.jobs
            .lock()
            .expect("logs poisoned")
            .entry((tenant.to_owned(), job.to_owned()))
            .or_insert_with(|| {
                let mut kept = Kept::default();
                if let Some(data) = self.data.get() {
                    match LogFile::open(data.log(tenant, job)) {
                        Ok((file, lines, dropped)) => {
                            kept.dropped = dropped;
                            for line in lines {
                                kept.push(line);
                            }
                            kept.file = Some(file);
                        }
                        Err(error) => eprintln!(
                            "the log of job `{job}` of tenant `{tenant}` is kept in memory only: \
                             {error}"
                        ),
                    }
                }
                Arc::new(JobLog {
                    kept: Mutex::new(kept),
                    follow: broadcast::channel(FOLLOW_BACKLOG).0,
                })
            })
            .clone()
    }

    /// Adds a line to the job's log.
    pub fn push(&self, tenant: &str, job: &str, line: String) {
        let log = self.log(tenant, job);
        let mut kept = log.kept.lock().expect("log poisoned");
        if let Some(file) = &mut kept.file
            && let Err(error) = file.append(&line)
        {
            // Not through tracing: this runs inside its layer.
            eprintln!("cannot write the log of job `{job}` of tenant `{tenant}`: {error}");
            kept.file = None;
        }
        let _ = log.follow.send(line.clone());
        kept.push(line);
    }

    /// The job's log so far, one line each (first a notice if older lines were
    /// dropped), and what comes after it.
    pub fn read(&self, tenant: &str, job: &str) -> (Vec<String>, broadcast::Receiver<String>) {
        let log = self.log(tenant, job);
        let kept = log.kept.lock().expect("log poisoned");
        let notice = kept.dropped.then(|| DROPPED_NOTICE.to_owned());
        let lines = notice
            .into_iter()
            .chain(kept.lines.iter().cloned())
            .collect();
        // Subscribed under the lock: no line is missed or seen twice.
        (lines, log.follow.subscribe())
    }

    /// Forgets the job's log.
    pub fn remove(&self, tenant: &str, job: &str) {
        self.jobs
            .lock()
            .expect("logs poisoned")
            .remove(&(tenant.to_owned(), job.to_owned()));
    }
}

impl Kept {
    /// Keeps `line`, dropping the oldest lines past [`KEPT_BYTES`].
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        while self.bytes > KEPT_BYTES {
            let Some(oldest) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= oldest.len() + 1;
            self.dropped = true;
        }
        self.lines.push_back(line);
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
        assert_eq!(kept.len(), 4, "the oldest lines went");
        assert_eq!(kept[0], DROPPED_NOTICE);
        assert_eq!(follow.try_recv().unwrap(), line);
    }

    #[test]
    fn a_kept_log_is_read_back_by_the_next_server_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::create(dir.path()).unwrap();
        let logs = JobLogs::new();
        logs.keep_in(data.clone());
        logs.push("a", "count", "started".into());
        logs.push("a", "count", "batch 1 done".into());
        let again = JobLogs::new();
        again.keep_in(data.clone());
        assert_eq!(again.read("a", "count").0, ["started", "batch 1 done"]);

        let line = "x".repeat(KEPT_BYTES / 4);
        for _ in 0..10 {
            logs.push("a", "count", line.clone());
        }
        logs.push("a", "count", "last".into());
        let on_disk: u64 = ["log", "log.1"]
            .iter()
            .map(|name| {
                let path = data.job("a", "count").join(name);
                std::fs::metadata(path).unwrap().len()
            })
            .sum();
        assert!(on_disk <= KEPT_BYTES as u64, "{on_disk} bytes kept");
        let third = JobLogs::new();
        third.keep_in(data);
        let (read, _) = third.read("a", "count");
        assert_eq!(read.first().map(String::as_str), Some(DROPPED_NOTICE));
        assert_eq!(read.last().map(String::as_str), Some("last"));
        assert!(read[1..read.len() - 1].iter().all(|kept| *kept == line));
    }
}
