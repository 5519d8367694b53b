//! A logical replication client: the streaming replication protocol, on a connection opened
//! with `replication=database`.
//!
//! pgferry speaks this protocol itself, on `postgres-protocol`'s message codecs, rather than
//! through a replication crate, for three reasons:
//! * one connection path: the same libpq-style [`ConnInfo`], the same rustls configuration
//!   per `sslmode` and the same error classification as every SQL connection;
//! * one session lifecycle under our control: the slot is created with an exported snapshot
//!   on a connection that stays idle while the full load imports that snapshot;
//! * exact feedback: the flush position sent to the server is exactly what the caller says
//!   the target has committed, never more.
//!
//! The client answers what the protocol needs (startup, authentication with cleartext,
//! MD5 or SCRAM-SHA-256, simple queries, CopyBoth streaming) and nothing more.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::connect::DEFAULT_CONNECT_TIMEOUT;
use crate::conninfo::{ConnInfo, SslMode};
use crate::error::{PgError, Side};
use crate::lsn::{Lsn, pg_timestamp_now};
use crate::tls;

/// Session settings for the walsender. pgoutput prints values in text form with the
/// session's settings, so these make that form canonical and parseable on any target.
pub const WALSENDER_OPTIONS: &str = "-c DateStyle=ISO,YMD -c IntervalStyle=postgres \
     -c extra_float_digits=3 -c TimeZone=UTC -c bytea_output=hex -c lc_monetary=C \
     -c statement_timeout=0";

/// Largest message accepted from the server: PostgreSQL's own limit on a value is 1 GB,
/// and a row can hold several; anything beyond this is a corrupt stream, not data.
const MAX_MESSAGE: usize = 2 << 30;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A server error received on the replication connection.
#[derive(Debug, Clone, Default)]
struct ServerError {
    code: String,
    message: String,
    detail: Option<String>,
}

/// What the server streams after `START_REPLICATION`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicationMessage {
    /// WAL data; for logical replication, one pgoutput message.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        send_time: i64,
        data: Bytes,
    },
    /// "I am alive, and the WAL ends here." `reply_requested` asks for a status update now.
    Keepalive {
        wal_end: Lsn,
        send_time: i64,
        reply_requested: bool,
    },
}

/// What `CREATE_REPLICATION_SLOT` returns.
#[derive(Debug, Clone)]
pub struct CreatedSlot {
    pub name: String,
    /// Changes committed after this position are streamed; those before are in the snapshot.
    pub consistent_point: Lsn,
    /// The exported snapshot, valid while this connection runs no other command.
    pub snapshot: Option<String>,
}

/// A connection in replication mode.
pub struct ReplicationClient {
    io: Pin<Box<dyn Io>>,
    read: BytesMut,
    write: BytesMut,
    side: Side,
    endpoint: String,
    user: String,
    streaming: bool,
    /// The server's major version, from its `server_version` parameter at startup.
    server_major: Option<u32>,
}

impl std::fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplicationClient({} {})", self.side, self.endpoint)
    }
}

fn io_err(side: Side, endpoint: &str, context: &str, e: io::Error) -> PgError {
    PgError::Protocol {
        side,
        message: format!("{context} ({endpoint}): {e}"),
    }
}

