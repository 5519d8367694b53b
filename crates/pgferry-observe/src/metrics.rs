//! The metrics pgferry exposes, and the registry that renders them in Prometheus's text
//! format.
//!
//! Nothing on the data path writes here. A sampler reads the engine's live counters (plain
//! atomics) and the servers' statistics views on an interval and records one [`Sample`] per
//! series; a scrape only renders what the last sample left. So `/metrics` never waits for a
//! COPY or an apply transaction, and they never wait for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

pub use pgferry_config::metrics::{CATALOG, Kind, MetricInfo, info};

/// One value of one series at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(name: &'static str, value: f64) -> Self {
        Sample {
            name,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, key: &str, value: impl Into<String>) -> Self {
        self.labels.push((key.to_owned(), value.into()));
        self
    }
}

/// The Prometheus registry of one run. Not the process-wide recorder of the `metrics`
/// crate: each run (and each test) has its own.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Counter values already recorded, so an absolute total can be turned into the
    /// increments the exporter wants; keyed by name and labels.
    last: Mutex<HashMap<Key, u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry that drops gauges not sampled for `stale_after` (a server that stopped
    /// answering shows as absent, not as its last value).
    pub fn new(stale_after: Duration) -> Self {
        let recorder = PrometheusBuilder::new()
            .idle_timeout(
                metrics_util::MetricKindMask::GAUGE,
                Some(stale_after.max(Duration::from_secs(1))),
            )
            .build_recorder();
        let handle = recorder.handle();
        for m in CATALOG {
            let name = metrics::KeyName::from(m.name);
            let help = SharedString::from(m.help);
            match m.kind {
                Kind::Counter => recorder.describe_counter(name, None::<Unit>, help),
                Kind::Gauge => recorder.describe_gauge(name, None::<Unit>, help),
            }
        }
        Metrics {
            recorder,
            handle,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Records one sample per series. Counters take their running total; a total lower
    /// than before (a restarted run) starts the series again from there.
    pub fn record(&self, samples: &[Sample]) {
        static METADATA: Metadata<'static> =
            Metadata::new("pgferry", metrics::Level::INFO, Some("pgferry"));
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        for s in samples {
            let labels: Vec<Label> = s
                .labels
                .iter()
                .map(|(k, v)| Label::new(k.clone(), v.clone()))
                .collect();
            let key = Key::from_parts(s.name, labels);
            match info(s.name).map(|m| m.kind) {
                Some(Kind::Counter) => {
                    let total = s.value.max(0.0) as u64;
                    let counter = self.recorder.register_counter(&key, &METADATA);
                    let before = last.insert(key, total).unwrap_or(0);
                    if total >= before {
                        counter.increment(total - before);
                    } else {
                        counter.absolute(total);
                    }
                }
                Some(Kind::Gauge) => self.recorder.register_gauge(&key, &METADATA).set(s.value),
                None => tracing::debug!(metric = s.name, "not in the catalog; not exported"),
            }
        }
    }

    /// The Prometheus text format of every series.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented_and_named_the_prometheus_way() {
        let docs = include_str!("../../../docs/monitoring.md");
        for m in CATALOG {
            assert!(
                docs.contains(&format!("`{}`", m.name)),
                "{} is not in docs/monitoring.md",
                m.name
            );
            assert!(m.name.starts_with("pgferry_"), "{}", m.name);
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == Kind::Counter,
                "{}: counters, and only counters, end in _total",
                m.name
            );
            assert!(!m.help.is_empty());
        }
    }

    #[test]
    fn renders_help_type_and_labels() {
        let metrics = Metrics::new(Duration::from_secs(60));
        metrics.record(&[
            Sample::new("pgferry_cdc_changes_applied_total", 5.0).label("op", "insert"),
            Sample::new("pgferry_target_connections", 12.0),
        ]);
        metrics
            .record(&[Sample::new("pgferry_cdc_changes_applied_total", 9.0).label("op", "insert")]);
        let text = metrics.render();
        assert!(
            text.contains("# TYPE pgferry_cdc_changes_applied_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP pgferry_target_connections Client connections"),
            "{text}"
        );
        assert!(
            text.contains("pgferry_cdc_changes_applied_total{op=\"insert\"} 9"),
            "{text}"
        );
        assert!(text.contains("pgferry_target_connections 12"), "{text}");
    }
}
