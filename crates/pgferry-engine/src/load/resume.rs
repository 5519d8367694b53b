//! A `full-load-and-cdc` load that lost its snapshot (pgferry killed, the source restarted)
//! goes on from a new one, without losing or doubling a row.
//!
//! The stream always starts at the slot's consistent point, where the first snapshot was
//! taken, so every change after it is in the stream. What changes is which of those
//! changes the target already holds:
//! * **a table split by an integer key** (not a partition) keeps its finished chunks: they
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

use crate::error::{EngineError, Result};

struct Part {
    table_id: i32,
    target: QualifiedName,
    chunks_done: i32,
    chunks_total: i32,
    existed_before: bool,
    /// Split by an integer key, and not a partition.
    by_chunk: bool,
}

/// Records the new snapshot (`visibility`, `xmin:xmax:xip`) against what the load has
/// left to copy. Returns a note for the event log.
pub(crate) async fn resync_for_new_snapshot(
    control_client: &mut PgClient,
    task: &str,
    visibility: &str,
) -> Result<String> {
    let rows = control_client
        .query(
            "reading the load's state",
            "SELECT table_id, target_schema, target_table,
                    coalesce(root_schema, source_schema), coalesce(root_table, source_table),
                    chunks_done, chunks_total, existed_before,
                    coalesce((split_key->>'integer')::boolean AND (split_key->>'identity')::boolean, false)
                    AND root_table IS NULL
             FROM pgferry.table_state WHERE task = $1",
            &[&task],
        )
        .await?;
    let mut relations: HashMap<QualifiedName, Vec<Part>> = HashMap::new();
    for r in &rows {
        relations
            .entry(QualifiedName::new(
                r.get::<_, String>(3),
                r.get::<_, String>(4),
            ))
            .or_default()
            .push(Part {
                table_id: r.get(0),
                target: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
                chunks_done: r.get(5),
                chunks_total: r.get(6),
                existed_before: r.get(7),
                by_chunk: r.get(8),
            });
    }
    let err = |e| EngineError::Pg(PgError::query(Side::Target, "resuming the load", e));
    let tx = control_client.raw_mut().transaction().await.map_err(err)?;
    let (mut reset, mut resumed, mut filtered) = (0, 0, 0);
    for (relation, parts) in &relations {
        if parts.iter().all(|p| p.chunks_done >= p.chunks_total) {
            continue;
        }
        if let [part] = parts.as_slice()
            && part.by_chunk
        {
            // Finished chunks keep the snapshot they were copied from (a table-wide filter
            // from an earlier resume moves onto them); the rest read the new one.
            tx.execute(
                "UPDATE pgferry.chunk c SET snapshot_filter = CASE WHEN c.state = 'done'
                     THEN coalesce(c.snapshot_filter, (SELECT t.snapshot_filter
                          FROM pgferry.cdc_table t WHERE t.task = $1 AND t.schema_name = $3
                            AND t.table_name = $4))
                     ELSE $5 END
                 WHERE c.task = $1 AND c.table_id = $2",
                &[
                    &task,
                    &part.table_id,
                    &relation.schema,
                    &relation.name,
                    &visibility,
                ],
            )
            .await
            .map_err(err)?;
            tx.execute(
                "UPDATE pgferry.cdc_table SET snapshot_filter = NULL
                 WHERE task = $1 AND schema_name = $2 AND table_name = $3",
                &[&task, &relation.schema, &relation.name],
            )
            .await
            .map_err(err)?;
            resumed += 1;
            continue;
        }
        if parts.iter().any(|p| p.chunks_done > 0) {
            if let Some(p) = parts.iter().find(|p| p.existed_before) {
                return Err(EngineError::Pg(PgError::Prerequisite {
                    side: Side::Target,
                    problem: format!(
                        "{} existed before the load (target_table_prep_mode = do_nothing) and \
                         was partly copied from a snapshot that is now lost; pgferry will not \
                         empty a table it did not create",
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
                .map_err(err)?;
            let ids: Vec<i32> = parts.iter().map(|p| p.table_id).collect();
            crate::control::mark_pending(&tx, task, &ids).await?;
            reset += 1;
        }
        tx.execute(
            "INSERT INTO pgferry.cdc_table (task, schema_name, table_name, snapshot_filter)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (task, schema_name, table_name)
             DO UPDATE SET snapshot_filter = excluded.snapshot_filter",
            &[&task, &relation.schema, &relation.name, &visibility],
        )
        .await
        .map_err(err)?;
        filtered += 1;
    }
    tx.commit().await.map_err(err)?;
    Ok(format!(
        "{resumed} partly copied table(s) split by an integer key keep their finished chunks \
         and copy the rest from the new snapshot; {reset} other partly copied relation(s) are \
         copied again from scratch; {filtered} relation(s) copied from the new snapshot skip \
         the changes it already holds"
    ))
}
