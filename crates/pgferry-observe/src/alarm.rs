//! Alarms with CloudWatch's semantics.
//!
//! An alarm watches one metric. Time is cut into periods aligned to the Unix epoch (as
//! CloudWatch aligns them to the clock); each complete period gives one datapoint, the
//! chosen statistic of the samples that fell in it, or nothing when no sample did. Each
//! evaluation looks at the last `evaluation_periods` complete periods:
//!
//! * a missing datapoint counts as breaching (`breaching`), as within the threshold
//!   (`notBreaching`), or not at all (`missing`, `ignore`);
//! * `datapoints_to_alarm` (M) or more breaching datapoints of those N: **ALARM**;
//! * no datapoint counted at all: **INSUFFICIENT_DATA** with `missing`, the current state
//!   kept with `ignore`;
//! * otherwise: **OK**.
//!
//! The evaluator is pure: it is fed samples and the time, so tests drive it without a clock.

use std::collections::VecDeque;

#[cfg(test)]
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

pub use pgferry_config::alarm::{AlarmRule, Comparison, MissingData, Statistic};

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmState {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "ALARM")]
    Alarm,
    #[serde(rename = "INSUFFICIENT_DATA")]
    InsufficientData,
}

impl AlarmState {
    pub const ALL: [AlarmState; 3] = [
        AlarmState::Ok,
        AlarmState::Alarm,
        AlarmState::InsufficientData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmState> {
        AlarmState::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for AlarmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of an alarm's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transition {
    pub alarm: String,
    pub description: Option<String>,
    pub metric: String,
    pub old_state: AlarmState,
    pub new_state: AlarmState,
    pub reason: String,
    /// The newest datapoint evaluated, if any.
    pub value: Option<f64>,
    pub threshold: f64,
    pub at: DateTime<Utc>,
}

/// An alarm's rule, state and recent samples.
#[derive(Debug, Clone)]
pub struct Alarm {
    pub rule: AlarmRule,
    state: AlarmState,
    reason: String,
    since: DateTime<Utc>,
    value: Option<f64>,
    /// (seconds since the epoch, value), oldest first.
    samples: VecDeque<(f64, f64)>,
}

/// The oldest sample kept is this many periods before the newest: the evaluation range plus
/// the period still open.
const KEPT_PERIODS: u64 = 1;

impl Alarm {
    /// A new alarm starts in INSUFFICIENT_DATA, as CloudWatch's do.
    pub fn new(rule: AlarmRule, now: DateTime<Utc>) -> Self {
        Alarm {
            rule,
            state: AlarmState::InsufficientData,
            reason: "Unchecked: the alarm was just created".to_owned(),
            since: now,
            value: None,
            samples: VecDeque::new(),
        }
    }

    /// An alarm that continues from a saved state (a resumed run).
    pub fn resume(
        rule: AlarmRule,
        state: AlarmState,
        reason: String,
        since: DateTime<Utc>,
    ) -> Self {
        Alarm {
            state,
            reason,
            since,
            ..Alarm::new(rule, since)
        }
    }

    pub fn state(&self) -> AlarmState {
        self.state
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// The newest datapoint of the last evaluation.
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// Adds a sample taken at `at` (seconds since the epoch).
    pub fn observe(&mut self, at: f64, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.samples.push_back((at, value));
        let period = self.rule.period as f64;
        let keep_from =
            at - period * (u64::from(self.rule.evaluation_periods) + KEPT_PERIODS) as f64;
        while self.samples.front().is_some_and(|(t, _)| *t < keep_from) {
            self.samples.pop_front();
        }
    }

    /// Where each of the last N complete periods starts, and its datapoint, oldest first.
    pub fn datapoints(&self, now: f64) -> Vec<(f64, Option<f64>)> {
        let period = self.rule.period as f64;
        let n = self.rule.evaluation_periods as usize;
        let end = (now / period).floor() * period;
        (0..n)
            .rev()
            .map(|i| {
                let start = end - period * (i + 1) as f64;
                let values: Vec<f64> = self
                    .samples
                    .iter()
                    .filter(|(t, _)| *t >= start && *t < start + period)
                    .map(|(_, v)| *v)
                    .collect();
                let point = (!values.is_empty()).then(|| self.rule.statistic.of(&values));
                (start, point)
            })
            .collect()
    }

    /// Evaluates the alarm at `now`; returns the transition when its state changed.
    pub fn evaluate(&mut self, now: DateTime<Utc>) -> Option<Transition> {
        let rule = &self.rule;
        let secs = now.timestamp_micros() as f64 / 1e6;
        let points = self.datapoints(secs);
        let m = rule.datapoints_needed();
        let (mut breaching, mut counted) = (0u32, 0u32);
        for (_, point) in &points {
            match point {
                Some(v) => {
                    counted += 1;
                    if rule.comparison_operator.breaches(*v, rule.threshold) {
                        breaching += 1;
                    }
                }
                None => match rule.treat_missing_data {
                    MissingData::Breaching => {
                        counted += 1;
                        breaching += 1;
                    }
                    MissingData::NotBreaching => counted += 1,
                    MissingData::Missing | MissingData::Ignore => {}
                },
            }
        }
        self.value = points.iter().rev().find_map(|(_, p)| *p);
        let shown = describe_points(&points);
        let n = points.len();
        let (new_state, reason) = if breaching >= m {
            (
                AlarmState::Alarm,
                format!(
                    "Threshold Crossed: {breaching} out of the last {n} datapoints {shown} \
                     were {} the threshold ({}) (minimum {m} for ALARM)",
                    rule.comparison_operator.words(),
                    number(rule.threshold)
                ),
            )
        } else if counted == 0 {
            match rule.treat_missing_data {
                MissingData::Ignore => return None,
                _ => (
                    AlarmState::InsufficientData,
                    format!(
                        "Insufficient Data: no datapoint of {} in the last {n} periods of {} s",
                        rule.metric, rule.period
                    ),
                ),
            }
        } else {
            (
                AlarmState::Ok,
                format!(
                    "Threshold Crossed: {breaching} out of the last {n} datapoints {shown} \
                     were {} the threshold ({}) (minimum {m} for ALARM)",
                    rule.comparison_operator.words(),
                    number(rule.threshold)
                ),
            )
        };
        if new_state == self.state {
            // The reason follows the data even when the state stays.
            self.reason = reason;
            return None;
        }
        let transition = Transition {
            alarm: rule.name.clone(),
            description: rule.description.clone(),
            metric: rule.metric.clone(),
            old_state: self.state,
            new_state,
            reason: reason.clone(),
            value: self.value,
            threshold: rule.threshold,
            at: now,
        };
        self.state = new_state;
        self.reason = reason;
        self.since = now;
        Some(transition)
    }
}

/// `[412 (10:05:00), missing (10:10:00)]`, newest first as CloudWatch lists them.
fn describe_points(points: &[(f64, Option<f64>)]) -> String {
    let items: Vec<String> = points
        .iter()
        .rev()
        .map(|(start, p)| {
            let when = Utc
                .timestamp_opt(*start as i64, 0)
                .single()
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            match p {
                Some(v) => format!("{} ({when})", number(*v)),
                None => format!("missing ({when})"),
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// A number without noise: `300`, `0.25`, `6.442e11`.
pub fn number(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.abs() >= 1e6 {
        format!("{v:.4e}")
    } else {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        comparison: Comparison,
        threshold: f64,
        n: u32,
        m: Option<u32>,
        missing: MissingData,
    ) -> AlarmRule {
        AlarmRule {
            name: "lag".to_owned(),
            description: None,
            metric: "pgferry_cdc_latency_target_seconds".to_owned(),
            labels: BTreeMap::new(),
            statistic: Statistic::Average,
            period: 10,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            comparison_operator: comparison,
            threshold,
            treat_missing_data: missing,
            enabled: true,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn t(secs: f64) -> f64 {
        1_800_000_000.0 + secs
    }

    /// Feeds one sample per period (None leaves the period empty), then evaluates just
    /// after the last one closed.
    fn run(rule: AlarmRule, per_period: &[Option<f64>]) -> (Alarm, Option<Transition>) {
        let mut alarm = Alarm::new(rule, at(0));
        for (i, v) in per_period.iter().enumerate() {
            if let Some(v) = v {
                alarm.observe(t(i as f64 * 10.0 + 5.0), *v);
            }
        }
        let end = per_period.len() as i64 * 10;
        let change = alarm.evaluate(at(end));
        (alarm, change)
    }

    #[test]
    fn every_comparison_is_strict_or_inclusive_as_named() {
        use Comparison::*;
        let cases = [
            (GreaterThanThreshold, 5.0, false),
            (GreaterThanThreshold, 5.1, true),
            (GreaterThanOrEqualToThreshold, 5.0, true),
            (GreaterThanOrEqualToThreshold, 4.9, false),
            (LessThanThreshold, 5.0, false),
            (LessThanThreshold, 4.9, true),
            (LessThanOrEqualToThreshold, 5.0, true),
            (LessThanOrEqualToThreshold, 5.1, false),
        ];
        for (cmp, value, breach) in cases {
            let (alarm, _) = run(
                rule(cmp, 5.0, 1, None, MissingData::Missing),
                &[Some(value)],
            );
            let want = if breach {
                AlarmState::Alarm
            } else {
                AlarmState::Ok
            };
            assert_eq!(alarm.state(), want, "{cmp:?} {value}");
        }
    }

    #[test]
    fn statistics_of_a_period() {
        let values = [1.0, 4.0, 7.0];
        assert_eq!(Statistic::Average.of(&values), 4.0);
        assert_eq!(Statistic::Maximum.of(&values), 7.0);
        assert_eq!(Statistic::Minimum.of(&values), 1.0);
        assert_eq!(Statistic::Sum.of(&values), 12.0);
        assert_eq!(Statistic::SampleCount.of(&values), 3.0);
    }

    #[test]
    fn the_statistic_decides_the_datapoint() {
        // One period: samples 1, 1, 10. Average 4 is under 5; Maximum 10 is over.
        let mut r = rule(
            Comparison::GreaterThanThreshold,
            5.0,
            1,
            None,
            MissingData::Missing,
        );
        for (stat, want) in [
            (Statistic::Average, AlarmState::Ok),
            (Statistic::Maximum, AlarmState::Alarm),
            (Statistic::Minimum, AlarmState::Ok),
            (Statistic::Sum, AlarmState::Alarm),
            (Statistic::SampleCount, AlarmState::Ok),
        ] {
            r.statistic = stat;
            let mut alarm = Alarm::new(r.clone(), at(0));
            for (s, v) in [(1.0, 1.0), (2.0, 1.0), (3.0, 10.0)] {
                alarm.observe(t(s), v);
            }
            alarm.evaluate(at(10));
            assert_eq!(alarm.state(), want, "{stat:?}");
        }
    }

    #[test]
    fn m_of_n_needs_m_breaching_datapoints() {
        let r = |m| {
            rule(
                Comparison::GreaterThanThreshold,
                5.0,
                3,
                Some(m),
                MissingData::Missing,
            )
        };
        // Two of three breach.
        let points = [Some(9.0), Some(1.0), Some(9.0)];
        assert_eq!(run(r(2), &points).0.state(), AlarmState::Alarm);
        assert_eq!(run(r(3), &points).0.state(), AlarmState::Ok);
        assert_eq!(
            run(r(1), &[Some(1.0), Some(1.0), Some(9.0)]).0.state(),
            AlarmState::Alarm
        );
        // Only the last N periods count: an old breach has aged out.
        assert_eq!(
            run(r(1), &[Some(9.0), Some(1.0), Some(1.0), Some(1.0)])
                .0
                .state(),
            AlarmState::Ok
        );
    }

    #[test]
    fn datapoints_to_alarm_defaults_to_evaluation_periods() {
        let r = rule(
            Comparison::GreaterThanThreshold,
            5.0,
            2,
            None,
            MissingData::Missing,
        );
        assert_eq!(
            run(r.clone(), &[Some(1.0), Some(9.0)]).0.state(),
            AlarmState::Ok
        );
        assert_eq!(run(r, &[Some(9.0), Some(9.0)]).0.state(), AlarmState::Alarm);
    }

    #[test]
    fn missing_data_treatments() {
        use MissingData::*;
        let r = |missing| rule(Comparison::GreaterThanThreshold, 5.0, 3, Some(2), missing);
        // All three periods empty.
        let empty = [None, None, None];
        assert_eq!(
            run(r(Missing), &empty).0.state(),
            AlarmState::InsufficientData
        );
        assert_eq!(run(r(Breaching), &empty).0.state(), AlarmState::Alarm);
        assert_eq!(run(r(NotBreaching), &empty).0.state(), AlarmState::Ok);
        // `ignore` keeps the state the alarm had: INSUFFICIENT_DATA at first, no change.
        let (alarm, change) = run(r(Ignore), &empty);
        assert_eq!(alarm.state(), AlarmState::InsufficientData);
        assert!(change.is_none());

        // One breach and two gaps: only `breaching` reaches two of three.
        let gaps = [Some(9.0), None, None];
        assert_eq!(run(r(Missing), &gaps).0.state(), AlarmState::Ok);
        assert_eq!(run(r(Ignore), &gaps).0.state(), AlarmState::Ok);
        assert_eq!(run(r(Breaching), &gaps).0.state(), AlarmState::Alarm);
        assert_eq!(run(r(NotBreaching), &gaps).0.state(), AlarmState::Ok);

        // Present breaches win whatever the treatment.
        let two = [Some(9.0), None, Some(9.0)];
        for m in [Missing, Ignore, Breaching, NotBreaching] {
            assert_eq!(run(r(m), &two).0.state(), AlarmState::Alarm, "{m:?}");
        }
    }

    #[test]
    fn ignore_keeps_an_alarm_in_alarm_when_data_stops() {
        let r = rule(
            Comparison::GreaterThanThreshold,
            5.0,
            1,
            None,
            MissingData::Ignore,
        );
        let mut alarm = Alarm::new(r, at(0));
        alarm.observe(t(5.0), 9.0);
        assert_eq!(alarm.evaluate(at(10)).unwrap().new_state, AlarmState::Alarm);
        // Two quiet periods later it still says ALARM.
        assert!(alarm.evaluate(at(30)).is_none());
        assert_eq!(alarm.state(), AlarmState::Alarm);
    }

    #[test]
    fn transitions_carry_old_and_new_state_and_a_reason() {
        let r = rule(
            Comparison::GreaterThanThreshold,
            5.0,
            1,
            None,
            MissingData::Missing,
        );
        let mut alarm = Alarm::new(r, at(0));
        alarm.observe(t(5.0), 9.5);
        let change = alarm.evaluate(at(10)).expect("a transition");
        assert_eq!(change.old_state, AlarmState::InsufficientData);
        assert_eq!(change.new_state, AlarmState::Alarm);
        assert_eq!(change.value, Some(9.5));
        assert!(
            change
                .reason
                .contains("1 out of the last 1 datapoints [9.5"),
            "{}",
            change.reason
        );
        assert!(
            change.reason.contains("greater than the threshold (5)"),
            "{}",
            change.reason
        );
        // Same state again: no transition.
        alarm.observe(t(15.0), 8.0);
        assert!(alarm.evaluate(at(20)).is_none());
        // Back under: OK.
        alarm.observe(t(25.0), 1.0);
        let back = alarm.evaluate(at(30)).expect("a transition");
        assert_eq!(
            (back.old_state, back.new_state),
            (AlarmState::Alarm, AlarmState::Ok)
        );
    }

    #[test]
    fn an_open_period_does_not_count_until_it_closes() {
        let r = rule(
            Comparison::GreaterThanThreshold,
            5.0,
            1,
            None,
            MissingData::Missing,
        );
        let mut alarm = Alarm::new(r, at(0));
        alarm.observe(t(12.0), 9.0);
        // At 15 s the period [10, 20) is still open; [0, 10) has no data.
        alarm.evaluate(at(15));
        assert_eq!(alarm.state(), AlarmState::InsufficientData);
        alarm.evaluate(at(20));
        assert_eq!(alarm.state(), AlarmState::Alarm);
    }

    #[test]
    fn memory_stays_bounded() {
        let r = rule(
            Comparison::GreaterThanThreshold,
            5.0,
            2,
            None,
            MissingData::Missing,
        );
        let mut alarm = Alarm::new(r, at(0));
        for i in 0..100_000 {
            alarm.observe(t(i as f64 * 0.1), 1.0);
        }
        // 3 periods of 10 s at 10 samples a second.
        assert!(alarm.samples.len() <= 301, "{}", alarm.samples.len());
    }

    #[test]
    fn rules_are_checked() {
        let mut r = rule(
            Comparison::GreaterThanThreshold,
            5.0,
            2,
            Some(3),
            MissingData::Missing,
        );
        assert!(r.check().unwrap_err().contains("datapoints_to_alarm is 3"));
        r.datapoints_to_alarm = None;
        r.period = 0;
        assert!(r.check().unwrap_err().contains("period"));
    }

    #[test]
    fn label_matching() {
        let mut r = rule(
            Comparison::GreaterThanThreshold,
            5.0,
            1,
            None,
            MissingData::Missing,
        );
        let series = vec![("op".to_owned(), "insert".to_owned())];
        assert!(r.matches(&series));
        r.labels.insert("op".to_owned(), "delete".to_owned());
        assert!(!r.matches(&series));
        r.labels.insert("op".to_owned(), "insert".to_owned());
        assert!(r.matches(&series));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(300.0), "300");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(2.0 / 3.0), "0.667");
    }
}
