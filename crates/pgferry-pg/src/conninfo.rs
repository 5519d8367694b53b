//! libpq-compatible connection strings.
//!
//! DBAs already have connection strings, `PG*` variables and `~/.pgpass` files that work with
//! psql. pgferry reads all three the way libpq does, so the same strings work unchanged:
//!
//! * both syntaxes, `postgresql://user@host:port/db?sslmode=require` and
//!   `host=h port=5432 dbname=db`, with libpq's quoting and percent-decoding;
//! * `PG*` environment variables fill whatever the string leaves out;
//! * the password comes from the task's password source, then `PGPASSWORD`, then the
//!   password file, never from the string itself (a task file must not hold secrets);
//! * `sslmode` takes every libpq value.
//!
//! A [`ConnInfo`] never prints its password: `Debug` and [`ConnInfo::describe`] leave it out.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgferry_config::PasswordSource;
use secrecy::{ExposeSecret, SecretString};

/// libpq's `sslmode`, with its exact meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// libpq tries plain first, then TLS; pgferry tries TLS first, then plain (as `prefer`),
    /// because the difference only matters to servers that reject plain connections.
    Allow,
    /// TLS when the server offers it, plain otherwise (libpq's default).
    Prefer,
    /// TLS or nothing. Certificates are checked only if a root certificate is configured.
    Require,
    /// TLS with a certificate chain that leads to a trusted root.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Why a connection string or its password could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    #[error("{0}")]
    Syntax(String),
    #[error("unknown connection option \"{0}\"")]
    UnknownOption(String),
    #[error("{} has an invalid value \"{value}\": {expected}", match from_env {
        Some(var) => format!("the environment variable {var}"),
        None => format!("connection option \"{key}\""),
    })]
    InvalidValue {
        key: String,
        value: String,
        expected: String,
        /// The `PG*` variable the value came from, when the connection string left the
        /// option out.
        from_env: Option<String>,
    },
    #[error(
        "connection option \"{0}\" is not supported by pgferry; remove it from the connection \
         string"
    )]
    Unsupported(String),
    #[error(
        "the connection string holds a password; passwords never go in the task file. Use \
         password_env, password_file or password_command, or PGPASSWORD or ~/.pgpass"
    )]
    PasswordInString,
    #[error("cannot read the password: {0}")]
    Password(String),
}

