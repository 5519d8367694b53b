//! Opening SQL connections, and telling the user precisely why one could not be opened.

use std::time::Duration;

use secrecy::ExposeSecret;
use tokio_postgres::config::{SslMode as TpSslMode, TargetSessionAttrs};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::conninfo::{ConnInfo, SslMode};
use crate::error::{PgError, Side, describe_pg_error};
use crate::tls;

/// How long to wait for a server that does not answer, when the connection string sets no
/// `connect_timeout`. libpq waits forever; a migration tool that hangs on a typo in a host
/// name is worse than one that gives up after 15 seconds and says why.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// TCP keepalive idle time. A dead peer behind a NAT or load balancer is noticed within
/// about a minute instead of the kernel's default two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// A connection to one side, whose errors say which side and what we were doing.
pub struct PgClient {
    client: tokio_postgres::Client,
    side: Side,
}

impl std::fmt::Debug for PgClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgClient({})", self.side)
    }
}

impl PgClient {
    pub fn side(&self) -> Side {
        self.side
    }

    /// The underlying client, for COPY and other calls this wrapper does not cover.
    pub fn raw(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// The underlying client, mutably, for transactions.
    pub fn raw_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }

    pub fn err(&self, context: &str, e: tokio_postgres::Error) -> PgError {
        PgError::query(self.side, context, e)
    }

    pub async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        self.client
            .query(sql, params)
            .await
            .map_err(|e| self.err(context, e))
    }

    pub async fn query_one(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, PgError> {
        self.client
            .query_one(sql, params)
            .await
            .map_err(|e| self.err(context, e))
    }

    pub async fn query_opt(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError> {
        self.client
            .query_opt(sql, params)
            .await
            .map_err(|e| self.err(context, e))
    }

    pub async fn execute(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, PgError> {
        self.client
            .execute(sql, params)
            .await
            .map_err(|e| self.err(context, e))
    }

    /// Runs one or more statements with the simple query protocol.
    pub async fn batch(&self, context: &str, sql: &str) -> Result<(), PgError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| self.err(context, e))
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// pgferry's own sessions write through a cutover's fence: the database's read-only default
/// is for the application, not for the applier or the control schema.
const READ_WRITE: &str = "-c default_transaction_read_only=off";

fn tokio_config(info: &ConnInfo, application_name: &str, as_app: bool) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    for (host, port) in info.hosts.iter().zip(&info.ports) {
        config.host(host);
        config.port(*port);
    }
    config.user(&info.user);
    config.dbname(&info.dbname);
    if let Some(pw) = &info.password {
        config.password(pw.expose_secret());
    }
    config.application_name(info.application_name.as_deref().unwrap_or(application_name));
    let options = match (&info.options, as_app) {
        (Some(o), true) => Some(o.clone()),
        (Some(o), false) => Some(format!("{o} {READ_WRITE}")),
        (None, true) => None,
        (None, false) => Some(READ_WRITE.to_owned()),
    };
    if let Some(options) = &options {
        config.options(options);
    }
    config.connect_timeout(info.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT));
    config.keepalives(true);
    config.keepalives_idle(KEEPALIVE_IDLE);
    config.ssl_mode(match info.sslmode {
        SslMode::Disable => TpSslMode::Disable,
        SslMode::Allow | SslMode::Prefer => TpSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => TpSslMode::Require,
    });
    if info.target_session_attrs.as_deref() == Some("read-write") {
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    }
    config
}

/// Opens a connection. `application_name` shows in `pg_stat_activity` unless the connection
/// string sets its own.
pub async fn connect(
    side: Side,
    info: &ConnInfo,
    application_name: &str,
) -> Result<PgClient, PgError> {
    open(side, info, application_name, false).await
}

/// [`connect`] as the application would: the session starts read-only where the database
/// says so (a cutover's write probe checks the fence is gone).
pub async fn connect_as_application(
    side: Side,
    info: &ConnInfo,
    application_name: &str,
) -> Result<PgClient, PgError> {
    open(side, info, application_name, true).await
}

async fn open(
    side: Side,
    info: &ConnInfo,
    application_name: &str,
    as_app: bool,
) -> Result<PgClient, PgError> {
    let config = tokio_config(info, application_name, as_app);
    let client = match tls::client_config(side, info)? {
        None => {
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|e| classify_connect_error(side, info, e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
            });
            client
        }
        Some(tls_config) => {
            let (client, connection) = config
                .connect(MakeRustlsConnect::new(tls_config))
                .await
                .map_err(|e| classify_connect_error(side, info, e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection closed with an error");
                }
            });
            client
        }
    };
    Ok(PgClient { client, side })
}

fn io_kind(e: &tokio_postgres::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// Turns a failed connection attempt into the error a DBA can act on.
pub(crate) fn classify_connect_error(
    side: Side,
    info: &ConnInfo,
    e: tokio_postgres::Error,
) -> PgError {
    let endpoint = info.endpoint();
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let reason = format!("{} (SQLSTATE {code})", db.message());
        return match code {
            "28P01" | "28000" => PgError::AuthFailed {
                side,
                endpoint,
                user: info.user.clone(),
                reason,
                password_origin: info.password_origin.clone(),
                source: e,
            },
            "53300" => PgError::TooManyConnections {
                side,
                endpoint,
                reason,
            },
            "3D000" => PgError::DatabaseMissing {
                side,
                endpoint,
                dbname: info.dbname.clone(),
                source: e,
            },
            _ => PgError::Unreachable {
                side,
                endpoint,
                reason,
                source: e,
            },
        };
    }
    let text = describe_pg_error(&e);
    if text.contains("password missing") {
        return PgError::AuthFailed {
            side,
            endpoint,
            user: info.user.clone(),
            reason: "the server asked for a password and none was given".to_owned(),
            password_origin: None,
            source: e,
        };
    }
    if text.contains("TLS") || text.contains("certificate") || text.contains("tls") {
        return PgError::Tls {
            side,
            endpoint,
            reason: text,
        };
    }
    let reason = match io_kind(&e) {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            "connection refused: nothing listens on that port".to_owned()
        }
        Some(std::io::ErrorKind::TimedOut) => "the connection attempt timed out".to_owned(),
        _ if text.contains("timeout") => format!(
            "no answer within {} s",
            info.connect_timeout
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
                .as_secs()
        ),
        _ => text,
    };
    PgError::Unreachable {
        side,
        endpoint,
        reason,
        source: e,
    }
}
