//! What `run` starts beside the migration: the monitor (metrics, alarms, notifiers) always,
//! and with `--http` the dashboard and API.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use pgferry_config::{ConfigError, PasswordSource, Task};
use pgferry_engine::Monitor;
use pgferry_engine::RunProgress;
use pgferry_observe::notify::{NotifierConfig, Notifiers, Secrets};
use pgferry_server::{Server, Sources, StopHook};
use secrecy::SecretString;

/// The monitor and, when asked for, the server of one run.
pub struct Watch {
    monitor: Monitor,
    server: Option<Server>,
}

impl Watch {
    /// Starts the monitor and, if `http` is given, the server. Fails on what the user must
    /// fix (a secret that cannot be read, an address in use), before any data moves.
    pub async fn start(
        task: &Task,
        progress: Arc<RunProgress>,
        http: Option<SocketAddr>,
        stop: StopHook,
    ) -> anyhow::Result<Watch> {
        let notifiers = start_notifiers(task)?;
        // Resolved once for both: a password_command may be a slow vault call.
        let endpoints = pgferry_engine::Endpoints::resolve(task)?;
        let target = endpoints.target.clone();
        let monitor = Monitor::start(task, endpoints, progress.clone(), notifiers);
        let server = match http {
            Some(addr) => {
                let token = http_token(task)?;
                let sources = Sources {
                    task: task.clone(),
                    target,
                    observer: monitor.observer.clone(),
                    progress,
                    stop,
                };
                Some(Server::start(addr, token, sources).await?)
            }
            None => None,
        };
        Ok(Watch { monitor, server })
    }

    /// The server's address, when serving.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.addr)
    }

    /// Takes the last sample, saves alarm states, lets notifications in flight finish.
    pub async fn finish(self) {
        self.monitor.stop().await;
        if let Some(s) = self.server {
            s.shutdown();
        }
    }
}

fn secret(task: &Task, key: &str, source: &PasswordSource) -> anyhow::Result<SecretString> {
    pgferry_pg::conninfo::read_secret(source).map_err(|e| {
        ConfigError::Invalid {
            path: task.path.clone().unwrap_or_else(|| "<task>".into()),
            key: key.to_owned(),
            message: e.to_string(),
        }
        .into()
    })
}

fn start_notifiers(
    task: &Task,
) -> anyhow::Result<
    Option<(
        Notifiers,
        tokio::sync::mpsc::Receiver<pgferry_observe::notify::Delivery>,
    )>,
> {
    let configs = &task.monitoring.notifiers;
    if configs.is_empty() {
        return Ok(None);
    }
    let mut secrets = Secrets::default();
    for (i, n) in configs.iter().enumerate() {
        let password = match n {
            NotifierConfig::Email(e) => match pgferry_config::monitoring::email_password(e) {
                Some(source) => Some(secret(task, &format!("notifier[{}]", i + 1), &source)?),
                None => None,
            },
            _ => None,
        };
        secrets.smtp_passwords.push(password);
    }
    let started = Notifiers::start(configs, secrets).map_err(|message| ConfigError::Invalid {
        path: task.path.clone().unwrap_or_else(|| "<task>".into()),
        key: "notifier".to_owned(),
        message,
    })?;
    Ok(Some(started))
}

/// The bearer token: from where the task file says, else `PGFERRY_HTTP_TOKEN`.
fn http_token(task: &Task) -> anyhow::Result<Option<SecretString>> {
    if let Some(source) = &task.monitoring.http.token {
        return secret(task, "http", source).map(Some);
    }
    Ok(std::env::var(pgferry_config::monitoring::TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| SecretString::from(t.trim().to_owned())))
}

/// The address `--http` asks for: its own value, else the task file's `[http] listen`,
/// else 127.0.0.1:9187.
pub fn listen_address(flag: Option<&str>, task: &Task) -> anyhow::Result<Option<SocketAddr>> {
    let Some(flag) = flag else {
        return Ok(task.monitoring.http.listen);
    };
    if flag.is_empty() {
        let default = pgferry_config::monitoring::DEFAULT_LISTEN;
        return Ok(Some(task.monitoring.http.listen.unwrap_or(
            default.parse().context("the default listen address")?,
        )));
    }
    pgferry_config::monitoring::parse_listen(flag)
        .map(Some)
        .map_err(|message| {
            ConfigError::Invalid {
                path: "--http".into(),
                key: "--http".to_owned(),
                message,
            }
            .into()
        })
}