/// Where each libpq option can also come from in the environment, as libpq documents.
const OPTIONS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("options", Some("PGOPTIONS")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("client_encoding", Some("PGCLIENTENCODING")),
    ("sslmode", Some("PGSSLMODE")),
    ("requiressl", Some("PGREQUIRESSL")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslcompression", Some("PGSSLCOMPRESSION")),
    ("sslsni", Some("PGSSLSNI")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("sslpassword", None),
    ("sslcertmode", Some("PGSSLCERTMODE")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("gssdelegation", Some("PGGSSDELEGATION")),
    ("krbsrvname", Some("PGKRBSRVNAME")),
    ("gsslib", Some("PGGSSLIB")),
    ("service", Some("PGSERVICE")),
    ("requirepeer", Some("PGREQUIREPEER")),
    ("require_auth", Some("PGREQUIREAUTH")),
    ("replication", None),
];

/// Options that would change where or how we connect in a way pgferry cannot honour, so
/// ignoring them would be wrong: they are refused instead.
const REFUSED: &[&str] = &[
    "service",
    "requirepeer",
    "require_auth",
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "replication",
];

/// The raw key/value pairs of a connection string, before the environment and defaults.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnParams(BTreeMap<String, String>);

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            if k == "password" {
                map.entry(k, &"<redacted>");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

impl ConnParams {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn set(&mut self, key: &str, value: String) -> Result<(), ConnInfoError> {
        if !OPTIONS.iter().any(|(k, _)| *k == key) {
            return Err(ConnInfoError::UnknownOption(key.to_owned()));
        }
        self.0.insert(key.to_owned(), value);
        Ok(())
    }

    /// Parses either syntax, as `PQconninfoParse` does.
    pub fn parse(s: &str) -> Result<Self, ConnInfoError> {
        let trimmed = s.trim();
        if trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://") {
            parse_uri(trimmed)
        } else {
            parse_keywords(trimmed)
        }
    }
}

fn percent_decode(s: &str, what: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ConnInfoError::Syntax(format!("invalid percent-encoded token in {what}"))
                })?;
            if hex == 0 {
                return Err(ConnInfoError::Syntax(format!(
                    "forbidden value %00 in percent-encoded {what}"
                )));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ConnInfoError::Syntax(format!("percent-decoded {what} is not valid UTF-8")))
}

fn parse_uri(uri: &str) -> Result<ConnParams, ConnInfoError> {
    let mut params = ConnParams::default();
    let rest = uri
        .strip_prefix("postgresql://")
        .or_else(|| uri.strip_prefix("postgres://"))
        .unwrap_or(uri);
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    let hostspec = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.set("user", percent_decode(user, "user name")?)?;
            }
            if password.is_some() {
                return Err(ConnInfoError::PasswordInString);
            }
            &authority[at + 1..]
        }
        None => authority,
    };
    if !hostspec.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostspec.split(',') {
            let (host, port) = if let Some(inner) = spec.strip_prefix('[') {
                let close = inner.find(']').ok_or_else(|| {
                    ConnInfoError::Syntax(format!(
                        "missing \"]\" in IPv6 host address in URI: \"{uri}\""
                    ))
                })?;
                let after = &inner[close + 1..];
                let port = match after.strip_prefix(':') {
                    Some(p) => p,
                    None if after.is_empty() => "",
                    None => {
                        return Err(ConnInfoError::Syntax(format!(
                            "unexpected character after IPv6 host address in URI: \"{uri}\""
                        )));
                    }
                };
                (inner[..close].to_owned(), port)
            } else {
                match spec.rsplit_once(':') {
                    Some((h, p)) => (percent_decode(h, "host")?, p),
                    None => (percent_decode(spec, "host")?, ""),
                }
            };
            hosts.push(host);
            ports.push(port.to_owned());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            params.set("host", hosts.join(","))?;
        }
        if ports.iter().any(|p| !p.is_empty()) {
            params.set("port", ports.join(","))?;
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.set("dbname", percent_decode(db, "database name")?)?;
    }
    if let Some(query) = query {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ConnInfoError::Syntax(format!(
                    "missing key/value separator \"=\" in URI query parameter: \"{pair}\""
                ))
            })?;
            let key = percent_decode(k, "query parameter")?;
            let value = percent_decode(v, "query parameter")?;
            if key == "password" {
                return Err(ConnInfoError::PasswordInString);
            }
            // libpq's JDBC-compatible spelling.
            if key == "ssl" {
                if value == "true" {
                    params.set("sslmode", "require".to_owned())?;
                    continue;
                }
                return Err(ConnInfoError::InvalidValue {
                    key,
                    value,
                    expected: "only ssl=true is accepted".to_owned(),
                    from_env: None,
                });
            }
            params.set(&key, value)?;
        }
    }
    Ok(params)
}

fn parse_keywords(s: &str) -> Result<ConnParams, ConnInfoError> {
    let mut params = ConnParams::default();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return Err(ConnInfoError::Syntax(format!(
                "missing \"=\" after \"{key}\" in connection info string"
            )));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(ConnInfoError::Syntax(
                            "unterminated quoted string in connection info string".to_owned(),
                        ));
                    }
                    Some('\\') => {
                        if let Some(c) = chars.get(i + 1) {
                            value.push(*c);
                        }
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
        }
        if key == "password" {
            return Err(ConnInfoError::PasswordInString);
        }
        params.set(&key, value)?;
    }
    Ok(params)
}

