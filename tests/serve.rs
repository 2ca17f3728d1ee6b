//! `sluice serve` as a process on loopback: the admin token, tenants, components, jobs,
//! the tenancy rules, quotas, restarts of failed jobs, and SIGTERM with resume.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value as Json, json};

use common::wait;
use common::wordcount::{RUNNING_COUNT, Xorshift, counted, final_counts, text};

/// A running `sluice serve`.
struct Server {
    child: Child,
    url: String,
    /// Its standard output, line by line.
    stdout: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `sluice serve --listen 127.0.0.1:PORT --data DATA [ARGS]` and waits for its
    /// port to answer.
    fn start(data: &Path, args: &[&str]) -> Self {
        Self::start_with_env(data, args, &[])
    }

    /// As [`Server::start`], with the environment variables `env` set on the process.
    fn start_with_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(|command| {
            command
                .arg("--data")
                .arg(data)
                .args(args)
                .envs(env.iter().copied());
        })
    }

    /// Starts `sluice serve --listen 127.0.0.1:PORT` with what `setup` adds to the
    /// command, and waits for its port to answer.
    fn launch(setup: impl FnOnce(&mut std::process::Command)) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = common::sluice();
        command.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
        setup(&mut command);
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (sender, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            stdout,
        };
        wait::until(Duration::from_secs(60), "the server to answer", || {
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "the server exited before answering"
            );
            server.call("GET", "/healthz", None, None).0 == 200
        });
        server
    }

    /// Calls the API: the status and the JSON answer.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Json) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let bearer = format!("Bearer {}", token.unwrap_or(""));
        let response = match method {
            "GET" => agent.get(&url).header("Authorization", &bearer).call(),
            "DELETE" => agent.delete(&url).header("Authorization", &bearer).call(),
            "PUT" => agent
                .put(&url)
                .header("Authorization", &bearer)
                .send(body.unwrap_or_default()),
            _ => agent
                .post(&url)
                .header("Authorization", &bearer)
                .send(body.unwrap_or_default()),
        };
        match response {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let text = response.body_mut().read_to_string().unwrap();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Json::String(text)),
                )
            }
            Err(_) => (0, Json::Null),
        }
    }

    /// Calls the API and asserts the status.
    fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        token: &str,
        body: impl Into<Vec<u8>>,
    ) -> Json {
        let body: Vec<u8> = body.into();
        let (got, answer) = self.call(method, path, Some(token), Some(body));
        assert_eq!(got, status, "{method} {path}: {answer}");
        answer
    }

    /// Creates tenant `name` with `quotas`; its token.
    fn tenant(&self, admin: &str, name: &str, quotas: Json) -> String {
        let body = json!({"name": name, "quotas": quotas}).to_string();
        let created = self.expect(201, "POST", "/v1/tenants", admin, body);
        created["token"].as_str().unwrap().to_owned()
    }

    /// Uploads the word-count component as `wordcount` for `token`'s tenant; the answer.
    fn upload_word_count(&self, token: &str) -> Json {
        self.expect(
            201,
            "PUT",
            "/v1/components/wordcount",
            token,
            wasm("wordcount"),
        )
    }

    /// Waits for job `name` of `token`'s tenant to satisfy `done`; its last status.
    fn wait_job(&self, token: &str, name: &str, what: &str, done: impl Fn(&Json) -> bool) -> Json {
        let mut last = Json::Null;
        wait::until(Duration::from_secs(60), what, || {
            last = self.expect(200, "GET", &format!("/v1/jobs/{name}"), token, "");
            done(&last)
        });
        last
    }

    /// Sends SIGTERM and waits for the exit.
    fn terminate(mut self) -> ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        wait::exit_within(&mut self.child, Duration::from_secs(15))
            .expect("the server did not exit within 15 s of SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server on a new data directory; it and the admin token.
fn fresh(dir: &Path, args: &[&str]) -> (Server, String) {
    fresh_with_env(dir, args, &[])
}

/// As [`fresh`], with the environment variables `env` set on the server.
fn fresh_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Server, String) {
    let server = Server::start_with_env(&dir.join("data"), args, env);
    let line = server
        .stdout
        .recv_timeout(Duration::from_secs(10))
        .expect("the admin token is printed");
    let token = line.strip_prefix("admin token: ").expect(&line).to_owned();
    (server, token)
}

/// As [`fresh`], with `server.toml` (in `dir`) holding `config`.
fn fresh_with_config(dir: &Path, config: &str) -> (Server, String) {
    let path = dir.join("server.toml");
    std::fs::write(&path, config).unwrap();
    fresh(dir, &["--config", path.to_str().unwrap()])
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(common::udf(name)).unwrap()
}

fn files(dir: &Path, tenant: &str) -> PathBuf {
    dir.join("data/tenants").join(tenant).join("files")
}

/// A word count over `input.txt` of the tenant's files, one line a batch.
fn word_count(name: &str, step: &str) -> String {
    format!(
        r#"name = "{name}"
batch_interval = "20ms"
partitions = 2

[udfs]
wc = "wordcount"

[[sources]]
name = "lines"
kind = "file"
path = "input.txt"
lines_per_batch = 1

[[streams]]
name = "counts"
from = "lines"
steps = [
  {{ op = "flat_map", udf = "wc#tokenize" }},
  {{ op = "map", udf = "wc#with_one" }},
  {step},
]

[[sinks]]
from = "counts"
kind = "files"
prefix = "out/counts"
suffix = "jsonl"
format = "json_lines"
"#
    )
}

#[test]
fn the_admin_token_is_made_once_and_only_its_hash_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let file = dir.path().join("data/admin-token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), admin);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server.expect(200, "GET", "/v1/tenants", &admin, "");
    let tenant = server.tenant(&admin, "a", json!({}));
    assert_eq!(server.call("GET", "/v1/tenants", None, None).0, 401);
    assert_eq!(
        server
            .call("GET", "/v1/tenants", Some("sluice_guess"), None)
            .0,
        401
    );
    assert_eq!(
        server.call("GET", "/v1/tenants", Some(&tenant), None).0,
        403
    );
    assert_eq!(server.terminate().code(), Some(0));

    let database = std::fs::read(dir.path().join("data/registry.db")).unwrap();
    let holds = |token: &str| {
        database
            .windows(token.len())
            .any(|window| window == token.as_bytes())
    };
    assert!(
        !holds(&admin) && !holds(&tenant),
        "the database holds a token in plaintext"
    );

    let again = Server::start(&dir.path().join("data"), &[]);
    let tenants = again.expect(200, "GET", "/v1/tenants", &admin, "");
    assert_eq!(tenants[0]["name"], "a");
    again.expect(200, "GET", "/v1/jobs", &tenant, "");
    assert!(
        again
            .stdout
            .recv_timeout(Duration::from_millis(200))
            .is_err(),
        "a second start prints no token"
    );
}

