//! Errors of the PostgreSQL layer.
//!
//! Every variant says which side failed (source or target) and what failed, and
//! [`PgError::hint`] says what to do about it. Causes stay attached as `source`. Nothing here
//! formats a password or a row value: connection strings appear only through
//! [`crate::ConnInfo::describe`].

use pgferry_config::ErrorKind;
use std::fmt;

use crate::conninfo::ConnInfoError;

/// Which database an operation talked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{side} connection: {source}")]
    ConnInfo {
        side: Side,
        #[source]
        source: ConnInfoError,
    },

    #[error("cannot reach the {side} database at {endpoint}: {reason}")]
    Unreachable {
        side: Side,
        endpoint: String,
        reason: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The server has no connection slot left (SQLSTATE 53300): it is reachable, and busy.
    #[error("the {side} server at {endpoint} has no free connection slot: {reason}")]
    TooManyConnections {
        side: Side,
        endpoint: String,
        reason: String,
    },

    #[error("the {side} server at {endpoint} rejected user \"{user}\": {reason}")]
    AuthFailed {
        side: Side,
        endpoint: String,
        user: String,
        reason: String,
        password_origin: Option<String>,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("the {side} database \"{dbname}\" does not exist on {endpoint}")]
    DatabaseMissing {
        side: Side,
        endpoint: String,
        dbname: String,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("TLS with the {side} server at {endpoint} failed: {reason}")]
    Tls {
        side: Side,
        endpoint: String,
        reason: String,
    },

    /// A statement failed. `context` says what we were doing, in words.
    #[error("{side}: {context}: {}", describe_pg_error(.source))]
    Query {
        side: Side,
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },

    /// A prerequisite is missing: a setting, a privilege, an extension.
    #[error("{side}: {problem}")]
    Prerequisite {
        side: Side,
        problem: String,
        fix: String,
    },

    /// `pg_dump` or `pg_restore` failed or could not be run.
    #[error("{tool} failed: {message}")]
    Tool { tool: String, message: String },

    /// A server error on a connection pgferry speaks the protocol on itself (replication).
    #[error("{side}: {context}: {message} (SQLSTATE {code}){}", .detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Server {
        side: Side,
        context: String,
        code: String,
        message: String,
        detail: Option<String>,
    },

    /// The replication protocol broke in a way that is not an SQL error.
    #[error("{side}: replication protocol: {message}")]
    Protocol { side: Side, message: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// SQLSTATE classes and codes after which the same operation may succeed if tried again:
/// the connection, the server's resources (a full disk, memory, connection slots), an
/// operator or the system stopping the statement, a conflict with another session, a
/// target that is read-only for a while (a failover). None of them says anything about
/// the row, so nothing may be skipped for them.
fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: disk_full, out_of_memory, ...
        || code.starts_with("58") // system error: io_error, ...
        || matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available
                | "55006" // object_in_use
                | "57014" // query_canceled
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now
                | "57P05" // idle_session_timeout
                | "25006" // read_only_sql_transaction: a standby, or a failover under way
        )
}

/// Whether a server error is about the row itself, a value or a constraint the target
/// rejects, so that the task's data-error policy may decide what becomes of that change.
/// Every other error (resources, operators, the system, connections, privileges, a missing
/// table) stops or retries the batch instead, and the checkpoint stays before it.
pub fn sqlstate_is_data_error(code: &str) -> bool {
    code.starts_with("22") // data exception: a value the target cannot take
        || code.starts_with("23") // integrity constraint violation
        || code.starts_with("44") // WITH CHECK OPTION violation
        || code == "54000" // program_limit_exceeded: a row or index entry too large
}

impl PgError {
    pub fn query(side: Side, context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        PgError::Query {
            side,
            context: context.into(),
            source,
        }
    }

    /// Whether retrying the same operation can succeed: lost connections, servers
    /// restarting, lock conflicts. Bad credentials, missing privileges and bad input are
    /// definite.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// A lost connection, a restarting server or a conflict between sessions is transient;
    /// what the environment lacks (a password, a privilege, TLS, a tool) is a
    /// prerequisite; a connection string that cannot work is the user's to fix.
    pub fn kind(&self) -> ErrorKind {
        let transient_if = |yes: bool| {
            if yes {
                ErrorKind::Transient
            } else {
                ErrorKind::Failed
            }
        };
        match self {
            PgError::ConnInfo { .. } => ErrorKind::Usage,
            PgError::Unreachable { .. }
            | PgError::TooManyConnections { .. }
            | PgError::Protocol { .. }
            | PgError::Io { .. } => ErrorKind::Transient,
            PgError::Query { source, .. } => transient_if(is_transient(source)),
            PgError::Server { code, .. } => transient_if(sqlstate_is_transient(code)),
            PgError::AuthFailed { .. }
            | PgError::DatabaseMissing { .. }
            | PgError::Tls { .. }
            | PgError::Prerequisite { .. }
            | PgError::Tool { .. } => ErrorKind::Prerequisite,
        }
    }

