//! A webhook: the notification as JSON in a POST, or as a Slack-compatible message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Notification, backoff};
use crate::alarm::AlarmState;

/// What the POST body looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The [`Notification`] itself, with `"version": 1`.
    #[default]
    Json,
    /// `{"text": ...}`, which Slack, Mattermost and Rocket.Chat incoming webhooks show.
    Slack,
}

fn ten() -> u64 {
    10
}

fn three() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: Option<String>,
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Seconds each attempt may take.
    #[serde(default = "ten")]
    pub timeout_s: u64,
    /// Attempts after the first, for network errors, 429 and 5xx answers.
    #[serde(default = "three")]
    pub retries: u32,
}

impl WebhookConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "webhook url {:?} must start with http:// or https://",
                self.url
            ));
        }
        if self.timeout_s == 0 {
            return Err("webhook timeout_s must be at least 1".to_owned());
        }
        Ok(())
    }
}

pub(super) struct Webhook {
    config: WebhookConfig,
    client: reqwest::Client,
}

impl Webhook {
    pub(super) fn new(config: &WebhookConfig) -> Result<Self, String> {
        config.check()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_s))
            .user_agent(concat!("pgferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the webhook client: {e}"))?;
        Ok(Webhook {
            config: config.clone(),
            client,
        })
    }

    fn body(&self, n: &Notification) -> serde_json::Value {
        match self.config.format {
            WebhookFormat::Json => {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("version".to_owned(), 1.into());
                }
                v
            }
            WebhookFormat::Slack => {
                let icon = match n.new_state {
                    AlarmState::Alarm => ":rotating_light:",
                    AlarmState::Ok => ":white_check_mark:",
                    AlarmState::InsufficientData => ":grey_question:",
                };
                serde_json::json!({
                    "text": format!("{icon} *{}*\n{}", n.subject(), n.text()),
                })
            }
        }
    }

    pub(super) async fn send(&self, n: &Notification) -> Result<(), String> {
        let body = self.body(n);
        let mut attempt = 0;
        loop {
            let result = self.client.post(&self.config.url).json(&body).send().await;
            let (error, retry) = match result {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    (
                        format!("the webhook answered {status}"),
                        status.is_server_error() || status.as_u16() == 429,
                    )
                }
                // The URL may hold a secret (Slack's do): report without it.
                Err(e) => (
                    format!("cannot reach the webhook: {}", e.without_url()),
                    true,
                ),
            };
            if !retry || attempt >= self.config.retries {
                let tries = attempt + 1;
                return Err(format!("{error} ({tries} attempt{})", plural(tries)));
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}
