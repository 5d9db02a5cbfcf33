//! TLS for every listener: rustls with ring, the Solo CA as the only trust root for
//! client certificates, which are optional at the TLS layer (a bearer token may stand
//! in) but verified whenever presented.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pki::{ADMIN_ORG, NODE_ORG};

/// The PEM material a listener needs.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl TlsFiles {
    /// The CA and the server's certificate and key from a data directory's `certs/`.
    pub fn load(paths: &crate::pki::CertPaths) -> Result<Self, crate::pki::PkiError> {
        let read = |p: std::path::PathBuf| {
            std::fs::read(&p).map_err(|e| crate::pki::PkiError::File {
                path: p,
                detail: e.to_string(),
            })
        };
        Ok(Self {
            ca_pem: read(paths.ca())?,
            cert_pem: read(paths.server())?,
            key_pem: read(paths.server_key())?,
        })
    }
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles(redacted)")
    }
}

/// The rustls provider Solo uses everywhere (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The Solo CA as the only trust root.
pub fn ca_roots(files: &TlsFiles) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&files.ca_pem) {
        let cert = cert.map_err(|e| format!("the CA certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The server's TLS configuration: its certificate, client certificates checked
/// against the CA when presented, ALPN for HTTP/2 and HTTP/1.1.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(ca_roots(files)?),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("the client certificate verifier: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&files.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&files.key_pem)
        .map_err(|e| format!("the server key: {e}"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the server certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who the client certificate of a connection names (verified by rustls against the CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The certificate's CN: the tenant.
    pub common_name: String,
    /// Whether its O is `solo-admin` (and not `solo-node`).
    pub admin: bool,
    /// Whether its O is `solo-node`: a cluster node forwarding its clients' requests,
    /// which acts for nobody itself.
    pub node: bool,
}

/// The identity of a connection's leaf certificate, if it presented one.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerIdentity> {
    let leaf = certs?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    let node = orgs.contains(&NODE_ORG);
    let admin = !node && orgs.contains(&ADMIN_ORG);
    Some(PeerIdentity {
        common_name,
        admin,
        node,
    })
}
