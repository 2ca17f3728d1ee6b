//! What the metrics and UI tests watch jobs with: the tools the project's scripts install
//! (a real Prometheus, a headless Chromium), a plain HTTP GET, and the address a
//! `sluice run --ui 127.0.0.1:0` serves on.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value as Json;

use super::root;
use super::run::Run;
use super::wait;

/// The binary `scripts/NAME --install-only` installs (if missing) and names. A test that
/// needs it fails, never skips, when it cannot be had.
pub fn tool(name: &str) -> PathBuf {
    let output = Command::new(root().join("scripts").join(name))
        .arg("--install-only")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|error| panic!("cannot run scripts/{name}: {error}"));
    assert!(
        output.status.success(),
        "scripts/{name} --install-only failed: the test needs {name}"
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// A GET of `url`: the status, the content type and the body.
pub fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    match request.call() {
        Ok(mut response) => {
            let kind = response
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = response.body_mut().read_to_string().unwrap_or_default();
            (response.status().as_u16(), kind, body)
        }
        Err(_) => (0, String::new(), String::new()),
    }
}

/// The JSON of a GET of `url` that answers 200.
pub fn get_json(url: &str) -> Json {
    let (status, _, body) = get(url, &[]);
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The address (`127.0.0.1:PORT`) a run started with `--ui 127.0.0.1:0` serves on.
pub fn ui_address(run: &mut Run) -> String {
    let line = run.wait_for("web UI at");
    line["fields"]["address"].as_str().unwrap().to_owned()
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus on loopback, scraping given targets every second; killed on drop.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _data: tempfile::TempDir,
}

impl Prometheus {
    /// Starts one (through scripts/prometheus) scraping `targets` (`HOST:PORT`) as job
    /// `sluice`, and waits until it is ready.
    pub fn start(targets: &[&str]) -> Self {
        Self::start_with_token(targets, None)
    }

    /// As [`Prometheus::start`], showing the bearer token in `token_file` (if given) at
    /// each scrape, as an operator's configuration does.
    pub fn start_with_token(targets: &[&str], token_file: Option<&std::path::Path>) -> Self {
        tool("prometheus");
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|target| format!("'{target}'")).collect();
        let authorization = token_file.map_or(String::new(), |file| {
            format!(
                "    authorization:\n      credentials_file: '{}'\n",
                file.display()
            )
        });
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sluice\n{authorization}    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(root().join("scripts/prometheus"))
            .arg(&config)
            .arg(port.to_string())
            .arg(data.path().join("tsdb"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _data: data,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        wait::until(Duration::from_secs(60), "Prometheus to be ready", || {
            get(&ready, &[]).0 == 200
        });
        prometheus
    }

    /// The samples of instant query `query`, as `(labels, value)`.
    pub fn query(&self, query: &str) -> Vec<(Json, f64)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let answer: Json = serde_json::from_str(
            &agent
                .get(format!("{}/api/v1/query", self.url))
                .query("query", query)
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(answer["status"], "success", "query {query}: {answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| {
                let value = sample["value"][1].as_str().unwrap().parse().unwrap();
                (sample["metric"].clone(), value)
            })
            .collect()
    }

    /// Its scrape targets, as its API lists them.
    pub fn targets(&self) -> Vec<Json> {
        get_json(&format!("{}/api/v1/targets", self.url))["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
