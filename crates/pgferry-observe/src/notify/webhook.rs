//! A webhook: the notification as JSON in a POST, or as a Slack-compatible message.

use std::time::Duration;

use pgferry_config::notifier::{WebhookConfig, WebhookFormat};

use super::{Notification, backoff};
use crate::alarm::AlarmState;

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
