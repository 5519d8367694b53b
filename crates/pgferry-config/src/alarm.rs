//! Alarms as a task file declares them, with CloudWatch's vocabulary. The evaluator that
//! runs them is pgferry-observe's; this is only the declaration, so reading a task file
//! needs no HTTP or SMTP client.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the samples of one period become its datapoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Statistic {
    #[default]
    Average,
    Maximum,
    Minimum,
    Sum,
    SampleCount,
}

impl Statistic {
    /// The statistic of a non-empty set of samples.
    pub fn of(self, values: &[f64]) -> f64 {
        match self {
            Statistic::Average => values.iter().sum::<f64>() / values.len() as f64,
            Statistic::Maximum => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            Statistic::Minimum => values.iter().copied().fold(f64::INFINITY, f64::min),
            Statistic::Sum => values.iter().sum(),
            Statistic::SampleCount => values.len() as f64,
        }
    }
}

/// How a datapoint is compared with the threshold, named as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    GreaterThanThreshold,
    GreaterThanOrEqualToThreshold,
    LessThanThreshold,
    LessThanOrEqualToThreshold,
}

impl Comparison {
    pub fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::GreaterThanThreshold => value > threshold,
            Comparison::GreaterThanOrEqualToThreshold => value >= threshold,
            Comparison::LessThanThreshold => value < threshold,
            Comparison::LessThanOrEqualToThreshold => value <= threshold,
        }
    }

    /// "greater than", for reasons people read.
    pub fn words(self) -> &'static str {
        match self {
            Comparison::GreaterThanThreshold => "greater than",
            Comparison::GreaterThanOrEqualToThreshold => "greater than or equal to",
            Comparison::LessThanThreshold => "less than",
            Comparison::LessThanOrEqualToThreshold => "less than or equal to",
        }
    }
}

/// What a period without samples means, as CloudWatch's `treat_missing_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MissingData {
    /// Not counted; with no datapoint at all the alarm goes to INSUFFICIENT_DATA.
    #[default]
    Missing,
    /// Not counted; with no datapoint at all the alarm keeps its state.
    Ignore,
    /// Counted as breaching the threshold.
    Breaching,
    /// Counted as within the threshold.
    NotBreaching,
}

fn yes() -> bool {
    true
}

/// One alarm as a task file declares it. Field names follow Terraform's
/// `aws_cloudwatch_metric_alarm`, so an existing alarm reads the same here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRule {
    #[serde(alias = "alarm_name")]
    pub name: String,
    #[serde(default, alias = "alarm_description")]
    pub description: Option<String>,
    /// A metric from `/metrics`, such as `pgferry_cdc_latency_target_seconds`.
    #[serde(alias = "metric_name")]
    pub metric: String,
    /// Only series with these label values; every other series of the metric is added up.
    #[serde(default, alias = "dimensions")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub statistic: Statistic,
    /// Seconds per period.
    pub period: u64,
    pub evaluation_periods: u32,
    /// M of the N periods that must breach; N when not given.
    #[serde(default)]
    pub datapoints_to_alarm: Option<u32>,
    pub comparison_operator: Comparison,
    pub threshold: f64,
    #[serde(default)]
    pub treat_missing_data: MissingData,
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl AlarmRule {
    /// The M of "M out of N".
    pub fn datapoints_needed(&self) -> u32 {
        self.datapoints_to_alarm.unwrap_or(self.evaluation_periods)
    }

    /// Why the rule cannot work, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("an alarm needs a name".to_owned());
        }
        if self.period == 0 {
            return Err(format!(
                "alarm {:?}: period must be at least 1 s",
                self.name
            ));
        }
        if self.evaluation_periods == 0 {
            return Err(format!(
                "alarm {:?}: evaluation_periods must be at least 1",
                self.name
            ));
        }
        let m = self.datapoints_needed();
        if m == 0 || m > self.evaluation_periods {
            return Err(format!(
                "alarm {:?}: datapoints_to_alarm is {m}; it must be between 1 and \
                 evaluation_periods ({})",
                self.name, self.evaluation_periods
            ));
        }
        if !self.threshold.is_finite() {
            return Err(format!("alarm {:?}: threshold must be a number", self.name));
        }
        Ok(())
    }

    /// Whether a series with these labels feeds the alarm.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}
