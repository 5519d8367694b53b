//! A `full-load-and-cdc` load that lost its snapshot (pgferry killed, the source restarted)
//! goes on from a new one, without losing or doubling a row.
//!
//! The stream always starts at the slot's consistent point, where the first snapshot was
//! taken, so every change after it is in the stream. What changes is which of those
//! changes the target already holds:
//! * **a table split by a key in its replica identity** (not a partition) keeps its
//!   finished chunks, whatever the key's type: they
//!   hold their key ranges as the first snapshot saw them, and get every change. Its other
//!   chunks are copied from the new snapshot and record its visibility: changes of
//!   transactions it saw are not applied to rows of those key ranges again
//!   ([`crate::cdc::chunks`] says why that is exact, key changes included);
//! * **any other table** that was partly copied is emptied and copied again whole from the
//!   new snapshot (with block ranges a row can move from a block range not yet copied to one
//!   already copied, so chunks from two snapshots could miss or double it), and records the
//!   new snapshot's visibility for the whole table;
//! * a table not started at all is copied from the new snapshot with the same table-wide
//!   filter; a table finished under the first snapshot is kept as it is.
//!
//! A recorded snapshot is its visibility and the source's WAL position when it was taken:
//! a transaction that commits after that position was not seen, so a stream that runs for
//! days never mistakes a new transaction for a seen one when 32-bit xids wrap around.
//!
//! Everything is decided and recorded in one target transaction: a crash before it
//! commits leaves the state as it was, and the next run does the same again.

use std::collections::HashMap;

use pgferry_pg::{PgClient, PgError, QualifiedName, Side};
use tokio_postgres::Transaction;

use crate::control::{self, StoredTable};
use crate::error::{EngineError, Result};

/// Records the new snapshot (`visibility`, `xmin:xmax:xip`) against what the load has
/// left to copy. Returns a note for the event log.
pub(crate) async fn resync_for_new_snapshot(
    control_client: &mut PgClient,
    task: &str,
    visibility: &str,
) -> Result<String> {
    // A partitioned table's partitions share one relation in the stream.
    let mut relations: HashMap<QualifiedName, Vec<StoredTable>> = HashMap::new();
    for t in control::stored_tables(control_client, task).await? {
        relations.entry(t.relation.clone()).or_default().push(t);
    }
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "resuming the load", e));
    let tx = control_client.raw_mut().transaction().await.map_err(err)?;
    let (mut reset, mut resumed, mut filtered) = (0, 0, 0);
    for (relation, parts) in &relations {
        if parts.iter().all(|p| p.chunks_done >= p.chunks_total) {
            continue;
        }
        if let [part] = parts.as_slice()
            && part.resumes_by_chunk
        {
            control::keep_finished_chunks(&tx, task, part.table_id, relation, visibility).await?;
            resumed += 1;
            continue;
        }
        if parts.iter().any(|p| p.chunks_done > 0) {
            empty_again(&tx, task, parts).await?;
            reset += 1;
        }
        control::set_snapshot_filter(&tx, task, relation, visibility).await?;
        filtered += 1;
    }
    tx.commit().await.map_err(err)?;
    Ok(format!(
        "{resumed} partly copied table(s) split by a key keep their finished chunks \
         and copy the rest from the new snapshot; {reset} other partly copied relation(s) are \
         copied again from scratch; {filtered} relation(s) copied from the new snapshot skip \
         the changes it already holds"
    ))
}

/// Empties a partly copied relation's tables to copy them again whole, in the caller's
/// transaction; never a table that held rows before the load.
async fn empty_again(tx: &Transaction<'_>, task: &str, parts: &[StoredTable]) -> Result<()> {
    if let Some(p) = parts.iter().find(|p| p.existed_before) {
        return Err(EngineError::Pg(PgError::Prerequisite {
            side: Side::Target,
            problem: format!(
                "{} existed before the load (target_table_prep_mode = do_nothing) and was \
                 partly copied from a snapshot that is now lost; pgferry will not empty a \
                 table it did not create",
                p.target
            ),
            fix: format!(
                "empty it yourself (TRUNCATE {}) and run again",
                p.target.quoted()
            ),
        }));
    }
    let names = parts
        .iter()
        .map(|p| p.target.quoted())
        .collect::<Vec<_>>()
        .join(", ");
    tx.batch_execute(&format!("TRUNCATE ONLY {names}"))
        .await
        .map_err(|e| EngineError::Pg(PgError::query(Side::Target, "resuming the load", e)))?;
    let ids: Vec<i32> = parts.iter().map(|p| p.table_id).collect();
    control::mark_pending(tx, task, &ids).await
}
