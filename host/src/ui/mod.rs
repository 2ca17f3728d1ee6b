//! The web UI and `/metrics` of a process running jobs: `sluice run --ui ADDRESS` serves
//! them for its jobs, `sluice serve` for each tenant's own (and every tenant's to the
//! admin token).
//!
//! Routes:
//! - `GET /`: the job list; `GET /jobs/{job}`: a job's page (timelines and histograms of
//!   its last batches, like Spark's Streaming tab). Both are one static page whose script
//!   draws the JSON below every second; tenant text enters the page as text only.
//! - Every route of one job takes `?tenant=NAME`: of the jobs the caller sees, that
//!   tenant's (the admin sees every tenant's, and two may have jobs of one name).
//! - `GET /v1/overview`: `{"jobs": [JobSummary]}`, the jobs the caller may see.
//! - `GET /v1/jobs/{job}/overview`: the job's [`JobDetail`](crate::metrics::JobDetail).
//! - `GET /v1/jobs/{job}/batches?last=N`: `{"job", "tenant", "batches": [BatchEntry]}`, its last N
//!   batches (at most 1000, the default), oldest first.
//! - `GET /metrics`: OpenMetrics text of the jobs the caller may see.
//! - `GET /login`, `POST /login` (`{"token": "..."}`): a token becomes an HttpOnly,
//!   SameSite=Strict cookie; a token never goes in a URL.
//!
//! Who sees what is the [`Gate`]'s to say: with no token configured, `sluice run --ui`
//! shows everything to anyone who can reach its (loopback) address.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::{CONTENT_TYPE, JobMetrics, Jobs, RING_BATCHES};

/// The cookie that holds a logged-in caller's token.
pub const COOKIE: &str = "sluice_token";

/// Says which jobs a caller may see, from the token it showed (a cookie or a bearer
/// token), if any.
pub trait Gate: Send + Sync + 'static {
    /// `Ok(None)`: every job; `Ok(Some(tenant))`: that tenant's jobs only; `Err(())`:
    /// nothing (no token, or an unknown one).
    #[allow(clippy::result_unit_err)]
    fn admit(&self, token: Option<&str>) -> Result<Option<String>, ()>;
}

/// The gate of `sluice run --ui`: everything to anyone, or to holders of one token.
pub struct TokenGate(pub Option<String>);

impl Gate for TokenGate {
    fn admit(&self, token: Option<&str>) -> Result<Option<String>, ()> {
        match &self.0 {
            None => Ok(None),
            Some(expected) if token.is_some_and(|token| same(token, expected)) => Ok(None),
            Some(_) => Err(()),
        }
    }
}

/// Compares two tokens in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// Refuses to serve the UI on `address` unless it is a loopback address or a token
/// guards it: anyone who can reach the address would see the jobs.
pub fn check_address(address: std::net::SocketAddr, has_token: bool) -> anyhow::Result<()> {
    if address.ip().is_loopback() || has_token {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve the UI on {address}: it is not a loopback address, so anyone who \
         can reach it would see the jobs; give a token with --ui-token (or SLUICE_UI_TOKEN), \
         or use 127.0.0.1:{}",
        address.port()
    )
}

struct Ui {
    jobs: Arc<Jobs>,
    gate: Box<dyn Gate>,
}

/// The UI's routes over `jobs`, shown as `gate` allows.
pub fn router(jobs: Arc<Jobs>, gate: impl Gate) -> Router {
    let ui = Arc::new(Ui {
        jobs,
        gate: Box::new(gate),
    });
    Router::new()
        .route("/", get(list_page))
        .route("/jobs/{job}", get(job_page))
        .route("/login", get(login_page).post(login))
        .route("/assets/{asset}", get(asset))
        .route("/metrics", get(metrics))
        .route("/v1/overview", get(overview))
        .route("/v1/jobs/{job}/overview", get(job_overview))
        .route("/v1/jobs/{job}/batches", get(job_batches))
        .with_state(ui)
}

/// The token a request shows: its bearer token, else its cookie.
fn token_of(headers: &HeaderMap) -> Option<&str> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The answer to a caller without a token the gate admits.
struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "error": "unauthorized",
                "message": "log in at /login with your tenant token, or send \
                            `Authorization: Bearer TOKEN`",
            })),
        )
            .into_response()
    }
}

/// The tenant the caller may see (`None`: all).
fn admit(ui: &Ui, headers: &HeaderMap) -> Result<Option<String>, Unauthorized> {
    ui.gate.admit(token_of(headers)).map_err(|()| Unauthorized)
}

fn html(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
        .into_response()
}

/// Scripts and styles from this site only: a tenant's text can never run as script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; frame-ancestors 'none'";

/// The page: the caller's way to the login page if it has no token the gate admits.
const PAGE: &str = include_str!("assets/page.html");

fn to_login() -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static("/login"))],
    )
        .into_response()
}

async fn list_page(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    match admit(&ui, &headers) {
        Ok(_) => html(PAGE),
        Err(Unauthorized) => to_login(),
    }
}