#[test]
fn a_tenant_runs_a_word_count_that_another_tenant_cannot_see() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({}));
    let b = server.tenant(&admin, "b", json!({}));
    let component = server.upload_word_count(&a);
    assert_eq!(component["digest"].as_str().unwrap().len(), 64);
    assert!(
        component["functions"]
            .to_string()
            .contains("tokenize (flat-map)"),
        "{component}"
    );
    let input = text(40, &mut Xorshift(7));
    server.expect(201, "PUT", "/v1/files/input.txt", &a, input.clone());

    let manifest = word_count("count", RUNNING_COUNT);
    server.expect(201, "POST", "/v1/jobs", &a, manifest.clone());
    let done = server.wait_job(&a, "count", "the word count to finish", |job| {
        job["state"] == "finished"
    });
    assert!(!done["reports"].as_array().unwrap().is_empty(), "{done}");
    let (counts, _) = final_counts(&files(dir.path(), "a"));
    assert_eq!(counts, counted(&input));

    // Tenant b sees none of it, and cannot touch it.
    for path in ["/v1/jobs/count", "/v1/components/wordcount"] {
        assert_eq!(server.call("GET", path, Some(&b), None).0, 404, "{path}");
        assert_eq!(server.call("DELETE", path, Some(&b), None).0, 404, "{path}");
    }
    assert_eq!(server.expect(200, "GET", "/v1/jobs", &b, ""), json!([]));
    let digest = component["digest"].as_str().unwrap();
    let by_digest = format!("/v1/components?digest={digest}");
    assert_eq!(server.expect(200, "GET", &by_digest, &b, ""), json!([]));
    server.expect(201, "PUT", "/v1/files/input.txt", &b, "b b b");
    let refused = server.expect(400, "POST", "/v1/jobs", &b, manifest.clone());
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("there is no uploaded component `wordcount`"),
        "{refused}"
    );
    // The same names are b's to use.
    server.upload_word_count(&b);
    server.expect(201, "POST", "/v1/jobs", &b, manifest);
    server.wait_job(&b, "count", "b's word count to finish", |job| {
        job["state"] == "finished"
    });
    assert_eq!(final_counts(&files(dir.path(), "b")).0, counted("b b b"));
    assert_eq!(
        final_counts(&files(dir.path(), "a")).0,
        counted(&input),
        "a's output is untouched"
    );

    // A component in use stays; deleting the job frees it.
    assert_eq!(
        server
            .call("DELETE", "/v1/components/wordcount", Some(&a), None)
            .0,
        409
    );
    server.expect(200, "DELETE", "/v1/jobs/count", &a, "");
    server.expect(200, "DELETE", "/v1/components/wordcount", &a, "");
    assert_eq!(server.call("GET", "/v1/jobs/count", Some(&b), None).0, 200);
    let stored: Vec<_> = std::fs::read_dir(dir.path().join("data/components"))
        .unwrap()
        .collect();
    assert_eq!(stored.len(), 1, "b's copy of the bytes is kept, once");
    server.expect(200, "DELETE", "/v1/tenants/b", &admin, "");
    assert_eq!(server.call("GET", "/v1/jobs", Some(&b), None).0, 401);
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/components"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn refusals_name_the_rule_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(
        &admin,
        "a",
        json!({"max_jobs": 1, "max_component_bytes": 250000}),
    );
    let files = files(dir.path(), "a");
    std::fs::write(files.join("input.txt"), "a b").unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/input.txt"), "secret").unwrap();
    std::fs::write(dir.path().join("outside/batches.jsonl"), "[\"secret\"]\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), files.join("link")).unwrap();

    let not_a_component = server.expect(400, "PUT", "/v1/components/x", &a, b"hello".to_vec());
    assert!(
        not_a_component["message"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly component"),
        "{not_a_component}"
    );
    let too_large = server.expect(403, "PUT", "/v1/components/big", &a, wasm("conformance"));
    assert_eq!(
        (
            &too_large["error"],
            &too_large["quota"],
            &too_large["limit"]
        ),
        (
            &json!("quota"),
            &json!("max_component_bytes"),
            &json!(250000)
        )
    );
    assert_eq!(too_large["requested"], wasm("conformance").len());
    server.upload_word_count(&a);

    let base = word_count("count", RUNNING_COUNT);
    let outside = dir.path().join("outside/input.txt");
    let mut cases: Vec<(String, &str)> = vec![
        (
            base.replace(
                "path = \"input.txt\"",
                &format!("path = \"{}\"", outside.display()),
            ),
            "outside the tenant's files",
        ),
        (
            base.replace(
                "path = \"input.txt\"",
                "path = \"../../../../outside/input.txt\"",
            ),
            "`..`",
        ),
        (
            base.replace("path = \"input.txt\"", "path = \"link/input.txt\""),
            "symbolic link",
        ),
        (
            base.replace("prefix = \"out/counts\"", "prefix = \"../escape/counts\""),
            "`..`",
        ),
    ];
    let queue = |batches_file: &str| {
        base.replace(
            "kind = \"file\"\npath = \"input.txt\"\nlines_per_batch = 1",
            &format!("kind = \"queue\"\nbatches_file = \"{batches_file}\""),
        )
    };
    cases.extend([
        (
            base.replace(
                "kind = \"file\"\npath = \"input.txt\"\nlines_per_batch = 1",
                &format!(
                    "kind = \"table\"\npath = \"{}\"\nformat = \"json_lines\"",
                    outside.display()
                ),
            ),
            "outside the tenant's files",
        ),
        (
            base.replace(
                "udf = \"wc#running_count\" }",
                "udf = \"wc#running_count\", initial_state = \"../../../../outside/input.txt\" }",
            ),
            "`initial_state` of stream `counts`: the path leads out with `..`",
        ),
    ]);
    // A queue's batches file is read as the manifest is resolved: beneath the tenant's
    // files too, so nothing of the server's is read into a job or an error.
    let outside_batches = dir.path().join("outside/batches.jsonl");
    cases.extend([
        (
            queue(&outside_batches.display().to_string()),
            "leads outside the tenant's files",
        ),
        (
            queue("../../../../outside/batches.jsonl"),
            "leads outside the tenant's files",
        ),
        (
            queue("link/batches.jsonl"),
            "leads outside the tenant's files",
        ),
    ]);
    cases.extend([
        (
            base.replace(
                "kind = \"file\"\npath = \"input.txt\"\nlines_per_batch = 1",
                "kind = \"stdin\"",
            ),
            "standard input",
        ),
        (
            base.replace(
                "kind = \"file\"\npath = \"input.txt\"\nlines_per_batch = 1",
                "kind = \"socket\"\nport = 9",
            ),
            "does not allow",
        ),
        (
            base.replace(
                "kind = \"file\"\npath = \"input.txt\"\nlines_per_batch = 1",
                "kind = \"kafka\"\nbrokers = \"127.0.0.1:9\"\ntopics = [\"t\"]",
            ),
            "source `lines`'s broker connects to 127.0.0.1:9, which the server does not allow",
        ),
        (
            base.replace(
                "kind = \"files\"\nprefix = \"out/counts\"\nsuffix = \"jsonl\"\nformat = \"json_lines\"",
                "kind = \"kafka\"\nbrokers = \"127.0.0.1:9\"\ntopic = \"t\"",
            ),
            "broker connects to 127.0.0.1:9",
        ),
        (
            base.replace(
                "wc = \"wordcount\"",
                &format!("wc = \"{}\"", common::udf("wordcount").display()),
            ),
            "no uploaded component",
        ),
        (
            base.replace(
                "udf = \"wc#tokenize\"",
                &format!("udf = \"{}#tokenize\"", common::udf("wordcount").display()),
            ),
            "not a declared UDF alias",
        ),
        (
            base.replace("wc = \"wordcount\"", "wc = \"wordcount@0000\""),
            "not 0000",
        ),
        (format!("tenant = \"b\"\n{base}"), "names tenant `b`"),
    ]);
    for (manifest, says) in &cases {
        let refused = server.expect(400, "POST", "/v1/jobs", &a, manifest.clone());
        let message = refused["message"].as_str().unwrap();
        assert!(message.contains(says), "{says}: {refused}");
        assert!(!message.contains("secret"), "{refused}");
    }
    let broken = server.expect(
        400,
        "POST",
        "/v1/jobs",
        &a,
        base.replace("op = \"map\"", "op = \"mapp\""),
    );
    assert_eq!(
        (&broken["error"], &broken["file"], &broken["line"]),
        (&json!("manifest"), &json!("job.toml"), &json!(19))
    );
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .starts_with("job.toml:19:"),
        "{broken}"
    );
    assert_eq!(
        server.expect(200, "GET", "/v1/jobs", &a, ""),
        json!([]),
        "nothing was admitted"
    );

    // A checkpoint directory a manifest names is not where the server checkpoints it.
    let checkpoint_outside = dir.path().join("outside/checkpoints");
    let checkpointed = base.replace(
        "[udfs]",
        &format!(
            "[checkpoint]\ndir = \"{}\"\n\n[udfs]",
            checkpoint_outside.display()
        ),
    );
    server.expect(201, "POST", "/v1/jobs", &a, checkpointed);
    server.wait_job(&a, "count", "the job to finish", |job| {
        job["state"] == "finished"
    });
    assert!(!checkpoint_outside.exists());
    assert!(
        dir.path()
            .join("data/tenants/a/jobs/count/checkpoint")
            .is_dir()
    );
    assert_eq!(
        server
            .call("POST", "/v1/jobs", Some(&a), Some(base.clone().into()))
            .0,
        409
    );
    let over = server.expect(
        403,
        "POST",
        "/v1/jobs",
        &a,
        base.replace("name = \"count\"", "name = \"second\""),
    );
    assert_eq!(
        over,
        json!({
            "error": "quota", "quota": "max_jobs", "limit": 1, "requested": 2,
            "message": over["message"],
        })
    );
    assert_eq!(
        server
            .expect(200, "GET", "/v1/jobs", &a, "")
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The series of `/metrics` (for `token`) whose line starts with `name{labels}`, and its
/// value.
fn metric(server: &Server, token: &str, series: &str) -> Option<String> {
    let (status, text) = server.call("GET", "/metrics", Some(token), None);
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().unwrap().to_owned();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_owned)
}

#[test]
fn a_failing_job_restarts_with_backoff_then_stays_failed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh_with_config(
        dir.path(),
        "[restart]\nmax_failures = 2\nfirst_delay = \"50ms\"\n",
    );
    let a = server.tenant(&admin, "a", json!({}));
    server.expect(201, "PUT", "/v1/components/faulty", &a, wasm("faulty"));
    let manifest = r#"name = "panics"
batch_interval = "20ms"
[udfs]
faulty = "faulty"
[[sources]]
name = "numbers"
kind = "generator"
rate = 100
[[streams]]
name = "out"
from = "numbers"
steps = [{ op = "map", udf = "faulty#panic_on_three" }]
[[sinks]]
from = "out"
kind = "files"
prefix = "out/n"
"#;
    server.expect(201, "POST", "/v1/jobs", &a, manifest);
    let failed = server.wait_job(&a, "panics", "the job to stay failed", |job| {
        job["state"] == "failed"
    });
    assert_eq!(failed["restarts"], 2, "{failed}");
    let failure = failed["failure"].as_str().unwrap();
    assert!(failure.contains("failed 3 times within 10m"), "{failure}");
    assert!(
        failure.contains(" at job.toml:") && !failure.contains("tenants/a"),
        "{failure}"
    );
    let listed = server.expect(200, "GET", "/v1/jobs", &a, "");
    assert_eq!(listed[0]["state"], "failed");
    let (_, metrics) = server.call("GET", "/metrics", Some(&a), None);
    let metrics = metrics.as_str().unwrap();
    for series in [
        "sluice_job_last_failure_timestamp_seconds{tenant=\"a\",job_name=\"panics\",reason=\"udf\"}",
        "sluice_job_up{tenant=\"a\",job_name=\"panics\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    let Json::String(log) = server.expect(200, "GET", "/v1/jobs/panics/logs", &a, "") else {
        panic!("the log is text")
    };
    assert_eq!(log.matches("restarting after a delay").count(), 2, "{log}");
    assert!(
        log.contains("three is not allowed") && log.contains("not restarted again"),
        "{log}"
    );
    let b = server.tenant(&admin, "b", json!({}));
    assert_eq!(
        server.call("GET", "/v1/jobs/panics/logs", Some(&b), None).0,
        404
    );
    // A second job runs a few batches, and its tenant stops it.
    let resting = manifest
        .replace("name = \"panics\"", "name = \"resting\"")
        .replace("faulty#panic_on_three", "faulty#chatty")
        .replace("out/n", "out/r");
    server.expect(201, "POST", "/v1/jobs", &a, resting);
    server.wait_job(&a, "resting", "a few batches", |job| {
        job["reports"].as_array().unwrap().len() >= 3
    });
    server.expect(200, "POST", "/v1/jobs/resting/stop", &a, "");
    let failed_at = |server: &Server| {
        metric(
            server,
            &a,
            "sluice_job_last_failure_timestamp_seconds{tenant=\"a\",job_name=\"panics\",reason=\"udf\"}",
        )
    };
    let failed_before = failed_at(&server).expect("the failure's series");
    // Both stay as they were over a restart of the server, in the UI and the metrics,
    // before either runs again: the failed job with its last failure.
    assert_eq!(server.terminate().code(), Some(0));
    let again = Server::start(
        &dir.path().join("data"),
        &["--config", dir.path().join("server.toml").to_str().unwrap()],
    );
    let job = again.expect(200, "GET", "/v1/jobs/panics", &a, "");
    assert_eq!(
        (&job["state"], &job["desired"]),
        (&json!("failed"), &json!("failed"))
    );
    assert_eq!(failed_at(&again), Some(failed_before));
    for name in ["panics", "resting"] {
        let up = format!("sluice_job_up{{tenant=\"a\",job_name=\"{name}\"}}");
        assert_eq!(metric(&again, &a, &up).as_deref(), Some("0"), "{name}");
    }
    let overview = again.expect(200, "GET", "/v1/overview", &a, "");
    let shown: Vec<(&Json, &Json)> = overview["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| (&job["job"], &job["state"]))
        .collect();
    assert_eq!(
        shown,
        [
            (&json!("panics"), &json!("failed")),
            (&json!("resting"), &json!("stopped"))
        ],
        "{overview}"
    );
    let page = again.expect(200, "GET", "/v1/jobs/panics/overview", &a, "");
    assert_eq!(page["failure"]["reason"], "udf", "{page}");
    let text = page["failure"]["text"].as_str().unwrap();
    assert!(text.contains("three is not allowed"), "{text}");
    assert!(!text.contains("tenants/a"), "{text}");
    assert_eq!(page["interval_ms"], 20, "{page}");
    assert!(
        page["manifest"]
            .as_str()
            .unwrap()
            .contains("panic_on_three")
    );
    let page = again.expect(200, "GET", "/v1/jobs/resting/overview", &a, "");
    assert!(page["failure"].is_null(), "{page}");
    assert_eq!(page["sources"][0]["source"], "numbers", "{page}");
    // Started again, the stopped job runs and shows it.
    again.expect(200, "POST", "/v1/jobs/resting/start", &a, "");
    again.wait_job(&a, "resting", "a batch after the start", |job| {
        !job["reports"].as_array().unwrap().is_empty()
    });
    let up = "sluice_job_up{tenant=\"a\",job_name=\"resting\"}";
    assert_eq!(metric(&again, &a, up).as_deref(), Some("1"));
}

#[test]
fn sigterm_stops_every_job_and_they_resume_exact_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let tenants: Vec<(String, String)> = ["a", "b"]
        .iter()
        .map(|name| (name.to_string(), server.tenant(&admin, name, json!({}))))
        .collect();
    let mut inputs = Vec::new();
    for (seed, (name, token)) in tenants.iter().enumerate() {
        server.upload_word_count(token);
        let input = text(150, &mut Xorshift(seed as u64 + 11));
        std::fs::write(files(dir.path(), name).join("input.txt"), &input).unwrap();
        server.expect(
            201,
            "POST",
            "/v1/jobs",
            token,
            word_count("count", RUNNING_COUNT),
        );
        inputs.push(input);
    }
    for (_, token) in &tenants {
        server.wait_job(token, "count", "a few batches", |job| {
            job["reports"].as_array().unwrap().len() >= 5
        });
    }
    let start = std::time::Instant::now();
    assert_eq!(server.terminate().code(), Some(0));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        start.elapsed()
    );

    let again = Server::start(&dir.path().join("data"), &[]);
    for ((name, token), input) in tenants.iter().zip(&inputs) {
        let done = again.wait_job(token, "count", "the resumed job to finish", |job| {
            job["state"] == "finished"
        });
        let first = done["reports"][0]["number"].as_u64().unwrap();
        assert!(
            first > 1,
            "the job resumed rather than starting over: {done}"
        );
        assert_eq!(
            final_counts(&files(dir.path(), name)).0,
            counted(input),
            "tenant {name}"
        );
        // The log was kept on disk: it holds the runs before and after the restart.
        let (status, log) = again.call("GET", "/v1/jobs/count/logs", Some(token), None);
        let log = log.as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 200, "{log}");
        assert_eq!(log.matches(" INFO running").count(), 2, "{log}");
        assert!(log.contains("resuming"), "{log}");
    }
}

