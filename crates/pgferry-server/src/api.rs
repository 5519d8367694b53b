//! Routes and handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, Request, State as Extract};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use pgferry_engine::{EngineError, TableState};
use pgferry_engine::{TableStatus, TaskStatus};
use pgferry_observe::AlarmState;
use pgferry_pg::{PgClient, Side};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::assets;
use crate::auth::Auth;
use crate::{Sources, StopHook};

/// An error, as every endpoint returns it: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    pub(crate) fn unauthorized(message: &str) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.to_owned(),
        }
    }

    pub(crate) fn forbidden(message: &str) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: message.to_owned(),
        }
    }

    fn not_found(message: String) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message,
        }
    }

    fn unavailable(message: String) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message,
        }
    }

    fn bad_request(message: String) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pgferry\""),
            );
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownTask { .. } => ApiError::not_found(e.to_string()),
            other => ApiError::unavailable(format!("cannot read the control schema: {other}")),
        }
    }
}

/// The control schema is read at most this often; the dashboard polls faster.
const STATUS_FRESH: Duration = Duration::from_secs(1);

/// The server's own connection to the target, and the last status read through it.
#[derive(Default)]
struct Control {
    client: Option<PgClient>,
    last: Option<(Instant, TaskStatus)>,
}

pub(crate) struct State {
    sources: Sources,
    auth: Auth,
    control: tokio::sync::Mutex<Control>,
}

impl State {
    pub(crate) fn new(sources: Sources, auth: Auth) -> Self {
        State {
            sources,
            auth,
            control: tokio::sync::Mutex::new(Control::default()),
        }
    }

    /// The task's status from the control schema, at most [`STATUS_FRESH`] old.
    async fn status(&self) -> Result<TaskStatus, ApiError> {
        let mut control = self.control.lock().await;
        if let Some((at, s)) = &control.last
            && at.elapsed() < STATUS_FRESH
        {
            return Ok(s.clone());
        }
        let client = self.client(&mut control).await?;
        match pgferry_engine::status(client, &self.sources.task.name).await {
            Ok(s) => {
                control.last = Some((Instant::now(), s.clone()));
                Ok(s)
            }
            Err(e) => {
                control.client = None;
                Err(e.into())
            }
        }
    }

    async fn client<'a>(&self, control: &'a mut Control) -> Result<&'a PgClient, ApiError> {
        if control.client.as_ref().is_some_and(PgClient::is_closed) {
            control.client = None;
        }
        if control.client.is_none() {
            let c = pgferry_pg::connect(Side::Target, &self.sources.target, "pgferry http")
                .await
                .map_err(|e| ApiError::unavailable(format!("cannot reach the target: {e}")))?;
            control.client = Some(c);
        }
        control
            .client
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("no target connection".to_owned()))
    }
}

type Shared = Arc<State>;

/// Every error a client sees is JSON, as the docs promise: axum's own answers (a 405 with
/// an empty body, a plain-text rejection of bad query parameters) are rewritten into the
/// API's error shape, keeping their status.
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            format!(
                "{path} does not take {method}{}",
                allow
                    .as_ref()
                    .and_then(|a| a.to_str().ok())
                    .map(|a| format!("; it takes {a}"))
                    .unwrap_or_default()
            ),
        ),
        s if s.is_client_error() => ("bad_request", text),
        _ => ("internal", text),
    };
    let mut out = ApiError {
        status,
        code,
        message,
    }
    .into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// Without a token, the API answers only requests addressed to a loopback name: a web page
/// that rebinds its own DNS name to 127.0.0.1 must not read the task through the user's
/// browser. With a token, the token decides.
async fn loopback_host(
    Extract(state): Extract<Shared>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.auth.has_token() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !is_loopback_host(host) {
            return Err(ApiError::forbidden(
                "without a bearer token the server answers only requests for localhost, \
                 127.0.0.1 or [::1]; open it by one of those names, or set a token",
            ));
        }
    }
    Ok(next.run(request).await)
}

/// `localhost`, `127.0.0.1` (any 127/8 address) or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/api/v1/task", get(task))
        .route("/api/v1/tables", get(tables))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/events", get(events))
        .route("/api/v1/live", get(live))
        .route("/api/v1/series", get(series))
        .route("/api/v1/stop", post(stop))
        .route("/api/v1/assessment", get(assessment).post(assess_now))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .merge(api)
        .layer(middleware::from_fn_with_state(state.clone(), loopback_host))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

