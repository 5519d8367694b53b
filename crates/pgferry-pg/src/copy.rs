//! COPY pipes: rows stream from `COPY ... TO STDOUT` on the source into `COPY ... FROM STDIN`
//! on the target, without being parsed.
//!
//! Memory is bounded by design. Both sides sit behind bounded channels, so the source
//! socket is only read as fast as the target accepts. PostgreSQL sends one CopyData message
//! per row, which tokio-postgres hands over whole: a pipe holds about one row in flight.
//! On the way out, tokio-postgres copies each message into its write buffer; a huge row is
//! therefore cut into slices of at most [`MAX_OUT_MESSAGE`] bytes first (COPY data may be
//! split anywhere, the protocol says), so a 1 GB `bytea` value needs 1 GB of our memory
//! once, plus one slice, never twice.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt, StreamExt, pin_mut};

use crate::error::{PgError, Side};
use crate::ident::{QualifiedName, quote_ident};

/// Largest CopyData message sent to the target; bigger rows are sliced (without copying).
pub const MAX_OUT_MESSAGE: usize = 1024 * 1024;

/// Rows are gathered into messages of about this size before they go to the target. One
/// message per row would cost a channel hop in tokio-postgres and a message read on the
/// server per row; 64 KiB makes both negligible while keeping the pipe's buffer small.
pub const BATCH_BYTES: usize = 64 * 1024;

/// The wire format of a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyFormat {
    /// Fast and exact, when both sides have identical column types and encodings.
    Binary,
    /// Portable: for user-defined array and composite types, and across encodings.
    Text,
}

impl CopyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyFormat::Binary => "binary",
            CopyFormat::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "binary" => Some(CopyFormat::Binary),
            "text" => Some(CopyFormat::Text),
            _ => None,
        }
    }
}

/// A range of heap blocks, `[start, end)`; `end = None` runs to the end of the table, so
/// rows appended after planning are still read (they are invisible to the snapshot anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlockRange {
    pub start: i64,
    pub end: Option<i64>,
}

/// The statements of one pipe.
#[derive(Debug, Clone)]
pub struct CopyStatements {
    pub source: String,
    pub target: String,
}

fn column_list<'a>(columns: impl Iterator<Item = &'a str>) -> String {
    columns.map(quote_ident).collect::<Vec<_>>().join(", ")
}

/// Builds the COPY pair for a table or a block range of it.
///
/// The column list is explicit, so generated columns stay behind and the target's column
/// order does not matter. `ONLY` keeps inheritance children out of a parent's rows.
/// `freeze` loads the rows already frozen and visible to all (`COPY ... FREEZE`); the
/// caller must have created or truncated the table in the same transaction.
pub fn copy_statements<'a>(
    source_table: &QualifiedName,
    target_table: &QualifiedName,
    columns: impl Iterator<Item = &'a str>,
    format: CopyFormat,
    range: Option<BlockRange>,
    freeze: bool,
) -> CopyStatements {
    let cols = column_list(columns);
    let options = match format {
        CopyFormat::Binary => "(FORMAT binary)",
        CopyFormat::Text => "(FORMAT text)",
    };
    let target_options = match (format, freeze) {
        (CopyFormat::Binary, true) => "(FORMAT binary, FREEZE)",
        (CopyFormat::Text, true) => "(FORMAT text, FREEZE)",
        (_, false) => options,
    };
    let source = match range {
        None => format!(
            "COPY {} ({cols}) TO STDOUT {options}",
            source_table.quoted()
        ),
        Some(BlockRange { start, end }) => {
            let mut predicate = format!("ctid >= '({start},0)'::tid");
            if let Some(end) = end {
                predicate.push_str(&format!(" AND ctid < '({end},0)'::tid"));
            }
            format!(
                "COPY (SELECT {cols} FROM ONLY {} WHERE {predicate}) TO STDOUT {options}",
                source_table.quoted()
            )
        }
    };
    let target = format!(
        "COPY {} ({cols}) FROM STDIN {target_options}",
        target_table.quoted()
    );
    CopyStatements { source, target }
}

