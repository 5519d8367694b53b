//! Where files go: an S3 bucket and prefix, or a local directory, opened through
//! `object_store` with credentials found the way the AWS CLI finds them.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::aws::Checksum;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::FilesError;

mod profile;

/// How to reach and write the destination. Empty fields fall back to the environment
/// (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_PROFILE`, ...) and then to the shared AWS
/// config files, as the AWS CLI does.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// An S3-compatible endpoint, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// A profile in `~/.aws/credentials` and `~/.aws/config`.
    pub profile: Option<String>,
    /// Storage class sent with every upload, e.g. `STANDARD_IA`.
    pub storage_class: Option<String>,
    /// Server-side encryption: `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).
    pub sse: Option<String>,
    /// The KMS key for `aws:kms`; without it S3 uses the account's default key.
    pub sse_kms_key_id: Option<String>,
    /// Credentials given by a program rather than found in the environment or a profile.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    S3,
    Local,
}

/// An opened destination: the store, the prefix under which the tree goes, and a second
/// handle with short timeouts for the first contact, so a wrong endpoint fails in seconds
/// rather than after minutes of retries.
#[derive(Debug, Clone)]
pub struct Destination {
    url: String,
    kind: Kind,
    pub(crate) store: Arc<dyn ObjectStore>,
    probe: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    bucket: Option<String>,
    credentials_found: bool,
}

impl Destination {
    /// Opens `s3://bucket/prefix` or `file:///some/dir` (a local directory, created if
    /// missing). Nothing is contacted yet: [`Destination::check`] does that.
    pub fn open(url: &str, options: &StoreOptions) -> Result<Self, FilesError> {
        let parsed = Url::parse(url).map_err(|e| {
            FilesError::bad_input(
                format!("the destination {url:?} is not a URL: {e}"),
                Some("write s3://bucket/prefix or file:///absolute/dir"),
            )
        })?;
        match parsed.scheme() {
            "s3" | "s3a" => open_s3(url, &parsed, options),
            "file" => open_local(url, &parsed, options),
            other => Err(FilesError::bad_input(
                format!("pgferry cannot write to {other}:// destinations"),
                Some(
                    "use s3://bucket/prefix (any S3-compatible store, with --endpoint) or file:///absolute/dir",
                ),
            )),
        }
    }

    /// The destination as the user wrote it (it never holds secrets).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether objects can carry metadata, content type and storage class. A local
    /// directory cannot; its files are hashed directly when verified.
    pub fn supports_attributes(&self) -> bool {
        self.kind == Kind::S3
    }

    /// The object key for a path relative to the source root (`/`-separated).
    pub(crate) fn key(&self, relative: &str) -> Result<Path, String> {
        let full = if self.prefix.as_ref().is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.prefix.as_ref())
        };
        Path::parse(&full).map_err(|e| {
            if relative.chars().any(char::is_control) {
                "the name holds a control character (a newline or a tab, say), which no \
                 object key can hold; rename the file"
                    .to_owned()
            } else {
                format!("cannot be an object key: {e}")
            }
        })
    }

    /// The path relative to the prefix of an object listed under it.
    pub(crate) fn relative<'a>(&self, location: &'a Path) -> Option<&'a str> {
        let key = location.as_ref();
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            return Some(key);
        }
        key.strip_prefix(prefix)?.strip_prefix('/')
    }

    /// Contacts the destination once: the bucket must exist and the credentials must be
    /// accepted. Fails in seconds with one clear error when not.
    pub async fn check(&self) -> Result<(), FilesError> {
        match self.probe.list_with_delimiter(Some(&self.prefix)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.store_error("cannot list the destination", &e)),
        }
    }

    /// Turns a store error into one message that names the cause and the fix.
    pub(crate) fn store_error(&self, what: &str, error: &object_store::Error) -> FilesError {
        let detail = error_chain(error);
        let bucket = self.bucket.as_deref().unwrap_or("?");
        let (what, hint) = if detail.contains("NoSuchBucket") {
            (
                format!("the bucket {bucket:?} does not exist"),
                Some(format!(
                    "create it (aws s3 mb s3://{bucket}), or check the name, --region and --endpoint"
                )),
            )
        } else if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidToken",
            "ExpiredToken",
        ]
        .iter()
        .any(|c| detail.contains(c))
        {
            (
                format!("{} refused the credentials", self.url),
                Some("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --profile / AWS_PROFILE)".into()),
            )
        } else if !self.credentials_found
            && (detail.contains("169.254.169.254")
                || detail.contains("AccessDenied")
                || detail.contains("403 Forbidden"))
        {
            (
                format!("no credentials for {}", self.url),
                Some("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --profile / AWS_PROFILE; outside AWS there is no instance role to fall back on, so a request without credentials is refused".into()),
            )
        } else if detail.contains("AccessDenied") || detail.contains("403 Forbidden") {
            (
                format!("{} denied access", self.url),
                Some("the credentials need s3:ListBucket, s3:GetObject, s3:PutObject (and s3:DeleteObject for --delete) on the bucket".into()),
            )
        } else if [
            "error sending request",
            "Connection refused",
            "connection refused",
            "dns error",
            "timed out",
            "operation timed out",
        ]
        .iter()
        .any(|c| detail.contains(c))
        {
            (
                format!("cannot reach the storage endpoint for {}", self.url),
                Some(
                    "check --endpoint (or AWS_ENDPOINT_URL), that the server runs, and the network"
                        .into(),
                ),
            )
        } else {
            return FilesError::Store {
                what: format!("{what} {}", self.url),
                detail,
                hint: None,
            };
        };
        // A recognised cause needs only the server's own words, not the whole response.
        let detail = s3_code_and_message(&detail).unwrap_or(detail);
        FilesError::Store { what, detail, hint }
    }
}

