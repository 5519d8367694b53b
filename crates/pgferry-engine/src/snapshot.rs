//! The source snapshot that every COPY of a load reads.
//!
//! One connection exports a snapshot and keeps its transaction open; every worker imports
//! it with `SET TRANSACTION SNAPSHOT` before its COPY, so all chunks of all tables see the
//! source at the same instant. The exporting transaction must stay open until the last
//! worker has imported it; dropping the holder ends it. (With CDC, the snapshot comes from
//! creating the replication slot instead, so the stream starts exactly where the copy ends.)

use pgferry_pg::dump::set_snapshot_sql;
use pgferry_pg::{ConnInfo, PgClient, Side};

use crate::error::Result;
use crate::session;

/// An exported snapshot, held open.
pub struct SnapshotHolder {
    client: PgClient,
    name: String,
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
            .query_one("exporting a snapshot", "SELECT pg_export_snapshot()", &[])
            .await?;
        Ok(SnapshotHolder {
            name: row.get(0),
            client,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the exporting session is still alive; if not, the snapshot is gone.
    pub fn is_alive(&self) -> bool {
        !self.client.is_closed()
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
