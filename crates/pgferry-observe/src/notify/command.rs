//! A command run on each state change, with the alarm in its environment: for pagers,
//! ticket systems and anything else with a command-line client.

use std::time::Duration;

use pgferry_config::notifier::CommandConfig;

use super::Notification;
use crate::alarm::number;

pub(super) struct Command {
    config: CommandConfig,
}

impl Command {
    pub(super) fn new(config: &CommandConfig) -> Self {
        Command {
            config: config.clone(),
        }
    }

    /// The environment the command gets: `PGFERRY_ALARM_*` and `PGFERRY_TASK`, plus the
    /// whole notification as JSON in `PGFERRY_ALARM_JSON`.
    pub(super) fn environment(n: &Notification) -> Vec<(&'static str, String)> {
        vec![
            ("PGFERRY_TASK", n.task.clone()),
            ("PGFERRY_ALARM", n.alarm.clone()),
            ("PGFERRY_ALARM_STATE", n.new_state.to_string()),
            ("PGFERRY_ALARM_OLD_STATE", n.old_state.to_string()),
            ("PGFERRY_ALARM_REASON", n.reason.clone()),
            ("PGFERRY_ALARM_METRIC", n.metric.clone()),
            (
                "PGFERRY_ALARM_VALUE",
                n.value.map(number).unwrap_or_default(),
            ),
            ("PGFERRY_ALARM_THRESHOLD", number(n.threshold)),
            ("PGFERRY_ALARM_TIME", n.at.to_rfc3339()),
            (
                "PGFERRY_ALARM_JSON",
                serde_json::to_string(n).unwrap_or_default(),
            ),
        ]
    }

    pub(super) async fn send(&self, n: &Notification) -> Result<(), String> {
        let limit = Duration::from_secs(self.config.timeout_s.max(1));
        crate::shell::run(&self.config.command, &Self::environment(n), limit)
            .await
            .map(drop)
    }
}
