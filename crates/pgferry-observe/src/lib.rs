//! pgferry's watchfulness, with no cloud account: metrics in Prometheus's text format
//! ([`metrics`]), alarms with CloudWatch's semantics ([`alarm`]), notifiers for their state
//! changes ([`notify`]), and recent values for charts ([`history`]).
//!
//! An [`Observer`] ties them together for one run: each sampling round goes in through
//! [`Observer::record`], and the alarms' state changes come out to be logged and sent.
//! It knows nothing of PostgreSQL; the engine's sampler feeds it.

pub mod alarm;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod shell;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use alarm::{Alarm, AlarmRule, AlarmState, Comparison, MissingData, Statistic, Transition};
pub use history::{History, Series};
pub use metrics::{CATALOG, Kind, MetricInfo, Metrics, Sample};

/// An alarm as the API and `pgferry alarms` show it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmView {
    pub name: String,
    pub state: AlarmState,
    pub reason: String,
    pub since: DateTime<Utc>,
    /// The newest datapoint of the last evaluation.
    pub value: Option<f64>,
    pub rule: AlarmRule,
}

/// An alarm being watched, and what its counter showed last (alarms on counters see the
/// increase between samples, so `Sum` over a period is the increase in that period).
#[derive(Debug)]
struct Watched {
    alarm: Alarm,
    last_total: Option<f64>,
}

/// Metrics, alarms and chart history of one run.
#[derive(Debug)]
pub struct Observer {
    pub metrics: Metrics,
    pub history: History,
    alarms: Mutex<Vec<Watched>>,
}

impl Observer {
    /// `stale_after`: how long a gauge stays exported without a new sample;
    /// `history`: how many sampling rounds the charts keep.
    pub fn new(alarms: Vec<Alarm>, stale_after: Duration, history: usize) -> Self {
        Observer {
            metrics: Metrics::new(stale_after),
            history: History::new(history),
            alarms: Mutex::new(
                alarms
                    .into_iter()
                    .map(|alarm| Watched {
                        alarm,
                        last_total: None,
                    })
                    .collect(),
            ),
        }
    }

    /// One sampling round at `now`: exports the samples, adds the charted values to the
    /// history, feeds and evaluates every alarm. Returns the alarms that changed state.
    pub fn record(
        &self,
        now: DateTime<Utc>,
        samples: &[Sample],
        charted: BTreeMap<&'static str, f64>,
    ) -> Vec<Transition> {
        let at = now.timestamp_micros() as f64 / 1e6;
        self.metrics.record(samples);
        self.history.push(at, charted);
        let mut changes = Vec::new();
        let mut states = Vec::new();
        {
            let mut alarms = self.alarms.lock().unwrap_or_else(|p| p.into_inner());
            for w in alarms.iter_mut() {
                let rule = &w.alarm.rule;
                let matching: Vec<f64> = samples
                    .iter()
                    .filter(|s| s.name == rule.metric && rule.matches(&s.labels))
                    .map(|s| s.value)
                    .collect();
                if !matching.is_empty() {
                    let value: f64 = matching.iter().sum();
                    let is_counter =
                        metrics::info(&rule.metric).is_some_and(|m| m.kind == Kind::Counter);
                    if is_counter {
                        // The first sample only sets the baseline; a lower total means
                        // the counter started again (a new run).
                        if let Some(before) = w.last_total {
                            w.alarm.observe(at, (value - before).max(0.0));
                        }
                        w.last_total = Some(value);
                    } else {
                        w.alarm.observe(at, value);
                    }
                }
                if let Some(t) = w.alarm.evaluate(now) {
                    changes.push(t);
                }
                for state in AlarmState::ALL {
                    states.push(
                        Sample::new(
                            "pgferry_alarm_state",
                            f64::from(u8::from(w.alarm.state() == state)),
                        )
                        .label("alarm", w.alarm.rule.name.clone())
                        .label("state", state.as_str()),
                    );
                }
            }
        }
        self.metrics.record(&states);
        changes
    }

    /// Carries on from states saved by an earlier run: each alarm not yet evaluated takes
    /// its saved state (name, state, reason, since), so a restart does not announce again a
    /// change already announced.
    pub fn resume(&self, saved: Vec<(String, AlarmState, String, DateTime<Utc>)>) {
        let mut alarms = self.alarms.lock().unwrap_or_else(|p| p.into_inner());
        for (name, state, reason, since) in saved {
            if let Some(w) = alarms
                .iter_mut()
                .find(|w| w.alarm.rule.name == name && w.alarm.value().is_none())
            {
                w.alarm = Alarm::resume(w.alarm.rule.clone(), state, reason, since);
            }
        }
    }

    /// Every alarm's rule and current state.
    pub fn alarms(&self) -> Vec<AlarmView> {
        self.alarms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|w| AlarmView {
                name: w.alarm.rule.name.clone(),
                state: w.alarm.state(),
                reason: w.alarm.reason().to_owned(),
                since: w.alarm.since(),
                value: w.alarm.value(),
                rule: w.alarm.rule.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rule(metric: &str, statistic: Statistic, threshold: f64) -> AlarmRule {
        AlarmRule {
            name: "a".to_owned(),
            description: None,
            metric: metric.to_owned(),
            labels: BTreeMap::new(),
            statistic,
            period: 10,
            evaluation_periods: 1,
            datapoints_to_alarm: None,
            comparison_operator: Comparison::GreaterThanThreshold,
            threshold,
            treat_missing_data: MissingData::Missing,
            enabled: true,
        }
    }

    #[test]
    fn counter_alarms_see_increases_and_series_are_added_up() {
        let start = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let r = rule("pgferry_cdc_changes_applied_total", Statistic::Sum, 50.0);
        let observer = Observer::new(vec![Alarm::new(r, start)], Duration::from_secs(60), 10);
        // Totals of two series grow by 10 + 20 = 30 a second; over a 10 s period that is
        // 270 after the baseline sample.
        for i in 0..=10 {
            let now = start + chrono::Duration::seconds(i);
            let samples = [
                Sample::new("pgferry_cdc_changes_applied_total", 10.0 * i as f64)
                    .label("op", "insert"),
                Sample::new("pgferry_cdc_changes_applied_total", 20.0 * i as f64)
                    .label("op", "update"),
            ];
            observer.record(now, &samples, BTreeMap::new());
        }
        let view = &observer.alarms()[0];
        assert_eq!(view.state, AlarmState::Alarm, "{}", view.reason);
        assert_eq!(view.value, Some(270.0));
        let text = observer.metrics.render();
        assert!(
            text.contains(r#"pgferry_alarm_state{alarm="a",state="ALARM"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pgferry_cdc_changes_applied_total{op="update"} 200"#),
            "{text}"
        );
    }
}
