//! PostgreSQL plumbing for pgferry.
//!
//! Everything that speaks to a PostgreSQL server lives here, so the engine above can talk
//! in terms of tables, chunks and snapshots:
//!
//! * [`conninfo`]: libpq connection strings, `PG*` variables, password sources;
//! * [`tls`] and [`connect`]: connections with libpq's `sslmode` semantics, and errors that
//!   say why a connection failed;
//! * [`ident`]: the one place names become SQL;
//! * [`catalog`]: read-only catalog queries;
//! * [`copy`]: COPY pipes from source to target;
//! * [`dump`]: schema dump and per-object restore through `pg_dump` and `pg_restore`;
//! * [`replication`] and [`pgoutput`]: the logical replication stream and its decoding.

pub mod catalog;
pub mod connect;
pub mod conninfo;
pub mod copy;
pub mod dump;
pub mod error;
pub mod ident;
pub mod lsn;
pub mod pgoutput;
pub mod replication;
pub mod split;
pub mod tls;

pub use connect::{PgClient, connect, connect_as_application};
pub use conninfo::{ConnInfo, SslMode};
pub use error::{PgError, Side, describe_pg_error};
pub use ident::{QualifiedName, quote_ident, quote_literal};
pub use lsn::Lsn;
