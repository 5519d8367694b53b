//! Notifiers: where an alarm's state changes are sent.
//!
//! Each notifier has its own worker and a bounded queue, so a slow mail server delays only
//! its own mail, changes reach each notifier in the order they happened, and nothing here
//! ever waits on the migration or makes it wait. A delivery that fails is retried where
//! that makes sense, then reported as a [`Delivery`]; it never stops the run.

mod command;
mod email;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use pgferry_config::notifier::{
    CommandConfig, EmailConfig, NotifierConfig, SmtpTls, WebhookConfig, WebhookFormat,
};

use crate::alarm::{AlarmState, Transition, number};

/// What every notifier is told about an alarm's change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub task: String,
    pub alarm: String,
    pub description: Option<String>,
    pub metric: String,
    pub old_state: AlarmState,
    pub new_state: AlarmState,
    pub reason: String,
    pub value: Option<f64>,
    pub threshold: f64,
    pub at: DateTime<Utc>,
}

impl Notification {
    pub fn new(task: &str, t: &Transition) -> Self {
        Notification {
            task: task.to_owned(),
            alarm: t.alarm.clone(),
            description: t.description.clone(),
            metric: t.metric.clone(),
            old_state: t.old_state,
            new_state: t.new_state,
            reason: t.reason.clone(),
            value: t.value,
            threshold: t.threshold,
            at: t.at,
        }
    }

    /// `[pgferry orders-move] ALARM: replication-lag`
    pub fn subject(&self) -> String {
        format!("[pgferry {}] {}: {}", self.task, self.new_state, self.alarm)
    }

    /// A few lines a person reads in a mail or a chat message.
    pub fn text(&self) -> String {
        let mut lines = vec![format!(
            "Alarm \"{}\" of task \"{}\" changed from {} to {} at {}.",
            self.alarm,
            self.task,
            self.old_state,
            self.new_state,
            self.at.format("%Y-%m-%d %H:%M:%S UTC")
        )];
        if let Some(d) = &self.description {
            lines.push(d.clone());
        }
        lines.push(format!("Reason: {}", self.reason));
        lines.push(format!(
            "Metric: {} (latest datapoint {}, threshold {})",
            self.metric,
            self.value.map(number).unwrap_or_else(|| "none".to_owned()),
            number(self.threshold)
        ));
        lines.join("\n")
    }
}

/// How one delivery went.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub notifier: String,
    pub alarm: String,
    pub new_state: AlarmState,
    /// `None` when it was delivered; else what went wrong, after the retries.
    pub error: Option<String>,
}

/// A ready notifier.
enum Sender {
    Webhook(webhook::Webhook),
    Email(email::Email),
    Command(command::Command),
}

impl Sender {
    async fn send(&self, n: &Notification) -> Result<(), String> {
        match self {
            Sender::Webhook(w) => w.send(n).await,
            Sender::Email(e) => e.send(n).await,
            Sender::Command(c) => c.send(n).await,
        }
    }
}

/// Secrets a notifier needs, resolved by the caller (the task file only says where they
/// are).
#[derive(Default)]
pub struct Secrets {
    /// The SMTP password of each email notifier, by its index in the list.
    pub smtp_passwords: Vec<Option<SecretString>>,
}

/// How many notifications may wait for one notifier before new ones are dropped (and
/// reported). Alarms change state rarely; a backlog this deep means the notifier is down.
const QUEUE: usize = 64;

/// The running notifiers of a task.
pub struct Notifiers {
    queues: Vec<(String, mpsc::Sender<Arc<Notification>>)>,
    deliveries: mpsc::Sender<Delivery>,
}

impl std::fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.queues.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Notifiers {
    /// Starts one worker per notifier; each delivery's outcome arrives on the returned
    /// receiver. Fails only on a notifier that cannot be built at all (a bad address).
    pub fn start(
        configs: &[NotifierConfig],
        mut secrets: Secrets,
    ) -> Result<(Notifiers, mpsc::Receiver<Delivery>), String> {
        let (deliveries, outcomes) = mpsc::channel(QUEUE * configs.len().max(1));
        let mut queues = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let name = config.name(i);
            let sender = match config {
                NotifierConfig::Webhook(c) => Sender::Webhook(webhook::Webhook::new(c)?),
                NotifierConfig::Email(c) => {
                    let password = secrets.smtp_passwords.get_mut(i).and_then(Option::take);
                    Sender::Email(email::Email::new(c, password)?)
                }
                NotifierConfig::Command(c) => Sender::Command(command::Command::new(c)),
            };
            let (tx, mut rx) = mpsc::channel::<Arc<Notification>>(QUEUE);
            let report = deliveries.clone();
            let worker_name = name.clone();
            tokio::spawn(async move {
                while let Some(n) = rx.recv().await {
                    let error = sender.send(&n).await.err();
                    match &error {
                        None => tracing::info!(notifier = %worker_name, alarm = %n.alarm,
                            state = %n.new_state, "notification sent"),
                        Some(e) => tracing::warn!(notifier = %worker_name, alarm = %n.alarm,
                            "notification failed: {e}"),
                    }
                    let _ = report.try_send(Delivery {
                        notifier: worker_name.clone(),
                        alarm: n.alarm.clone(),
                        new_state: n.new_state,
                        error,
                    });
                }
            });
            queues.push((name, tx));
        }
        Ok((Notifiers { queues, deliveries }, outcomes))
    }

    /// Names of the notifiers, in the task file's order.
    pub fn names(&self) -> Vec<String> {
        self.queues.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Hands the notification to every notifier without waiting.
    pub fn notify(&self, n: Notification) {
        let n = Arc::new(n);
        for (name, queue) in &self.queues {
            if queue.try_send(n.clone()).is_err() {
                let error = format!(
                    "dropped: {QUEUE} notifications already wait for this notifier (it is \
                     down or too slow)"
                );
                tracing::warn!(notifier = %name, alarm = %n.alarm, "{error}");
                let _ = self.deliveries.try_send(Delivery {
                    notifier: name.clone(),
                    alarm: n.alarm.clone(),
                    new_state: n.new_state,
                    error: Some(error),
                });
            }
        }
    }
}

/// Waits before retry `attempt` (1, 2, ...): 1 s, 2 s, 4 s, ... at most 30 s.
fn backoff(attempt: u32) -> Duration {
    pgferry_config::retry::Backoff::DEFAULT.wait(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_kinds_parse_from_the_task_file_shape() {
        let configs: Vec<NotifierConfig> = serde_json::from_str(
            r#"[{"kind": "webhook", "url": "http://127.0.0.1:9/hook", "format": "slack"},
                {"kind": "email", "smtp_host": "127.0.0.1", "smtp_port": 2525, "tls": "none",
                 "from": "pgferry@example.com", "to": ["dba@example.com"]},
                {"kind": "command", "command": "true", "name": "pager"}]"#,
        )
        .unwrap();
        let names: Vec<String> = configs.iter().enumerate().map(|(i, c)| c.name(i)).collect();
        assert_eq!(names, vec!["webhook-1", "email-2", "pager"]);
        for c in &configs {
            c.check().unwrap();
        }
    }
}
