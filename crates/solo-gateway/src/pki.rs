//! Solo's certificates: a CA of its own, the server's certificate, and client
//! certificates whose CN names a tenant (O `solo-admin` makes an admin).
//!
//! Layout in the data directory (PEM; private keys 0600): `certs/ca.pem`,
//! `certs/ca-key.pem`, `certs/server.pem`, `certs/server-key.pem`, `certs/admin.pem`,
//! `certs/admin-key.pem`. `issue` writes `DIR/TENANT.pem`, `DIR/TENANT-key.pem` and a copy
//! of the CA as `DIR/ca.pem`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The organization that marks an admin certificate.
pub const ADMIN_ORG: &str = "solo-admin";
/// The tenant name of the admin certificate `init` creates.
pub const ADMIN_NAME: &str = "admin";
/// The organization that marks a cluster node's own client certificate: it acts for no
/// tenant, only for the clients whose requests it forwards.
pub const NODE_ORG: &str = "solo-node";

/// A certificate problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("certificate: {0}")]
    Cert(String),
    #[error("invalid tenant name {0:?} for a certificate: use [A-Za-z0-9_-], 1 to 64 characters")]
    BadName(String),
}

fn cert_err(e: rcgen::Error) -> PkiError {
    PkiError::Cert(e.to_string())
}

/// The files of a data directory's certificates.
#[derive(Debug, Clone)]
pub struct CertPaths {
    pub dir: PathBuf,
}

impl CertPaths {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("certs"),
        }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    pub fn server(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    pub fn admin(&self) -> PathBuf {
        self.dir.join("admin.pem")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin-key.pem")
    }
    /// Whether the CA exists.
    pub fn initialized(&self) -> bool {
        self.ca().exists() && self.ca_key().exists()
    }
}

/// Writes `data` to `path`, private (0600) when `private`, replacing it atomically.
pub fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), PkiError> {
    let err = |e: std::io::Error| PkiError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| PkiError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Solo CA");
    dn.push(DnType::OrganizationName, "solo");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(3650);
    p
}

/// A CA: its certificate (PEM) and what signs with it.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
}

impl Ca {
    /// A new CA.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let params = ca_params();
        let cert = params.self_signed(&key).map_err(cert_err)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            key_pem,
        })
    }

    /// The CA stored in `paths`.
    pub fn load(paths: &CertPaths) -> Result<Self, PkiError> {
        let cert_pem = read(&paths.ca())?;
        let key_pem = read(&paths.ca_key())?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::File {
            path: paths.ca_key(),
            detail: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::File {
            path: paths.ca(),
            detail: e.to_string(),
        })?;
        Ok(Self {
            cert_pem,
            issuer,
            key_pem,
        })
    }

    /// Writes the CA (key 0600).
    pub fn save(&self, paths: &CertPaths) -> Result<(), PkiError> {
        std::fs::create_dir_all(&paths.dir).map_err(|e| PkiError::File {
            path: paths.dir.clone(),
            detail: e.to_string(),
        })?;
        write_file(&paths.ca_key(), self.key_pem.as_bytes(), true)?;
        write_file(&paths.ca(), self.cert_pem.as_bytes(), false)
    }

    /// `p` signed by the CA with a new key: the certificate and the key (PEM).
    fn sign(&self, p: &CertificateParams) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> Result<(String, String), PkiError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e: rcgen::Error| PkiError::Cert(format!("server name {n:?}: {e}"))),
            })
            .collect::<Result<_, _>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "solo server");
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(825);
        self.sign(&p)
    }

    /// A client certificate for `tenant` (an admin's when `admin`), valid from
    /// `not_before` to `not_after` (now - 1 h to now + 1 year by default).
    pub fn issue_client(
        &self,
        tenant: &str,
        admin: bool,
        validity: Option<(OffsetDateTime, OffsetDateTime)>,
    ) -> Result<(String, String), PkiError> {
        if solo_types::TenantId::new(tenant).is_err() {
            return Err(PkiError::BadName(tenant.to_string()));
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, tenant);
        if admin {
            dn.push(DnType::OrganizationName, ADMIN_ORG);
        }
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        let (from, to) = validity.unwrap_or((now - Duration::hours(1), now + Duration::days(365)));
        p.not_before = from;
        p.not_after = to;
        self.sign(&p)
    }

    /// A cluster node's client certificate (CN the node's id, O [`NODE_ORG`]), valid for
    /// a week: a node issues its own at each start and keeps it in memory only.
    pub fn issue_node(&self, node: &str) -> Result<(String, String), PkiError> {
        if solo_types::TenantId::new(node).is_err() {
            return Err(PkiError::BadName(node.to_string()));
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        dn.push(DnType::OrganizationName, NODE_ORG);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(7);
        self.sign(&p)
    }
}

/// What `init` created (false: it existed already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initialized {
    pub created: bool,
}