/// A string literal for the replication command grammar, which knows only plain
/// `'...'` strings (no `E'...'`), with embedded quotes doubled.
/// The major version in a `server_version` value: 13 for "13.16", 17 for "17beta1" or
/// "17.2 (Debian 17.2-1)".
fn parse_major(value: &[u8]) -> Option<u32> {
    let digits: Vec<u8> = value
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn command_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Checks that a slot or publication name needs no quoting: lower case letters, digits
/// and `_`, as PostgreSQL requires of slot names.
pub fn valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl ReplicationClient {
    /// The side this connection streams from.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Connects to the database of `info` in logical replication mode.
    pub async fn connect(
        side: Side,
        info: &ConnInfo,
        application_name: &str,
    ) -> Result<ReplicationClient, PgError> {
        let mut last = None;
        for (host, port) in info.hosts.iter().zip(&info.ports) {
            match Self::connect_host(side, info, host, *port, application_name).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| PgError::Protocol {
            side,
            message: "no host to connect to".to_owned(),
        }))
    }

    async fn connect_host(
        side: Side,
        info: &ConnInfo,
        host: &str,
        port: u16,
        application_name: &str,
    ) -> Result<ReplicationClient, PgError> {
        let endpoint = if host.starts_with('/') {
            format!("{host} (Unix socket, port {port})")
        } else {
            format!("{host}:{port}")
        };
        let timeout = info.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let unreachable = |reason: String| PgError::Protocol {
            side,
            message: format!("cannot open a replication connection to {endpoint}: {reason}"),
        };
        let io: Pin<Box<dyn Io>> = if host.starts_with('/') {
            let path = format!("{host}/.s.PGSQL.{port}");
            let stream = tokio::time::timeout(timeout, UnixStream::connect(&path))
                .await
                .map_err(|_| unreachable("timed out".to_owned()))?
                .map_err(|e| unreachable(e.to_string()))?;
            Box::pin(stream)
        } else {
            let mut stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
                .await
                .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs())))?
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = stream.set_nodelay(true);
            // The slot-creating connection may sit idle for the whole full load; keepalives
            // stop NATs and load balancers from dropping it, and notice a dead peer.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(10));
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
            match tls::client_config(side, info)? {
                None => Box::pin(stream),
                Some(config) => {
                    let mut buf = BytesMut::new();
                    frontend::ssl_request(&mut buf);
                    stream
                        .write_all(&buf)
                        .await
                        .map_err(|e| unreachable(e.to_string()))?;
                    let mut answer = [0u8; 1];
                    stream
                        .read_exact(&mut answer)
                        .await
                        .map_err(|e| unreachable(e.to_string()))?;
                    match answer[0] {
                        b'S' => {
                            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                                .map_err(|e| PgError::Tls {
                                    side,
                                    endpoint: endpoint.clone(),
                                    reason: format!("invalid server name {host}: {e}"),
                                })?;
                            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                                .connect(name, stream)
                                .await
                                .map_err(|e| PgError::Tls {
                                    side,
                                    endpoint: endpoint.clone(),
                                    reason: e.to_string(),
                                })?;
                            Box::pin(tls)
                        }
                        _ if matches!(
                            info.sslmode,
                            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
                        ) =>
                        {
                            return Err(PgError::Tls {
                                side,
                                endpoint,
                                reason: format!(
                                    "the server does not support TLS, and sslmode is {}",
                                    info.sslmode.as_str()
                                ),
                            });
                        }
                        _ => Box::pin(stream),
                    }
                }
            }
        };
        let mut client = ReplicationClient {
            io,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::with_capacity(1024),
            side,
            endpoint,
            user: info.user.clone(),
            streaming: false,
            server_major: None,
        };
        client.startup(info, application_name).await?;
        Ok(client)
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        let buf = self.write.split();
        self.io
            .write_all(&buf)
            .await
            .map_err(|e| io_err(self.side, &self.endpoint, "writing to the server", e))?;
        self.io
            .flush()
            .await
            .map_err(|e| io_err(self.side, &self.endpoint, "writing to the server", e))
    }

    /// Reads one backend message: its tag and body. Cancel-safe: bytes read stay buffered
    /// until a whole message is there.
    async fn read_message(&mut self) -> Result<(u8, Bytes), PgError> {
        loop {
            if self.read.len() >= 5 {
                let len =
                    u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                        as usize;
                if !(4..=MAX_MESSAGE).contains(&len) {
                    return Err(PgError::Protocol {
                        side: self.side,
                        message: format!("invalid message length {len} from the server"),
                    });
                }
                if self.read.len() > len {
                    let mut msg = self.read.split_to(len + 1).freeze();
                    let tag = msg.get_u8();
                    msg.advance(4);
                    return Ok((tag, msg));
                }
                self.read.reserve(len + 1 - self.read.len());
            }
            let n = self
                .io
                .read_buf(&mut self.read)
                .await
                .map_err(|e| io_err(self.side, &self.endpoint, "reading from the server", e))?;
            if n == 0 {
                return Err(PgError::Protocol {
                    side: self.side,
                    message: format!("the server at {} closed the connection", self.endpoint),
                });
            }
        }
    }

    fn parse_error(mut body: Bytes) -> ServerError {
        let mut e = ServerError::default();
        while body.has_remaining() {
            let field = body.get_u8();
            if field == 0 {
                break;
            }
            let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
            let value = String::from_utf8_lossy(&body.split_to(end)).into_owned();
            if body.has_remaining() {
                body.advance(1);
            }
            match field {
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                _ => {}
            }
        }
        e
    }

    fn server_error(&self, context: &str, e: ServerError) -> PgError {
        match e.code.as_str() {
            "53300" => PgError::TooManyConnections {
                side: self.side,
                endpoint: self.endpoint.clone(),
                reason: format!("{} (SQLSTATE 53300)", e.message),
            },
            "28000" | "28P01" => PgError::Prerequisite {
                side: self.side,
                problem: format!(
                    "the server at {} refused a replication connection for user \"{}\": {}",
                    self.endpoint, self.user, e.message
                ),
                fix: "logical replication connections match pg_hba.conf lines by database name \
                      (not \"replication\"); make sure a line allows this user from this host, \
                      and that the password is right"
                    .to_owned(),
            },
            "42501" => PgError::Prerequisite {
                side: self.side,
                problem: format!("{context}: {}", e.message),
                fix: format!(
                    "ALTER ROLE \"{}\" WITH REPLICATION; on RDS and Aurora, GRANT \
                     rds_replication TO \"{}\"",
                    self.user.replace('"', "\"\""),
                    self.user.replace('"', "\"\"")
                ),
            },
            _ => PgError::Server {
                side: self.side,
                context: context.to_owned(),
                code: e.code,
                message: e.message,
                detail: e.detail,
            },
        }
    }

    async fn startup(&mut self, info: &ConnInfo, application_name: &str) -> Result<(), PgError> {
        let options = match &info.options {
            Some(o) => format!("{o} {WALSENDER_OPTIONS}"),
            None => WALSENDER_OPTIONS.to_owned(),
        };
        let app = info.application_name.as_deref().unwrap_or(application_name);
        let params = [
            ("user", info.user.as_str()),
            ("database", info.dbname.as_str()),
            ("replication", "database"),
            ("application_name", app),
            ("client_encoding", "UTF8"),
            ("options", options.as_str()),
        ];
        frontend::startup_message(params, &mut self.write)
            .map_err(|e| io_err(self.side, &self.endpoint, "encoding the startup message", e))?;
        self.flush().await?;
        let password = info.password.as_ref().map(|p| p.expose_secret().to_owned());
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' => {
                    self.authenticate(body, info, password.as_deref(), &mut scram)
                        .await?
                }
                b'E' => {
                    let e = Self::parse_error(body);
                    return Err(self.server_error("opening a replication connection", e));
                }
                b'Z' => return Ok(()),
                b'S' => {
                    let mut fields = body.split(|b| *b == 0);
                    if fields.next() == Some(b"server_version") {
                        self.server_major = fields.next().and_then(parse_major);
                    }
                }
                // BackendKeyData, NoticeResponse.
                _ => {}
            }
        }
    }

    fn missing_password(&self) -> PgError {
        PgError::Prerequisite {
            side: self.side,
            problem: format!(
                "the server at {} asked for a password for \"{}\" and none was given",
                self.endpoint, self.user
            ),
            fix: "set password_env, password_file or password_command in the task, or \
                  PGPASSWORD, or ~/.pgpass"
                .to_owned(),
        }
    }

    /// Answers one authentication request: cleartext, MD5, or a SCRAM-SHA-256 step.
    async fn authenticate(
        &mut self,
        mut body: Bytes,
        info: &ConnInfo,
        password: Option<&str>,
        scram: &mut Option<ScramSha256>,
    ) -> Result<(), PgError> {
        let kind = body.get_i32();
        match kind {
            0 => {}
            3 => {
                let pw = password.ok_or_else(|| self.missing_password())?;
                frontend::password_message(pw.as_bytes(), &mut self.write)
                    .map_err(|e| io_err(self.side, &self.endpoint, "auth", e))?;
                self.flush().await?;
            }
            5 => {
                let pw = password.ok_or_else(|| self.missing_password())?;
                let mut salt = [0u8; 4];
                body.copy_to_slice(&mut salt);
                let hash = postgres_protocol::authentication::md5_hash(
                    info.user.as_bytes(),
                    pw.as_bytes(),
                    salt,
                );
                frontend::password_message(hash.as_bytes(), &mut self.write)
                    .map_err(|e| io_err(self.side, &self.endpoint, "auth", e))?;
                self.flush().await?;
            }
            10 => {
                let pw = password.ok_or_else(|| self.missing_password())?;
                let mechanisms = String::from_utf8_lossy(&body).into_owned();
                if !mechanisms.split('\0').any(|m| m == SCRAM_SHA_256) {
                    return Err(PgError::Protocol {
                        side: self.side,
                        message: format!(
                            "the server offers no supported SASL mechanism ({})",
                            mechanisms.replace('\0', " ")
                        ),
                    });
                }
                let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.write)
                    .map_err(|e| io_err(self.side, &self.endpoint, "auth", e))?;
                *scram = Some(s);
                self.flush().await?;
            }
            11 => {
                let s = scram.as_mut().ok_or_else(|| PgError::Protocol {
                    side: self.side,
                    message: "unexpected SASL continue".to_owned(),
                })?;
                s.update(&body)
                    .map_err(|e| io_err(self.side, &self.endpoint, "SCRAM", e))?;
                let msg = s.message().to_vec();
                frontend::sasl_response(&msg, &mut self.write)
                    .map_err(|e| io_err(self.side, &self.endpoint, "auth", e))?;
                self.flush().await?;
            }
            12 => {
                let s = scram.as_mut().ok_or_else(|| PgError::Protocol {
                    side: self.side,
                    message: "unexpected SASL final".to_owned(),
                })?;
                s.finish(&body)
                    .map_err(|e| io_err(self.side, &self.endpoint, "SCRAM", e))?;
            }
            other => {
                return Err(PgError::Protocol {
                    side: self.side,
                    message: format!(
                        "the server asks for an authentication method pgferry does \
                         not support ({other}); use scram-sha-256, md5 or trust"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Runs a replication command or SQL query with the simple query protocol and returns
    /// the rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        frontend::query(sql, &mut self.write)
            .map_err(|e| io_err(self.side, &self.endpoint, "encoding a query", e))?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, mut body) = self.read_message().await?;
            match tag {
                b'D' => {
                    let n = body.get_i16();
                    let mut row = Vec::with_capacity(n.max(0) as usize);
                    for _ in 0..n {
                        let len = body.get_i32();
                        if len < 0 {
                            row.push(None);
                        } else {
                            let v = body.split_to(len as usize);
                            row.push(Some(String::from_utf8_lossy(&v).into_owned()));
                        }
                    }
                    rows.push(row);
                }
                b'E' => error = Some(Self::parse_error(body)),
                b'Z' => break,
                // RowDescription, CommandComplete, EmptyQueryResponse, notices.
                _ => {}
            }
        }
        match error {
            Some(e) => Err(self.server_error("running a replication command", e)),
            None => Ok(rows),
        }
    }

    /// Creates a logical slot for pgoutput. With `export_snapshot`, the slot's starting
    /// point comes with a snapshot that sees exactly the changes before it; it stays valid
    /// until this connection runs another command.
    pub async fn create_slot(
        &mut self,
        name: &str,
        export_snapshot: bool,
    ) -> Result<CreatedSlot, PgError> {
        if !valid_slot_name(name) {
            return Err(PgError::Prerequisite {
                side: self.side,
                problem: format!("\"{name}\" is not a valid replication slot name"),
                fix: "slot names use lower case letters, digits and _, at most 63".to_owned(),
            });
        }
        // The pre-15 spelling, which every supported server version accepts.
        let snapshot = if export_snapshot {
            "EXPORT_SNAPSHOT"
        } else {
            "NOEXPORT_SNAPSHOT"
        };
        let rows = self
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {name} LOGICAL pgoutput {snapshot}"
            ))
            .await?;
        let row = rows.first().ok_or_else(|| PgError::Protocol {
            side: self.side,
            message: "CREATE_REPLICATION_SLOT returned no row".to_owned(),
        })?;
        let consistent_point = row
            .get(1)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| PgError::Protocol {
                side: self.side,
                message: "CREATE_REPLICATION_SLOT returned no consistent point".to_owned(),
            })?;
        Ok(CreatedSlot {
            name: name.to_owned(),
            consistent_point,
            snapshot: row.get(2).cloned().flatten(),
        })
    }

    /// The server's major version (13 for 13.16), when it said.
    pub fn server_major(&self) -> Option<u32> {
        self.server_major
    }

    /// Starts streaming changes of `publications` from `slot`, from `start`.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        publications: &[String],
        binary: bool,
    ) -> Result<(), PgError> {
        let names = publications
            .iter()
            .map(|p| crate::ident::quote_ident(p))
            .collect::<Vec<_>>()
            .join(",");
        let mut options = format!(
            "proto_version '1', publication_names {}",
            command_literal(&names)
        );
        // Logical messages (pgferry's heartbeats) came to pgoutput in 14; older servers
        // refuse the option.
        if self.server_major.is_some_and(|m| m >= 14) {
            options.push_str(", messages 'true'");
        }
        if binary {
            options.push_str(", binary 'true'");
        }
        let sql = format!("START_REPLICATION SLOT {slot} LOGICAL {start} ({options})");
        frontend::query(&sql, &mut self.write)
            .map_err(|e| io_err(self.side, &self.endpoint, "encoding START_REPLICATION", e))?;
        self.flush().await?;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'W' => {
                    self.streaming = true;
                    return Ok(());
                }
                b'E' => {
                    let e = Self::parse_error(body);
                    // Consume up to ReadyForQuery so the connection stays usable.
                    loop {
                        let (tag, _) = self.read_message().await?;
                        if tag == b'Z' {
                            break;
                        }
                    }
                    return Err(self.server_error("starting replication", e));
                }
                _ => {}
            }
        }
    }

    /// Whether a whole message is already buffered, so [`recv`](Self::recv) returns it
    /// without waiting for the network. Lets a reader take what arrived in one go.
    pub fn has_buffered_message(&self) -> bool {
        self.read.len() >= 5
            && (u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                as usize)
                < self.read.len()
    }

    /// The next message of the stream. Cancel-safe.
    pub async fn recv(&mut self) -> Result<ReplicationMessage, PgError> {
        loop {
            let (tag, mut body) = self.read_message().await?;
            match tag {
                b'd' => {
                    if !body.has_remaining() {
                        continue;
                    }
                    let kind = body.get_u8();
                    match kind {
                        b'w' if body.remaining() >= 24 => {
                            let wal_start = Lsn(body.get_u64());
                            let wal_end = Lsn(body.get_u64());
                            let send_time = body.get_i64();
                            return Ok(ReplicationMessage::XLogData {
                                wal_start,
                                wal_end,
                                send_time,
                                data: body,
                            });
                        }
                        b'k' if body.remaining() >= 17 => {
                            let wal_end = Lsn(body.get_u64());
                            let send_time = body.get_i64();
                            let reply_requested = body.get_u8() == 1;
                            return Ok(ReplicationMessage::Keepalive {
                                wal_end,
                                send_time,
                                reply_requested,
                            });
                        }
                        other => {
                            return Err(PgError::Protocol {
                                side: self.side,
                                message: format!(
                                    "unexpected replication message {:?}",
                                    other as char
                                ),
                            });
                        }
                    }
                }
                b'E' => {
                    let e = Self::parse_error(body);
                    return Err(self.server_error("streaming changes", e));
                }
                b'c' => {
                    return Err(PgError::Protocol {
                        side: self.side,
                        message: "the server ended the replication stream".to_owned(),
                    });
                }
                // Notices and parameter changes.
                _ => {}
            }
        }
    }

    /// Tells the server how far the target has come. `flushed` is what the server may
    /// forget: pgferry passes only positions whose changes the target has committed.
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        applied: Lsn,
        reply_requested: bool,
    ) -> Result<(), PgError> {
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(written.0);
        payload.put_u64(flushed.0);
        payload.put_u64(applied.0);
        payload.put_i64(pg_timestamp_now());
        payload.put_u8(u8::from(reply_requested));
        self.write.put_u8(b'd');
        self.write.put_i32(4 + payload.len() as i32);
        self.write.put_slice(&payload);
        self.flush().await
    }

    /// Whether the connection is in the streaming state.
    pub fn is_streaming(&self) -> bool {
        self.streaming
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_commands_get_plain_literals() {
        assert_eq!(
            command_literal("\"pgferry_default\""),
            "'\"pgferry_default\"'"
        );
        assert_eq!(command_literal("it's"), "'it''s'");
    }

    #[test]
    fn server_versions_give_their_major() {
        assert_eq!(parse_major(b"13.16"), Some(13));
        assert_eq!(parse_major(b"17beta1"), Some(17));
        assert_eq!(parse_major(b"15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(parse_major(b"junk"), None);
    }

    #[test]
    fn slot_names_need_no_quoting() {
        assert!(valid_slot_name("pgferry_default"));
        assert!(!valid_slot_name("Pgferry"));
        assert!(!valid_slot_name(""));
        assert!(!valid_slot_name(&"a".repeat(64)));
    }
}
