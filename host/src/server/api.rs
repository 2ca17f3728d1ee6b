//! The HTTP API: JSON under `/v1`, every route but `/healthz` behind a bearer token.
//! Admins manage tenants; a tenant manages its own components and jobs, and sees nothing
//! of another tenant's: another tenant's is a 404, exactly like one that does not exist.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::checkpoint::RecoveryOptions;
use crate::manifest::MAX_MANIFEST_BYTES;

use super::admission::{Refusal, check_name};
use super::config::TenantQuotas;
use super::registry::{Caller, ComponentRow, Desired, JobRow, TenantRow};
use super::supervisor::JobState;
use super::tokens;
use super::upload::{DRAIN_LIMIT, Upload, UploadError, drain};
use super::{Server, TenantRefusal};
use crate::beneath::{Beneath, Opened};
use crate::disk::usage;

/// The API's routes.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{tenant}", axum::routing::delete(delete_tenant))
        .route("/v1/components", get(list_components))
        .route(
            "/v1/components/{name}",
            put(upload_component)
                .get(get_component)
                .delete(delete_component)
                // The tenant's `max_component_bytes` bounds an upload, not axum's default.
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/jobs",
            post(submit_job)
                .get(list_jobs)
                .layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES as usize)),
        )
        .route(
            "/v1/jobs/{job}",
            get(get_job)
                .delete(delete_job)
                .put(redeploy_job)
                .layer(DefaultBodyLimit::max(MAX_MANIFEST_BYTES as usize)),
        )
        .route("/v1/jobs/{job}/stop", post(stop_job))
        .route("/v1/jobs/{job}/start", post(start_job))
        .route("/v1/jobs/{job}/logs", get(job_logs))
        .route(
            "/v1/files/{*path}",
            put(put_file)
                .get(get_file)
                .delete(delete_file)
                // The tenant's disk quota bounds an upload, not axum's default.
                .layer(DefaultBodyLimit::disable()),
        )
        .with_state(server)
}

/// An error answer: a status and a JSON body with at least `error` (a kind) and
/// `message` (what is wrong and what to do).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": kind, "message": message.into()}),
        }
    }

    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no {what}"),
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A quota refusal: 403 with the quota, its limit and what was asked for.
    fn quota(quota: &str, limit: u64, requested: u64) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            body: json!({
                "error": "quota",
                "quota": quota,
                "limit": limit,
                "requested": requested,
                "message": format!(
                    "over quota `{quota}`: the limit is {limit} and this asks for {requested}; \
                     ask the server's admin to raise it"
                ),
            }),
        }
    }

    fn internal(error: anyhow::Error) -> Self {
        tracing::error!("request failed: {error:#}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the server failed: {error:#}; see its log"),
        )
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        Self::internal(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type Answer<T = Json<Value>> = Result<T, ApiError>;

impl FromRequestParts<Arc<Server>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Answer<Self> {
        let unauthorized = |message: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned())
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                unauthorized(
                    "no bearer token: send `Authorization: Bearer TOKEN` (the CLI takes \
                     --token or SLUICE_TOKEN)",
                )
            })?;
        server
            .registry
            .caller(&tokens::hash(token.trim()))?
            .ok_or_else(|| unauthorized("the token is not known to this server"))
    }
}

/// A caller that must be the admin.
struct Admin;

impl FromRequestParts<Arc<Server>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Answer<Self> {
        match Caller::from_request_parts(parts, server).await? {
            Caller::Admin => Ok(Admin),
            Caller::Tenant(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "only the admin token may manage tenants (DATA/admin-token)",
            )),
        }
    }
}

/// A caller that must be a tenant: its name.
struct Tenant(String);