/// Live counters of a pipe, shared with progress displays and metrics.
#[derive(Debug, Default)]
pub struct CopyCounters {
    /// CopyData messages seen; one per row (plus a header and trailer in binary format).
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

/// What a finished pipe moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Rows the target accepted, from COPY's command tag.
    pub rows: u64,
    pub bytes: u64,
}

/// Streams one COPY from `source` into `target`. Both clients must already be inside the
/// transactions the caller wants (the snapshot on the source; the chunk's transaction on
/// the target). Every counter in `counters` is updated as data flows, so a caller can
/// keep one per chunk and one per table.
pub async fn pipe(
    source: &tokio_postgres::Client,
    target: &tokio_postgres::Client,
    statements: &CopyStatements,
    counters: &[&CopyCounters],
) -> Result<CopyOutcome, PgError> {
    let out = source
        .copy_out(statements.source.as_str())
        .await
        .map_err(|e| PgError::query(Side::Source, "starting COPY TO", e))?;
    let sink = target
        .copy_in::<_, bytes::Bytes>(statements.target.as_str())
        .await
        .map_err(|e| PgError::query(Side::Target, "starting COPY FROM", e))?;
    pin_mut!(out);
    pin_mut!(sink);
    let mut bytes = 0u64;
    let write_err = |e| PgError::query(Side::Target, "writing COPY data", e);
    while let Some(message) = out.next().await {
        let mut data = message.map_err(|e| PgError::query(Side::Source, "reading COPY data", e))?;
        let len = data.len() as u64;
        bytes += len;
        // `feed`, not `send`: the sink batches small rows into larger messages itself, and
        // a flush per row would defeat that. `finish` flushes at the end.
        while data.len() > MAX_OUT_MESSAGE {
            sink.feed(data.split_to(MAX_OUT_MESSAGE))
                .await
                .map_err(write_err)?;
        }
        sink.feed(data).await.map_err(write_err)?;
        for c in counters {
            c.messages.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(len, Ordering::Relaxed);
        }
    }
    let rows = sink
        .finish()
        .await
        .map_err(|e| PgError::query(Side::Target, "finishing COPY", e))?;
    Ok(CopyOutcome { rows, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_table_copies_quote_every_column() {
        let name = QualifiedName::new("Sales", "order lines");
        let s = copy_statements(
            &name,
            &name,
            ["id", "Total \"x\""].into_iter(),
            CopyFormat::Binary,
            None,
            false,
        );
        assert_eq!(
            s.source,
            "COPY \"Sales\".\"order lines\" (\"id\", \"Total \"\"x\"\"\") TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            s.target,
            "COPY \"Sales\".\"order lines\" (\"id\", \"Total \"\"x\"\"\") FROM STDIN (FORMAT binary)"
        );
    }

    #[test]
    fn block_ranges_become_ctid_predicates() {
        let name = QualifiedName::new("public", "t");
        let s = copy_statements(
            &name,
            &name,
            ["id"].into_iter(),
            CopyFormat::Text,
            Some(BlockRange {
                start: 100,
                end: Some(200),
            }),
            true,
        );
        assert_eq!(
            s.source,
            "COPY (SELECT \"id\" FROM ONLY \"public\".\"t\" WHERE ctid >= '(100,0)'::tid AND \
             ctid < '(200,0)'::tid) TO STDOUT (FORMAT text)"
        );
        let open = copy_statements(
            &name,
            &name,
            ["id"].into_iter(),
            CopyFormat::Text,
            Some(BlockRange {
                start: 200,
                end: None,
            }),
            false,
        );
        assert!(open.source.contains("WHERE ctid >= '(200,0)'::tid) TO"));
        assert_eq!(
            s.target,
            "COPY \"public\".\"t\" (\"id\") FROM STDIN (FORMAT text, FREEZE)"
        );
    }
}
