//! Human-readable tables and numbers for standard output.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use indicatif::{HumanBytes, HumanCount};

/// A table with pgferry's look: header row, right-aligned numbers.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

pub fn num(n: i64) -> Cell {
    Cell::new(HumanCount(n.max(0) as u64).to_string()).set_alignment(CellAlignment::Right)
}

pub fn bytes(n: i64) -> Cell {
    Cell::new(HumanBytes(n.max(0) as u64).to_string()).set_alignment(CellAlignment::Right)
}

pub fn right(s: impl Into<String>) -> Cell {
    Cell::new(s.into()).set_alignment(CellAlignment::Right)
}

/// `1m 12s`, `3.4s`, `450ms`.
pub fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.0}ms", seconds * 1000.0)
    } else if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        format!(
            "{}m {:02}s",
            (seconds / 60.0) as u64,
            (seconds % 60.0) as u64
        )
    } else {
        format!(
            "{}h {:02}m",
            (seconds / 3600.0) as u64,
            ((seconds % 3600.0) / 60.0) as u64
        )
    }
}

/// `12,345 rows/s` and `45.1 MiB/s`, or `-` when the time is too short to say.
pub fn rates(rows: i64, bytes: i64, seconds: f64) -> (String, String) {
    if seconds < 0.05 {
        return ("-".to_owned(), "-".to_owned());
    }
    (
        format!("{}/s", HumanCount((rows as f64 / seconds) as u64)),
        format!("{}/s", HumanBytes((bytes as f64 / seconds) as u64)),
    )
}

/// Prints `value` as pretty JSON on standard output.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0.25), "250ms");
        assert_eq!(duration(3.44), "3.4s");
        assert_eq!(duration(72.0), "1m 12s");
        assert_eq!(duration(3725.0), "1h 02m");
    }

    #[test]
    fn rates_need_measurable_time() {
        assert_eq!(rates(10, 10, 0.0).0, "-");
        assert_eq!(rates(1000, 2048, 2.0).0, "500/s");
    }
}
