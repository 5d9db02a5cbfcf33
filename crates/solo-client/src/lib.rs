//! A client for Solo. [`Profile::resolve`] finds the endpoint and credentials (flags,
//! then `SOLO_*` variables, then the local data directory); [`Profile::open`] connects
//! the typed client ([`Solo`]: one method per operation, over `solo_types::api`), and
//! [`Profile::connect`] the raw gRPC one. Requests carry the bearer token, the acting
//! tenant and the addressed node when given (`credentials.rs`).
//!
//! Architecture invariant: no kernel, sandbox or wasmtime here; the client speaks the
//! wire (`solo-proto`) and the operations' types (`solo-types`) only.

mod credentials;
mod typed;

pub use credentials::Credentials;
pub use typed::{Solo, failure};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use solo_proto::v1::solo_kernel_client::SoloKernelClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The gRPC client type a [`Profile`] connects.
pub type Client = SoloKernelClient<InterceptedService<Channel, Credentials>>;

/// The address the server listens on when nothing else says.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:50051";
/// Where the server records the addresses it bound, inside the data directory.
pub const SERVER_FILE: &str = "server.json";

/// What the server records in `SERVER_FILE` on start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    pub grpc: String,
    pub http: String,
    /// The plaintext loopback metrics listener, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    pub pid: u32,
}

/// Why the client could not get going.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error(
        "no credentials: give --cert/--key (or SOLO_CERT/SOLO_KEY), a --token (SOLO_TOKEN), or run `solo init` to create {0}"
    )]
    NoCredentials(PathBuf),
    #[error(
        "no CA certificate to check the server with: give --ca (or SOLO_CA), or run `solo init` to create {0}"
    )]
    NoCa(PathBuf),
    #[error("Solo is not running at {endpoint} ({detail}); start it with `solo server`")]
    NotRunning { endpoint: String, detail: String },
    #[error("cannot connect to Solo at {endpoint}: {detail}")]
    Connect { endpoint: String, detail: String },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("the client certificate {path} {problem}; issue a new one with `solo certs issue`")]
    BadCertificate { path: PathBuf, problem: String },
}

impl ClientError {
    /// The failure as every face reports one (for `--json` output).
    pub fn failure(&self) -> solo_types::api::Failure {
        use solo_types::Code;
        let (code, reason) = match self {
            ClientError::File { .. } => (Code::InvalidArgument, "file_unreadable"),
            ClientError::NoCredentials(_) => (Code::Unauthenticated, "no_credentials"),
            ClientError::NoCa(_) => (Code::InvalidArgument, "no_ca"),
            ClientError::NotRunning { .. } => (Code::Unavailable, "not_running"),
            ClientError::Connect { .. } => (Code::Unavailable, "connect_failed"),
            ClientError::Invalid { .. } => (Code::InvalidArgument, "invalid_argument"),
            ClientError::BadCertificate { .. } => (Code::Unauthenticated, "bad_certificate"),
        };
        solo_types::api::Failure::new(code, reason, self.to_string())
    }
}

/// Checks a client certificate before use with the same verifier the server runs, so
/// an expired one or one from another CA is reported here rather than as a connection
/// the server closes.
pub fn check_certificate(path: &Path, cert_pem: &[u8], ca_pem: &[u8]) -> Result<(), ClientError> {
    use rustls::CertificateError as C;
    let bad = |problem: String| ClientError::BadCertificate {
        path: path.to_path_buf(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not valid PEM: {e}")))?;
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(bad("holds no PEM certificate".into()));
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem).flatten() {
        let _ = roots.add(ca);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| ClientError::Invalid {
                what: "CA certificate",
                detail: e.to_string(),
            })?;
    match verifier.verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
            Err(bad("has expired".into()))
        }
        Err(rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. })) => {
            Err(bad("is not valid yet".into()))
        }
        Err(rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
            Err(bad("was not issued by this Solo CA".into()))
        }
        Err(e) => Err(bad(format!("is refused: {e}"))),
    }
}

/// Settings given on the command line; `None` falls through to the environment.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub endpoint: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub token: Option<String>,
    pub tenant: Option<String>,
    /// Admins, on a cluster: the node to ask.
    pub node: Option<String>,
}