/// A job's page; a 404 for a job the caller may not see, exactly as for one that does
/// not exist (the page still draws it once a job of that name appears: `sluice run
/// --ui` serves before its jobs have started).
async fn job_page(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(job): Path<String>,
    Query(of): Query<Of>,
) -> Response {
    let tenant = match admit(&ui, &headers) {
        Ok(tenant) => tenant,
        Err(Unauthorized) => return to_login(),
    };
    let page = html(PAGE);
    if find(&ui, tenant, &of, &job).is_some() {
        page
    } else {
        (StatusCode::NOT_FOUND, page).into_response()
    }
}

async fn login_page() -> Response {
    html(include_str!("assets/login.html"))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(ui): State<Arc<Ui>>, request: Request) -> Response {
    let body = match axum::body::to_bytes(request.into_body(), 4096).await {
        Ok(body) => body,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let Ok(Login { token }) = serde_json::from_slice(&body) else {
        return (StatusCode::BAD_REQUEST, "send {\"token\": \"...\"}").into_response();
    };
    if ui.gate.admit(Some(&token)).is_err() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    match HeaderValue::from_str(&cookie) {
        Ok(cookie) => (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn asset(Path(asset): Path<String>) -> Response {
    let (kind, body): (&str, &'static str) = match asset.as_str() {
        "ui.js" => ("text/javascript", include_str!("assets/ui.js")),
        "ui.css" => ("text/css", include_str!("assets/ui.css")),
        "login.js" => ("text/javascript", include_str!("assets/login.js")),
        "uPlot.iife.min.js" => ("text/javascript", include_str!("assets/uPlot.iife.min.js")),
        "uPlot.min.css" => ("text/css", include_str!("assets/uPlot.min.css")),
        "uPlot.LICENSE" => ("text/plain", include_str!("assets/uPlot.LICENSE")),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let tenant = match admit(&ui, &headers) {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    let jobs = ui.jobs.clone();
    // Encoding a thousand jobs takes some milliseconds: off the async threads.
    let text = tokio::task::spawn_blocking(move || jobs.encode(tenant.as_deref()))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

async fn overview(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let tenant = match admit(&ui, &headers) {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    let jobs: Vec<_> = ui
        .jobs
        .visible(tenant.as_deref())
        .iter()
        .map(|job| job.summary())
        .collect();
    axum::Json(json!({ "jobs": jobs })).into_response()
}

fn no_job(job: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": "not_found",
            "message": format!("no job `{job}`: GET /v1/overview lists the jobs"),
        })),
    )
        .into_response()
}

async fn job_overview(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(job): Path<String>,
    Query(of): Query<Of>,
) -> Response {
    let tenant = match admit(&ui, &headers) {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    match find(&ui, tenant, &of, &job) {
        Some(metrics) => axum::Json(metrics.detail()).into_response(),
        None => no_job(&job),
    }
}

/// Which tenant's job a route of one job means (`?tenant=NAME`), and for its batches,
/// how many (`?last=N`).
#[derive(Deserialize)]
struct Of {
    tenant: Option<String>,
    last: Option<usize>,
}

/// Job `name` among those `caller` may see (`None`: every tenant's), of tenant `of` if
/// it names one.
fn find(ui: &Ui, caller: Option<String>, of: &Of, name: &str) -> Option<Arc<JobMetrics>> {
    ui.jobs
        .visible(caller.as_deref())
        .into_iter()
        .find(|job| job.job() == name && of.tenant.as_ref().is_none_or(|t| job.tenant() == t))
}

async fn job_batches(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Path(job): Path<String>,
    Query(of): Query<Of>,
) -> Response {
    let tenant = match admit(&ui, &headers) {
        Ok(tenant) => tenant,
        Err(refused) => return refused.into_response(),
    };
    let last = of.last;
    match find(&ui, tenant, &of, &job) {
        Some(metrics) => axum::Json(json!({
            "job": metrics.job(),
            "tenant": metrics.tenant(),
            "batches": metrics.batches(last.unwrap_or(RING_BATCHES)),
        }))
        .into_response(),
        None => no_job(&job),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_read_from_the_bearer_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_of(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; sluice_token=abc123"),
        );
        assert_eq!(token_of(&headers), Some("abc123"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(token_of(&headers), Some("xyz"));
    }

    #[test]
    fn only_a_loopback_address_is_served_without_a_token() {
        check_address("127.0.0.1:4040".parse().unwrap(), false).unwrap();
        check_address("[::1]:4040".parse().unwrap(), false).unwrap();
        let error = check_address("0.0.0.0:4040".parse().unwrap(), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--ui-token"), "{error}");
        check_address("0.0.0.0:4040".parse().unwrap(), true).unwrap();
    }

    #[test]
    fn the_token_gate_admits_its_token_only() {
        assert_eq!(TokenGate(None).admit(None), Ok(None));
        let gate = TokenGate(Some("secret".into()));
        assert_eq!(gate.admit(Some("secret")), Ok(None));
        assert_eq!(gate.admit(Some("secreT")), Err(()));
        assert_eq!(gate.admit(Some("secret2")), Err(()));
        assert_eq!(gate.admit(None), Err(()));
    }
}