/// A fully resolved connection: the string, then `PG*` variables, then libpq's defaults.
#[derive(Clone)]
pub struct ConnInfo {
    /// Host names, IP addresses or Unix socket directories, tried in order.
    pub hosts: Vec<String>,
    /// One port per host (a single port applies to all).
    pub ports: Vec<u16>,
    pub user: String,
    pub dbname: String,
    pub password: Option<SecretString>,
    pub sslmode: SslMode,
    /// A CA bundle path, or `system` for the operating system's roots.
    pub sslrootcert: Option<String>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub target_session_attrs: Option<String>,
    /// Options that were set but that pgferry does not act on, for a warning.
    pub ignored: Vec<String>,
    /// Where the password came from, for messages (never the password).
    pub password_origin: Option<String>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Looks up an environment variable; injectable so tests do not depend on the process.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ConnInfo {
    /// Resolves a connection string with the process environment.
    pub fn resolve(url: &str, password: Option<&PasswordSource>) -> Result<Self, ConnInfoError> {
        Self::resolve_with(url, password, &process_env, home_dir().as_deref())
    }

    /// Resolves with an explicit environment and home directory. A bad value that came
    /// from a `PG*` variable is blamed on the variable, not on the connection string.
    pub fn resolve_with(
        url: &str,
        password: Option<&PasswordSource>,
        env: EnvLookup<'_>,
        home: Option<&Path>,
    ) -> Result<Self, ConnInfoError> {
        Self::resolve_params(url, password, env, home).map_err(|e| match e {
            ConnInfoError::InvalidValue {
                key,
                value,
                expected,
                from_env: None,
            } => {
                let from_env = ConnParams::parse(url).ok().and_then(|params| {
                    let (_, var) = OPTIONS.iter().find(|(k, _)| *k == key)?;
                    let var = (*var)?;
                    (params.get(&key).is_none() && env(var).is_some()).then(|| var.to_owned())
                });
                ConnInfoError::InvalidValue {
                    key,
                    value,
                    expected,
                    from_env,
                }
            }
            e => e,
        })
    }

    fn resolve_params(
        url: &str,
        password: Option<&PasswordSource>,
        env: EnvLookup<'_>,
        home: Option<&Path>,
    ) -> Result<Self, ConnInfoError> {
        let mut params = ConnParams::parse(url)?;
        for key in REFUSED {
            if params.get(key).is_some() {
                return Err(ConnInfoError::Unsupported((*key).to_owned()));
            }
        }
        let mut ignored = fill_from_env(&mut params, env);
        ignored.extend(ignored_options(&params));
        let (hosts, ports) = hosts_and_ports(&params)?;
        let user = match params.get("user") {
            Some(u) => u.to_owned(),
            None => os_user_name().ok_or_else(|| {
                ConnInfoError::Syntax(
                    "no user name given and the operating system user is unknown; set user= \
                     or PGUSER"
                        .to_owned(),
                )
            })?,
        };
        let dbname = params.get("dbname").unwrap_or(&user).to_owned();
        let tls = Tls::from_params(&params, home)?;
        if let Some(attrs) = params.get("target_session_attrs")
            && !matches!(attrs, "any" | "read-write")
        {
            return Err(ConnInfoError::InvalidValue {
                key: "target_session_attrs".into(),
                value: attrs.into(),
                expected: "pgferry supports any and read-write".into(),
                from_env: None,
            });
        }
        let mut info = ConnInfo {
            hosts,
            ports,
            user,
            dbname,
            password: None,
            sslmode: tls.mode,
            sslrootcert: tls.rootcert,
            sslcert: tls.cert,
            sslkey: tls.key,
            application_name: params.get("application_name").map(str::to_owned),
            options: params.get("options").map(str::to_owned),
            connect_timeout: connect_timeout(&params)?,
            target_session_attrs: params.get("target_session_attrs").map(str::to_owned),
            ignored,
            password_origin: None,
        };
        info.find_password(password, &params, env, home)?;
        Ok(info)
    }

    /// The password, in libpq's order with the task's own source first.
    fn find_password(
        &mut self,
        password: Option<&PasswordSource>,
        params: &ConnParams,
        env: EnvLookup<'_>,
        home: Option<&Path>,
    ) -> Result<(), ConnInfoError> {
        if let Some(source) = password {
            self.password = Some(read_secret(source)?);
            self.password_origin = Some(match source {
                PasswordSource::Env(var) => format!("environment variable {var}"),
                PasswordSource::File(path) => format!("file {}", path.display()),
                PasswordSource::Command(_) => "password_command".to_owned(),
            });
        } else if let Some(pw) = env("PGPASSWORD") {
            self.password = Some(SecretString::from(pw));
            self.password_origin = Some("PGPASSWORD".to_owned());
        } else {
            let passfile = params
                .get("passfile")
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".pgpass")));
            if let Some(file) = passfile
                && let Some(pw) = lookup_passfile(&file, self)
            {
                self.password = Some(SecretString::from(pw));
                self.password_origin = Some(format!("password file {}", file.display()));
            }
        }
        Ok(())
    }

    /// The connection without its password, for messages and logs:
    /// `host=db1 port=5432 user=app dbname=inventory sslmode=verify-full`.
    pub fn describe(&self) -> String {
        format!(
            "host={} port={} user={} dbname={} sslmode={}",
            self.hosts.join(","),
            self.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.user,
            self.dbname,
            self.sslmode.as_str()
        )
    }

    /// `host:port` of the first host, for short messages.
    pub fn endpoint(&self) -> String {
        let host = &self.hosts[0];
        if host.contains(':') {
            format!("[{host}]:{}", self.ports[0])
        } else if host.starts_with('/') {
            format!("{host} (Unix socket, port {})", self.ports[0])
        } else {
            format!("{host}:{}", self.ports[0])
        }
    }

    /// The same connection with another database name.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut info = self.clone();
        info.dbname = dbname.to_owned();
        info
    }

    /// Environment variables that make a libpq tool (`pg_dump`, `pg_restore`, `psql`) connect
    /// exactly as we do. The password travels in the child's environment, never in its
    /// command line, where `ps` would show it.
    pub fn libpq_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PGHOST".to_owned(), self.hosts.join(",")),
            (
                "PGPORT".to_owned(),
                self.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("PGUSER".to_owned(), self.user.clone()),
            ("PGDATABASE".to_owned(), self.dbname.clone()),
            ("PGSSLMODE".to_owned(), self.sslmode.as_str().to_owned()),
            (
                "PGAPPNAME".to_owned(),
                self.application_name
                    .clone()
                    .unwrap_or_else(|| "pgferry".to_owned()),
            ),
            ("PGCLIENTENCODING".to_owned(), "UTF8".to_owned()),
        ];
        if let Some(pw) = &self.password {
            env.push(("PGPASSWORD".to_owned(), pw.expose_secret().to_owned()));
        }
        if let Some(v) = &self.sslrootcert {
            env.push(("PGSSLROOTCERT".to_owned(), v.clone()));
        }
        if let Some(v) = &self.sslcert {
            env.push(("PGSSLCERT".to_owned(), v.display().to_string()));
        }
        if let Some(v) = &self.sslkey {
            env.push(("PGSSLKEY".to_owned(), v.display().to_string()));
        }
        if let Some(v) = &self.options {
            env.push(("PGOPTIONS".to_owned(), v.clone()));
        }
        if let Some(t) = self.connect_timeout {
            env.push(("PGCONNECT_TIMEOUT".to_owned(), t.as_secs().to_string()));
        }
        if let Some(v) = &self.target_session_attrs {
            env.push(("PGTARGETSESSIONATTRS".to_owned(), v.clone()));
        }
        env
    }
}