impl FromRequestParts<Arc<Server>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Answer<Self> {
        match Caller::from_request_parts(parts, server).await? {
            Caller::Tenant(name) => Ok(Tenant(name)),
            Caller::Admin => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "components and jobs belong to tenants: use a tenant's token (create one with \
                 POST /v1/tenants)",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    quotas: TenantQuotas,
}

async fn create_tenant(
    State(server): State<Arc<Server>>,
    _: Admin,
    body: axum::body::Bytes,
) -> Answer<(StatusCode, Json<Value>)> {
    let new: NewTenant = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "the body is not a tenant: {error}; send {{\"name\": ..., \"weight\": 1, \"quotas\": {{...}}}}"
        ))
    })?;
    check_name(&new.name, "tenant").map_err(ApiError::bad_request)?;
    let weight = new.weight.unwrap_or(1);
    if !(1..=1000).contains(&weight) {
        return Err(ApiError::bad_request(format!(
            "`weight` = {weight} must be from 1 to 1000"
        )));
    }
    new.quotas
        .check()
        .map_err(|error| ApiError::bad_request(format!("{error:#}")))?;
    let tenant = TenantRow {
        name: new.name,
        weight,
        quotas: new.quotas,
    };
    let token = server
        .create_tenant(&tenant)?
        .map_err(|refusal| match refusal {
            TenantRefusal::Exists => ApiError::conflict(format!(
                "tenant `{}` exists; choose another name, or delete it first",
                tenant.name
            )),
            TenantRefusal::Pool(over) => ApiError::quota(over.quota, over.limit, over.requested),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": tenant.name, "token": token})),
    ))
}

async fn list_tenants(State(server): State<Arc<Server>>, _: Admin) -> Answer {
    let tenants: Vec<Value> = server
        .registry
        .tenants()?
        .into_iter()
        .map(|tenant| {
            json!({
                "name": tenant.name,
                "weight": tenant.weight,
                "quotas": tenant.quotas,
            })
        })
        .collect();
    Ok(Json(json!(tenants)))
}

async fn delete_tenant(
    State(server): State<Arc<Server>>,
    _: Admin,
    Path(tenant): Path<String>,
) -> Answer {
    if !server.delete_tenant(&tenant).await? {
        return Err(ApiError::not_found(&format!("tenant `{tenant}`")));
    }
    Ok(Json(json!({"deleted": tenant})))
}

#[derive(Deserialize)]
struct DigestQuery {
    digest: Option<String>,
}

async fn list_components(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Query(query): Query<DigestQuery>,
) -> Answer {
    let components: Vec<ComponentRow> = server
        .registry
        .components(&tenant)?
        .into_iter()
        .filter(|component| {
            query
                .digest
                .as_ref()
                .is_none_or(|digest| &component.digest == digest)
        })
        .collect();
    Ok(Json(json!(components)))
}

async fn get_component(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Answer {
    let component = server
        .registry
        .component(&tenant, &name)?
        .ok_or_else(|| ApiError::not_found(&format!("component `{name}`")))?;
    Ok(Json(json!(component)))
}

async fn upload_component(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Answer<(StatusCode, Json<Value>)> {
    check_name(&name, "component").map_err(ApiError::bad_request)?;
    let quotas = server.quotas(&tenant)?;
    let existing = server.registry.components(&tenant)?;
    if !existing.iter().any(|component| component.name == name)
        && existing.len() as u64 >= quotas.components()
    {
        drain(body, 0).await;
        return Err(ApiError::quota(
            "max_components",
            quotas.components(),
            existing.len() as u64 + 1,
        ));
    }
    let limit = quotas.component_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    // Past what can be drained (see `Upload::receive`), refused before it is read.
    if let Some(length) = declared
        && length > limit.max(DRAIN_LIMIT)
    {
        return Err(ApiError::quota("max_component_bytes", limit, length));
    }
    // One validation at a time per tenant: a tenant cannot occupy the compiler.
    let _turn = server.upload_turn(&tenant).lock_owned().await;
    let upload = match Upload::receive(body, &server.data.uploads(), limit).await {
        Ok(upload) => upload,
        Err(UploadError::TooLarge { limit, size }) => {
            return Err(ApiError::quota(
                "max_component_bytes",
                limit,
                size.or(declared).unwrap_or(limit + 1),
            ));
        }
        Err(UploadError::Failed(error)) => return Err(ApiError::internal(error)),
    };
    let component = server
        .clone()
        .register_component(tenant, name, upload)
        .await?
        .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "not_a_component", message))?;
    Ok((StatusCode::CREATED, Json(json!(component))))
}

