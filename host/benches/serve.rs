//! `sluice serve` as a process on loopback: submit-to-running latency with a cached
//! component (from `POST /v1/jobs` until `GET /v1/jobs/{job}` says `running`: instances
//! warm, receivers started; polled back to back, so it includes up to one GET), requests
//! per second of `GET /v1/jobs/{job}` while `SLUICE_BENCH_JOBS` jobs (100) run, for
//! `SLUICE_BENCH_SECS` seconds (3), and the pause of a redeploy with a rebuilt component
//! (a new digest), `SLUICE_BENCH_REDEPLOYS` times (5) while those jobs run: the longest
//! time between two consecutive batches' output files across the redeploy, against the
//! interval, and that the batch times go on without a gap. Each job reads a generator at
//! 10 records/s through a fused map chain and a `reduce_by_key`, in 2 partitions, at a
//! 100 ms interval, into a files sink. Run with `cargo bench -p sluice --bench serve`
//! after `scripts/setup`.

mod common;
#[path = "../../tests/common/release.rs"]
mod release;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The jobs' batch interval.
const INTERVAL: Duration = Duration::from_millis(100);

fn manifest(job: usize) -> String {
    format!(
        "name = \"j{job}\"\nbatch_interval = \"{}ms\"\npartitions = 2\n\
         [udfs]\nc = \"conformance\"\n[[sources]]\nname = \"in\"\nkind = \"generator\"\nrate = 10\n\
         [[streams]]\nname = \"out\"\nfrom = \"in\"\nsteps = [\
         {{ op = \"map\", udf = \"c#add_10\" }}, {{ op = \"map\", udf = \"c#add_4\" }}, \
         {{ op = \"map\", udf = \"c#pair_with_one\" }}, {{ op = \"reduce_by_key\", udf = \"c#sum\" }}]\n\
         [[sinks]]\nfrom = \"out\"\nkind = \"files\"\nprefix = \"out/j{job}\"\n",
        INTERVAL.as_millis()
    )
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    url: String,
    agent: ureq::Agent,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Calls the API; the status and the body.
    fn call(&self, method: &str, path: &str, token: &str, body: Vec<u8>) -> (u16, String) {
        let url = format!("{}{path}", self.url);
        let bearer = format!("Bearer {token}");
        let response = match method {
            "GET" => self.agent.get(&url).header("Authorization", &bearer).call(),
            "PUT" => self
                .agent
                .put(&url)
                .header("Authorization", &bearer)
                .send(body),
            _ => self
                .agent
                .post(&url)
                .header("Authorization", &bearer)
                .send(body),
        };
        let mut response = response.expect("the server answers");
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (response.status().as_u16(), text)
    }

    fn expect(&self, status: u16, method: &str, path: &str, token: &str, body: Vec<u8>) -> String {
        let (got, text) = self.call(method, path, token, body);
        assert_eq!(got, status, "{method} {path}: {text}");
        text
    }
}

/// Starts `sluice serve` on a free port over `data`; it and the admin token.
fn start(data: &std::path::Path) -> (Server, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sluice serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let admin = line
        .trim()
        .strip_prefix("admin token: ")
        .expect("the admin token is printed first")
        .to_owned();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        agent,
    };
    // The token is printed before the server listens: wait for the port to answer.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        assert!(Instant::now() < deadline, "the server did not answer");
        std::thread::yield_now();
    }
    (server, admin)
}

fn main() {
    let jobs: usize = setting("SLUICE_BENCH_JOBS", 100);
    let secs: u64 = setting("SLUICE_BENCH_SECS", 3);
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(&dir.path().join("data"));
    let created = server.expect(
        201,
        "POST",
        "/v1/tenants",
        &admin,
        format!("{{\"name\": \"bench\", \"quotas\": {{\"max_jobs\": {jobs}}}}}").into_bytes(),
    );
    let token: serde_json::Value = serde_json::from_str(&created).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let wasm = std::fs::read(common::component("conformance")).unwrap();
    server.expect(201, "PUT", "/v1/components/conformance", &token, wasm);

    let mut latencies = Vec::with_capacity(jobs);
    for job in 0..jobs {
        let started = Instant::now();
        server.expect(201, "POST", "/v1/jobs", &token, manifest(job).into_bytes());
        let path = format!("/v1/jobs/j{job}");
        while !server
            .expect(200, "GET", &path, &token, Vec::new())
            .contains("\"state\":\"running\"")
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "j{job} did not start"
            );
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile) as usize];
    println!(
        "submit to running ({jobs} jobs, cached component): median {:.1} ms, p90 {:.1} ms, \
         max {:.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );

    let until = Instant::now() + Duration::from_secs(secs);
    let mut requests = 0u64;
    let started = Instant::now();
    while Instant::now() < until {
        let path = format!("/v1/jobs/j{}", requests as usize % jobs);
        server.expect(200, "GET", &path, &token, Vec::new());
        requests += 1;
    }
    println!(
        "GET /v1/jobs/{{job}} while {jobs} jobs run: {:.0} requests/s (one client, sequential)",
        requests as f64 / started.elapsed().as_secs_f64()
    );

    let redeploys: u8 = setting("SLUICE_BENCH_REDEPLOYS", 5);
    let output = dir.path().join("data/tenants/bench/files/out");
    redeploy(&server, &token, &output, redeploys, jobs);
}