#[test]
fn files_stay_inside_the_tenants_directory_and_count_in_its_quota() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({"max_disk_bytes": 1000}));
    let b = server.tenant(&admin, "b", json!({}));
    server.expect(201, "PUT", "/v1/files/in/input.txt", &a, "a b");
    let (status, text) = server.call("GET", "/v1/files/in/input.txt", Some(&a), None);
    assert_eq!((status, text), (200, Json::String("a b".into())));
    assert_eq!(
        server.expect(200, "GET", "/v1/files/in", &a, ""),
        json!(["input.txt"])
    );
    assert_eq!(
        server
            .call("GET", "/v1/files/in/input.txt", Some(&b), None)
            .0,
        404
    );
    assert_eq!(
        server
            .call("DELETE", "/v1/files/in/input.txt", Some(&b), None)
            .0,
        404
    );

    std::fs::write(dir.path().join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path(), files(dir.path(), "a").join("link")).unwrap();
    for (method, path) in [
        ("PUT", "/v1/files/..%2F..%2F..%2Fplanted"),
        ("PUT", "/v1/files/link/planted"),
        ("GET", "/v1/files/%2Fetc%2Fpasswd"),
        ("GET", "/v1/files/link/secret"),
        ("GET", "/v1/files/in/..%2F..%2F..%2F..%2Fsecret"),
        ("DELETE", "/v1/files/link/secret"),
    ] {
        let (status, answer) = server.call(method, path, Some(&a), Some(b"x".to_vec()));
        assert_eq!(status, 400, "{method} {path}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("outside"),
            "{answer}"
        );
    }
    assert!(!dir.path().join("planted").exists() && dir.path().join("secret").exists());

    let over = server.expect(403, "PUT", "/v1/files/big", &a, vec![b'x'; 2000]);
    assert_eq!(
        (&over["quota"], &over["limit"]),
        (&json!("max_disk_bytes"), &json!(1000))
    );
    assert!(over["requested"].as_u64().unwrap() >= 2000, "{over}");
    assert_eq!(
        server.call("GET", "/v1/files/big", Some(&a), None).0,
        404,
        "nothing was kept"
    );
    server.expect(200, "DELETE", "/v1/files/in/input.txt", &a, "");
    assert_eq!(
        server
            .call("GET", "/v1/files/in/input.txt", Some(&a), None)
            .0,
        404
    );
}