/// libpq's default host: the Unix socket directory when a server listens there, else
/// `localhost`.
fn default_host(port: u16) -> String {
    for dir in ["/var/run/postgresql", "/tmp"] {
        if Path::new(dir).join(format!(".s.PGSQL.{port}")).exists() {
            return dir.to_owned();
        }
    }
    "localhost".to_owned()
}

fn os_user_name() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| process_env("USER"))
}

fn home_dir() -> Option<PathBuf> {
    process_env("HOME").map(PathBuf::from).or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    })
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .trim_end_matches('\r')
        .to_owned()
}

/// Reads a secret from where the task file says it is (an environment variable, a file's
/// first line, a command's first line): database passwords, and the SMTP password and HTTP
/// token of monitoring.
pub fn read_secret(source: &PasswordSource) -> Result<SecretString, ConnInfoError> {
    let pw = match source {
        PasswordSource::Env(var) => process_env(var).ok_or_else(|| {
            ConnInfoError::Password(format!("environment variable {var} is not set or empty"))
        })?,
        PasswordSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConnInfoError::Password(format!("cannot read {}: {e}", path.display()))
            })?;
            first_line(&text)
        }
        PasswordSource::Command(cmd) => {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| {
                    ConnInfoError::Password(format!("cannot run password_command: {e}"))
                })?;
            if !out.status.success() {
                return Err(ConnInfoError::Password(format!(
                    "password_command failed ({})",
                    out.status
                )));
            }
            first_line(&String::from_utf8_lossy(&out.stdout))
        }
    };
    if pw.is_empty() {
        return Err(ConnInfoError::Password("the password is empty".to_owned()));
    }
    Ok(SecretString::from(pw))
}

