//! A throwaway S3-compatible server for tests: moto's server mode (PyPI `moto[server]`,
//! which `scripts/install-deps` installs) on a free loopback port, stopped on drop.
//!
//! moto does not check signatures unless asked, so the helpers here speak plain HTTP:
//! enough to create buckets, plant or damage objects, and read back exactly what the
//! server stored (headers included).

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ClusterError;
pub use crate::http::Response;

/// A running moto server.
pub struct S3Server {
    port: u16,
    child: Child,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Server({})", self.endpoint())
    }
}

fn error(what: &str, detail: impl std::fmt::Display) -> ClusterError {
    ClusterError::Command {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// Percent-encodes an object key for a URL path, keeping `/`.
fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl S3Server {
    /// Starts moto on a free port and waits until it answers.
    pub fn start() -> Result<S3Server, ClusterError> {
        Self::start_with_env(&[])
    }

    /// Starts moto with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0` to make
    /// it check credentials.
    pub fn start_with_env(env: &[(&str, &str)]) -> Result<S3Server, ClusterError> {
        let python = std::env::var("PGFERRY_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = crate::cluster::free_port()?;
            let mut command = Command::new(&python);
            command
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test");
            for (k, v) in env {
                command.env(k, v);
            }
            let child = command
                .spawn()
                .map_err(|e| error("starting moto (python3 -m moto.server)", e))?;
            let mut server = S3Server { port, child };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = server.child.try_wait() {
                    let mut stderr = String::new();
                    if let Some(mut e) = server.child.stderr.take() {
                        let _ = e.read_to_string(&mut stderr);
                    }
                    last_error = format!("moto exited ({status}): {}", stderr.trim());
                    break;
                }
                if server
                    .request("GET", "/", &[], &[])
                    .is_ok_and(|r| r.status < 500)
                {
                    // Drain stderr so moto never blocks on a full pipe.
                    if let Some(mut e) = server.child.stderr.take() {
                        std::thread::spawn(move || std::io::copy(&mut e, &mut std::io::sink()));
                    }
                    return Ok(server);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if last_error.is_empty() {
                last_error = "moto did not answer within 30 s".into();
            }
        }
        Err(error(
            "starting moto",
            format!(
                "{last_error} (install it with scripts/install-deps, or pip install 'moto[server]')"
            ),
        ))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request; `path` is already encoded.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, ClusterError> {
        const AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                            SignedHeaders=host, Signature=0";
        let mut all = vec![("Authorization", AUTH)];
        all.extend_from_slice(headers);
        crate::http::request(self.port, method, path, &all, body)
    }

    fn expect_ok(&self, what: &str, response: Response) -> Result<Response, ClusterError> {
        if (200..300).contains(&response.status) {
            Ok(response)
        } else {
            Err(error(
                what,
                format!(
                    "HTTP {}: {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                ),
            ))
        }
    }

    pub fn create_bucket(&self, bucket: &str) -> Result<(), ClusterError> {
        let r = self.request("PUT", &format!("/{bucket}"), &[], &[])?;
        self.expect_ok("creating a bucket", r).map(|_| ())
    }

    /// Writes an object directly, bypassing pgferry (to plant or damage one).
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(), ClusterError> {
        let r = self.request(
            "PUT",
            &format!("/{bucket}/{}", encode_key(key)),
            headers,
            body,
        )?;
        self.expect_ok("writing an object", r).map(|_| ())
    }

    /// An object's headers as the server stores them, or `None` if it does not exist.
    pub fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<HashMap<String, String>>, ClusterError> {
        let r = self.request("HEAD", &format!("/{bucket}/{}", encode_key(key)), &[], &[])?;
        match r.status {
            404 => Ok(None),
            _ => self
                .expect_ok("reading an object's headers", r)
                .map(|r| Some(r.headers)),
        }
    }

    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, ClusterError> {
        let r = self.request("GET", &format!("/{bucket}/{}", encode_key(key)), &[], &[])?;
        match r.status {
            404 => Ok(None),
            _ => self.expect_ok("reading an object", r).map(|r| Some(r.body)),
        }
    }

    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<(), ClusterError> {
        let r = self.request(
            "DELETE",
            &format!("/{bucket}/{}", encode_key(key)),
            &[],
            &[],
        )?;
        self.expect_ok("deleting an object", r).map(|_| ())
    }

    /// Every key in the bucket, sorted (following continuation tokens past 1000).
    pub fn keys(&self, bucket: &str) -> Result<Vec<String>, ClusterError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&max-keys=1000");
            if let Some(t) = &token {
                path.push_str(&format!(
                    "&continuation-token={}",
                    encode_key(t).replace('/', "%2F")
                ));
            }
            let r = self.request("GET", &path, &[], &[])?;
            let r = self.expect_ok("listing a bucket", r)?;
            let body = String::from_utf8_lossy(&r.body).to_string();
            keys.extend(
                body.split("<Key>")
                    .skip(1)
                    .filter_map(|s| s.split_once("</Key>").map(|(k, _)| unescape_xml(k))),
            );
            token = body
                .split_once("<NextContinuationToken>")
                .and_then(|(_, rest)| rest.split_once("</NextContinuationToken>"))
                .map(|(t, _)| unescape_xml(t));
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }
}

fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