/// Runs the CLI with `SLUICE_SERVER` and `SLUICE_TOKEN` set; its output.
fn cli(server: &Server, token: &str, args: &[&str]) -> std::process::Output {
    common::sluice()
        .env("SLUICE_SERVER", &server.url)
        .env("SLUICE_TOKEN", token)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The README's three commands, as written but for the port (the server's default data
/// directory, `./sluice-data`, in a directory of the test's own).
#[test]
fn the_readme_serves_the_word_count_in_three_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::launch(|command| {
        command.current_dir(dir.path());
    });
    let admin = std::fs::read_to_string(dir.path().join("sluice-data/admin-token")).unwrap();
    let token = stdout(
        &common::sluice()
            .env("SLUICE_SERVER", &server.url)
            .args(["tenant", "create", "demo", "--token", admin.trim()])
            .output()
            .unwrap(),
    );
    let example = common::root().join("examples/served-wordcount/job.toml");
    let submitted = stdout(&cli(
        &server,
        token.trim(),
        &["submit", example.to_str().unwrap()],
    ));
    assert!(
        submitted.contains("submitted job `wordcount`"),
        "{submitted}"
    );
    let done = server.wait_job(token.trim(), "wordcount", "the job to finish", |job| {
        job["state"] == "finished"
    });
    assert_eq!(done["failure"], Json::Null, "{done}");
    let listing = stdout(&cli(&server, token.trim(), &["files", "get", "out"]));
    assert!(listing.contains("counts-"), "{listing}");
}

#[test]
fn the_cli_creates_a_tenant_submits_a_job_and_reads_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let token = stdout(&cli(
        &server,
        &admin,
        &["tenant", "create", "a", "--max-jobs", "3"],
    ));
    let token = token.trim();
    let input = text(20, &mut Xorshift(3));
    let local = dir.path().join("input.txt");
    std::fs::write(&local, &input).unwrap();
    stdout(&cli(
        &server,
        token,
        &["files", "put", local.to_str().unwrap(), "input.txt"],
    ));

    let wordcount = common::udf("wordcount");
    let manifest = dir.path().join("job.toml");
    let job = word_count("count", RUNNING_COUNT).replace(
        "wc = \"wordcount\"",
        &format!("wc = \"{}\"", wordcount.display()),
    );
    std::fs::write(&manifest, &job).unwrap();
    let submitted = stdout(&cli(
        &server,
        token,
        &["submit", manifest.to_str().unwrap()],
    ));
    assert!(
        submitted.contains("uploaded component `wordcount`"),
        "{submitted}"
    );
    assert!(submitted.contains("submitted job `count`"), "{submitted}");
    wait::until(Duration::from_secs(60), "the job to finish", || {
        let shown: Json =
            serde_json::from_str(&stdout(&cli(&server, token, &["job", "count"]))).unwrap();
        shown["state"] == "finished"
    });
    assert!(stdout(&cli(&server, token, &["jobs"])).starts_with("count\tfinished"));
    let listing = stdout(&cli(&server, token, &["files", "get", "out"]));
    let newest: Vec<String> = serde_json::from_str(&listing).unwrap();
    let last = newest
        .iter()
        .filter(|name| name.ends_with(".jsonl"))
        .max()
        .unwrap();
    let counts = stdout(&cli(
        &server,
        token,
        &["files", "get", &format!("out/{last}")],
    ));
    let counts: std::collections::BTreeMap<String, i64> = counts
        .lines()
        .map(|line| serde_json::from_str::<(String, i64)>(line).unwrap())
        .collect();
    assert_eq!(counts, counted(&input));

    // The same component again is not uploaded again.
    let second = dir.path().join("second.toml");
    // Its files sink needs a prefix of its own: the first job's is taken.
    let again = job
        .replace("name = \"count\"", "name = \"again\"")
        .replace("prefix = \"out/counts\"", "prefix = \"out/again\"");
    std::fs::write(&second, again).unwrap();
    let submitted = stdout(&cli(&server, token, &["submit", second.to_str().unwrap()]));
    assert!(
        submitted.contains("component `wordcount` is on the server already"),
        "{submitted}"
    );
    let mut follow = common::sluice()
        .env("SLUICE_SERVER", &server.url)
        .env("SLUICE_TOKEN", token)
        .args(["logs", "again", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let followed = lines.find(|line| {
        line.as_ref()
            .unwrap()
            .contains("finished: its sources are drained")
    });
    assert!(
        followed.is_some(),
        "the followed log ended before the job finished"
    );
    follow.kill().unwrap();
    follow.wait().unwrap();
    let log = stdout(&cli(&server, token, &["logs", "again"]));
    assert!(log.contains("finished: its sources are drained"), "{log}");
    stdout(&cli(&server, token, &["stop", "again"]));
    stdout(&cli(&server, token, &["delete", "again"]));

    // A broken manifest is refused pointing at the local file.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, job.replace("op = \"map\"", "op = \"mapp\"")).unwrap();
    let refused = cli(&server, token, &["submit", broken.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("{}:19:", broken.display())),
        "{stderr}"
    );
    let unknown = cli(&server, "sluice_nobody", &["jobs"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not known to this server"));
}

#[test]
fn a_redeploy_keeps_state_and_skips_no_batch_and_an_incompatible_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({}));
    server.upload_word_count(&a);
    let input = text(150, &mut Xorshift(5));
    server.expect(201, "PUT", "/v1/files/input.txt", &a, input.clone());
    let manifest = word_count("count", RUNNING_COUNT);
    server.expect(201, "POST", "/v1/jobs", &a, manifest.clone());
    server.wait_job(&a, "count", "a few batches", |job| {
        job["reports"].as_array().unwrap().len() >= 5
    });

    // Without its state step the checkpoint cannot be recovered: refused, still running.
    let stateless = manifest.replace(
        RUNNING_COUNT,
        "{ op = \"reduce_by_key\", udf = \"wc#sum\" }",
    );
    let refused = server.expect(409, "PUT", "/v1/jobs/count", &a, stateless);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("runs as before"),
        "{refused}"
    );
    server.wait_job(&a, "count", "the job to run again", |job| {
        job["state"] == "running"
    });

    // The component rebuilt (a new digest): the job goes on with it, at a batch boundary.
    let rebuilt = common::release::new_release(&wasm("wordcount"), 2);
    let uploaded = server.expect(201, "PUT", "/v1/components/wordcount", &a, rebuilt);
    let digest = uploaded["digest"].as_str().unwrap();
    let redeployed = server.expect(200, "PUT", "/v1/jobs/count", &a, manifest.clone());
    assert_eq!(redeployed["components"], json!([["wordcount", digest]]));

    // A compatible change (a second sink) is applied at a batch boundary.
    let two_sinks = format!(
        "{manifest}\n[[sinks]]\nfrom = \"counts\"\nkind = \"files\"\nprefix = \"more/counts\"\n"
    );
    server.expect(200, "PUT", "/v1/jobs/count", &a, two_sinks.clone());
    let done = server.wait_job(&a, "count", "the job to finish", |job| {
        job["state"] == "finished"
    });
    assert_eq!(done["manifest"], json!(two_sinks));
    assert_eq!(
        final_counts(&files(dir.path(), "a")).0,
        counted(&input),
        "state was kept"
    );
    // Every batch wrote one output file, named by its time: across the redeploys no batch
    // was skipped, and the batch times went on one interval apart.
    let written = common::files_by_name(&files(dir.path(), "a").join("out"));
    let last = done["reports"].as_array().unwrap().last().unwrap()["number"]
        .as_u64()
        .unwrap();
    assert_eq!(written.len() as u64, last, "{done}");
    let times: Vec<i64> = written
        .iter()
        .map(|(name, _)| {
            let time = name.strip_prefix("counts-").unwrap();
            time.strip_suffix(".jsonl").unwrap().parse().unwrap()
        })
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[1] - pair[0] == 20),
        "{times:?}"
    );
    // The server spreads its jobs' batch times over the interval, by the job's name.
    let phase = sluice::batcher::phase_of("count", Duration::from_millis(20)).as_millis();
    assert!(
        times
            .iter()
            .all(|time| time.rem_euclid(20) as u128 == phase),
        "batch times off the phase {phase} ms: {times:?}"
    );
    assert!(files(dir.path(), "a").join("more").exists());
}

#[test]
fn after_kill_9_ten_jobs_of_three_tenants_resume_with_exact_totals() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, admin) = fresh(dir.path(), &[]);
    let mut jobs = Vec::new();
    for (tenant, count) in [("a", 4), ("b", 3), ("c", 3)] {
        let token = server.tenant(&admin, tenant, json!({}));
        server.upload_word_count(&token);
        for number in 0..count {
            let name = format!("count{number}");
            let input = text(100, &mut Xorshift(jobs.len() as u64 + 1));
            let path = format!("/v1/files/{name}/input.txt");
            server.expect(201, "PUT", &path, &token, input.clone());
            let manifest = word_count(&name, RUNNING_COUNT)
                .replace(
                    "path = \"input.txt\"",
                    &format!("path = \"{name}/input.txt\""),
                )
                .replace(
                    "prefix = \"out/counts\"",
                    &format!("prefix = \"{name}/out/counts\""),
                );
            server.expect(201, "POST", "/v1/jobs", &token, manifest);
            jobs.push((tenant, token.clone(), name, input));
        }
    }
    for (_, token, name, _) in &jobs {
        server.wait_job(token, name, "a few batches of every job", |job| {
            job["reports"].as_array().unwrap().len() >= 3
        });
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let again = Server::start(&dir.path().join("data"), &[]);
    for (tenant, token, name, input) in &jobs {
        again.wait_job(
            token,
            name,
            "every job to finish after the restart",
            |job| job["state"] == "finished",
        );
        let counts = final_counts(&files(dir.path(), tenant).join(name)).0;
        assert_eq!(&counts, &counted(input), "tenant {tenant}, job {name}");
    }
}