/// Creates the CA, the server certificate (for localhost, 127.0.0.1, ::1 and
/// `server_names`) and the admin certificate, unless the CA exists.
pub fn init(data_dir: &Path, server_names: &[String]) -> Result<Initialized, PkiError> {
    let paths = CertPaths::new(data_dir);
    if paths.initialized() {
        return Ok(Initialized { created: false });
    }
    let ca = Ca::generate()?;
    ca.save(&paths)?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(server_names.iter().cloned());
    let (cert, key) = ca.issue_server(&names)?;
    write_file(&paths.server_key(), key.as_bytes(), true)?;
    write_file(&paths.server(), cert.as_bytes(), false)?;
    let (cert, key) = ca.issue_client(ADMIN_NAME, true, None)?;
    write_file(&paths.admin_key(), key.as_bytes(), true)?;
    write_file(&paths.admin(), cert.as_bytes(), false)?;
    Ok(Initialized { created: true })
}

/// Issues a client certificate for `tenant` into `out`: `TENANT.pem`, `TENANT-key.pem`
/// (0600) and `ca.pem`. Returns the certificate's path.
pub fn issue(data_dir: &Path, tenant: &str, admin: bool, out: &Path) -> Result<PathBuf, PkiError> {
    let paths = CertPaths::new(data_dir);
    let ca = Ca::load(&paths)?;
    let (cert, key) = ca.issue_client(tenant, admin, None)?;
    std::fs::create_dir_all(out).map_err(|e| PkiError::File {
        path: out.to_path_buf(),
        detail: e.to_string(),
    })?;
    let cert_path = out.join(format!("{tenant}.pem"));
    write_file(&out.join(format!("{tenant}-key.pem")), key.as_bytes(), true)?;
    write_file(&cert_path, cert.as_bytes(), false)?;
    write_file(&out.join("ca.pem"), ca.cert_pem.as_bytes(), false)?;
    Ok(cert_path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn parse(pem: &[u8]) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn init_creates_a_ca_server_and_admin_once() {
        let d = tempfile::tempdir().unwrap();
        assert!(init(d.path(), &["solo.example".into()]).unwrap().created);
        let p = CertPaths::new(d.path());
        for key in [p.ca_key(), p.server_key(), p.admin_key()] {
            assert_eq!(mode(&key), 0o600, "{}", key.display());
        }
        let ca = parse(&std::fs::read(p.ca()).unwrap());
        let (_, ca) = X509Certificate::from_der(&ca).unwrap();
        assert!(ca.is_ca());

        let server = parse(&std::fs::read(p.server()).unwrap());
        let (_, server) = X509Certificate::from_der(&server).unwrap();
        let sans: Vec<String> = server
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => (*d).to_string(),
                GeneralName::IPAddress(ip) => format!("{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert!(sans.contains(&"localhost".to_string()), "{sans:?}");
        assert!(sans.contains(&"solo.example".to_string()), "{sans:?}");
        assert!(sans.iter().any(|s| s == "[127, 0, 0, 1]"), "{sans:?}");

        let admin = std::fs::read(p.admin()).unwrap();
        let id = crate::tls::peer_identity(Some(&[CertificateDer::from(parse(&admin))])).unwrap();
        assert_eq!(id.common_name, ADMIN_NAME);
        assert!(id.admin);

        // A second init changes nothing.
        let before = std::fs::read(p.ca()).unwrap();
        assert!(!init(d.path(), &[]).unwrap().created);
        assert_eq!(std::fs::read(p.ca()).unwrap(), before);
    }

    #[test]
    fn issue_writes_a_tenant_certificate() {
        let d = tempfile::tempdir().unwrap();
        init(d.path(), &[]).unwrap();
        let out = d.path().join("out");
        let cert = issue(d.path(), "alice", false, &out).unwrap();
        assert_eq!(mode(&out.join("alice-key.pem")), 0o600);
        assert!(out.join("ca.pem").exists());
        let id = crate::tls::peer_identity(Some(&[CertificateDer::from(parse(
            &std::fs::read(cert).unwrap(),
        ))]))
        .unwrap();
        assert_eq!(id.common_name, "alice");
        assert!(!id.admin && !id.node);

        // A node's certificate is marked as one, and is never an admin's.
        let ca = Ca::load(&CertPaths::new(d.path())).unwrap();
        let (node, _) = ca.issue_node("node-a").unwrap();
        let id = crate::tls::peer_identity(Some(&[CertificateDer::from(parse(node.as_bytes()))]))
            .unwrap();
        assert!(id.node && !id.admin);
        assert_eq!(id.common_name, "node-a");
        assert!(ca.issue_node("a b").is_err());

        let err = issue(d.path(), "../evil", false, &out).unwrap_err();
        assert!(matches!(err, PkiError::BadName(_)), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = issue(empty.path(), "alice", false, &out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca"), "{err}");
    }
}
