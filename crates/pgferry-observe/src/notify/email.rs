//! Email over SMTP: what the seed's SNS topic did for `alarm_email_endpoints`.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Notification, backoff};

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

fn thirty() -> u64 {
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
    #[serde(default = "thirty")]
    pub timeout_s: u64,
    #[serde(default = "two")]
    pub retries: u32,
    /// Send credentials over a connection without TLS (`tls = "none"`), where anyone on the
    /// path reads them. Off unless set: such a setup is refused.
    #[serde(default)]
    pub allow_insecure_auth: bool,
}

impl EmailConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.to.is_empty() {
            return Err("email notifier: `to` lists no address".to_owned());
        }
        for address in self.to.iter().chain(std::iter::once(&self.from)) {
            address
                .parse::<Mailbox>()
                .map_err(|e| format!("email notifier: {address:?} is not an address: {e}"))?;
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

pub(super) struct Email {
    config: EmailConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Email {
    pub(super) fn new(
        config: &EmailConfig,
        password: Option<SecretString>,
    ) -> Result<Self, String> {
        config.check()?;
        let host = config.smtp_host.as_str();
        let bad = |e: lettre::transport::smtp::Error| format!("email notifier {host}: {e}");
        let (builder, port) = match config.tls {
            SmtpTls::Starttls => (
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(bad)?,
                587,
            ),
            SmtpTls::Tls => (
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(bad)?,
                465,
            ),
            SmtpTls::None => (
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
                25,
            ),
        };
        let mut builder = builder
            .port(config.smtp_port.unwrap_or(port))
            .timeout(Some(Duration::from_secs(config.timeout_s.max(1))));
        if let Some(user) = &config.username {
            let secret = password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), secret));
        }
        Ok(Email {
            config: config.clone(),
            transport: builder.build(),
        })
    }

    fn message(&self, n: &Notification) -> Result<Message, String> {
        let mut m = Message::builder()
            .from(self.config.from.parse().map_err(|e| format!("from: {e}"))?)
            .subject(n.subject())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.config.to {
            m = m.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
        }
        m.body(n.text()).map_err(|e| e.to_string())
    }

    pub(super) async fn send(&self, n: &Notification) -> Result<(), String> {
        let message = self.message(n)?;
        let mut attempt = 0;
        loop {
            match self.transport.send(message.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    // A permanent refusal (a bad address, failed authentication) will not
                    // change on retry.
                    if e.is_permanent() || attempt >= self.config.retries {
                        return Err(format!(
                            "mail to {} via {}: {e}",
                            self.config.to.join(", "),
                            self.config.smtp_host
                        ));
                    }
                }
            }
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}