async fn authorize(
    Extract(state): Extract<Shared>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    state.auth.check(request.method(), request.headers())?;
    Ok(next.run(request).await)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {}; the API is under /api/v1/",
        request.method(),
        request.uri().path()
    ))
}

async fn metrics(Extract(state): Extract<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.sources.observer.metrics.render(),
    )
        .into_response()
}

async fn task(Extract(state): Extract<Shared>) -> Result<Json<TaskStatus>, ApiError> {
    state.status().await.map(Json)
}

/// One table as the dashboard lists it.
#[derive(Debug, Serialize)]
struct TableLive {
    table: String,
    state: String,
    rows: i64,
    bytes: i64,
    estimated_rows: Option<i64>,
    percent: f64,
    chunks_done: i64,
    chunks_total: i64,
    seconds: Option<f64>,
    rows_per_second: Option<f64>,
    bytes_per_second: Option<f64>,
}

fn rate(n: i64, seconds: Option<f64>) -> Option<f64> {
    seconds.filter(|s| *s > 0.0).map(|s| n as f64 / s)
}

async fn tables(Extract(state): Extract<Shared>) -> Result<Json<Vec<TableLive>>, ApiError> {
    let live = state.sources.progress.tables();
    if !live.is_empty() {
        return Ok(Json(
            live.iter()
                .map(|t| {
                    let started = *t.started.lock().unwrap_or_else(|p| p.into_inner());
                    let finished = *t.finished.lock().unwrap_or_else(|p| p.into_inner());
                    let seconds = started.map(|s| {
                        finished
                            .unwrap_or_else(Instant::now)
                            .duration_since(s)
                            .as_secs_f64()
                    });
                    let (rows, bytes) = (t.rows(), t.bytes());
                    TableLive {
                        table: t.name.to_string(),
                        state: t.state().as_str().to_owned(),
                        rows,
                        bytes,
                        estimated_rows: t.estimated_rows,
                        percent: t.fraction() * 100.0,
                        chunks_done: i64::from(
                            t.chunks_done.load(std::sync::atomic::Ordering::Relaxed),
                        ),
                        chunks_total: i64::from(t.chunks_total),
                        seconds,
                        rows_per_second: rate(rows, seconds),
                        bytes_per_second: rate(bytes, seconds),
                    }
                })
                .collect(),
        ));
    }
    // Nothing loaded in this process (a CDC-only task, or a resumed one): the control
    // schema's record.
    let status = state.status().await?;
    Ok(Json(status.tables.iter().map(from_status).collect()))
}

fn from_status(t: &TableStatus) -> TableLive {
    TableLive {
        table: t.table.clone(),
        state: t.state.clone(),
        rows: t.rows,
        bytes: t.bytes,
        estimated_rows: t.estimated_rows,
        percent: t.percent,
        chunks_done: i64::from(t.chunks_done),
        chunks_total: i64::from(t.chunks_total),
        seconds: t.seconds,
        rows_per_second: rate(t.rows, t.seconds),
        bytes_per_second: rate(t.bytes, t.seconds),
    }
}

#[derive(Debug, Serialize)]
struct AlarmsBody {
    alarms: Vec<pgferry_observe::AlarmView>,
    /// Declared alarms that are not evaluated, and why.
    inactive: Vec<serde_json::Value>,
}

async fn alarms(Extract(state): Extract<Shared>) -> Json<AlarmsBody> {
    Json(AlarmsBody {
        alarms: state.sources.observer.alarms(),
        inactive: state
            .sources
            .task
            .monitoring
            .inactive_alarms
            .iter()
            .map(|a| json!({ "name": a.name, "why": a.why }))
            .collect(),
    })
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    limit: Option<i64>,
}

async fn events(
    Extract(state): Extract<Shared>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<pgferry_engine::Event>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit is {limit}; it must be between 1 and 1000"
        )));
    }
    let mut control = state.control.lock().await;
    let client = state.client(&mut control).await?;
    match pgferry_engine::recent_events(client, &state.sources.task.name, limit).await {
        Ok(e) => Ok(Json(e)),
        Err(e) => {
            control.client = None;
            Err(e.into())
        }
    }
}

