//! Throwaway PostgreSQL clusters.
//!
//! Each [`Cluster`] is a real `postgres` server in its own directory under
//! `$TMPDIR/pgferry-testkit`, listening on a free loopback port, with `wal_level=logical`.
//! Clusters are copies of one `initdb` template, so starting one takes a fraction of a
//! second and tests can start many in parallel. Dropping a cluster stops it and removes its
//! directory, also when a test panics; a test process killed outright leaves its clusters
//! behind, and the next process to start a cluster stops and removes them.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as CI does), the server
//! runs as the `postgres` user, through `runuser`.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::tls::TlsFiles;

/// What can go wrong while managing a cluster. Test code usually just `expect`s these.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL server binaries not found: {0}")]
    NoBinaries(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {}", describe(.source))]
    Sql {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// The server's message and SQLSTATE, which tokio-postgres's own Display leaves out.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// Settings every throwaway cluster gets. They favour speed over durability (`fsync=off`)
/// because the data lives only as long as a test, and short `wal_sender_timeout` so
/// keepalives arrive every few seconds instead of every minute.
const BASE_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "'127.0.0.1'"),
    ("wal_level", "logical"),
    ("max_wal_senders", "20"),
    ("max_replication_slots", "20"),
    ("wal_sender_timeout", "'10s'"),
    ("max_connections", "100"),
    ("shared_buffers", "'64MB'"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("log_min_messages", "warning"),
    ("log_line_prefix", "'%m [%p] %q%u@%d '"),
];

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Serve TLS with a certificate for `localhost` and `127.0.0.1`, signed by a fresh CA.
    pub tls: bool,
    /// Extra `postgresql.conf` lines, `(name, value)` with the value as written in the file.
    pub settings: Vec<(String, String)>,
    /// The server's major version; `None` is the newest Debian one ([`server_bindir`]).
    pub major: Option<u32>,
}

impl ClusterOptions {
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// A server of this major version ([`server_bindir_for`]).
    pub fn major(mut self, major: u32) -> Self {
        self.major = Some(major);
        self
    }
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    bindir: PathBuf,
    tls: Option<TlsFiles>,
    running: AtomicBool,
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The directory of `initdb`, `pg_ctl` and `postgres`: `$PGFERRY_PG_BINDIR`, else the newest
/// Debian `/usr/lib/postgresql/N/bin`, else `pg_config --bindir`.
pub fn server_bindir() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os("PGFERRY_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    Err(ClusterError::NoBinaries(
        "install the PostgreSQL server (postgresql-15 on Debian) or set PGFERRY_PG_BINDIR"
            .to_owned(),
    ))
}

/// Where `scripts/install-deps` puts the server binaries of other majors (npm's
/// `@embedded-postgres` builds): `$PGFERRY_PG_DIR`, else `/opt/pgferry-postgres` for root
/// and `~/.local/share/pgferry-postgres` for anyone else.
pub fn npm_server_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PGFERRY_PG_DIR") {
        return PathBuf::from(dir);
    }
    if is_root() {
        return PathBuf::from("/opt/pgferry-postgres");
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".local/share/pgferry-postgres")
}

/// PostgreSQL 17's client tools (`pg_dump`, `pg_restore`), which `scripts/install-deps`
/// installs beside the servers: for 16 and 17 sources, and for checking that a newer
/// `pg_dump`'s output fits an older target.
pub fn client_bindir_17() -> Result<PathBuf, ClusterError> {
    let dir = npm_server_dir().join("client-17").join("bin");
    if dir.join("pg_dump").exists() {
        Ok(dir)
    } else {
        Err(ClusterError::NoBinaries(format!(
            "no PostgreSQL 17 client tools in {}; run scripts/install-deps",
            dir.display()
        )))
    }
}