async fn delete_component(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Answer {
    let users = server.registry.jobs_using(&tenant, &name)?;
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "component `{name}` is used by job(s) {}: delete them first",
            users.join(", ")
        )));
    }
    if !server.registry.delete_component(&tenant, &name)? {
        return Err(ApiError::not_found(&format!("component `{name}`")));
    }
    server.collect_garbage().await?;
    Ok(Json(json!({"deleted": name})))
}

async fn submit_job(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    manifest: String,
) -> Answer<(StatusCode, Json<Value>)> {
    let admitted = server.clone().admit(&tenant, manifest.clone()).await?;
    let name = admitted.config.name.clone();
    let jobs = server.registry.jobs(Some(&tenant))?;
    if jobs.iter().any(|job| job.name == name) {
        return Err(ApiError::conflict(format!(
            "job `{name}` exists: redeploy it with PUT /v1/jobs/{name}, or delete it first"
        )));
    }
    let quotas = server.quotas(&tenant)?;
    if jobs.len() as u64 >= quotas.jobs() {
        return Err(ApiError::quota(
            "max_jobs",
            quotas.jobs(),
            jobs.len() as u64 + 1,
        ));
    }
    server.check_outputs(&tenant, &admitted.config)?;
    let row = JobRow {
        tenant: tenant.clone(),
        name: name.clone(),
        manifest,
        desired: Desired::Running,
        error: None,
    };
    server.registry.put_job(&row, &admitted.components)?;
    server
        .supervisor
        .start(
            (tenant, name.clone()),
            admitted.config,
            RecoveryOptions::default(),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "components": admitted.components})),
    ))
}

async fn list_jobs(State(server): State<Arc<Server>>, Tenant(tenant): Tenant) -> Answer {
    let jobs: Vec<Value> = server
        .registry
        .jobs(Some(&tenant))?
        .into_iter()
        .map(|job| {
            let status = server
                .supervisor
                .status(&(tenant.clone(), job.name.clone()));
            json!({
                "name": job.name,
                "desired": job.desired,
                "state": status.as_ref().map(|status| status.state),
                "failure": status.and_then(|status| status.failure).or(job.error),
            })
        })
        .collect();
    Ok(Json(json!(jobs)))
}

