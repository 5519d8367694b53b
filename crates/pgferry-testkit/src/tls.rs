//! Certificates for TLS test clusters: a fresh CA and a server certificate it signs, valid
//! for `localhost` and `127.0.0.1`, so `sslmode=verify-full` can pass against a real server.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::cluster::ClusterError;

/// The TLS files of a cluster.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn cert_error(e: rcgen::Error) -> ClusterError {
    ClusterError::Command {
        what: "generating test certificates".to_owned(),
        detail: e.to_string(),
    }
}

impl TlsFiles {
    /// Writes `ca.crt`, `server.crt` and `server.key` into `dir`.
    pub fn generate(dir: &Path) -> Result<TlsFiles, ClusterError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pgferry test CA");
        let ca_key = KeyPair::generate().map_err(cert_error)?;
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(cert_error)?;

        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(cert_error)?;
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().map_err(cert_error)?;
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .map_err(cert_error)?;

        let files = TlsFiles {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        };
        let write = |path: &Path, text: String, mode: u32| -> Result<(), ClusterError> {
            fs::write(path, text).map_err(|source| ClusterError::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| {
                ClusterError::Io {
                    context: format!("protecting {}", path.display()),
                    source,
                }
            })
        };
        write(&files.ca_cert, ca.pem(), 0o644)?;
        write(&files.server_cert, server_cert.pem(), 0o644)?;
        write(&files.server_key, server_key.serialize_pem(), 0o600)?;
        Ok(files)
    }
}