/// The server binaries of one major version: Debian's `/usr/lib/postgresql/N/bin`, else
/// the npm build that `scripts/install-deps` installed. `None` is [`server_bindir`].
pub fn server_bindir_for(major: Option<u32>) -> Result<PathBuf, ClusterError> {
    let Some(major) = major else {
        return server_bindir();
    };
    for dir in [
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
        npm_server_dir().join(major.to_string()).join("bin"),
    ] {
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    Err(ClusterError::NoBinaries(format!(
        "no PostgreSQL {major} server binaries in /usr/lib/postgresql/{major}/bin or {}; run \
         scripts/install-deps",
        npm_server_dir().join(major.to_string()).display()
    )))
}

/// A command for a server binary, run as `postgres` when we are root.
fn server_command(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<String, ClusterError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running {what}")))?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Hands a path to the `postgres` user when we are root.
pub(crate) fn give_to_postgres(path: &Path) -> Result<(), ClusterError> {
    if is_root() {
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or_else(|| {
                ClusterError::NoBinaries(
                    "running as root, but there is no `postgres` user to run the server as"
                        .to_owned(),
                )
            })?;
        nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| ClusterError::Io {
            context: format!("chown {}", path.display()),
            source: std::io::Error::from(e),
        })?;
    }
    Ok(())
}

/// `$TMPDIR/pgferry-testkit`, world-writable with the sticky bit like `/tmp` itself, so the
/// `postgres` user can reach its clusters inside.
fn base_dir() -> Result<PathBuf, ClusterError> {
    let base = std::env::temp_dir().join("pgferry-testkit");
    fs::create_dir_all(&base).map_err(io("creating the testkit directory"))?;
    let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o1777));
    Ok(base)
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Stops and removes clusters whose owning test process is gone.
fn reap_orphans(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("c-") else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        let pidfile = entry.path().join("data").join("postmaster.pid");
        if let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("postgres") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// The `initdb` template every cluster of one server build copies. Created once per
/// machine and build (under a file lock, so parallel test processes agree) and reused.
fn template(bindir: &Path) -> Result<PathBuf, ClusterError> {
    type Templates = Mutex<HashMap<PathBuf, Result<PathBuf, String>>>;
    static TEMPLATES: OnceLock<Templates> = OnceLock::new();
    let mut templates = TEMPLATES
        .get_or_init(Templates::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    templates
        .entry(bindir.to_owned())
        .or_insert_with(|| make_template(bindir).map_err(|e| e.to_string()))
        .clone()
        .map_err(|detail| ClusterError::Command {
            what: "initdb".to_owned(),
            detail,
        })
}

fn make_template(bindir: &Path) -> Result<PathBuf, ClusterError> {
    let base = base_dir()?;
    reap_orphans(&base);
    let version = run(
        {
            let mut c = Command::new(bindir.join("postgres"));
            c.arg("--version");
            c
        },
        "postgres --version",
    )?;
    let tag: String = version
        .split_whitespace()
        .nth(2)
        .unwrap_or("x")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let dir = base.join(format!("template-{tag}"));
    let lock_path = base.join(format!("template-{tag}.lock"));
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("opening the template lock"))?;
    let _ = fs::set_permissions(&lock_path, fs::Permissions::from_mode(0o666));
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, e)| ClusterError::Io {
            context: "locking the template".to_owned(),
            source: std::io::Error::from(e),
        },
    )?;
    let data = dir.join("data");
    if dir.join("ready").exists() {
        return Ok(data);
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(io("creating the template directory"))?;
    give_to_postgres(&dir)?;
    let mut initdb = server_command(&bindir.join("initdb"));
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-locale",
        "-N",
    ]);
    run(initdb, "initdb")?;
    fs::write(dir.join("ready"), b"").map_err(io("marking the template ready"))?;
    Ok(data)
}

pub fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("finding a free port"))?
        .port())
}

const PG_HBA: &str = "\
# Written by pgferry-testkit. `postgres` is trusted so tests can set up; every other role
# authenticates with SCRAM, so tests can check password handling.
local   all             all                             trust
host    all             postgres        127.0.0.1/32    trust
host    replication     postgres        127.0.0.1/32    trust
host    all             all             127.0.0.1/32    scram-sha-256
host    replication     all             127.0.0.1/32    scram-sha-256
";

impl Cluster {
    /// Starts a cluster with the default options.
    pub fn start() -> Result<Cluster, ClusterError> {
        Self::start_with(ClusterOptions::default())
    }

