//! A throwaway SMTP server for tests: aiosmtpd (PyPI, installed by `scripts/install-deps`)
//! on a free loopback port, delivering every message into a Maildir. Stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ClusterError;

pub struct SmtpServer {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpServer(127.0.0.1:{})", self.port)
    }
}

fn error(what: &str, detail: impl std::fmt::Display) -> ClusterError {
    ClusterError::Command {
        what: what.into(),
        detail: detail.to_string(),
    }
}

impl SmtpServer {
    /// Starts aiosmtpd and waits until it accepts connections.
    pub fn start() -> Result<SmtpServer, ClusterError> {
        let python = std::env::var("PGFERRY_PYTHON").unwrap_or_else(|_| "python3".into());
        let dir = tempfile::tempdir().map_err(|e| error("making a Maildir", e))?;
        let port = crate::cluster::free_port()?;
        // aiosmtpd creates the Maildir itself, and only if it does not exist yet.
        let maildir = dir.path().join("maildir");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| error("starting aiosmtpd (python3 -m aiosmtpd)", e))?;
        let mut server = SmtpServer { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(error(
                    "starting aiosmtpd",
                    format!(
                        "it exited ({status}); install it with scripts/install-deps or \
                         pip install aiosmtpd"
                    ),
                ));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(error("starting aiosmtpd", "it did not listen within 20 s"))
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir").join("new")
    }

    /// Every message delivered so far, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