/// `NoSuchBucket: The specified bucket does not exist` out of an S3 error response.
fn s3_code_and_message(detail: &str) -> Option<String> {
    let between = |open: &str, close: &str| {
        let start = detail.find(open)? + open.len();
        let len = detail[start..].find(close)?;
        Some(detail[start..start + len].to_string())
    };
    let code = between("<Code>", "</Code>")?;
    Some(match between("<Message>", "</Message>") {
        Some(message) => format!("{code}: {message}"),
        None => code,
    })
}

/// The error and its causes in one line: object_store's top-level messages are generic,
/// and the S3 error code is in a source.
fn error_chain(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn open_local(url: &str, parsed: &Url, options: &StoreOptions) -> Result<Destination, FilesError> {
    if options.storage_class.is_some() || options.sse.is_some() {
        return Err(FilesError::bad_input(
            "a local directory has no storage class or server-side encryption",
            Some("drop --storage-class and --sse, or sync to s3://"),
        ));
    }
    let dir = parsed.to_file_path().map_err(|()| {
        FilesError::bad_input(
            format!("{url:?} is not a local directory URL"),
            Some("write file:///absolute/dir (three slashes)"),
        )
    })?;
    std::fs::create_dir_all(&dir).map_err(|source| FilesError::Source {
        path: dir.clone(),
        source,
    })?;
    let store = LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
        FilesError::bad_input(
            format!("cannot use {} as a destination: {e}", dir.display()),
            None,
        )
    })?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    Ok(Destination {
        url: url.to_string(),
        kind: Kind::Local,
        probe: store.clone(),
        store,
        prefix: Path::default(),
        bucket: None,
        credentials_found: true,
    })
}

fn open_s3(url: &str, parsed: &Url, options: &StoreOptions) -> Result<Destination, FilesError> {
    let bucket = parsed
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            FilesError::bad_input(
                format!("{url:?} names no bucket"),
                Some("write s3://bucket/prefix"),
            )
        })?
        .to_string();
    let prefix = Path::from_url_path(parsed.path()).map_err(|e| {
        FilesError::bad_input(
            format!("{url:?} has a prefix that cannot be an object key: {e}"),
            None,
        )
    })?;
    let profile = profile::load(options.profile.as_deref())?;

    // SHA-256 on every request body: the server rejects a body damaged on the way.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .with_checksum_algorithm(Checksum::SHA256);
    let (with_keys, credentials_found) = credentials(builder, options, profile.as_ref());
    builder = with_keys;
    if !credentials_found && !elsewhere_credentials() {
        return Err(no_credentials(url, options.profile.as_deref()));
    }
    let region = options
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile.as_ref().and_then(|p| p.region.clone()))
        .unwrap_or_else(|| "us-east-1".into());
    builder = builder.with_region(region);
    let endpoint = options
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"))
        .or_else(|| profile.as_ref().and_then(|p| p.endpoint_url.clone()));
    let mut client = ClientOptions::new();
    if let Some(endpoint) = &endpoint {
        Url::parse(endpoint).map_err(|e| {
            FilesError::bad_input(
                format!("the endpoint {endpoint:?} is not a URL: {e}"),
                Some("write it like http://127.0.0.1:9000 or https://s3.example.com"),
            )
        })?;
        builder = builder.with_endpoint(endpoint);
        if endpoint.starts_with("http://") {
            client = client.with_allow_http(true);
        }
    }
    builder = encryption(builder, options)?;

    let build = |builder: AmazonS3Builder, client: ClientOptions, retry: RetryConfig| {
        builder
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| FilesError::bad_input(format!("cannot configure {url}: {e}"), None))
    };
    let store = build(builder.clone(), client.clone(), RetryConfig::default())?;
    let probe = build(
        builder,
        client
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(20)),
        RetryConfig {
            max_retries: 1,
            retry_timeout: Duration::from_secs(10),
            ..RetryConfig::default()
        },
    )?;
    Ok(Destination {
        url: url.to_string(),
        kind: Kind::S3,
        store: Arc::new(store),
        probe: Arc::new(probe),
        prefix,
        bucket: Some(bucket),
        credentials_found,
    })
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// Credentials in the AWS CLI's order: explicit keys (or an explicit --profile), then the
/// environment, then the profile named by AWS_PROFILE or "default". Returns whether any
/// keys were found.
fn credentials(
    mut builder: AmazonS3Builder,
    options: &StoreOptions,
    profile: Option<&profile::Profile>,
) -> (AmazonS3Builder, bool) {
    let env_keys = env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some();
    if let (Some(key), Some(secret)) = (&options.access_key_id, &options.secret_access_key) {
        builder = builder
            .with_access_key_id(key)
            .with_secret_access_key(secret.expose_secret());
        return (builder, true);
    }
    if let Some(p) = profile
        && (options.profile.is_some() || !env_keys)
        && let (Some(key), Some(secret)) = (&p.access_key_id, &p.secret_access_key)
    {
        builder = builder
            .with_access_key_id(key)
            .with_secret_access_key(secret);
        if let Some(token) = &p.session_token {
            builder = builder.with_token(token);
        }
        return (builder, true);
    }
    (builder, env_keys)
}