/// A job's batch cut writes and syncs its write-ahead log, which a slow or busy disk makes
/// slow. Cuts must not run on the server's async threads: with more jobs cutting than the
/// runtime has threads, each cut taking 3 s, the API would answer only between cuts.
#[test]
fn slow_log_cuts_of_many_jobs_do_not_stall_the_api() {
    const CUT: Duration = Duration::from_secs(3);
    const JOBS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let cut_ms = CUT.as_millis().to_string();
    let (server, admin) = fresh_with_env(
        dir.path(),
        &[],
        &[("SLUICE_FAULT_SLOW_LOG_CUT_MS", cut_ms.as_str())],
    );
    let a = server.tenant(&admin, "a", json!({}));
    server.expect(201, "PUT", "/v1/components/conf", &a, wasm("conformance"));
    for job in 0..JOBS {
        let manifest = format!(
            r#"name = "numbers-{job}"
batch_interval = "20ms"
[udfs]
conf = "conf"
[[sources]]
name = "numbers"
kind = "generator"
rate = 10
[[streams]]
name = "out"
from = "numbers"
steps = [{{ op = "map", udf = "conf#add_10" }}]
[[sinks]]
from = "out"
kind = "files"
prefix = "out-{job}/n"
"#
        );
        server.expect(201, "POST", "/v1/jobs", &a, manifest);
    }
    // Every job has cut a batch, so each cutter is now cutting back to back: the
    // batch interval is far shorter than a cut.
    for job in 0..JOBS {
        server.wait_job(&a, &format!("numbers-{job}"), "a first batch", |job| {
            !job["reports"].as_array().unwrap().is_empty()
        });
    }
    // A cut holds the log's lock, which the receivers take to log what they receive: an
    // async thread waiting for it is as stalled as one cutting.
    let asked = std::time::Instant::now();
    for _ in 0..50 {
        assert_eq!(server.call("GET", "/healthz", None, None).0, 200);
    }
    let took = asked.elapsed();
    assert!(
        took < CUT,
        "50 requests took {took:?} while {JOBS} jobs cut their logs, each cut taking {CUT:?}: \
         the cuts (or waits for the log) hold the server's async threads"
    );
}

/// The word counts in the newest of the files `prefix-*` of `dir` (a word count's output).
fn newest_counts(dir: &Path, prefix: &str) -> std::collections::BTreeMap<String, i64> {
    let mut written: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let time = name
                .strip_prefix(&format!("{prefix}-"))?
                .strip_suffix(".jsonl")?;
            Some((time.parse().ok()?, path))
        })
        .collect();
    written.sort();
    let (_, newest) = written.last().expect("the job wrote output files");
    std::fs::read_to_string(newest)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<(String, i64)>(line).unwrap())
        .collect()
}

#[test]
fn two_jobs_of_a_tenant_cannot_write_files_with_one_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({}));
    server.upload_word_count(&a);
    let input = text(60, &mut Xorshift(11));
    server.expect(201, "PUT", "/v1/files/input.txt", &a, input.clone());
    server.expect(
        201,
        "POST",
        "/v1/jobs",
        &a,
        word_count("one", RUNNING_COUNT),
    );

    // Both would write out/counts-TIME.jsonl for the same batch times: refused, naming both.
    let two = word_count("two", RUNNING_COUNT);
    for prefix in ["out/counts", "./out/x/../counts"] {
        let clashing = two.replace("prefix = \"out/counts\"", &format!("prefix = \"{prefix}\""));
        let refused = server.expect(409, "POST", "/v1/jobs", &a, clashing);
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.contains("job `two`")
                && message.contains("job `one`")
                && message.contains("prefix `out/counts`"),
            "{refused}"
        );
    }
    assert_eq!(
        server
            .expect(200, "GET", "/v1/jobs", &a, "")
            .as_array()
            .unwrap()
            .len(),
        1,
        "the refused job was not registered"
    );

    // A prefix of its own in the same directory: both run at once, each total exact.
    let own = two.replace("prefix = \"out/counts\"", "prefix = \"out/totals\"");
    server.expect(201, "POST", "/v1/jobs", &a, own.clone());
    // Nor may a redeploy take another job's prefix.
    let refused = server.expect(409, "PUT", "/v1/jobs/two", &a, two.clone());
    assert!(
        refused["message"].as_str().unwrap().contains("job `one`"),
        "{refused}"
    );
    for job in ["one", "two"] {
        let done = server.wait_job(&a, job, "both jobs to finish", |job| {
            job["state"] == "finished"
        });
        assert_eq!(done["restarts"], 0, "{done}");
        assert_eq!(
            done["manifest"],
            json!(if job == "one" {
                word_count("one", RUNNING_COUNT)
            } else {
                own.clone()
            })
        );
    }
    let out = files(dir.path(), "a").join("out");
    assert_eq!(newest_counts(&out, "counts"), counted(&input));
    assert_eq!(newest_counts(&out, "totals"), counted(&input));
}

#[test]
fn quotas_a_manifest_states_are_refused_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(
        &admin,
        "a",
        json!({
            "max_partitions": 1, "max_call_timeout_ms": 2000,
            "memory_per_instance": 64 << 20,
            "max_components": 1,
        }),
    );
    server.upload_word_count(&a);
    let over = server.expect(403, "PUT", "/v1/components/other", &a, wasm("faulty"));
    assert_eq!(
        (&over["quota"], &over["limit"], &over["requested"]),
        (&json!("max_components"), &json!(1), &json!(2))
    );
    // Uploading a name the tenant has replaces it: not one more.
    server.upload_word_count(&a);
    server.expect(201, "PUT", "/v1/files/input.txt", &a, "a b a");

    let base = word_count("count", RUNNING_COUNT);
    let one = base.replace("partitions = 2", "partitions = 1");
    let limits = |limits: &str| one.replace("[udfs]", &format!("[limits]\n{limits}\n\n[udfs]"));
    for (manifest, quota, limit, requested) in [
        (base.clone(), "max_partitions", 1, 2),
        (
            limits("call_timeout = \"5s\""),
            "max_call_timeout_ms",
            2000,
            5000,
        ),
        (
            limits("memory = \"128MiB\"\ncall_timeout = \"1s\""),
            "memory_per_instance",
            64 << 20,
            128 << 20,
        ),
    ] {
        let refused = server.expect(403, "POST", "/v1/jobs", &a, manifest);
        assert_eq!(
            refused,
            json!({
                "error": "quota", "quota": quota, "limit": limit, "requested": requested,
                "message": refused["message"],
            })
        );
    }
    assert_eq!(server.expect(200, "GET", "/v1/jobs", &a, ""), json!([]));
    let within = limits("memory = \"32MiB\"\ncall_timeout = \"2s\"");
    server.expect(201, "POST", "/v1/jobs", &a, within);
    let done = server.wait_job(&a, "count", "the job within its quotas to finish", |job| {
        job["state"] == "finished"
    });
    assert_eq!(done["failure"], Json::Null, "{done}");
}

#[test]
fn an_upload_whose_functions_loop_or_outgrow_the_tenants_memory_is_refused_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({}));
    let tight = server.tenant(&admin, "tight", json!({"memory_per_instance": 1 << 20}));

    // A behaviour check, not a benchmark: the deadline is 1 s, the bound loose.
    let started = std::time::Instant::now();
    let looping = server.expect(
        400,
        "PUT",
        "/v1/components/spinner",
        &a,
        wasm("listing_loops"),
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "refused after {elapsed:?}"
    );
    let message = looping["message"].as_str().unwrap();
    assert!(
        message.contains("`spinner`")
            && message.contains("within 1000 ms")
            && message.contains("fix it"),
        "{looping}"
    );
    // A Rust component's stack alone is 1 MiB: it cannot start under that limit.
    let hoarding = server.expect(
        400,
        "PUT",
        "/v1/components/wordcount",
        &tight,
        wasm("wordcount"),
    );
    let message = hoarding["message"].as_str().unwrap();
    assert!(
        message.contains("`wordcount`") && message.contains("memory limit of 1 MiB"),
        "{hoarding}"
    );
    for token in [&a, &tight] {
        assert_eq!(
            server.expect(200, "GET", "/v1/components", token, ""),
            json!([])
        );
    }

    let good = server.upload_word_count(&a);
    assert_eq!(good["name"], "wordcount", "{good}");
    let listed = server.expect(200, "GET", "/v1/components", &a, "");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["name"], "wordcount", "{listed}");
}