async fn get_job(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Answer {
    let job = server.job(&tenant, &name)?;
    let status = server.supervisor.status(&(tenant, name.clone()));
    Ok(Json(json!({
        "name": job.name,
        "desired": job.desired,
        "state": status.as_ref().map_or(JobState::Stopped, |status| status.state),
        "failure": status.as_ref().and_then(|status| status.failure.clone()).or(job.error),
        "restarts": status.as_ref().map_or(0, |status| status.restarts),
        "reports": status.map(|status| status.reports).unwrap_or_default(),
        "manifest": job.manifest,
    })))
}

async fn stop_job(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Answer {
    server.job(&tenant, &name)?;
    server
        .registry
        .set_desired(&tenant, &name, Desired::Stopped, None)?;
    let key = (tenant, name.clone());
    server.supervisor.stop(&key).await;
    let state = server.supervisor.status(&key).map(|status| status.state);
    Ok(Json(json!({"name": name, "state": state})))
}

#[derive(Deserialize)]
struct StartQuery {
    #[serde(default)]
    accept_data_loss: Option<String>,
}

async fn start_job(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
) -> Answer {
    let job = server.job(&tenant, &name)?;
    let admitted = server.clone().admit(&tenant, job.manifest.clone()).await?;
    server.registry.put_job(
        &JobRow {
            desired: Desired::Running,
            error: None,
            ..job
        },
        &admitted.components,
    )?;
    let recovery = RecoveryOptions {
        accept_data_loss: query
            .accept_data_loss
            .is_some_and(|value| matches!(value.as_str(), "1" | "true" | "yes")),
        ..RecoveryOptions::default()
    };
    server
        .supervisor
        .start((tenant, name.clone()), admitted.config, recovery)
        .await;
    Ok(Json(json!({"name": name, "state": JobState::Starting})))
}

/// `?fresh_state=STEP` (repeatable) of a redeploy.
fn fresh_state(query: Option<&str>) -> Vec<String> {
    query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter_map(|pair| pair.strip_prefix("fresh_state="))
        .map(|step| {
            // Steps are `stream/step`: only the slash is commonly encoded.
            step.replace("%2F", "/").replace("%2f", "/")
        })
        .collect()
}

/// A redeploy: the running job stops after its batch in flight and the new manifest
/// starts from its checkpoint, keeping its state; a change recovery refuses (as `sluice
/// run` refuses it) leaves the old one running and answers 409 with the reason.
async fn redeploy_job(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    manifest: String,
) -> Answer {
    let old = server.job(&tenant, &name)?;
    let admitted = server.clone().admit(&tenant, manifest.clone()).await?;
    if admitted.config.name != name {
        return Err(ApiError::bad_request(format!(
            "the manifest names job `{}`, not `{name}`: a redeploy keeps the job's name",
            admitted.config.name
        )));
    }
    server.check_outputs(&tenant, &admitted.config)?;
    let recovery = RecoveryOptions {
        fresh_state: fresh_state(query.as_deref()),
        handover: true,
        ..RecoveryOptions::default()
    };
    let key = (tenant.clone(), name.clone());
    if let Err(refused) = server
        .supervisor
        .start_checked(key.clone(), admitted.config, recovery)
        .await
    {
        if old.desired == Desired::Running {
            let previous = server.clone().admit(&tenant, old.manifest).await?;
            let handover = RecoveryOptions {
                handover: true,
                ..RecoveryOptions::default()
            };
            server
                .supervisor
                .start(key, previous.config, handover)
                .await;
        }
        return Err(ApiError::conflict(format!(
            "the redeploy of job `{name}` is refused, and the job runs as before: {refused}"
        )));
    }
    server.registry.put_job(
        &JobRow {
            manifest,
            desired: Desired::Running,
            error: None,
            ..old
        },
        &admitted.components,
    )?;
    server.collect_garbage().await?;
    Ok(Json(
        json!({"name": name, "state": JobState::Running, "components": admitted.components}),
    ))
}

#[derive(Deserialize)]
struct FollowQuery {
    #[serde(default)]
    follow: Option<String>,
}

/// The job's log as text, a line each; with `?follow=1` the answer goes on with each new
/// line as it comes.
async fn job_logs(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    Query(query): Query<FollowQuery>,
) -> Answer<Response> {
    server.job(&tenant, &name)?;
    let (lines, follow) = server.logs.read(&tenant, &name);
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let text_plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !query
        .follow
        .is_some_and(|value| matches!(value.as_str(), "1" | "true" | "yes"))
    {
        return Ok((text_plain, text).into_response());
    }
    let next = futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            match follow.recv().await {
                Ok(line) => return Some((Ok(format!("{line}\n")), follow)),
                // A follower too slow for the job's log misses lines, not the job.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures_util::StreamExt::chain(
        futures_util::stream::once(std::future::ready(Ok::<_, std::convert::Infallible>(text))),
        next,
    );
    Ok((text_plain, axum::body::Body::from_stream(stream)).into_response())
}

async fn delete_job(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Answer {
    server.job(&tenant, &name)?;
    server.delete_job(&tenant, &name).await?;
    Ok(Json(json!({"deleted": name})))
}

/// The tenant's files, opened beneath their directory.
fn tenant_files(server: &Server, tenant: &str) -> Answer<Beneath> {
    Beneath::open(&server.data.files(tenant))
        .with_context(|| format!("cannot open the files of tenant `{tenant}`"))
        .map_err(ApiError::internal)
}

/// The answer to a failed file operation on `path`.
fn file_error(path: &str, error: std::io::Error) -> ApiError {
    match error.kind() {
        std::io::ErrorKind::NotFound => ApiError::not_found(&format!("file `{path}`")),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidInput => ApiError::new(
            StatusCode::BAD_REQUEST,
            "refused",
            format!(
                "file `{path}`: {error}; paths are relative to the tenant's files and stay                      inside them"
            ),
        ),
        _ => ApiError::internal(anyhow::Error::new(error).context(format!("file `{path}`"))),
    }
}

async fn put_file(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(path): Path<String>,
    body: axum::body::Body,
) -> Answer<(StatusCode, Json<Value>)> {
    let files = tenant_files(&server, &tenant)?;
    let quota = server.quotas(&tenant)?.disk_bytes();
    let used = usage(&server.data.tenant(&tenant))
        .with_context(|| format!("cannot measure the disk use of tenant `{tenant}`"))?;
    let left = quota.saturating_sub(used);
    let upload = match Upload::receive(body, &server.data.uploads(), left).await {
        Ok(upload) => upload,
        Err(UploadError::TooLarge { size, .. }) => {
            return Err(ApiError::quota(
                "max_disk_bytes",
                quota,
                used + size.unwrap_or(left + 1),
            ));
        }
        Err(UploadError::Failed(error)) => return Err(ApiError::internal(error)),
    };
    let size = upload.size;
    upload
        .keep_by(|from| files.place(from, std::path::Path::new(&path)))
        .map_err(|error| file_error(&path, error))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"path": path, "size": size})),
    ))
}

