//! Log sequence numbers: positions in the write-ahead log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A WAL position, printed as PostgreSQL prints it: `16/B374D848`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    /// Bytes from `earlier` to `self`, or 0.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an LSN like 16/B374D848"))?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| format!("{s:?} is not an LSN"))?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| format!("{s:?} is not an LSN"))?;
        if hi > 0xFFFF_FFFF || lo > 0xFFFF_FFFF {
            return Err(format!("{s:?} is out of range for an LSN"));
        }
        Ok(Lsn((hi << 32) | lo))
    }
}

impl From<Lsn> for String {
    fn from(l: Lsn) -> String {
        l.to_string()
    }
}

impl TryFrom<String> for Lsn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// PostgreSQL timestamps on the wire: microseconds since 2000-01-01 UTC.
pub fn pg_timestamp_to_chrono(micros: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    const PG_EPOCH_OFFSET_SECS: i64 = 946_684_800;
    chrono::DateTime::from_timestamp(
        PG_EPOCH_OFFSET_SECS + micros.div_euclid(1_000_000),
        (micros.rem_euclid(1_000_000) * 1000) as u32,
    )
}

/// Now, as a PostgreSQL wire timestamp.
pub fn pg_timestamp_now() -> i64 {
    const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
    chrono::Utc::now().timestamp_micros() - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_print_and_parse_like_postgres() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("1/G".parse::<Lsn>().is_err());
        assert_eq!(Lsn(10).bytes_since(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_since(Lsn(10)), 0);
    }

    #[test]
    fn wire_timestamps_convert() {
        let t = pg_timestamp_to_chrono(0).unwrap();
        assert_eq!(t.to_rfc3339(), "2000-01-01T00:00:00+00:00");
        let t = pg_timestamp_to_chrono(-1).unwrap();
        assert_eq!(t.to_rfc3339(), "1999-12-31T23:59:59.999999+00:00");
        assert!(pg_timestamp_now() > 800_000_000_000_000);
    }
}