#[test]
fn a_deleted_tenant_gives_its_instance_reservation_back() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh_with_config(dir.path(), "max_instances = 8\n");
    server.tenant(&admin, "big", json!({"max_instances": 8}));
    let new = |name: &str, instances: u32| {
        json!({"name": name, "quotas": {"max_instances": instances}}).to_string()
    };
    let refused = server.expect(403, "POST", "/v1/tenants", &admin, new("more", 1));
    assert_eq!(
        (&refused["quota"], &refused["limit"], &refused["requested"]),
        (&json!("max_instances"), &json!(0), &json!(1))
    );
    // A taken name changes nothing, its quotas included.
    server.expect(409, "POST", "/v1/tenants", &admin, new("big", 1));
    server.expect(403, "POST", "/v1/tenants", &admin, new("more", 1));
    server.expect(200, "DELETE", "/v1/tenants/big", &admin, "");
    server.expect(201, "POST", "/v1/tenants", &admin, new("more", 8));
}

/// The most memory the process `pid` has had resident, in bytes (VmHWM).
fn peak_resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .unwrap();
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        << 10
}

#[test]
fn a_large_file_is_streamed_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({}));
    // Larger than a GET could once return, sparse: nothing of it on disk.
    let size: u64 = 320 << 20;
    let file = std::fs::File::create(files(dir.path(), "a").join("big.bin")).unwrap();
    file.set_len(size).unwrap();
    std::fs::write(files(dir.path(), "a").join("small.txt"), "last\n").unwrap();

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(format!("{}/v1/files/big.bin", server.url))
        .header("Authorization", &format!("Bearer {a}"))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        size.to_string()
    );
    let copied = std::io::copy(&mut response.body_mut().as_reader(), &mut std::io::sink()).unwrap();
    assert_eq!(copied, size);
    let peak = peak_resident(server.child.id());
    assert!(
        peak < size * 3 / 4,
        "the server's resident memory peaked at {} MiB while it sent a {} MiB file",
        peak >> 20,
        size >> 20
    );
    // The CLI writes a download as it arrives.
    let local = dir.path().join("small.txt");
    let got = cli(
        &server,
        &a,
        &["files", "get", "small.txt", local.to_str().unwrap()],
    );
    assert!(got.status.success(), "{got:?}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "last\n");
}

/// A job of `faulty` numbers: a queue source of `numbers`, the map `step` and a print sink.
fn printing(name: &str, numbers: &str, step: &str) -> String {
    format!(
        r#"name = "{name}"
batch_interval = "20ms"
[udfs]
faulty = "faulty"
[[sources]]
name = "numbers"
kind = "queue"
batches = [[{numbers}]]
[[streams]]
name = "out"
from = "numbers"
steps = [{{ op = "map", udf = "faulty#{step}" }}]
[[sinks]]
from = "out"
kind = "print"
"#
    )
}

#[test]
fn guest_output_and_print_sinks_go_to_the_jobs_own_log() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({}));
    let b = server.tenant(&admin, "b", json!({}));
    for token in [&a, &b] {
        server.expect(201, "PUT", "/v1/components/faulty", token, wasm("faulty"));
    }
    for (token, job, numbers, step) in [
        (&a, "talk", "41, 42", "chatty"),
        (&b, "talk", "97", "chatty"),
        (&a, "floods", "1", "flood"),
    ] {
        server.expect(201, "POST", "/v1/jobs", token, printing(job, numbers, step));
    }
    let log = |token: &str, job: &str| {
        server.wait_job(token, job, "the job to finish", |job| {
            job["state"] == "finished"
        });
        let Json::String(log) =
            server.expect(200, "GET", &format!("/v1/jobs/{job}/logs"), token, "")
        else {
            panic!("the log is text")
        };
        log
    };
    let (of_a, of_b) = (log(&a, "talk"), log(&b, "talk"));
    for line in [
        "chatty saw 41",
        "chatty warns about 42",
        "stream=\"stderr\"",
        "Time: ",
        " INFO 42\n",
    ] {
        assert!(of_a.contains(line), "a's log lacks {line:?}: {of_a}");
    }
    assert!(
        of_b.contains("chatty saw 97") && of_b.contains("Time: "),
        "{of_b}"
    );
    assert!(
        !of_a.contains("about 97") && !of_a.contains(" INFO 97\n") && !of_b.contains("about 41"),
        "{of_a}\n{of_b}"
    );
    // 100 MiB printed in one call: 64 KiB of it is kept, and the rest counted.
    let flooded = log(&a, "floods");
    assert!(
        flooded.contains(&format!(
            "dropped {} bytes of guest output",
            (100 << 20) - (64 << 10)
        )),
        "{}",
        &flooded[flooded.len().saturating_sub(2000)..]
    );
    assert!(flooded.len() < 1 << 20, "{} bytes", flooded.len());
}

/// A server with tenants `a` and `b`, each running a word count (`alpha` of a, `beta` of
/// b) that has computed a batch; the server, the admin token and the tenants' tokens.
/// Tenants `a` and `b` running a word count each, named `jobs`, that has computed a
/// batch: the server, the admin's, a's and b's tokens.
fn two_tenants_counting(dir: &Path, jobs: [&str; 2]) -> (Server, String, String, String) {
    let (server, admin) = fresh(dir, &[]);
    let a = server.tenant(&admin, "a", json!({}));
    let b = server.tenant(&admin, "b", json!({}));
    let input = text(400, &mut Xorshift(11));
    let [alpha, beta] = jobs;
    for (token, job) in [(&a, alpha), (&b, beta)] {
        server.upload_word_count(token);
        server.expect(201, "PUT", "/v1/files/input.txt", token, input.clone());
        server.expect(
            201,
            "POST",
            "/v1/jobs",
            token,
            word_count(job, RUNNING_COUNT),
        );
    }
    for (token, job) in [(&a, alpha), (&b, beta)] {
        server.wait_job(token, job, "a first batch", |status| {
            !status["reports"].as_array().unwrap().is_empty()
        });
    }
    (server, admin, a, b)
}

#[test]
fn a_tenant_sees_only_its_own_jobs_in_the_web_ui_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, a, b) = two_tenants_counting(dir.path(), ["alpha", "beta"]);
    let listed = |token: &str| -> Vec<(String, String)> {
        let (status, overview) = server.call("GET", "/v1/overview", Some(token), None);
        assert_eq!(status, 200, "{overview}");
        let jobs = overview["jobs"].as_array().unwrap().iter();
        jobs.map(|job| (job["tenant"].to_string(), job["job"].to_string()))
            .collect()
    };
    let pair = |tenant: &str, job: &str| (format!("\"{tenant}\""), format!("\"{job}\""));
    assert_eq!(listed(&a), [pair("a", "alpha")]);
    assert_eq!(listed(&b), [pair("b", "beta")]);
    assert_eq!(listed(&admin), [pair("a", "alpha"), pair("b", "beta")]);
    // Another tenant's job is a 404, as one that does not exist: its existence does not leak.
    for path in [
        "/jobs/alpha",
        "/v1/jobs/alpha/overview",
        "/v1/jobs/alpha/batches?last=5",
    ] {
        assert_eq!(server.call("GET", path, Some(&b), None).0, 404, "{path}");
        assert_eq!(server.call("GET", path, Some(&a), None).0, 200, "{path}");
        let missing = path.replace("alpha", "nothing");
        assert_eq!(
            server.call("GET", &missing, Some(&a), None).0,
            404,
            "{path}"
        );
    }
    let (_, batches) = server.call("GET", "/v1/jobs/beta/batches?last=5", Some(&b), None);
    assert_eq!(batches["job"], "beta", "{batches}");
    assert!(!batches["batches"].as_array().unwrap().is_empty());
    // Metrics: b's token gives b's series only; no token gives nothing.
    let (status, text) = server.call("GET", "/metrics", Some(&b), None);
    let text = text.as_str().unwrap().to_owned();
    assert_eq!(status, 200);
    assert!(
        text.contains("sluice_batches_total{tenant=\"b\",job_name=\"beta\"}"),
        "{text}"
    );
    assert!(
        !text.contains("alpha") && !text.contains("tenant=\"a\""),
        "{text}"
    );
    assert_eq!(server.call("GET", "/metrics", None, None).0, 401);
    assert_eq!(
        server.call("GET", "/metrics", Some("sluice_guess"), None).0,
        401
    );

    // In a browser: b logs in with its token, which becomes an HttpOnly cookie.
    let mut browser = common::browser::Browser::start();
    browser.open(&format!("{}/login", server.url));
    browser.eval(&format!(
        "document.getElementById('token').value = {}",
        json!(b)
    ));
    let shot = browser.screenshot();
    std::fs::write(common::root().join("target/ui-login.png"), shot).unwrap();
    browser.eval("document.getElementById('login').click()");
    let mut names = Json::Null;
    let listed = wait::within(Duration::from_secs(20), || {
        names = browser.eval(
            "location.pathname === '/' ? [...document.querySelectorAll('tbody td:first-child a')].map(a => a.textContent) : null",
        );
        names.as_array().is_some_and(|names| !names.is_empty())
    });
    assert!(listed, "b's job list: {names}");
    assert_eq!(names, json!(["beta"]));
    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(common::root().join("target/ui-jobs.png"), shot).unwrap();
    assert_eq!(
        browser.eval("document.cookie"),
        "",
        "the cookie is HttpOnly"
    );
    assert!(!browser.eval("location.href").to_string().contains(&b));
    let status = |browser: &mut common::browser::Browser, path: &str| {
        let answer = browser.call(
            "Runtime.evaluate",
            json!({
                "expression": format!("fetch('{path}').then(answer => answer.status)"),
                "awaitPromise": true,
                "returnByValue": true,
            }),
        );
        answer["result"]["value"].clone()
    };
    for path in [
        "/jobs/alpha",
        "/v1/jobs/alpha/overview",
        "/v1/jobs/alpha/batches",
    ] {
        assert_eq!(status(&mut browser, path), 404, "{path}");
    }
    assert_eq!(status(&mut browser, "/v1/jobs/beta/overview"), 200);
    browser.open(&format!("{}/jobs/beta", server.url));
    let mut shown = Json::Null;
    let drawn = wait::within(Duration::from_secs(20), || {
        shown = browser.eval("document.getElementById('batches')?.dataset.batches ?? null");
        shown.as_str().is_some_and(|batches| batches != "0")
    });
    assert!(drawn, "b's job page shows its batches: {shown}");
    assert_eq!(
        browser.eval("document.getElementById('where').textContent"),
        "b / beta"
    );
}

