//! The client of `sluice serve`: each command one or two calls of its HTTP API.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Which server, and who is asking.
#[derive(clap::Args)]
pub struct Remote {
    /// The server's URL.
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:7450")]
    server: String,
    /// The bearer token: a tenant's, or the admin's (DATA/admin-token) for `tenant`.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// The quotas `sluice tenant create` may set (unset: the server's defaults).
#[derive(clap::Args)]
pub struct QuotaFlags {
    /// Its CPU share against other tenants.
    #[arg(long, default_value_t = 1)]
    weight: u32,
    /// Jobs it may have.
    #[arg(long)]
    max_jobs: Option<u64>,
    /// Components it may have.
    #[arg(long)]
    max_components: Option<u64>,
    /// The largest component it may upload, in bytes.
    #[arg(long)]
    max_component_bytes: Option<u64>,
    /// Instances reserved for it in the host's pool.
    #[arg(long)]
    max_instances: Option<u32>,
    /// The most partitions a job may have.
    #[arg(long)]
    max_partitions: Option<u64>,
}

struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    fn new(remote: &Remote) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: remote.server.trim_end_matches('/').to_owned(),
            token: remote.token.clone(),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorization(&self) -> Result<String> {
        let token = self.token.as_deref().context(
            "no token: pass --token or set SLUICE_TOKEN (a tenant's token comes from `sluice \
             tenant create`)",
        )?;
        Ok(format!("Bearer {}", token.trim()))
    }