/// One batch's output file of job `j0`: its batch time (from its name) and when it was
/// written.
struct Output {
    time_ms: i64,
    written: SystemTime,
}

/// The output files of job `j0` in `dir`, in batch order.
fn outputs(dir: &Path) -> Vec<Output> {
    let mut outputs: Vec<Output> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let time_ms = name.strip_prefix("j0-")?.parse().ok()?;
            let written = entry.metadata().ok()?.modified().ok()?;
            Some(Output { time_ms, written })
        })
        .collect();
    outputs.sort_by_key(|output| output.time_ms);
    outputs
}

/// Redeploys job `j0` `rounds` times, each with the component rebuilt (a new digest), and
/// prints the longest time between two consecutive batches' outputs across each redeploy
/// (its pause: one interval when the redeploy costs the job no time), asserting that the
/// batch times go on one interval apart throughout.
fn redeploy(server: &Server, token: &str, output: &Path, rounds: u8, jobs: usize) {
    let wasm = std::fs::read(common::component("conformance")).unwrap();
    let mut redeploys = Vec::new();
    for round in 1..=rounds {
        let uploaded = server.expect(
            201,
            "PUT",
            "/v1/components/conformance",
            token,
            release::new_release(&wasm, round),
        );
        let uploaded: serde_json::Value = serde_json::from_str(&uploaded).unwrap();
        let digest = uploaded["digest"].as_str().unwrap().to_owned();
        let sent = SystemTime::now();
        let answer = server.expect(200, "PUT", "/v1/jobs/j0", token, manifest(0).into_bytes());
        let answered = SystemTime::now();
        assert!(
            answer.contains(&digest),
            "the rebuilt component runs: {answer}"
        );
        // Three batches of the new release written.
        let deadline = Instant::now() + Duration::from_secs(60);
        while outputs(output)
            .iter()
            .filter(|output| output.written > answered)
            .count()
            < 3
        {
            assert!(
                Instant::now() < deadline,
                "j0 wrote nothing after redeploy {round}"
            );
            std::thread::sleep(INTERVAL / 10);
        }
        redeploys.push((sent, answered));
    }
    let outputs = outputs(output);
    let interval_ms = INTERVAL.as_millis() as i64;
    for pair in outputs.windows(2) {
        assert_eq!(
            pair[1].time_ms - pair[0].time_ms,
            interval_ms,
            "a batch time was skipped between {} and {}; the job: {}",
            pair[0].time_ms,
            pair[1].time_ms,
            server.expect(200, "GET", "/v1/jobs/j0", token, Vec::new())
        );
    }
    let mut pauses: Vec<Duration> = redeploys
        .iter()
        .map(|(sent, answered)| {
            // The last batch of the old release is written between the request and the
            // answer; the longest step from a batch written then is the redeploy's.
            outputs
                .windows(2)
                .filter(|pair| pair[0].written + INTERVAL >= *sent && pair[0].written <= *answered)
                .map(|pair| {
                    pair[1]
                        .written
                        .duration_since(pair[0].written)
                        .unwrap_or_default()
                })
                .max()
                .expect("batches were written around the redeploy")
        })
        .collect();
    pauses.sort();
    let mut answers: Vec<Duration> = redeploys
        .iter()
        .map(|(sent, answered)| answered.duration_since(*sent).unwrap_or_default())
        .collect();
    answers.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
    let longest = pauses[pauses.len() - 1];
    println!(
        "redeploy with a rebuilt component ({rounds} times, while {jobs} jobs run): between \
         the batches on either side of it median {:.1} ms, max {:.1} ms, a pause of at most \
         {:.1} ms past the {} ms interval (target: under one interval); PUT answered in \
         median {:.1} ms; {} batch times of the job, none skipped",
        ms(pauses[pauses.len() / 2]),
        ms(longest),
        ms(longest.saturating_sub(INTERVAL)),
        INTERVAL.as_millis(),
        ms(answers[answers.len() / 2]),
        outputs.len()
    );
}