/// Without keys, object_store falls back to container, web-identity and instance-role
/// credentials. Where none of those can exist, the caller says so now, with where it
/// looked, rather than let a request fail later for a reason that sounds like something
/// else.
fn elsewhere_credentials() -> bool {
    let elsewhere = [
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ]
    .iter()
    .any(|k| env(k).is_some());
    let metadata_disabled = env("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    elsewhere || !metadata_disabled
}

/// Server-side encryption from --sse and --sse-kms-key-id.
fn encryption(
    mut builder: AmazonS3Builder,
    options: &StoreOptions,
) -> Result<AmazonS3Builder, FilesError> {
    match options.sse.as_deref() {
        None => {
            if options.sse_kms_key_id.is_some() {
                return Err(FilesError::bad_input(
                    "--sse-kms-key-id needs --sse aws:kms",
                    None,
                ));
            }
        }
        Some("aws:kms") => {
            builder = match &options.sse_kms_key_id {
                Some(key) => builder.with_sse_kms_encryption(key),
                None => with_encryption(builder, "aws:kms")?,
            };
        }
        Some("AES256") => {
            if options.sse_kms_key_id.is_some() {
                return Err(FilesError::bad_input(
                    "--sse-kms-key-id needs --sse aws:kms",
                    None,
                ));
            }
            builder = with_encryption(builder, "AES256")?;
        }
        Some(other) => {
            return Err(FilesError::bad_input(
                format!("unknown server-side encryption {other:?}"),
                Some("use --sse AES256 (SSE-S3) or --sse aws:kms (SSE-KMS)"),
            ));
        }
    }

    Ok(builder)
}

/// No credentials anywhere the AWS CLI would look: says where pgferry looked.
fn no_credentials(url: &str, profile: Option<&str>) -> FilesError {
    let profile = profile
        .map(str::to_owned)
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| "default".to_owned());
    FilesError::bad_input(
        format!(
            "no credentials for {url}: none in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, none \
             in profile {profile:?} of ~/.aws/credentials and ~/.aws/config, no container or \
             web-identity credentials, and the instance metadata endpoint is off \
             (AWS_EC2_METADATA_DISABLED)"
        ),
        Some(
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile with --profile \
             or AWS_PROFILE",
        ),
    )
}

/// Sets the encryption type through its config key (the key's enum is not exported).
fn with_encryption(builder: AmazonS3Builder, kind: &str) -> Result<AmazonS3Builder, FilesError> {
    let key = "aws_server_side_encryption"
        .parse()
        .map_err(|e| FilesError::bad_input(format!("cannot configure encryption: {e}"), None))?;
    Ok(builder.with_config(key, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_join_the_prefix_and_relative_paths_come_back() {
        let dest = Destination::open("s3://bucket/some/prefix", &StoreOptions::default()).unwrap();
        let key = dest.key("a dir/ünï + %#.txt").unwrap();
        assert_eq!(key.as_ref(), "some/prefix/a dir/ünï + %#.txt");
        assert_eq!(dest.relative(&key), Some("a dir/ünï + %#.txt"));
        assert_eq!(dest.relative(&Path::from("some/prefixed/x")), None);
        let root = Destination::open("s3://bucket", &StoreOptions::default()).unwrap();
        assert_eq!(root.key("x/y").unwrap().as_ref(), "x/y");
    }

    #[test]
    fn unusable_destinations_say_what_to_write() {
        for (url, expect) in [
            ("bucket/prefix", "not a URL"),
            ("ftp://host/x", "ftp://"),
            ("s3:///prefix", "names no bucket"),
        ] {
            let e = Destination::open(url, &StoreOptions::default()).unwrap_err();
            assert!(e.to_string().contains(expect), "{url}: {e}");
        }
        let sse = StoreOptions {
            sse: Some("rot13".into()),
            ..Default::default()
        };
        assert!(
            Destination::open("s3://b/p", &sse)
                .unwrap_err()
                .to_string()
                .contains("rot13")
        );
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("file://{}", tmp.path().display());
        let class = StoreOptions {
            storage_class: Some("GLACIER".into()),
            ..Default::default()
        };
        assert!(Destination::open(&url, &class).is_err());
        assert!(Destination::open(&url, &StoreOptions::default()).is_ok());
    }
}
