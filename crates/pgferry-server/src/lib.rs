//! pgferry's HTTP side, served by `pgferry run --http`: the dashboard, `/metrics` for
//! Prometheus, and a versioned JSON API.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard (assets embedded in the binary; no internet needed) |
//! | `GET /metrics` | every metric, Prometheus text format |
//! | `GET /api/v1/task` | what `pgferry status --json` prints |
//! | `GET /api/v1/tables` | per-table state with live rows and throughput |
//! | `GET /api/v1/alarms` | each alarm's rule, state and reason |
//! | `GET /api/v1/events` | the task's event log, newest last |
//! | `GET /api/v1/live` | phase, progress, lag and totals of this process, from memory |
//! | `GET /api/v1/series` | chart history (`?since=` seconds since the epoch) |
//! | `GET /api/v1/assessment` | the last assessment: the run's preflight, or the last full one |
//! | `POST /api/v1/assessment` | a full assessment now, read-only (always needs the bearer token) |
//! | `POST /api/v1/stop` | stop the run cleanly (always needs the bearer token) |
//!
//! Errors are `{"error": {"code": ..., "message": ...}}` with a matching status.
//! Nothing here touches the data path: metrics and live figures come from memory, and the
//! control-schema reads use the server's own connection, at most once a second.

mod api;
mod assets;
mod auth;

use std::net::SocketAddr;
use std::sync::Arc;

use pgferry_engine::RunProgress;
use pgferry_observe::Observer;
use secrecy::SecretString;
use tokio::task::JoinHandle;

pub use api::ApiError;

/// What `POST /api/v1/stop` does: the binary decides how a run stops.
pub type StopHook = Arc<dyn Fn() + Send + Sync>;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "serving on {0} reaches beyond this machine, so the API needs a bearer token: set \
         PGFERRY_HTTP_TOKEN (or http.token_env, token_file or token_command in the task file), \
         or serve on 127.0.0.1"
    )]
    TokenNeeded(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl ServerError {
    /// A token the address needs is the user's to give; a port that cannot be bound is the
    /// environment's.
    pub fn kind(&self) -> pgferry_config::ErrorKind {
        match self {
            ServerError::TokenNeeded(_) => pgferry_config::ErrorKind::Usage,
            ServerError::Bind { .. } => pgferry_config::ErrorKind::Prerequisite,
        }
    }
}

/// Everything the server shows, and how to reach the target for the control schema.
pub struct Sources {
    pub task: pgferry_config::Task,
    /// The target, for the control schema.
    pub target: pgferry_pg::ConnInfo,
    pub observer: Arc<Observer>,
    pub progress: Arc<RunProgress>,
    pub stop: StopHook,
}

/// A server that is listening.
#[derive(Debug)]
pub struct Server {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    handle: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves until [`Server::shutdown`]. A non-loopback address needs a
    /// token; without TLS it is served anyway, with a warning, since a TLS-terminating
    /// proxy in front is the usual setup.
    pub async fn start(
        addr: SocketAddr,
        token: Option<SecretString>,
        sources: Sources,
    ) -> Result<Server, ServerError> {
        let loopback = addr.ip().is_loopback();
        if !loopback && token.is_none() {
            return Err(ServerError::TokenNeeded(addr));
        }
        if !loopback {
            tracing::warn!(
                %addr,
                "serving plain HTTP beyond loopback: the bearer token and the task's details \
                 cross the network unencrypted; put a TLS-terminating proxy in front"
            );
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let state = Arc::new(api::State::new(sources, auth::Auth::new(token, !loopback)));
        let app = api::router(state);
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("the HTTP server stopped: {e}");
            }
        });
        tracing::info!("dashboard and API on http://{addr}/");
        Ok(Server { addr, handle })
    }

    pub fn shutdown(self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgferry_config::{MigrationType, Task};
    use pgferry_testkit::http;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    fn sources(stopped: Arc<AtomicBool>) -> Sources {
        // Nothing listens on port 1: the control schema is unreachable on purpose.
        let task = Task::new(
            MigrationType::FullLoad,
            "postgres://u@127.0.0.1:1/db?connect_timeout=2",
            "postgres://u@127.0.0.1:1/db?connect_timeout=2",
        );
        let target = pgferry_engine::Endpoints::resolve(&task).unwrap().target;
        Sources {
            task,
            target,
            observer: Arc::new(Observer::new(Vec::new(), Duration::from_secs(60), 10)),
            progress: Arc::new(RunProgress::default()),
            stop: Arc::new(move || stopped.store(true, Ordering::Relaxed)),
        }
    }

    #[tokio::test]
    async fn beyond_loopback_a_token_is_required() {
        let stopped = Arc::new(AtomicBool::new(false));
        let addr: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let err = Server::start(addr, None, sources(stopped))
            .await
            .unwrap_err();
        assert!(matches!(err, ServerError::TokenNeeded(_)), "{err}");
        assert!(err.to_string().contains("PGFERRY_HTTP_TOKEN"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn routes_errors_and_the_stop_hook() {
        let stopped = Arc::new(AtomicBool::new(false));
        let server = Server::start(
            "127.0.0.1:0".parse().unwrap(),
            Some(SecretString::from("tok")),
            sources(stopped.clone()),
        )
        .await
        .unwrap();
        let port = server.addr.port();
        let get = move |path: &'static str| {
            tokio::task::spawn_blocking(move || http::request(port, "GET", path, &[], b"").unwrap())
        };
        let page = get("/").await.unwrap();
        assert_eq!(page.status, 200);
        assert!(page.text().contains("/assets/uPlot.iife.min.js"));
        assert!(page.headers["content-security-policy"].contains("default-src 'self'"));
        let uplot = get("/assets/uPlot.iife.min.js").await.unwrap();
        assert_eq!(uplot.status, 200);
        assert!(uplot.body.len() > 40_000);
        assert_eq!(get("/assets/nope.js").await.unwrap().status, 404);
        let live = get("/api/v1/live").await.unwrap();
        assert_eq!(live.json()["phase"], "starting");
        let metrics = get("/metrics").await.unwrap();
        assert_eq!(metrics.status, 200);
        // The control schema cannot be reached: 503 with the error body.
        let task = get("/api/v1/task").await.unwrap();
        assert_eq!(task.status, 503);
        assert_eq!(task.json()["error"]["code"], "unavailable");
        let bad = get("/api/v1/events?limit=0").await.unwrap();
        assert_eq!(bad.status, 400);
        assert_eq!(bad.json()["error"]["code"], "bad_request");

        let post = move |auth: Option<&'static str>| {
            tokio::task::spawn_blocking(move || {
                let headers: Vec<(&str, &str)> =
                    auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
                http::request(port, "POST", "/api/v1/stop", &headers, b"").unwrap()
            })
        };
        assert_eq!(post(None).await.unwrap().status, 401);
        assert!(!stopped.load(Ordering::Relaxed));
        let ok = post(Some("Bearer tok")).await.unwrap();
        assert_eq!(ok.status, 202);
        assert!(stopped.load(Ordering::Relaxed));
        server.shutdown();
    }
}