/// A file's bytes, streamed as they are read; a directory's listing as JSON.
async fn get_file(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(path): Path<String>,
) -> Answer<Response> {
    let files = tenant_files(&server, &tenant)?;
    let opened = tokio::task::spawn_blocking({
        let path = path.clone();
        move || files.read(std::path::Path::new(&path))
    })
    .await
    .map_err(|error| ApiError::internal(error.into()))?
    .map_err(|error| file_error(&path, error))?;
    match opened {
        Opened::Directory(names) => Ok(Json(json!(names)).into_response()),
        Opened::File(file) => {
            let length = file
                .metadata()
                .map_err(|error| file_error(&path, error))?
                .len();
            let stream = file_chunks(tokio::fs::File::from_std(file));
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (header::CONTENT_LENGTH, length.to_string()),
                ],
                axum::body::Body::from_stream(stream),
            )
                .into_response())
        }
    }
}

/// A file's bytes in chunks as they are read, ending at its end or its first error.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut chunk = vec![0; 64 << 10];
        match tokio::io::AsyncReadExt::read(&mut file, &mut chunk).await {
            Ok(0) => None,
            Ok(read) => {
                chunk.truncate(read);
                Some((Ok(chunk.into()), Some(file)))
            }
            Err(error) => Some((Err(error), None)),
        }
    })
}

async fn delete_file(
    State(server): State<Arc<Server>>,
    Tenant(tenant): Tenant,
    Path(path): Path<String>,
) -> Answer {
    let files = tenant_files(&server, &tenant)?;
    files
        .remove(std::path::Path::new(&path))
        .map_err(|error| file_error(&path, error))?;
    Ok(Json(json!({"deleted": path})))
}

impl Server {
    /// The tenant's job `name`, or a 404.
    fn job(&self, tenant: &str, name: &str) -> Answer<JobRow> {
        self.registry
            .job(tenant, name)?
            .ok_or_else(|| ApiError::not_found(&format!("job `{name}`")))
    }

    /// Admits a manifest off the async threads (components may compile), as an answer.
    async fn admit(self: Arc<Self>, tenant: &str, manifest: String) -> Answer<super::Admitted> {
        let tenant = tenant.to_owned();
        let admitted =
            tokio::task::spawn_blocking(move || self.admission().admit(&tenant, &manifest))
                .await
                .map_err(|error| ApiError::internal(error.into()))?;
        admitted.map_err(refused)
    }

    /// Refuses a new or redeployed job whose files sinks would write where another
    /// job's do.
    fn check_outputs(&self, tenant: &str, config: &crate::manifest::JobConfig) -> Answer<()> {
        self.admission()
            .check_outputs(tenant, config)
            .map_err(refused)
    }
}

/// The answer to a refused manifest.
fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Manifest(error) => {
            let (line, column) = error.position.unzip();
            ApiError {
                status: StatusCode::BAD_REQUEST,
                body: json!({
                    "error": "manifest",
                    "message": error.to_string(),
                    "file": error.file,
                    "line": line,
                    "column": column,
                    "hint": error.hint,
                }),
            }
        }
        Refusal::Rule(message) => ApiError::new(StatusCode::BAD_REQUEST, "refused", message),
        Refusal::Conflict(message) => ApiError::conflict(message),
        Refusal::Quota(over) => ApiError::quota(over.quota, over.limit, over.requested),
        Refusal::Internal(error) => ApiError::internal(error),
    }
}