#[test]
fn the_admin_tells_two_tenants_jobs_of_one_name_apart_in_the_web_ui() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin, a, b) = two_tenants_counting(dir.path(), ["count", "count"]);
    let mut browser = common::browser::Browser::start();
    browser.open(&format!("{}/login", server.url));
    browser.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('login').click()",
        json!(admin)
    ));
    let mut rows = Json::Null;
    let listed = wait::within(Duration::from_secs(20), || {
        rows = browser.eval(
            "location.pathname === '/' ? [...document.querySelectorAll('tbody tr')].map(row => \
             [row.cells[0].textContent, row.cells[1].textContent, row.querySelector('a').getAttribute('href')]) : null",
        );
        rows.as_array().is_some_and(|rows| rows.len() == 2)
    });
    assert!(listed, "the admin's job list: {rows}");
    assert_eq!(
        rows,
        json!([
            ["count", "a", "/jobs/count?tenant=a"],
            ["count", "b", "/jobs/count?tenant=b"]
        ])
    );
    // Each link opens its tenant's job.
    for row in rows.as_array().unwrap() {
        let (tenant, link) = (row[1].as_str().unwrap(), row[2].as_str().unwrap());
        browser.open(&format!("{}{link}", server.url));
        let mut shown = Json::Null;
        let drawn = wait::within(Duration::from_secs(20), || {
            shown = browser.eval("document.getElementById('where')?.textContent ?? null");
            shown == format!("{tenant} / count")
        });
        assert!(drawn, "{tenant}'s job page: {shown}");
    }
    // The JSON routes take the tenant too; a tenant's token sees its own job only.
    for tenant in ["a", "b"] {
        let (status, job) = server.call(
            "GET",
            &format!("/v1/jobs/count/overview?tenant={tenant}"),
            Some(&admin),
            None,
        );
        assert_eq!((status, &job["tenant"]), (200, &json!(tenant)), "{job}");
        let (status, listed) = server.call(
            "GET",
            &format!("/v1/jobs/count/batches?last=3&tenant={tenant}"),
            Some(&admin),
            None,
        );
        assert_eq!(
            (status, &listed["tenant"]),
            (200, &json!(tenant)),
            "{listed}"
        );
    }
    assert_eq!(
        server
            .call("GET", "/v1/jobs/count/overview?tenant=b", Some(&a), None)
            .0,
        404
    );
    assert_eq!(
        server.call("GET", "/jobs/count?tenant=b", Some(&a), None).0,
        404
    );
    for (token, tenant) in [(&a, "a"), (&b, "b")] {
        let (_, own) = server.call("GET", "/v1/jobs/count/overview", Some(token), None);
        assert_eq!(own["tenant"], tenant, "{own}");
    }
}

#[test]
fn prometheus_scrapes_every_tenants_jobs_from_the_server_with_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _, _) = two_tenants_counting(dir.path(), ["alpha", "beta"]);
    let target = server.url.strip_prefix("http://").unwrap().to_owned();
    let prometheus = common::observe::Prometheus::start_with_token(
        &[&target],
        Some(&dir.path().join("data/admin-token")),
    );
    let mut series = Vec::new();
    let scraped = wait::within(Duration::from_secs(60), || {
        series = prometheus
            .query("sluice_batches_total")
            .into_iter()
            .map(|(labels, _)| (labels["tenant"].clone(), labels["job_name"].clone()))
            .collect();
        series.sort_by_key(|(tenant, _)| tenant.to_string());
        series.len() == 2
    });
    assert!(scraped, "Prometheus got {series:?}");
    assert_eq!(
        series,
        [(json!("a"), json!("alpha")), (json!("b"), json!("beta"))]
    );
    let targets = prometheus.targets();
    assert_eq!(targets[0]["health"], "up", "{targets:#?}");
    assert_eq!(targets[0]["lastError"], "", "{targets:#?}");
    let calls = prometheus.query("sluice_udf_calls_total{tenant=\"b\",job_name=\"beta\"}");
    let mut steps: Vec<&Json> = calls.iter().map(|(labels, _)| &labels["step"]).collect();
    steps.sort_by_key(|step| step.to_string());
    // tokenize and with_one run fused as one step, the running count as another.
    assert_eq!(steps, [&json!("counts/1"), &json!("counts/3")], "{calls:?}");
    assert!(calls.iter().all(|(_, calls)| *calls > 0.0), "{calls:?}");
}

/// Words of the files appearing in directory `input`, one files-sink file a batch under
/// `output`.
fn watching(name: &str, input: &str, output: &str) -> String {
    format!(
        r#"name = "{name}"
batch_interval = "20ms"
[udfs]
wc = "wordcount"
[[sources]]
name = "lines"
kind = "directory"
path = "{input}"
include_existing = true
[[streams]]
name = "words"
from = "lines"
steps = [{{ op = "flat_map", udf = "wc#tokenize" }}]
[[sinks]]
from = "words"
kind = "files"
prefix = "{output}/words"
"#
    )
}

#[test]
fn symbolic_links_made_while_a_job_runs_lead_nowhere_outside() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({}));
    server.upload_word_count(&a);
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    for input in ["read", "write"] {
        server.expect(
            201,
            "PUT",
            &format!("/v1/files/{input}/one.txt"),
            &a,
            "alpha",
        );
        let manifest = watching(input, input, &format!("{input}-out"));
        server.expect(201, "POST", "/v1/jobs", &a, manifest);
    }
    let mine = files(dir.path(), "a");
    let written = |output: &str| -> String {
        std::fs::read_dir(mine.join(output))
            .map(|entries| {
                entries
                    .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    wait::until(Duration::from_secs(60), "both jobs' first words", || {
        written("read-out").contains("alpha") && written("write-out").contains("alpha")
    });

    // A link in the watched directory to a file outside, and the output directory turned
    // into a link to a directory outside.
    std::os::unix::fs::symlink(outside.join("secret.txt"), mine.join("read/leak.txt")).unwrap();
    std::fs::rename(mine.join("write-out"), mine.join("write-out.old")).unwrap();
    std::os::unix::fs::symlink(&outside, mine.join("write-out")).unwrap();
    for (job, says) in [
        (
            "read",
            "`read/leak.txt` is a symbolic link that leads outside the tenant's files",
        ),
        (
            "write",
            "cannot create output directory write-out: the path leads outside the tenant's files",
        ),
    ] {
        let mut log = String::new();
        wait::until(
            Duration::from_secs(60),
            "the job to fail naming the link",
            || {
                let (_, answer) =
                    server.call("GET", &format!("/v1/jobs/{job}/logs"), Some(&a), None);
                log = answer.as_str().unwrap_or_default().to_owned();
                log.contains(says)
            },
        );
        assert!(log.contains("failed: "), "{log}");
    }
    assert!(!written("read-out").contains("secret"));
    let left: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, ["secret.txt"], "nothing was written outside");
}

#[test]
fn a_slow_upload_of_one_tenant_does_not_hold_up_anothers() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh(dir.path(), &[]);
    let a = server.tenant(&admin, "a", json!({}));
    let b = server.tenant(&admin, "b", json!({}));
    let stored = dir.path().join("data/components");
    let (done, a_refused) = mpsc::channel();
    let (url, token) = (format!("{}/v1/components/spinner", server.url), a.clone());
    // Its functions never return: it is held for the 1 s listing deadline.
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut answer = agent
            .put(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .send(wasm("listing_loops"))
            .unwrap();
        let body = answer.body_mut().read_to_string().unwrap();
        let _ = done.send((answer.status().as_u16(), body));
    });
    wait::until(
        Duration::from_secs(60),
        "a's upload to be validated",
        || std::fs::read_dir(&stored).unwrap().count() == 1,
    );
    server.upload_word_count(&b);
    assert!(
        a_refused.try_recv().is_err(),
        "b's upload waited for a's validation to end"
    );
    let (status, answer) = a_refused.recv().unwrap();
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        server.expect(200, "GET", "/v1/components", &b, "")[0]["name"],
        "wordcount"
    );
    let kept: Vec<_> = std::fs::read_dir(&stored).unwrap().collect();
    assert_eq!(kept.len(), 1, "a's refused component is not kept, b's is");
}