/// Splits one `.pgpass` line into its five fields, honouring `\:` and `\\`.
fn passfile_fields(line: &str) -> Option<[String; 5]> {
    let mut fields: Vec<String> = Vec::with_capacity(5);
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    fields.try_into().ok()
}

/// Finds the password for `info` in a libpq password file. Like libpq, a file that others
/// can read is ignored, with a warning.
fn lookup_passfile(path: &Path, info: &ConnInfo) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // Every connection looks the file up; say it once per file and process.
        static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
        if !warned.iter().any(|p| p == path) {
            warned.push(path.to_owned());
            tracing::warn!(
                file = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) \
                 or less, so it is ignored"
            );
        }
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let host = &info.hosts[0];
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host.as_str()
    };
    let port = info.ports[0].to_string();
    let wanted = [
        host,
        port.as_str(),
        info.dbname.as_str(),
        info.user.as_str(),
    ];
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(passfile_fields)
        .find(|f| {
            f.iter()
                .take(4)
                .zip(wanted)
                .all(|(pattern, value)| pattern == "*" || pattern == value)
        })
        .map(|f| f[4].clone())
}

/// Fills what the connection string leaves out from the `PG*` variables, as libpq does,
/// and returns the variables that were set but are ignored.
fn fill_from_env(params: &mut ConnParams, env: EnvLookup<'_>) -> Vec<String> {
    let mut ignored = Vec::new();
    for (key, var) in OPTIONS {
        if params.get(key).is_none()
            && let Some(var) = var
            && let Some(value) = env(var)
        {
            if *key == "password" {
                continue; // read last, in libpq's order
            }
            if REFUSED.contains(key) {
                ignored.push(format!("{var} (not supported; ignored)"));
                continue;
            }
            params.0.insert((*key).to_owned(), value);
        }
    }
    ignored
}

/// libpq options pgferry accepts but does not act on, named so `describe` can say so.
fn ignored_options(params: &ConnParams) -> Vec<String> {
    let mut ignored: Vec<String> = [
        "gssencmode",
        "gssdelegation",
        "krbsrvname",
        "gsslib",
        "sslcompression",
        "sslcertmode",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "load_balance_hosts",
        "tcp_user_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
    ]
    .into_iter()
    .filter(|key| params.get(key).is_some())
    .map(str::to_owned)
    .collect();
    if let Some(enc) = params.get("client_encoding")
        && !enc.eq_ignore_ascii_case("utf8")
        && !enc.eq_ignore_ascii_case("utf-8")
    {
        ignored.push(format!("client_encoding={enc} (pgferry always uses UTF8)"));
    }
    ignored
}

/// The hosts to try in order, each with its port: one port for all, or one per host.
fn hosts_and_ports(params: &ConnParams) -> Result<(Vec<String>, Vec<u16>), ConnInfoError> {
    let hosts: Vec<String> = match params.get("hostaddr").or(params.get("host")) {
        Some(h) => h.split(',').map(str::to_owned).collect(),
        None => Vec::new(),
    };
    let port_list: Vec<u16> = match params.get("port") {
        Some(p) => p.split(',').map(port).collect::<Result<_, _>>()?,
        None => vec![5432],
    };
    let hosts = if hosts.is_empty() || hosts.iter().all(String::is_empty) {
        vec![default_host(port_list[0])]
    } else {
        hosts
            .into_iter()
            .map(|h| {
                if h.is_empty() {
                    default_host(port_list[0])
                } else {
                    h
                }
            })
            .collect()
    };
    if port_list.len() != 1 && port_list.len() != hosts.len() {
        return Err(ConnInfoError::Syntax(format!(
            "could not match {} port numbers to {} hosts",
            port_list.len(),
            hosts.len()
        )));
    }
    let ports = if port_list.len() == 1 {
        vec![port_list[0]; hosts.len()]
    } else {
        port_list
    };
    Ok((hosts, ports))
}

