//! Recent values of the charted series, so a dashboard opened mid-run draws the last hour at
//! once instead of starting empty.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Time series for charts: one shared time axis and one column per series, as a chart
/// library wants them. `null` marks a moment a series had no value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    /// Seconds since the epoch.
    pub times: Vec<f64>,
    pub columns: BTreeMap<String, Vec<Option<f64>>>,
}

/// A bounded ring of sampled moments.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    rows: Mutex<VecDeque<(f64, BTreeMap<&'static str, f64>)>>,
}

impl History {
    /// Keeps the newest `capacity` moments.
    pub fn new(capacity: usize) -> Self {
        History {
            capacity: capacity.max(2),
            rows: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds one moment: the values of the charted series at `at` (seconds since the epoch).
    pub fn push(&self, at: f64, values: BTreeMap<&'static str, f64>) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        rows.push_back((at, values));
        while rows.len() > self.capacity {
            rows.pop_front();
        }
    }

    /// Everything kept, newer than `since` when given, in columns.
    pub fn series(&self, since: Option<f64>) -> Series {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let kept: Vec<_> = rows
            .iter()
            .filter(|(t, _)| since.is_none_or(|s| *t > s))
            .collect();
        let mut out = Series {
            times: kept.iter().map(|(t, _)| *t).collect(),
            columns: BTreeMap::new(),
        };
        for name in kept.iter().flat_map(|(_, v)| v.keys()) {
            out.columns.entry((*name).to_owned()).or_default();
        }
        for (name, column) in out.columns.iter_mut() {
            *column = kept
                .iter()
                .map(|(_, v)| v.get(name.as_str()).copied())
                .collect();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_aligns_columns() {
        let h = History::new(3);
        for i in 0..5 {
            let mut v = BTreeMap::new();
            v.insert("lag", i as f64);
            if i % 2 == 0 {
                v.insert("size", 10.0 * i as f64);
            }
            h.push(i as f64, v);
        }
        let s = h.series(None);
        assert_eq!(s.times, vec![2.0, 3.0, 4.0]);
        assert_eq!(s.columns["lag"], vec![Some(2.0), Some(3.0), Some(4.0)]);
        assert_eq!(s.columns["size"], vec![Some(20.0), None, Some(40.0)]);
        assert_eq!(h.series(Some(3.0)).times, vec![4.0]);
    }
}