#[test]
fn a_running_job_that_fills_its_tenants_disk_quota_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh_with_config(
        dir.path(),
        "[restart]\nmax_failures = 1\nfirst_delay = \"50ms\"\n",
    );
    let limit = 20_000;
    let a = server.tenant(&admin, "a", json!({"max_disk_bytes": limit}));
    server.upload_word_count(&a);
    let input = text(400, &mut Xorshift(11));
    server.expect(201, "PUT", "/v1/files/input.txt", &a, input);
    server.expect(
        201,
        "POST",
        "/v1/jobs",
        &a,
        word_count("count", RUNNING_COUNT),
    );
    let failed = server.wait_job(&a, "count", "the job to fail on its quota", |job| {
        job["state"] == "failed"
    });
    let failure = failed["failure"].as_str().unwrap();
    assert!(
        failure.contains(&format!(
            "disk quota `max_disk_bytes` of {limit} bytes is used up"
        )) && failure.contains("cannot keep out/counts-"),
        "{failure}"
    );
    let written: u64 = std::fs::read_dir(files(dir.path(), "a").join("out"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert!(0 < written && written <= limit, "{written} bytes written");
}

#[test]
fn a_job_whose_write_ahead_log_fills_its_tenants_disk_quota_fails_naming_it_and_neighbours_run_on()
{
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh_with_config(
        dir.path(),
        "[restart]\nmax_failures = 1\nfirst_delay = \"50ms\"\n",
    );
    let limit = 2_000_000;
    let a = server.tenant(&admin, "a", json!({"max_disk_bytes": limit}));
    let b = server.tenant(&admin, "b", json!({}));
    let generating = |name: &str, rate: u32, checkpoint: &str| {
        format!(
            "name = \"{name}\"\nbatch_interval = \"100ms\"\n{checkpoint}\n[udfs]\n\
             c = \"conformance\"\n[[sources]]\nname = \"in\"\nkind = \"generator\"\n\
             rate = {rate}\n[[streams]]\nname = \"out\"\nfrom = \"in\"\n\
             steps = [{{ op = \"map\", udf = \"c#add_10\" }}]\n[[sinks]]\nfrom = \"out\"\n\
             kind = \"print\"\nnum = 1\n"
        )
    };
    for token in [&a, &b] {
        server.expect(
            201,
            "PUT",
            "/v1/components/conformance",
            token,
            wasm("conformance"),
        );
    }
    server.expect(201, "POST", "/v1/jobs", &b, generating("neighbour", 10, ""));
    // 2,000 generated records a batch, logged (a generator cannot replay them) and kept
    // in the log until a checkpoint lets them go, which is never: no files sink writes.
    server.expect(
        201,
        "POST",
        "/v1/jobs",
        &a,
        generating(
            "logging",
            20_000,
            "[checkpoint]\nevery = 1000\nfsync = \"never\"",
        ),
    );
    let failed = server.wait_job(&a, "logging", "the job to fail on its quota", |job| {
        job["state"] == "failed"
    });
    let failure = failed["failure"].as_str().unwrap();
    assert!(
        failure.contains(&format!(
            "disk quota `max_disk_bytes` of {limit} bytes is used up"
        )) && failure.contains("cannot append to the write-ahead log"),
        "{failure}"
    );
    let used = sluice::disk::usage(&dir.path().join("data/tenants/a")).unwrap();
    assert!(
        limit / 2 < used && used < limit + limit / 4,
        "a's directory holds {used} bytes"
    );
    // The other tenant's job runs on.
    let batches = |job: &Json| {
        job["reports"]
            .as_array()
            .and_then(|reports| reports.last())
            .map_or(0, |report| report["number"].as_u64().unwrap())
    };
    let then = batches(&server.expect(200, "GET", "/v1/jobs/neighbour", &b, ""));
    server.wait_job(&b, "neighbour", "the neighbour to go on", |job| {
        job["state"] == "running" && batches(job) > then + 2
    });
}

#[test]
fn a_kafka_cluster_advertising_a_broker_the_server_does_not_allow_is_refused() {
    let broker = common::kafka::Broker::start();
    let port = broker.address().rsplit(':').next().unwrap();
    // The bootstrap address is allowed; the one the broker advertises (127.0.0.1) is not.
    let bootstrap = format!("localhost:{port}");
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh_with_config(
        dir.path(),
        &format!(
            "allowed_hosts = [\"{bootstrap}\"]\n[restart]\nmax_failures = 1\nfirst_delay = \"50ms\"\n"
        ),
    );
    let a = server.tenant(&admin, "a", json!({}));
    server.upload_word_count(&a);
    let manifest = format!(
        r#"name = "reads"
batch_interval = "20ms"
[udfs]
wc = "wordcount"
[[sources]]
name = "lines"
kind = "kafka"
brokers = "{bootstrap}"
topics = ["lines"]
[[streams]]
name = "words"
from = "lines"
steps = [{{ op = "flat_map", udf = "wc#tokenize" }}]
[[sinks]]
from = "words"
kind = "files"
prefix = "out/words"
"#
    );
    server.expect(201, "POST", "/v1/jobs", &a, manifest);
    let failed = server.wait_job(&a, "reads", "the job to be refused", |job| {
        job["state"] == "failed"
    });
    let failure = failed["failure"].as_str().unwrap();
    assert!(
        failure.contains(&format!(
            "source `lines`: the Kafka cluster advertises broker 127.0.0.1:{port}, which the \
             server does not allow (allowed: {bootstrap})"
        )),
        "{failure}"
    );
}

#[test]
fn kafka_clients_never_connect_to_a_broker_the_server_does_not_allow() {
    // The broker advertises a trap: a listener of this test that no client may reach.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let advertised = trap.local_addr().unwrap().to_string();
    let broker = common::kafka::Broker::start_advertising(Some(&advertised));
    let bootstrap = broker.address().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = fresh_with_config(
        dir.path(),
        &format!(
            "allowed_hosts = [\"{bootstrap}\"]\n[restart]\nmax_failures = 1\nfirst_delay = \"50ms\"\n"
        ),
    );
    let a = server.tenant(&admin, "a", json!({}));
    server.upload_word_count(&a);
    server.expect(201, "PUT", "/v1/files/input.txt", &a, "a b\nc d\n");
    let file_source = "kind = \"file\"\npath = \"input.txt\"";
    let kafka_source = format!("kind = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopics = [\"lines\"]");
    let files_sink = "kind = \"files\"\nprefix = \"out/words\"";
    let kafka_sink = format!("kind = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopic = \"words\"");
    let job = |name: &str, source: &str, sink: &str| {
        format!(
            "name = \"{name}\"\nbatch_interval = \"20ms\"\n[udfs]\nwc = \"wordcount\"\n\
             [[sources]]\nname = \"lines\"\n{source}\n[[streams]]\nname = \"words\"\n\
             from = \"lines\"\nsteps = [{{ op = \"flat_map\", udf = \"wc#tokenize\" }}]\n\
             [[sinks]]\nname = \"out\"\nfrom = \"words\"\n{sink}\n"
        )
    };
    server.expect(
        201,
        "POST",
        "/v1/jobs",
        &a,
        job("reads", &kafka_source, files_sink),
    );
    server.expect(
        201,
        "POST",
        "/v1/jobs",
        &a,
        job("writes", file_source, &kafka_sink),
    );
    for (name, what) in [("reads", "source `lines`"), ("writes", "sink `out`")] {
        let failed = server.wait_job(&a, name, "the job to be refused", |job| {
            job["state"] == "failed"
        });
        let failure = failed["failure"].as_str().unwrap();
        assert!(
            failure.contains(&format!(
                "{what}: the Kafka cluster advertises broker {advertised}, which the server \
                 does not allow (allowed: {bootstrap}); no connection to it was made"
            )),
            "{failure}"
        );
    }
    match trap.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        accepted => panic!("a client connected to the advertised broker: {accepted:?}"),
    }
}
