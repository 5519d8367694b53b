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

/// Which rows of a table one chunk copies.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ChunkRange {
    /// Heap blocks (PostgreSQL 14 and later read only those).
    Blocks(BlockRange),
    /// Values of one key column ([`crate::split`]).
    Key(crate::split::KeyRange),
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

/// What one pipe copies: which table into which, which columns, which rows.
#[derive(Debug, Clone, Copy)]
pub struct CopySpec<'a> {
    pub source_table: &'a QualifiedName,
    pub target_table: &'a QualifiedName,
    /// Source columns, in the order they are sent.
    pub source_columns: &'a [String],
    /// The target column each source column goes into, in the same order.
    pub target_columns: &'a [String],
    /// A row filter over the source's columns, already rendered as SQL by the caller.
    pub filter: Option<&'a str>,
    pub format: CopyFormat,
    pub range: Option<&'a ChunkRange>,
    /// Load the rows already frozen and visible to all (`COPY ... FREEZE`); the caller
    /// must have created or truncated the table in the same transaction.
    pub freeze: bool,
}

/// Builds the COPY pair for a table or a block range of it.
///
/// The column lists are explicit, so generated columns stay behind, the target's column
/// order does not matter, and a renamed column finds its target. `ONLY` keeps inheritance
/// children out of a parent's rows.
pub fn copy_statements(spec: &CopySpec<'_>) -> CopyStatements {
    let cols = column_list(spec.source_columns.iter().map(String::as_str));
    let target_cols = column_list(spec.target_columns.iter().map(String::as_str));
    let options = match spec.format {
        CopyFormat::Binary => "(FORMAT binary)",
        CopyFormat::Text => "(FORMAT text)",
    };
    let target_options = match (spec.format, spec.freeze) {
        (CopyFormat::Binary, true) => "(FORMAT binary, FREEZE)",
        (CopyFormat::Text, true) => "(FORMAT text, FREEZE)",
        (_, false) => options,
    };
    let mut predicates = Vec::new();
    if let Some(filter) = spec.filter {
        predicates.push(format!("({filter})"));
    }
    match spec.range {
        Some(ChunkRange::Blocks(BlockRange { start, end })) => {
            predicates.push(format!("ctid >= '({start},0)'::tid"));
            if let Some(end) = end {
                predicates.push(format!("ctid < '({end},0)'::tid"));
            }
        }
        Some(ChunkRange::Key(range)) => predicates.extend(range.predicates()),
        None => {}
    }
    let source = if predicates.is_empty() {
        format!(
            "COPY {} ({cols}) TO STDOUT {options}",
            spec.source_table.quoted()
        )
    } else {
        format!(
            "COPY (SELECT {cols} FROM ONLY {} WHERE {}) TO STDOUT {options}",
            spec.source_table.quoted(),
            predicates.join(" AND ")
        )
    };
    let target = format!(
        "COPY {} ({target_cols}) FROM STDIN {target_options}",
        spec.target_table.quoted()
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

    fn spec<'a>(
        source: &'a QualifiedName,
        target: &'a QualifiedName,
        cols: &'a [String],
        targets: &'a [String],
    ) -> CopySpec<'a> {
        CopySpec {
            source_table: source,
            target_table: target,
            source_columns: cols,
            target_columns: targets,
            filter: None,
            format: CopyFormat::Binary,
            range: None,
            freeze: false,
        }
    }

    #[test]
    fn whole_table_copies_quote_every_column() {
        let name = QualifiedName::new("Sales", "order lines");
        let cols = vec!["id".to_owned(), "Total \"x\"".to_owned()];
        let s = copy_statements(&spec(&name, &name, &cols, &cols));
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
        let cols = vec!["id".to_owned()];
        let mut sp = spec(&name, &name, &cols, &cols);
        sp.format = CopyFormat::Text;
        let range = ChunkRange::Blocks(BlockRange {
            start: 100,
            end: Some(200),
        });
        sp.range = Some(&range);
        sp.freeze = true;
        let s = copy_statements(&sp);
        assert_eq!(
            s.source,
            "COPY (SELECT \"id\" FROM ONLY \"public\".\"t\" WHERE ctid >= '(100,0)'::tid AND \
             ctid < '(200,0)'::tid) TO STDOUT (FORMAT text)"
        );
        assert_eq!(
            s.target,
            "COPY \"public\".\"t\" (\"id\") FROM STDIN (FORMAT text, FREEZE)"
        );
        let open = ChunkRange::Blocks(BlockRange {
            start: 200,
            end: None,
        });
        sp.range = Some(&open);
        assert!(
            copy_statements(&sp)
                .source
                .contains("WHERE ctid >= '(200,0)'::tid) TO")
        );
    }

    #[test]
    fn filters_and_renames_shape_both_sides() {
        let source = QualifiedName::new("sales", "Orders");
        let target = QualifiedName::new("crm", "orders");
        let cols = vec!["ID".to_owned(), "Status".to_owned()];
        let targets = vec!["id".to_owned(), "status".to_owned()];
        let mut sp = spec(&source, &target, &cols, &targets);
        sp.filter = Some("\"Status\" = 'x'");
        let range = ChunkRange::Blocks(BlockRange {
            start: 0,
            end: Some(5),
        });
        sp.range = Some(&range);
        let s = copy_statements(&sp);
        assert_eq!(
            s.source,
            "COPY (SELECT \"ID\", \"Status\" FROM ONLY \"sales\".\"Orders\" WHERE (\"Status\" = 'x') \
             AND ctid >= '(0,0)'::tid AND ctid < '(5,0)'::tid) TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            s.target,
            "COPY \"crm\".\"orders\" (\"id\", \"status\") FROM STDIN (FORMAT binary)"
        );
    }
}