    /// The SQLSTATE of the server error behind this one, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Server { code, .. } => Some(code),
            PgError::Query { source, .. }
            | PgError::AuthFailed { source, .. }
            | PgError::DatabaseMissing { source, .. }
            | PgError::Unreachable { source, .. } => {
                source.as_db_error().map(|db| db.code().code())
            }
            _ => None,
        }
    }

    /// What the user should do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            PgError::ConnInfo { source, .. } => match source {
                ConnInfoError::PasswordInString | ConnInfoError::Password(_) => None,
                ConnInfoError::InvalidValue {
                    from_env: Some(var),
                    ..
                } => Some(format!(
                    "fix or unset {var} in pgferry's environment; libpq reads it for every \
                     option the connection string leaves out"
                )),
                _ => Some(
                    "connection strings follow libpq: postgres://user@host:port/dbname?\
                     sslmode=require, or host=... port=... dbname=... user=..."
                        .to_owned(),
                ),
            },
            PgError::TooManyConnections { .. } => Some(
                "its max_connections is used up, by pgferry's workers (one connection to each \
                 server per job) and every other session: lower `jobs` in the task file or \
                 --jobs, close idle sessions, or raise max_connections (superuser_reserved_\
                 connections are kept for superusers)"
                    .to_owned(),
            ),
            PgError::Unreachable { .. } => Some(
                "check the host name and port, that the server is running and accepts TCP \
                 connections (listen_addresses), and that no firewall is in the way"
                    .to_owned(),
            ),
            PgError::AuthFailed {
                password_origin, ..
            } => Some(match password_origin {
                Some(origin) => format!(
                    "the password came from {origin}; check it, and check the server's \
                     pg_hba.conf entry for this user and host"
                ),
                None => "no password was given: set password_env, password_file or \
                         password_command in the task, or PGPASSWORD, or add the server to \
                         ~/.pgpass; and check pg_hba.conf"
                    .to_owned(),
            }),
            PgError::DatabaseMissing { dbname, .. } => Some(format!(
                "create it first (CREATE DATABASE \"{dbname}\") or fix dbname in the \
                 connection string"
            )),
            PgError::Tls { reason, .. } if reason.contains("not support TLS") => Some(
                "the server offers no TLS at all: turn on ssl in its postgresql.conf (RDS, \
                 Aurora and Cloud SQL always offer it), or, on a network you trust, use \
                 sslmode=prefer or sslmode=disable"
                    .to_owned(),
            ),
            PgError::Tls { .. } => Some(
                "check sslmode and sslrootcert: verify-ca and verify-full need sslrootcert to \
                 name the CA that signed the server's certificate, and verify-full also needs \
                 the host name the certificate names"
                    .to_owned(),
            ),
            PgError::Query { source, .. } => source
                .as_db_error()
                .and_then(|db| db.hint().map(str::to_owned)),
            PgError::Prerequisite { fix, .. } => Some(fix.clone()),
            PgError::Tool { .. } => Some(
                "pgferry runs pg_dump and pg_restore from the PostgreSQL client tools; their \
                 major version must be at least the source server's. Set PGFERRY_PG_BINDIR to \
                 choose a directory"
                    .to_owned(),
            ),
            PgError::Server { code, .. } if code == "55006" => Some(
                "another process is using the replication slot; stop it, or wait for the \
                 server to notice it is gone (wal_sender_timeout)"
                    .to_owned(),
            ),
            PgError::Server { code, .. } if code == "53400" => Some(
                "the source has no free replication slot or WAL sender: raise \
                 max_replication_slots and max_wal_senders, or drop unused slots"
                    .to_owned(),
            ),
            PgError::Server { .. } | PgError::Protocol { .. } | PgError::Io { .. } => None,
        }
    }
}

/// Whether a failed statement may succeed if tried again: a lost connection, a server
/// restarting, a lock conflict.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => sqlstate_is_transient(db.code().code()),
        None => e.is_closed() || is_io_error(e),
    }
}

fn is_io_error(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// A one-line account of a tokio-postgres error: the server's message and SQLSTATE with its
/// detail, or the client-side cause chain. Never the statement text, which may hold values.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str(": ");
            s.push_str(detail);
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_sqlstates_are_recognised() {
        assert!(sqlstate_is_transient("08006"));
        assert!(sqlstate_is_transient("57P01"));
        assert!(sqlstate_is_transient("40P01"));
        assert!(!sqlstate_is_transient("42P01"));
        assert!(!sqlstate_is_transient("28P01"));
    }

    #[test]
    fn prerequisite_errors_carry_their_fix() {
        let e = PgError::Prerequisite {
            side: Side::Source,
            problem: "wal_level is replica".into(),
            fix: "set wal_level = logical and restart".into(),
        };
        assert_eq!(e.to_string(), "source: wal_level is replica");
        assert_eq!(e.hint().unwrap(), "set wal_level = logical and restart");
        assert!(!e.is_retryable());
    }

    #[test]
    fn only_errors_about_the_row_are_data_errors() {
        for code in [
            "22P02", "22001", "23502", "23503", "23514", "44000", "54000",
        ] {
            assert!(sqlstate_is_data_error(code), "{code}");
            assert!(!sqlstate_is_transient(code), "{code}");
        }
        for code in [
            "53100", "53200", "53300", "57P01", "57014", "58030", "08006", "25006",
        ] {
            assert!(!sqlstate_is_data_error(code), "{code}");
            assert!(sqlstate_is_transient(code), "{code}");
        }
        // Definite, and not about the row: stops the stream.
        for code in ["42501", "42P01", "XX000"] {
            assert!(
                !sqlstate_is_data_error(code) && !sqlstate_is_transient(code),
                "{code}"
            );
        }
    }
}