/// What this process knows right now, without a query: the dashboard's headline.
async fn live(Extract(state): Extract<Shared>) -> Json<serde_json::Value> {
    let p = &state.sources.progress;
    let tables = p.tables();
    let count = |s: TableState| tables.iter().filter(|t| t.state() == s).count();
    let weight: f64 = tables.iter().map(|t| t.estimated_bytes.max(1) as f64).sum();
    let done: f64 = tables
        .iter()
        .map(|t| t.fraction() * t.estimated_bytes.max(1) as f64)
        .sum();
    let cdc = p.cdc();
    let phase = p.phase();
    let load_progress = if tables.is_empty() {
        if cdc.is_some() || phase == "done" {
            1.0
        } else {
            0.0
        }
    } else {
        done / weight
    };
    let mut alarm_counts = serde_json::Map::new();
    let views = state.sources.observer.alarms();
    for s in AlarmState::ALL {
        alarm_counts.insert(
            s.as_str().to_owned(),
            views.iter().filter(|a| a.state == s).count().into(),
        );
    }
    Json(json!({
        "task": state.sources.task.name,
        "migration_type": state.sources.task.migration_type.as_str(),
        "phase": phase,
        "uptime_seconds": p.started.elapsed().as_secs_f64(),
        "load_progress": load_progress,
        "tables": {
            "total": tables.len(),
            "pending": count(TableState::Pending),
            "loading": count(TableState::Loading),
            "loaded": count(TableState::Loaded),
            "failed": count(TableState::Failed),
        },
        "full_load": {
            "rows": tables.iter().map(|t| t.rows()).sum::<i64>(),
            "bytes": tables.iter().map(|t| t.bytes()).sum::<i64>(),
        },
        "cdc": cdc.map(|c| json!({
            "source_lag_seconds": c.lag.source_ms.map(|ms| ms as f64 / 1000.0),
            "target_lag_seconds": c.lag.target_ms.map(|ms| ms as f64 / 1000.0),
            "applied": c.totals,
            "incoming": c.incoming,
            "applied_lsn": c.applied_lsn,
            "received_lsn": c.received_lsn,
            "wal_retained_bytes": c.wal_retained_bytes,
        })),
        "alarms": alarm_counts,
    }))
}

#[derive(Debug, Deserialize)]
struct SeriesQuery {
    since: Option<f64>,
}

async fn series(
    Extract(state): Extract<Shared>,
    Query(q): Query<SeriesQuery>,
) -> Json<pgferry_observe::Series> {
    Json(state.sources.observer.history.series(q.since))
}

/// The last assessment this process made: the run's preflight when it started, or a full
/// one asked for with `POST`.
async fn assessment(
    Extract(state): Extract<Shared>,
) -> Result<Json<pgferry_engine::Assessment>, ApiError> {
    state
        .sources
        .progress
        .assessment()
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(
                "no assessment yet: the run makes one when it starts; POST here for a full one"
                    .to_owned(),
            )
        })
}

/// A full assessment now, read-only on both servers (about the `--wal-sample` default
/// longer than a catalog read), kept as the last one.
async fn assess_now(
    Extract(state): Extract<Shared>,
) -> Result<Json<pgferry_engine::Assessment>, ApiError> {
    let task = &state.sources.task;
    let failed = |e: EngineError| ApiError::unavailable(format!("cannot assess: {e}"));
    let endpoints = pgferry_engine::Endpoints::resolve(task).map_err(failed)?;
    let depth = pgferry_engine::Depth::Full {
        wal_sample: Duration::from_secs(5),
        long_transaction: Duration::from_secs(300),
    };
    let a = pgferry_engine::assess(task, &endpoints, depth)
        .await
        .map_err(failed)?;
    state.sources.progress.set_assessment(a.clone());
    Ok(Json(a))
}

async fn stop(Extract(state): Extract<Shared>) -> (StatusCode, Json<serde_json::Value>) {
    let hook: &StopHook = &state.sources.stop;
    hook();
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "task": state.sources.task.name,
            "stopping": true,
            "message": "the run stops at the next transaction boundary and can be resumed"
        })),
    )
}
