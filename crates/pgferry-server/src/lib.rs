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

/// Everything the server shows, and how to reach the target for the control schema.
pub struct Sources {
    pub task: pgferry_config::Task,
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
