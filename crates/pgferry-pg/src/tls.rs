//! TLS for PostgreSQL connections, with libpq's `sslmode` semantics.
//!
//! | sslmode            | chain checked                      | host name checked |
//! |--------------------|------------------------------------|-------------------|
//! | disable            | no TLS                             | -                 |
//! | allow, prefer      | only if a root certificate is set  | no                |
//! | require            | only if a root certificate is set  | no                |
//! | verify-ca          | yes                                | no                |
//! | verify-full        | yes                                | yes               |
//!
//! "A root certificate is set" means `sslrootcert` or `~/.postgresql/root.crt`, as in libpq.
//! The same [`rustls::ClientConfig`] serves tokio-postgres and the replication client, so
//! both sides of pgferry trust exactly the same servers.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::conninfo::{ConnInfo, SslMode};
use crate::error::{PgError, Side};

/// The crypto provider pgferry uses everywhere. Passing it explicitly means we never depend
/// on a process-wide default, which two TLS stacks in one binary would fight over.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any certificate but still checks the handshake signatures: libpq's
/// `require` without a root certificate, which encrypts but does not authenticate.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks the chain to a trusted root but not the name: libpq's `verify-ca`.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn tls_error(side: Side, info: &ConnInfo, reason: String) -> PgError {
    PgError::Tls {
        side,
        endpoint: info.endpoint(),
        reason,
    }
}

fn load_roots(side: Side, info: &ConnInfo, rootcert: &str) -> Result<RootCertStore, PgError> {
    let mut roots = RootCertStore::empty();
    if rootcert == "system" {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // Individual unusable system certificates are skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(tls_error(
                side,
                info,
                "sslrootcert=system, but no system root certificates were found".to_owned(),
            ));
        }
        return Ok(roots);
    }
    let certs = CertificateDer::pem_file_iter(Path::new(rootcert))
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_error(
                side,
                info,
                format!("cannot read sslrootcert {rootcert}: {e}"),
            )
        })?;
    for cert in certs {
        roots.add(cert).map_err(|e| {
            tls_error(
                side,
                info,
                format!("unusable certificate in {rootcert}: {e}"),
            )
        })?;
    }
    if roots.is_empty() {
        return Err(tls_error(
            side,
            info,
            format!("sslrootcert {rootcert} holds no certificate"),
        ));
    }
    Ok(roots)
}

/// Builds the rustls client configuration that `info.sslmode` asks for. Returns `None` for
/// `sslmode=disable`.
pub fn client_config(side: Side, info: &ConnInfo) -> Result<Option<rustls::ClientConfig>, PgError> {
    if info.sslmode == SslMode::Disable {
        return Ok(None);
    }
    let provider = crypto_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(side, info, e.to_string()))?;

    let needs_roots = matches!(info.sslmode, SslMode::VerifyCa | SslMode::VerifyFull);
    let verifier: Arc<dyn ServerCertVerifier> = match &info.sslrootcert {
        Some(rootcert) if Path::new(rootcert).exists() || rootcert == "system" => {
            let roots = load_roots(side, info, rootcert)?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| tls_error(side, info, e.to_string()))?;
            if info.sslmode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
        Some(rootcert) if needs_roots => {
            return Err(tls_error(
                side,
                info,
                format!(
                    "sslmode={} needs a root certificate, and sslrootcert {rootcert} does not \
                     exist",
                    info.sslmode.as_str()
                ),
            ));
        }
        None if needs_roots => {
            return Err(tls_error(
                side,
                info,
                format!(
                    "sslmode={} needs a root certificate: set sslrootcert=/path/to/ca.pem, or \
                     sslrootcert=system to trust the operating system's roots",
                    info.sslmode.as_str()
                ),
            ));
        }
        _ => Arc::new(EncryptOnly {
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);

    let config = match (&info.sslcert, &info.sslkey) {
        (Some(cert), Some(key)) if cert.exists() => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    tls_error(
                        side,
                        info,
                        format!("cannot read sslcert {}: {e}", cert.display()),
                    )
                })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                tls_error(
                    side,
                    info,
                    format!("cannot read sslkey {}: {e}", key.display()),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(side, info, format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}