/// One entry of `port`; an empty one is the default port, as in libpq.
fn port(p: &str) -> Result<u16, ConnInfoError> {
    if p.is_empty() {
        return Ok(5432);
    }
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ConnInfoError::InvalidValue {
            key: "port".into(),
            value: p.into(),
            expected: "a TCP port between 1 and 65535".into(),
            from_env: None,
        })
}

/// libpq: zero or negative waits forever; below 2 s it uses 2 s.
fn connect_timeout(params: &ConnParams) -> Result<Option<Duration>, ConnInfoError> {
    let Some(t) = params.get("connect_timeout") else {
        return Ok(None);
    };
    let secs: i64 = t.trim().parse().map_err(|_| ConnInfoError::InvalidValue {
        key: "connect_timeout".into(),
        value: t.into(),
        expected: "a whole number of seconds".into(),
        from_env: None,
    })?;
    Ok((secs > 0).then(|| Duration::from_secs(secs.max(2) as u64)))
}

/// The TLS settings, with libpq's defaults from `~/.postgresql`.
struct Tls {
    mode: SslMode,
    rootcert: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl Tls {
    fn from_params(params: &ConnParams, home: Option<&Path>) -> Result<Tls, ConnInfoError> {
        let mut mode = match params.get("sslmode") {
            Some(m) => SslMode::parse(m).ok_or_else(|| ConnInfoError::InvalidValue {
                key: "sslmode".into(),
                value: m.into(),
                expected: "one of disable, allow, prefer, require, verify-ca, verify-full".into(),
                from_env: None,
            })?,
            None if params.get("requiressl") == Some("1") => SslMode::Require,
            None => SslMode::Prefer,
        };
        let home_file = |name: &str| {
            home.map(|h| h.join(".postgresql").join(name))
                .filter(|p| p.exists())
        };
        let rootcert = params
            .get("sslrootcert")
            .map(str::to_owned)
            .or_else(|| home_file("root.crt").map(|p| p.display().to_string()));
        if rootcert.as_deref() == Some("system") && mode != SslMode::VerifyFull {
            // libpq: "system" forces full verification, and refuses weaker explicit modes.
            if params.get("sslmode").is_some() {
                return Err(ConnInfoError::InvalidValue {
                    key: "sslmode".into(),
                    value: mode.as_str().into(),
                    expected: "sslrootcert=system requires sslmode=verify-full".into(),
                    from_env: None,
                });
            }
            mode = SslMode::VerifyFull;
        }
        Ok(Tls {
            mode,
            rootcert,
            cert: params
                .get("sslcert")
                .map(PathBuf::from)
                .or_else(|| home_file("postgresql.crt")),
            key: params
                .get("sslkey")
                .map(PathBuf::from)
                .or_else(|| home_file("postgresql.key")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn resolve(url: &str, env: &[(&str, &str)]) -> Result<ConnInfo, ConnInfoError> {
        ConnInfo::resolve_with(url, None, &env_of(env), None)
    }

    #[test]
    fn a_bad_environment_variable_is_named_not_the_connection_string() {
        let e = resolve("postgres://u@h/db", &[("PGSSLMODE", "junk")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the environment variable PGSSLMODE has an invalid value \"junk\": one of disable, \
             allow, prefer, require, verify-ca, verify-full"
        );
        let e = resolve("postgres://u@h/db", &[("PGCONNECT_TIMEOUT", "abc")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the environment variable PGCONNECT_TIMEOUT")
        );
        // The string's own value is the string's fault, whatever the environment says.
        let e = resolve(
            "postgres://u@h/db?sslmode=junk",
            &[("PGSSLMODE", "require")],
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("connection option \"sslmode\""),
            "{e}"
        );
    }

    #[test]
    fn uri_parts_are_decoded() {
        let p = ConnParams::parse(
            "postgresql://app%40corp@db.example.com:6432/my%20db?sslmode=verify-full&application_name=x",
        )
        .unwrap();
        assert_eq!(p.get("user"), Some("app@corp"));
        assert_eq!(p.get("host"), Some("db.example.com"));
        assert_eq!(p.get("port"), Some("6432"));
        assert_eq!(p.get("dbname"), Some("my db"));
        assert_eq!(p.get("sslmode"), Some("verify-full"));
        assert_eq!(p.get("application_name"), Some("x"));
    }

    #[test]
    fn uri_accepts_ipv6_socket_paths_and_host_lists() {
        let p = ConnParams::parse("postgres://[::1]:5433/db").unwrap();
        assert_eq!(p.get("host"), Some("::1"));
        assert_eq!(p.get("port"), Some("5433"));
        let p = ConnParams::parse("postgresql://%2Fvar%2Frun%2Fpostgresql/db").unwrap();
        assert_eq!(p.get("host"), Some("/var/run/postgresql"));
        let p = ConnParams::parse("postgresql://a:1,b:2/db").unwrap();
        assert_eq!(p.get("host"), Some("a,b"));
        assert_eq!(p.get("port"), Some("1,2"));
        let p = ConnParams::parse("postgresql:///db?host=/tmp").unwrap();
        assert_eq!(p.get("host"), Some("/tmp"));
        assert_eq!(p.get("dbname"), Some("db"));
    }

    #[test]
    fn keyword_strings_follow_libpq_quoting() {
        let p = ConnParams::parse(
            r"host = h1  dbname='my \'odd\' db' application_name=a\ b options='-c x=1'",
        )
        .unwrap();
        assert_eq!(p.get("host"), Some("h1"));
        assert_eq!(p.get("dbname"), Some("my 'odd' db"));
        assert_eq!(p.get("application_name"), Some("a b"));
        assert_eq!(p.get("options"), Some("-c x=1"));
        assert!(matches!(
            ConnParams::parse("host=h dbname='unterminated"),
            Err(ConnInfoError::Syntax(_))
        ));
        assert!(matches!(
            ConnParams::parse("host"),
            Err(ConnInfoError::Syntax(_))
        ));
        assert_eq!(
            ConnParams::parse("hots=h"),
            Err(ConnInfoError::UnknownOption("hots".into()))
        );
    }

    #[test]
    fn passwords_in_either_syntax_are_refused() {
        for s in [
            "postgres://u:secret@h/db",
            "postgres://u@h/db?password=secret",
            "host=h password=secret",
        ] {
            assert_eq!(
                ConnParams::parse(s),
                Err(ConnInfoError::PasswordInString),
                "{s}"
            );
        }
        let msg = ConnInfoError::PasswordInString.to_string();
        assert!(msg.contains("password_file") && !msg.contains("secret"));
    }

    #[test]
    fn environment_fills_the_gaps_but_never_overrides() {
        let info = resolve(
            "postgres://app@db1/inv",
            &[
                ("PGHOST", "ignored"),
                ("PGPORT", "6000"),
                ("PGSSLMODE", "require"),
                ("PGUSER", "ignored"),
                ("PGAPPNAME", "nightly"),
            ],
        )
        .unwrap();
        assert_eq!(info.hosts, ["db1"]);
        assert_eq!(info.ports, [6000]);
        assert_eq!(info.user, "app");
        assert_eq!(info.dbname, "inv");
        assert_eq!(info.sslmode, SslMode::Require);
        assert_eq!(info.application_name.as_deref(), Some("nightly"));
    }

    #[test]
    fn dbname_defaults_to_the_user_and_sslmode_to_prefer() {
        let info = resolve("host=h user=alice", &[]).unwrap();
        assert_eq!(info.dbname, "alice");
        assert_eq!(info.sslmode, SslMode::Prefer);
        assert_eq!(info.ports, [5432]);
    }

    #[test]
    fn every_sslmode_is_understood_and_typos_are_explained() {
        for mode in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            let info = resolve(&format!("host=h user=u sslmode={mode}"), &[]).unwrap();
            assert_eq!(info.sslmode.as_str(), mode);
        }
        let err = resolve("host=h user=u sslmode=verify_full", &[]).unwrap_err();
        assert!(err.to_string().contains("verify-full"), "{err}");
        let info = resolve("postgres://u@h/d?ssl=true", &[]).unwrap();
        assert_eq!(info.sslmode, SslMode::Require);
    }

    #[test]
    fn sslrootcert_system_means_verify_full() {
        let info = resolve("host=h user=u sslrootcert=system", &[]).unwrap();
        assert_eq!(info.sslmode, SslMode::VerifyFull);
        assert!(resolve("host=h user=u sslrootcert=system sslmode=require", &[]).is_err());
    }

    #[test]
    fn ports_pair_with_hosts() {
        let info = resolve("host=a,b port=1,2 user=u", &[]).unwrap();
        assert_eq!(info.ports, [1, 2]);
        let info = resolve("host=a,b port=7 user=u", &[]).unwrap();
        assert_eq!(info.ports, [7, 7]);
        assert!(resolve("host=a,b port=1,2,3 user=u", &[]).is_err());
        assert!(resolve("host=a port=0 user=u", &[]).is_err());
        assert!(resolve("host=a port=x user=u", &[]).is_err());
    }

    #[test]
    fn options_that_cannot_be_honoured_are_refused() {
        assert_eq!(
            resolve("service=prod", &[]).unwrap_err(),
            ConnInfoError::Unsupported("service".into())
        );
        let info = resolve("host=h user=u gssencmode=disable", &[]).unwrap();
        assert_eq!(info.ignored, ["gssencmode"]);
    }

    #[test]
    fn pgpassword_is_used_when_the_task_names_no_source() {
        let info = resolve("host=h user=u", &[("PGPASSWORD", "pw")]).unwrap();
        assert_eq!(info.password.unwrap().expose_secret(), "pw");
        assert_eq!(info.password_origin.as_deref(), Some("PGPASSWORD"));
    }

    #[test]
    fn the_password_file_matches_like_libpq() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:u:wrong\nh:5432:db:u:p\\:w\\\\d\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let url = format!("host=h user=u dbname=db passfile={}", file.display());
        let info = resolve(&url, &[]).unwrap();
        assert_eq!(info.password.unwrap().expose_secret(), "p:w\\d");
        let url = format!("host=zz user=v dbname=db passfile={}", file.display());
        let info = resolve(&url, &[]).unwrap();
        assert_eq!(info.password.unwrap().expose_secret(), "fallback");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let info = resolve(&url, &[]).unwrap();
        assert!(info.password.is_none(), "a world-readable file is ignored");
    }

    #[test]
    fn task_password_sources_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\nsecond line\n").unwrap();
        let env = env_of(&[("PGPASSWORD", "from-env")]);
        let info = ConnInfo::resolve_with(
            "host=h user=u",
            Some(&PasswordSource::File(file)),
            &env,
            None,
        )
        .unwrap();
        assert_eq!(info.password.unwrap().expose_secret(), "from-file");
        let info = ConnInfo::resolve_with(
            "host=h user=u",
            Some(&PasswordSource::Command("printf 'from-cmd\\n'".into())),
            &env,
            None,
        )
        .unwrap();
        assert_eq!(info.password.unwrap().expose_secret(), "from-cmd");
        let err = ConnInfo::resolve_with(
            "host=h user=u",
            Some(&PasswordSource::Command("exit 3".into())),
            &env,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("password_command failed"), "{err}");
    }

    #[test]
    fn descriptions_and_debug_never_show_the_password() {
        let info = resolve("host=h user=u", &[("PGPASSWORD", "s3cret")]).unwrap();
        assert!(!format!("{info:?}").contains("s3cret"));
        assert!(!info.describe().contains("s3cret"));
        assert_eq!(
            info.describe(),
            "host=h port=5432 user=u dbname=u sslmode=prefer"
        );
        let env = info.libpq_env();
        assert!(env.contains(&("PGPASSWORD".into(), "s3cret".into())));
    }

    #[test]
    fn connect_timeout_follows_libpq() {
        let info = resolve("host=h user=u connect_timeout=1", &[]).unwrap();
        assert_eq!(info.connect_timeout, Some(Duration::from_secs(2)));
        let info = resolve("host=h user=u connect_timeout=0", &[]).unwrap();
        assert_eq!(info.connect_timeout, None);
    }
}