    fn get(&self, path: &str) -> Result<Value> {
        let response = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.authorization()?)
            .call();
        self.answer(path, response)
    }

    fn delete(&self, path: &str) -> Result<Value> {
        let response = self
            .agent
            .delete(self.url(path))
            .header("Authorization", self.authorization()?)
            .call();
        self.answer(path, response)
    }

    fn send(&self, method: &str, path: &str, body: impl ureq::AsSendBody) -> Result<Value> {
        let url = self.url(path);
        let request = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        let response = request
            .header("Authorization", self.authorization()?)
            .send(body);
        self.answer(path, response)
    }

    /// The JSON of a success, or the server's error message.
    fn answer(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value> {
        let bytes = self.answer_bytes(path, response)?;
        Ok(serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
    }

    /// The body of a success, or the server's error message.
    fn answer_bytes(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<u8>> {
        let mut response = response.with_context(|| {
            format!(
                "cannot reach the server at {}: is `sluice serve` running there? (--server or \
                 SLUICE_SERVER)",
                self.base
            )
        })?;
        let status = response.status();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .with_context(|| format!("cannot read the answer to {path}"))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match body["message"].as_str() {
            Some(message) => bail!("{message}"),
            None => bail!(
                "the server answered {status} to {path}: {}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
}

impl Client {
    /// Copies the body of a success to `out` as it arrives (a file of any size, a log
    /// that goes on), or fails with the server's error message.
    fn copy_answer(
        &self,
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        out: &mut dyn std::io::Write,
    ) -> Result<()> {
        let response =
            response.with_context(|| format!("cannot reach the server at {}", self.base))?;
        if !response.status().is_success() {
            // Read as any answer, for the server's message.
            return self.answer_bytes(path, Ok(response)).map(drop);
        }
        let mut body = response.into_body().into_reader();
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let read = std::io::Read::read(&mut body, &mut buffer)
                .with_context(|| format!("the answer to {path} broke off"))?;
            if read == 0 {
                return Ok(());
            }
            out.write_all(&buffer[..read])?;
            out.flush()?;
        }
    }
}

/// The most a JSON answer (or an error's) may be.
const MAX_ANSWER: u64 = 64 << 20;

fn print_json(value: &Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// The `[udfs]` table of a manifest, with where each value is written.
#[derive(Deserialize)]
struct Udfs {
    #[serde(default)]
    udfs: BTreeMap<String, toml::Spanned<String>>,
}

/// `sluice submit`: uploads the local components the manifest's `[udfs]` name (unless
/// the tenant has their bytes already), then submits the manifest with each of them
/// named `name@sha256`.
pub fn submit(remote: &Remote, manifest: &Path) -> Result<ExitCode> {
    let client = Client::new(remote);
    let text = with_uploaded_components(&client, manifest)?;
    let submitted = client
        .send("POST", "/v1/jobs", text)
        .map_err(|error| anyhow::anyhow!("{}", local_name(&error, manifest)))?;
    println!(
        "submitted job `{}`",
        submitted["name"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice redeploy`: as `submit`, replacing the running job of the manifest's name at a
/// batch boundary, keeping its state (but that of the `fresh_state` steps).
pub fn redeploy(remote: &Remote, manifest: &Path, fresh_state: &[String]) -> Result<ExitCode> {
    let client = Client::new(remote);
    let text = with_uploaded_components(&client, manifest)?;
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    let Named { name } = toml::from_str(&text)
        .with_context(|| format!("{} has no job `name`", manifest.display()))?;
    let query: Vec<String> = fresh_state
        .iter()
        .map(|step| format!("fresh_state={}", step.replace('/', "%2F")))
        .collect();
    let path = format!("/v1/jobs/{name}?{}", query.join("&"));
    client
        .send("PUT", &path, text)
        .map_err(|error| anyhow::anyhow!("{}", local_name(&error, manifest)))?;
    println!("redeployed job `{name}`");
    Ok(ExitCode::SUCCESS)
}

/// The manifest's text with each `[udfs]` value that is a local file replaced by the
/// uploaded component's `name@sha256`.
fn with_uploaded_components(client: &Client, manifest: &Path) -> Result<String> {
    let mut text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read the manifest {}", manifest.display()))?;
    let udfs: Udfs = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut replacements = Vec::new();
    for (alias, value) in &udfs.udfs {
        let file = base.join(value.get_ref());
        if !file.is_file() {
            // Not a local file: the name of a component uploaded before.
            continue;
        }
        let reference = upload(client, &file)
            .with_context(|| format!("cannot upload UDF `{alias}` ({})", file.display()))?;
        replacements.push((value.span(), format!("\"{reference}\"")));
    }
    // From the end, so that earlier spans stay where they are.
    replacements.sort_by_key(|(span, _)| std::cmp::Reverse(span.start));
    for (span, reference) in replacements {
        text.replace_range(span, &reference);
    }
    Ok(text)
}

/// Errors point at the submitted text as `job.toml`: point at the local file.
fn local_name(error: &anyhow::Error, manifest: &Path) -> String {
    let message = format!("{error:#}");
    match message.strip_prefix(sluice::server::admission::MANIFEST_NAME) {
        Some(rest) => format!("{}{rest}", manifest.display()),
        None => message,
    }
}

/// Uploads the component at `file` unless the tenant has its bytes; returns how a
/// manifest names it (`name@sha256`).
fn upload(client: &Client, file: &Path) -> Result<String> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let digest = format!("{:x}", Sha256::digest(&bytes));
    let existing = client.get(&format!("/v1/components?digest={digest}"))?;
    if let Some(name) = existing
        .as_array()
        .and_then(|components| components.first())
        .and_then(|component| component["name"].as_str())
    {
        println!("component `{name}` is on the server already");
        return Ok(format!("{name}@{digest}"));
    }
    let stem = file
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("component");
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let uploaded = client.send("PUT", &format!("/v1/components/{name}"), bytes)?;
    println!(
        "uploaded component `{name}` ({} bytes, functions: {})",
        uploaded["size"],
        uploaded["functions"]
            .as_array()
            .map(|functions| functions
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    Ok(format!("{name}@{digest}"))
}

/// `sluice jobs`: one line per job of the tenant.
pub fn jobs(remote: &Remote) -> Result<ExitCode> {
    let jobs = Client::new(remote).get("/v1/jobs")?;
    for job in jobs.as_array().into_iter().flatten() {
        let state = job["state"].as_str().unwrap_or("stopped");
        print!("{}\t{state}", job["name"].as_str().unwrap_or("?"));
        if let Some(failure) = job["failure"].as_str() {
            print!("\t{failure}");
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice job NAME`: the job's state, failure and last batches, as JSON.
pub fn job(remote: &Remote, name: &str) -> Result<ExitCode> {
    print_json(&Client::new(remote).get(&format!("/v1/jobs/{name}"))?)
}

/// `sluice logs NAME [-f]`: the job's log lines, and with `follow` each new one as it
/// comes.
pub fn logs(remote: &Remote, name: &str, follow: bool) -> Result<ExitCode> {
    let client = Client::new(remote);
    let path = format!(
        "/v1/jobs/{name}/logs{}",
        if follow { "?follow=1" } else { "" }
    );
    let response = client
        .agent
        .get(client.url(&path))
        .header("Authorization", client.authorization()?)
        .call();
    if !follow {
        std::io::Write::write_all(
            &mut std::io::stdout(),
            &client.answer_bytes(&path, response)?,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    client.copy_answer(&path, response, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// `sluice stop NAME`.
pub fn stop(remote: &Remote, name: &str) -> Result<ExitCode> {
    let answer = Client::new(remote).send("POST", &format!("/v1/jobs/{name}/stop"), "")?;
    println!(
        "job `{name}`: {}",
        answer["state"].as_str().unwrap_or("stopped")
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice start NAME`.
pub fn start(remote: &Remote, name: &str, accept_data_loss: bool) -> Result<ExitCode> {
    let query = if accept_data_loss {
        "?accept_data_loss=1"
    } else {
        ""
    };
    Client::new(remote).send("POST", &format!("/v1/jobs/{name}/start{query}"), "")?;
    println!("job `{name}`: starting");
    Ok(ExitCode::SUCCESS)
}

/// `sluice delete NAME`.
pub fn delete(remote: &Remote, name: &str) -> Result<ExitCode> {
    Client::new(remote).delete(&format!("/v1/jobs/{name}"))?;
    println!("job `{name}` deleted");
    Ok(ExitCode::SUCCESS)
}

/// `sluice tenant create NAME`: prints the new tenant's token (shown only once).
pub fn create_tenant(remote: &Remote, name: &str, quotas: &QuotaFlags) -> Result<ExitCode> {
    let mut limits = serde_json::Map::new();
    for (key, value) in [
        ("max_jobs", quotas.max_jobs),
        ("max_components", quotas.max_components),
        ("max_component_bytes", quotas.max_component_bytes),
        ("max_instances", quotas.max_instances.map(u64::from)),
        ("max_partitions", quotas.max_partitions),
    ] {
        if let Some(value) = value {
            limits.insert(key.to_owned(), json!(value));
        }
    }
    let body = json!({"name": name, "weight": quotas.weight, "quotas": limits});
    let created = Client::new(remote).send("POST", "/v1/tenants", body.to_string())?;
    println!("{}", created["token"].as_str().unwrap_or_default());
    eprintln!("tenant `{name}` created; its token (above) is shown only this once");
    Ok(ExitCode::SUCCESS)
}

/// `sluice files put LOCAL PATH`: uploads a file into the tenant's files.
pub fn put_file(remote: &Remote, local: &Path, path: &str) -> Result<ExitCode> {
    let file =
        std::fs::File::open(local).with_context(|| format!("cannot open {}", local.display()))?;
    let stored = Client::new(remote).send("PUT", &format!("/v1/files/{path}"), file)?;
    println!("{path}: {} bytes", stored["size"]);
    Ok(ExitCode::SUCCESS)
}

/// `sluice files get PATH [LOCAL]`: a file of the tenant's (to standard output without
/// LOCAL), or a directory's listing.
pub fn get_file(remote: &Remote, path: &str, local: Option<&Path>) -> Result<ExitCode> {
    let client = Client::new(remote);
    let url = format!("/v1/files/{path}");
    let response = client
        .agent
        .get(client.url(&url))
        .header("Authorization", client.authorization()?)
        .call();
    match local {
        Some(local) => {
            let mut file = std::fs::File::create(local)
                .with_context(|| format!("cannot write {}", local.display()))?;
            client.copy_answer(&url, response, &mut file)?;
        }
        None => client.copy_answer(&url, response, &mut std::io::stdout().lock())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `sluice files rm PATH`.
pub fn remove_file(remote: &Remote, path: &str) -> Result<ExitCode> {
    Client::new(remote).delete(&format!("/v1/files/{path}"))?;
    println!("{path} removed");
    Ok(ExitCode::SUCCESS)
}
