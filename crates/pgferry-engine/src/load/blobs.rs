//! Large objects: copied after the tables, from the load's snapshot, with their OIDs kept,
//! so the `oid` columns that point at them point at the same objects on the target.
//!
//! Each object is copied in one target transaction: a copy an earlier attempt left is
//! unlinked, the object is created with the source's OID and written in pieces of
//! [`PIECE`] bytes read with `lo_get(oid, offset, length)`, so memory stays bounded
//! whatever an object's size. A crash leaves every object whole or absent, and the task
//! still in `loading`; the next run copies the objects again (replacing those present)
//! before the load is recorded done.
//!
//! Logical decoding does not carry large objects: a CDC task has them as of the load's
//! snapshot, and later changes to them are not streamed (planning warns).
//! Ownership and grants are not copied: the target user owns the copies.

use pgferry_pg::{ConnInfo, PgClient, PgError, Side};

use crate::error::{EngineError, Result};
use crate::load::snapshot;

/// Bytes read and written at a time.
const PIECE: i64 = 1024 * 1024;

/// How many large objects the source has, as seen by `client`.
pub async fn count(client: &PgClient) -> Result<i64> {
    Ok(client
        .query_one(
            "counting large objects",
            "SELECT count(*) FROM pg_catalog.pg_largeobject_metadata",
            &[],
        )
        .await?
        .get(0))
}

/// Copies every large object the snapshot sees. Returns how many.
pub async fn copy_all(
    source: &ConnInfo,
    snapshot_name: &str,
    target: &mut PgClient,
) -> Result<u64> {
    let reader = snapshot::reader(source, snapshot_name, "pgferry large objects")
        .await
        .map_err(|e| match &e {
            EngineError::Pg(pg) if pg.sqlstate() == Some("22023") => EngineError::SnapshotLost,
            _ => e,
        })?;
    let oids: Vec<u32> = reader
        .query(
            "listing large objects",
            "SELECT oid FROM pg_catalog.pg_largeobject_metadata ORDER BY oid",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for oid in &oids {
        copy_one(&reader, target, *oid).await?;
    }
    if !oids.is_empty() {
        tracing::info!(objects = oids.len(), "large objects copied");
    }
    Ok(oids.len() as u64)
}

async fn copy_one(reader: &PgClient, target: &mut PgClient, oid: u32) -> Result<()> {
    let err =
        |context: &'static str| move |e| EngineError::Pg(PgError::query(Side::Target, context, e));
    let tx = target
        .raw_mut()
        .transaction()
        .await
        .map_err(err("copying a large object"))?;
    tx.execute(
        "SELECT lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1",
        &[&oid],
    )
    .await
    .map_err(err("replacing a large object"))?;
    tx.execute("SELECT lo_create($1)", &[&oid])
        .await
        .map_err(err("creating a large object"))?;
    let mut offset: i64 = 0;
    loop {
        let piece: Vec<u8> = reader
            .query_one(
                "reading a large object",
                "SELECT lo_get($1, $2, $3::int)",
                &[&oid, &offset, &(PIECE as i32)],
            )
            .await
            .map_err(|e| large_object_error(e, oid))?
            .get(0);
        if piece.is_empty() {
            break;
        }
        tx.execute("SELECT lo_put($1, $2, $3)", &[&oid, &offset, &piece])
            .await
            .map_err(err("writing a large object"))?;
        offset += piece.len() as i64;
        if (piece.len() as i64) < PIECE {
            break;
        }
    }
    tx.commit().await.map_err(err("copying a large object"))
}

fn large_object_error(e: PgError, oid: u32) -> EngineError {
    if e.sqlstate() == Some("42501") {
        return EngineError::Pg(PgError::Prerequisite {
            side: Side::Source,
            problem: format!("the source user may not read large object {oid}: {e}"),
            fix: "GRANT SELECT ON LARGE OBJECT ... TO the source user for each object, or run \
                  as their owner (or set lo_compat_privileges = on on the source)"
                .to_owned(),
        });
    }
    EngineError::Pg(e)
}