/// Where to connect and as whom.
#[derive(Clone)]
pub struct Profile {
    /// `host:port` of the gRPC listener; for a cluster, several separated by commas,
    /// tried in order until one connects.
    pub endpoint: String,
    /// `host:port` of the HTTPS listener, when known.
    pub http_endpoint: Option<String>,
    pub data_dir: PathBuf,
    pub ca_pem: Vec<u8>,
    /// Certificate and key PEM; `None` with a token.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub credentials: Credentials,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("endpoint", &self.endpoint)
            .field("http_endpoint", &self.http_endpoint)
            .field("data_dir", &self.data_dir)
            .field("has_certificate", &self.identity.is_some())
            .field("credentials", &self.credentials)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn env_of<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

impl Profile {
    /// The same profile asking `node` of a cluster (admins, mode `tenants`: the request
    /// is served by that node whichever node the endpoint names).
    pub fn on_node(&self, node: &str) -> Result<Self, ClientError> {
        let mut p = self.clone();
        p.credentials.node = Some(credentials::header("node", node)?);
        Ok(p)
    }

    /// Resolves the profile: each setting from `flags`, else its `SOLO_*` variable in
    /// `env`, else the data directory (`--data-dir`, `SOLO_DATA_DIR`, `./solo-data`):
    /// its `server.json` for the endpoint and its admin certificate. A token given
    /// without a certificate is used alone (it authorizes exactly what it names).
    pub fn resolve(flags: &Flags, env: &[(String, String)]) -> Result<Self, ClientError> {
        let data_dir = flags
            .data_dir
            .clone()
            .or_else(|| env_of(env, "SOLO_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./solo-data"));
        let server: Option<ServerInfo> = std::fs::read(data_dir.join(SERVER_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let explicit_endpoint = flags
            .endpoint
            .clone()
            .or_else(|| env_of(env, "SOLO_ENDPOINT").map(str::to_string));
        let (endpoint, http_endpoint) = match (explicit_endpoint, &server) {
            (Some(e), _) => (e, None),
            (None, Some(s)) => (s.grpc.clone(), Some(s.http.clone())),
            (None, None) => (DEFAULT_ENDPOINT.to_string(), None),
        };
        let endpoint = endpoint
            .split(',')
            .map(|e| {
                e.trim()
                    .trim_start_matches("https://")
                    .trim_end_matches('/')
            })
            .filter(|e| !e.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        if endpoint.is_empty() {
            return Err(ClientError::Invalid {
                what: "endpoint",
                detail: "it names no address".into(),
            });
        }

        let token = flags
            .token
            .clone()
            .or_else(|| env_of(env, "SOLO_TOKEN").map(str::to_string));
        let cert = flags
            .cert
            .clone()
            .or_else(|| env_of(env, "SOLO_CERT").map(PathBuf::from));
        let key = flags
            .key
            .clone()
            .or_else(|| env_of(env, "SOLO_KEY").map(PathBuf::from));
        let certs = data_dir.join("certs");
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, read(&k)?)),
            (Some(_), None) | (None, Some(_)) => {
                return Err(ClientError::Invalid {
                    what: "credentials",
                    detail: "a client certificate needs its key: give both --cert and --key".into(),
                });
            }
            (None, None) if token.is_some() => None,
            (None, None) => {
                let (c, k) = (certs.join("admin.pem"), certs.join("admin-key.pem"));
                if !c.exists() {
                    return Err(ClientError::NoCredentials(c));
                }
                Some((c, read(&k)?))
            }
        };
        let ca = flags
            .ca
            .clone()
            .or_else(|| env_of(env, "SOLO_CA").map(PathBuf::from))
            .unwrap_or_else(|| certs.join("ca.pem"));
        if !ca.exists() {
            return Err(ClientError::NoCa(ca));
        }
        let ca_pem = read(&ca)?;
        let identity = match identity {
            Some((path, key)) => {
                let cert = read(&path)?;
                check_certificate(&path, &cert, &ca_pem)?;
                Some((cert, key))
            }
            None => None,
        };
        let tenant = flags
            .tenant
            .clone()
            .or_else(|| env_of(env, "SOLO_TENANT").map(str::to_string));
        let node = flags
            .node
            .clone()
            .or_else(|| env_of(env, "SOLO_NODE").map(str::to_string));
        let credentials = Credentials::new(token.as_deref(), tenant.as_deref(), node.as_deref())?;
        Ok(Self {
            endpoint,
            http_endpoint,
            data_dir,
            ca_pem,
            identity,
            credentials,
        })
    }