    pub fn start_with(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bindir = server_bindir_for(options.major)?;
        let template = template(&bindir)?;
        let base = base_dir()?;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = base.join(format!("c-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(io("creating the cluster directory"))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(io("protecting the cluster directory"))?;
        give_to_postgres(&dir)?;
        let data = dir.join("data");
        let mut copy = server_command(Path::new("cp"));
        copy.arg("-a").arg(&template).arg(&data);
        run(copy, "copying the template cluster")?;

        let mut conf = String::from("\n# pgferry-testkit\n");
        for (k, v) in BASE_SETTINGS {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        conf.push_str(&format!("unix_socket_directories = '{}'\n", dir.display()));
        let tls = if options.tls {
            let files = TlsFiles::generate(&data)?;
            for path in [&files.server_cert, &files.server_key] {
                give_to_postgres(path)?;
            }
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            Some(files)
        } else {
            None
        };
        for (k, v) in &options.settings {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(io("writing postgresql.conf"))?;
        // A TLS cluster accepts TCP connections only over TLS, so a client that connects at
        // all has proven it used TLS. The testkit itself uses the Unix socket.
        let hba = if options.tls {
            PG_HBA.replace("\nhost    ", "\nhostssl ")
        } else {
            PG_HBA.to_owned()
        };
        fs::write(data.join("pg_hba.conf"), hba).map_err(io("writing pg_hba.conf"))?;

        let mut cluster = Cluster {
            dir,
            port: 0,
            bindir,
            tls,
            running: AtomicBool::new(false),
        };
        let mut last_error = None;
        for _ in 0..8 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.running.store(true, Ordering::SeqCst);
                    return Ok(cluster);
                }
                Err(e) => {
                    let log = cluster.log();
                    // Another process took the port between our probe and the bind: retry.
                    if log.contains("could not bind") || log.contains("Address already in use") {
                        last_error = Some(e);
                        continue;
                    }
                    return Err(ClusterError::Command {
                        what: "starting postgres".to_owned(),
                        detail: format!("{e}\n{log}"),
                    });
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ClusterError::Command {
            what: "starting postgres".to_owned(),
            detail: "no free port".to_owned(),
        }))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn pg_ctl_start(&self) -> Result<(), ClusterError> {
        let mut cmd = server_command(&self.bindir.join("pg_ctl"));
        cmd.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {}", self.port))
            .stdout(Stdio::null());
        run(cmd, "pg_ctl start").map(|_| ())
    }

    /// The server's log so far, for diagnosing a failed test.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The cluster's directory, which also holds its Unix socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate that signed the server's, when the cluster serves TLS.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_cert.as_path())
    }

    /// A libpq URI for `user` on database `db`. Plain TCP unless the cluster serves TLS.
    pub fn url_for(&self, user: &str, db: &str) -> String {
        let ssl = if self.tls.is_some() {
            ""
        } else {
            "?sslmode=disable"
        };
        format!("postgres://{user}@127.0.0.1:{}/{db}{ssl}", self.port)
    }

    /// A libpq URI for the superuser `postgres` on database `db`.
    pub fn url(&self, db: &str) -> String {
        self.url_for("postgres", db)
    }

    /// Stops the server. `immediate` is a crash (no checkpoint), `fast` a clean shutdown.
    pub fn stop(&self, mode: StopMode) -> Result<(), ClusterError> {
        let mut cmd = server_command(&self.bindir.join("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "-m", mode.as_str()])
            .stdout(Stdio::null());
        run(cmd, "pg_ctl stop")?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Starts a stopped server again, on the same port.
    pub fn restart(&self) -> Result<(), ClusterError> {
        if self.running.load(Ordering::SeqCst) {
            self.stop(StopMode::Fast)?;
        }
        self.pg_ctl_start()?;
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The server's major version (13 for 13.16), read from `db`.
    pub async fn major(&self, db: &str) -> Result<u32, ClusterError> {
        let client = self.connect(db).await?;
        let num: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| ClusterError::Command {
                what: "reading server_version_num".to_owned(),
                detail: e.to_string(),
            })?
            .get(0);
        Ok((num / 10000) as u32)
    }

    /// Connects as `postgres` to `db` over the cluster's Unix socket.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, ClusterError> {
        self.connector().connect(db).await
    }

    /// What it takes to connect to this cluster, to hand to a background task.
    pub fn connector(&self) -> Connector {
        Connector {
            dir: self.dir.clone(),
            port: self.port,
        }
    }

    /// Waits until replication slot `slot` has confirmed everything written so far: its
    /// `confirmed_flush_lsn` passes the WAL *insert* position read now. (Not
    /// `pg_current_wal_lsn`, the write position, which lags commits when
    /// `synchronous_commit` is off, as it is in test clusters.)
    pub async fn wait_for_slot(
        &self,
        db: &str,
        slot: &str,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let sql_err = |context: &str| {
            let context = context.to_owned();
            move |source| ClusterError::Sql { context, source }
        };
        let c = self.connect(db).await?;
        let lsn: String = c
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .await
            .map_err(sql_err("reading the WAL position"))?
            .get(0);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let done = c
                .query_opt(
                    "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots
                     WHERE slot_name = $1",
                    &[&slot, &lsn],
                )
                .await
                .map_err(sql_err("reading the slot"))?
                .and_then(|r| r.get::<_, Option<bool>>(0))
                .unwrap_or(false);
            if done {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(ClusterError::Command {
                    what: format!("waiting for slot {slot}"),
                    detail: format!("it never confirmed {lsn} within {timeout:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs SQL (several statements allowed) as `postgres` on `db`.
    pub async fn execute(&self, db: &str, sql: &str) -> Result<(), ClusterError> {
        let client = self.connect(db).await?;
        client
            .batch_execute(sql)
            .await
            .map_err(|source| ClusterError::Sql {
                context: "running test SQL".to_owned(),
                source,
            })
    }

    pub async fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        self.execute(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        )
        .await
    }
}

/// How [`Cluster::stop`] shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients and shut down cleanly.
    Fast,
    /// Abort, as a crash would; recovery runs at the next start.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// Connects to a test cluster as `postgres` over its Unix socket; cheap to clone and free of
/// the cluster's lifetime (a connection fails once the cluster is gone).
#[derive(Debug, Clone)]
pub struct Connector {
    dir: PathBuf,
    port: u16,
}

impl Connector {
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, ClusterError> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.dir)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect_timeout(Duration::from_secs(10))
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|source| ClusterError::Sql {
                context: format!("connecting to test cluster on port {}", self.port),
                source,
            })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failing test gets the server's side of the story.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!(
                "--- last lines of the server log (port {}) ---\n{tail}",
                self.port
            );
        }
        if self.running.load(Ordering::SeqCst) {
            let _ = self.stop(StopMode::Immediate);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
