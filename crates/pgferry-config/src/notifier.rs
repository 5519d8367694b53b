//! Notifiers as a task file declares them: `[[notifier]]` with `kind = "webhook"`,
//! `"email"` or `"command"`. pgferry-observe delivers through them.

use serde::{Deserialize, Serialize};

/// One notifier as the task file declares it: `[[notifier]]` with `kind = "webhook"`,
/// `"email"` or `"command"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NotifierConfig {
    Webhook(WebhookConfig),
    Email(EmailConfig),
    Command(CommandConfig),
}

impl NotifierConfig {
    /// The name in logs and metrics: the configured one, else the kind and a number.
    pub fn name(&self, index: usize) -> String {
        let (given, kind) = match self {
            NotifierConfig::Webhook(c) => (&c.name, "webhook"),
            NotifierConfig::Email(c) => (&c.name, "email"),
            NotifierConfig::Command(c) => (&c.name, "command"),
        };
        given
            .clone()
            .unwrap_or_else(|| format!("{kind}-{}", index + 1))
    }

    /// Why the notifier cannot work, if it cannot (checked when the task file is read).
    pub fn check(&self) -> Result<(), String> {
        match self {
            NotifierConfig::Webhook(c) => c.check(),
            NotifierConfig::Email(c) => c.check(),
            NotifierConfig::Command(c) => c.check(),
        }
    }
}

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

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

fn email_timeout() -> u64 {
    30
}

fn two() -> u32 {
    2
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub name: Option<String>,
    pub smtp_host: String,
    /// 587 for STARTTLS, 465 for TLS, 25 without, unless given.
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// Where the password is (never the task file itself): one of these.
    pub password_env: Option<String>,
    pub password_file: Option<std::path::PathBuf>,
    pub password_command: Option<String>,
    pub from: String,
    /// The recipients: the seed's `alarm_email_endpoints`.
    pub to: Vec<String>,
    #[serde(default = "email_timeout")]
    pub timeout_s: u64,
    #[serde(default = "two")]
    pub retries: u32,
    /// Send credentials over a connection without TLS (`tls = "none"`), where anyone on the
    /// path reads them. Off unless set: such a setup is refused.
    #[serde(default)]
    pub allow_insecure_auth: bool,
}

impl EmailConfig {
    /// Why the settings cannot work, if they cannot. The addresses themselves are parsed
    /// when the notifier starts, by the mail library that sends.
    pub fn check(&self) -> Result<(), String> {
        if self.to.is_empty() {
            return Err("email notifier: `to` lists no address".to_owned());
        }
        let sources = [
            self.password_env.is_some(),
            self.password_file.is_some(),
            self.password_command.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(
                "email notifier: set one of password_env, password_file and password_command"
                    .to_owned(),
            );
        }
        if sources.iter().any(|s| *s) && self.username.is_none() {
            return Err("email notifier: a password needs a username".to_owned());
        }
        let credentials = self.username.is_some() || sources.iter().any(|s| *s);
        if credentials && self.tls == SmtpTls::None && !self.allow_insecure_auth {
            return Err(
                "email notifier: tls = \"none\" would send the username and password in \
                 cleartext; use tls = \"starttls\" or \"tls\", or set \
                 allow_insecure_auth = true if the path to the server is trusted"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

fn command_timeout() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub name: Option<String>,
    /// Run by `sh -c`.
    pub command: String,
    /// Seconds before the command is killed and counted as failed.
    #[serde(default = "command_timeout")]
    pub timeout_s: u64,
}

impl CommandConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.command.trim().is_empty() {
            return Err("command notifier: `command` is empty".to_owned());
        }
        Ok(())
    }
}