    /// Connects to the gRPC endpoint (eagerly, so a server that is not running is
    /// reported here); of several, to the first that connects, in order.
    pub async fn connect(&self) -> Result<Client, ClientError> {
        let mut failed = Vec::new();
        for one in self.endpoint.split(',') {
            match self.connect_to(one).await {
                Ok(client) => return Ok(client),
                Err(e @ ClientError::Invalid { .. }) => return Err(e),
                Err(e) => failed.push(e),
            }
        }
        if failed.len() == 1 {
            return Err(failed.remove(0));
        }
        let detail = failed
            .iter()
            .map(|e| match e {
                ClientError::NotRunning { endpoint, detail }
                | ClientError::Connect { endpoint, detail } => format!("{endpoint}: {detail}"),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        if failed
            .iter()
            .all(|e| matches!(e, ClientError::NotRunning { .. }))
        {
            Err(ClientError::NotRunning {
                endpoint: self.endpoint.clone(),
                detail,
            })
        } else {
            Err(ClientError::Connect {
                endpoint: self.endpoint.clone(),
                detail,
            })
        }
    }

    async fn connect_to(&self, address: &str) -> Result<Client, ClientError> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let endpoint = Endpoint::from_shared(format!("https://{address}"))
            .map_err(|e| ClientError::Invalid {
                what: "endpoint",
                detail: format!("{address}: {e}"),
            })?
            .tls_config(tls)
            .map_err(|e| ClientError::Invalid {
                what: "TLS settings",
                detail: error_chain(&e),
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            let detail = error_chain(&e);
            if detail.contains("Connection refused") || detail.contains("connection refused") {
                ClientError::NotRunning {
                    endpoint: address.to_string(),
                    detail: "connection refused".into(),
                }
            } else {
                ClientError::Connect {
                    endpoint: address.to_string(),
                    detail,
                }
            }
        })?;
        Ok(
            SoloKernelClient::with_interceptor(channel, self.credentials.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }

    /// Connects the typed client.
    pub async fn open(&self) -> Result<Solo, ClientError> {
        self.connect().await.map(Solo::new)
    }

    /// A rustls client configuration with this profile's CA and certificate, for HTTPS
    /// clients of the REST API.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        rustls_config(&self.ca_pem, self.identity.as_ref())
    }
}

/// A rustls client configuration trusting `ca_pem`, presenting `identity` if given.
pub fn rustls_config(
    ca_pem: &[u8],
    identity: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<rustls::ClientConfig, ClientError> {
    let invalid = |what: &'static str| {
        move |e: rustls::pki_types::pem::Error| ClientError::Invalid {
            what,
            detail: e.to_string(),
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(invalid("CA certificate"))?)
            .map_err(|e| ClientError::Invalid {
                what: "CA certificate",
                detail: e.to_string(),
            })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Invalid {
            what: "TLS settings",
            detail: e.to_string(),
        })?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(invalid("client certificate"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(invalid("client key"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Invalid {
                    what: "client certificate",
                    detail: e.to_string(),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// An error and its sources on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A failed RPC as one line: the reason the server gave (its `solo-reason`) and message.
pub fn describe_status(s: &tonic::Status) -> String {
    let reason = s
        .metadata()
        .get(solo_proto::REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let code = format!("{:?}", s.code());
    let transport = matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    );
    match reason {
        Some(r) => format!("{r}: {}", s.message()),
        None if transport => {
            let detail = std::error::Error::source(s).map_or_else(String::new, error_chain);
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            };
            format!(
                "{code}: {}{detail} (the connection failed; if the server refused it, check that the client certificate was issued by its CA and has not expired)",
                s.message()
            )
        }
        None => format!("{code}: {}", s.message()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    /// A CA and a client certificate valid over `validity`, as PEM.
    fn pki(validity: (time::OffsetDateTime, time::OffsetDateTime)) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(p, ca_key);
        let mut c = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        c.distinguished_name
            .push(rcgen::DnType::CommonName, "admin");
        (c.not_before, c.not_after) = validity;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = c.signed_by(&key, &issuer).unwrap();
        (ca.pem(), cert.pem())
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    fn data_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let certs = d.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let (ca, cert) = pki((
            now() - time::Duration::hours(1),
            now() + time::Duration::days(1),
        ));
        std::fs::write(certs.join("ca.pem"), ca).unwrap();
        std::fs::write(certs.join("admin.pem"), cert).unwrap();
        std::fs::write(certs.join("admin-key.pem"), "key").unwrap();
        d
    }

    #[test]
    fn expired_and_foreign_certificates_are_caught_before_connecting() {
        let (ca, expired) = pki((
            now() - time::Duration::days(9),
            now() - time::Duration::days(1),
        ));
        let err = check_certificate(Path::new("c.pem"), expired.as_bytes(), ca.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("expired"), "{err}");
        let (_, foreign) = pki((
            now() - time::Duration::hours(1),
            now() + time::Duration::days(1),
        ));
        let err = check_certificate(Path::new("c.pem"), foreign.as_bytes(), ca.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not issued by this Solo CA"), "{err}");
        let (ca, good) = pki((
            now() - time::Duration::hours(1),
            now() + time::Duration::days(1),
        ));
        check_certificate(Path::new("c.pem"), good.as_bytes(), ca.as_bytes()).unwrap();
    }

    #[test]
    fn data_dir_supplies_everything() {
        let d = data_dir();
        std::fs::write(
            d.path().join(SERVER_FILE),
            r#"{"grpc":"127.0.0.1:7001","http":"127.0.0.1:7002","pid":1}"#,
        )
        .unwrap();
        let flags = Flags {
            data_dir: Some(d.path().to_path_buf()),
            ..Flags::default()
        };
        let p = Profile::resolve(&flags, &[]).unwrap();
        assert_eq!(p.endpoint, "127.0.0.1:7001");
        assert_eq!(p.http_endpoint.as_deref(), Some("127.0.0.1:7002"));
        assert!(p.identity.is_some());
        assert!(p.ca_pem.starts_with(b"-----BEGIN CERTIFICATE"));
    }

    #[test]
    fn flags_beat_env_beat_data_dir() {
        let d = data_dir();
        let dir = d.path().display().to_string();
        let e = env(&[("SOLO_DATA_DIR", &dir), ("SOLO_ENDPOINT", "10.0.0.1:1")]);
        let p = Profile::resolve(&Flags::default(), &e).unwrap();
        assert_eq!(p.endpoint, "10.0.0.1:1");
        let flags = Flags {
            endpoint: Some("https://10.0.0.2:2/".into()),
            ..Flags::default()
        };
        let p = Profile::resolve(&flags, &e).unwrap();
        assert_eq!(p.endpoint, "10.0.0.2:2");
        // No server.json, no flag, no variable: the default port.
        let p = Profile::resolve(
            &Flags {
                data_dir: Some(d.path().into()),
                ..Flags::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(p.endpoint, DEFAULT_ENDPOINT);
    }

    #[test]
    fn several_endpoints_are_read_in_order_and_an_empty_list_is_refused() {
        let d = data_dir();
        let dir = d.path().display().to_string();
        let e = env(&[
            ("SOLO_DATA_DIR", &dir),
            ("SOLO_ENDPOINT", " https://10.0.0.3:3/, 10.0.0.4:4 ,"),
        ]);
        let p = Profile::resolve(&Flags::default(), &e).unwrap();
        assert_eq!(p.endpoint, "10.0.0.3:3,10.0.0.4:4");
        let e = env(&[("SOLO_DATA_DIR", &dir), ("SOLO_ENDPOINT", " , ")]);
        let err = Profile::resolve(&Flags::default(), &e).unwrap_err();
        assert!(err.to_string().contains("names no address"), "{err}");
    }

    #[tokio::test]
    async fn of_several_endpoints_none_running_each_is_named() {
        let d = data_dir();
        let closed = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let (a, b) = (closed(), closed());
        let flags = Flags {
            data_dir: Some(d.path().into()),
            endpoint: Some(format!("{a},{b}")),
            // (a token alone: the helper's certificate files are placeholders)
            token: Some("solo_x".into()),
            ..Flags::default()
        };
        let p = Profile::resolve(&flags, &[]).unwrap();
        let Err(err) = p.connect().await else {
            panic!("nothing listens there")
        };
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("{a}: connection refused")), "{text}");
        assert!(text.contains(&format!("{b}: connection refused")), "{text}");
    }

    #[test]
    fn a_token_alone_needs_no_certificate() {
        let d = data_dir();
        let dir = d.path().display().to_string();
        let e = env(&[("SOLO_DATA_DIR", &dir), ("SOLO_TOKEN", "solo_abc")]);
        let p = Profile::resolve(&Flags::default(), &e).unwrap();
        assert!(p.identity.is_none());
        assert!(
            !format!("{p:?}").contains("solo_abc"),
            "the token is never printed"
        );
    }

    #[test]
    fn missing_credentials_say_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let flags = Flags {
            data_dir: Some(d.path().to_path_buf()),
            ..Flags::default()
        };
        let err = Profile::resolve(&flags, &[]).unwrap_err().to_string();
        assert!(err.contains("solo init"), "{err}");
        let flags = Flags {
            cert: Some(d.path().join("x.pem")),
            ..flags
        };
        let err = Profile::resolve(&flags, &[]).unwrap_err().to_string();
        assert!(err.contains("--key"), "{err}");
    }
}
