//! A running `sluice run`, watched through its log as a person would: waiting for a line,
//! sending it signals, collecting what it wrote.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::sluice;

/// A running `sluice run --log json`, its log lines arriving on a channel.
pub struct Run {
    /// The process.
    pub child: Child,
    /// Its log lines (JSON, or a string for a line that is not), as they arrive.
    pub lines: mpsc::Receiver<Json>,
    /// The lines read so far.
    pub log: Vec<Json>,
}

impl Run {
    /// Starts `sluice run MANIFEST --log json ARGS...` in the manifest's folder.
    pub fn start(manifest: &Path, args: &[&str]) -> Self {
        Self::start_with_env(manifest, args, &[])
    }

    /// Starts it as [`Run::start`] does, with environment variables `env` set.
    pub fn start_with_env(manifest: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = sluice()
            .envs(env.iter().copied())
            .current_dir(manifest.parent().unwrap())
            .arg("run")
            .arg(manifest)
            .args(["--log", "json"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let parsed =
                    serde_json::from_str(&line).unwrap_or_else(|_| Json::String(line.clone()));
                if sender.send(parsed).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for the next log line whose message contains `message`.
    pub fn wait_for(&mut self, message: &str) -> Json {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no log line {message:?} within 60 s; the log so far: {:#?}",
                    self.log
                )
            });
            self.log.push(line.clone());
            if message_of(&line).contains(message) {
                return line;
            }
        }
    }

    /// Sends it signal `name` (`TERM`, `INT` ...).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to end, with every log line it wrote.
    pub fn finish(mut self) -> (ExitStatus, Vec<Json>) {
        let status = self.child.wait().unwrap();
        self.log.extend(self.lines.iter());
        (status, self.log)
    }
}

/// The message of a log line.
pub fn message_of(line: &Json) -> String {
    match line {
        Json::String(text) => text.clone(),
        line => line["fields"]["message"].as_str().unwrap_or("").to_owned(),
    }
}
