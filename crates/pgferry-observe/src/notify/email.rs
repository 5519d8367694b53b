//! Email over SMTP: what the seed's SNS topic did for `alarm_email_endpoints`.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use pgferry_config::notifier::{EmailConfig, SmtpTls};
use secrecy::{ExposeSecret, SecretString};

use super::{Notification, backoff};

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
        for address in config.to.iter().chain(std::iter::once(&config.from)) {
            address
                .parse::<Mailbox>()
                .map_err(|e| format!("email notifier: {address:?} is not an address: {e}"))?;
        }
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
