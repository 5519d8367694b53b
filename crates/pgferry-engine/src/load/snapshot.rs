//! The source snapshot that every COPY of a load reads.
//!
//! One connection exports a snapshot and keeps it alive; every worker imports it with
//! `SET TRANSACTION SNAPSHOT` before its COPY, so all chunks of all tables see the source
//! at the same instant. The exporting session must stay open until the last worker has
//! imported it; dropping the holder ends it.
//!
//! Two kinds of holder:
//! * with CDC, the replication connection that created the slot: its snapshot sees exactly
//!   the transactions committed before the slot's consistent point, so the stream starts
//!   where the copy ends, with no gap and no overlap;
//! * otherwise (and when a CDC load resumes after losing the slot's snapshot), a plain
//!   `REPEATABLE READ` transaction with `pg_export_snapshot()`. It also records which
//!   transactions it sees (`txid_current_snapshot()`), so changes the copy already holds
//!   can be told apart from those it does not.

use pgferry_pg::dump::set_snapshot_sql;
use pgferry_pg::replication::ReplicationClient;
use pgferry_pg::{ConnInfo, PgClient, Side};

use crate::error::Result;
use crate::session;

enum Holder {
    Sql(PgClient),
    /// Kept only so the connection, and with it the snapshot, stays open.
    Slot {
        _connection: Box<ReplicationClient>,
    },
}

/// An exported snapshot, held open.
pub struct SnapshotHolder {
    holder: Holder,
    name: String,
    /// `xmin:xmax:xip` of a SQL-exported snapshot.
    visibility: Option<String>,
}

impl std::fmt::Debug for SnapshotHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotHolder({})", self.name)
    }
}

impl SnapshotHolder {
    /// Exports a snapshot of the source's current state.
    pub async fn export(info: &ConnInfo) -> Result<Self> {
        let client = pgferry_pg::connect(Side::Source, info, "pgferry snapshot").await?;
        client
            .batch(
                "opening the snapshot transaction",
                &format!(
                    "{} BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;",
                    session::source_reader()
                ),
            )
            .await?;
        let row = client
            .query_one(
                "exporting a snapshot",
                // The WAL position after the snapshot: every transaction it sees committed
                // before it (see `SnapshotFilter::saw_commit`).
                "SELECT pg_export_snapshot(), txid_current_snapshot()::text ||
                        coalesce('@' || CASE WHEN pg_is_in_recovery()
                                             THEN pg_last_wal_replay_lsn()
                                             ELSE pg_current_wal_insert_lsn() END::text, '')",
                &[],
            )
            .await?;
        Ok(SnapshotHolder {
            name: row.get(0),
            visibility: Some(row.get(1)),
            holder: Holder::Sql(client),
        })
    }

    /// The snapshot a replication slot was created with, held by the connection that
    /// created it.
    pub fn from_slot(client: ReplicationClient, name: String) -> Self {
        SnapshotHolder {
            holder: Holder::Slot {
                _connection: Box::new(client),
            },
            name,
            visibility: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which transactions the snapshot sees, for a SQL-exported one.
    pub fn visibility(&self) -> Option<&str> {
        self.visibility.as_deref()
    }

    /// Whether the exporting session may still be alive.
    pub fn is_alive(&self) -> bool {
        match &self.holder {
            Holder::Sql(c) => !c.is_closed(),
            Holder::Slot { .. } => true,
        }
    }
}

/// Opens a source connection whose transaction sees `snapshot`, for reading the catalog
/// and contents consistently with the copy.
pub async fn reader(info: &ConnInfo, snapshot: &str, purpose: &str) -> Result<PgClient> {
    let client = pgferry_pg::connect(Side::Source, info, purpose).await?;
    client
        .batch("setting up the source session", &session::source_reader())
        .await?;
    client
        .batch(
            "importing the snapshot",
            &format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {};",
                set_snapshot_sql(snapshot)
            ),
        )
        .await?;
    Ok(client)
}
