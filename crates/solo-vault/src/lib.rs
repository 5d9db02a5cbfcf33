//! Solo's vault: secrets that only their tenant (and the services it lists) can read.
//!
//! Key hierarchy: a 32-byte master key (`master.key` in the data directory, 0600, or
//! `SOLO_MASTER_KEY`) → per tenant and key id, `HKDF-SHA256(master, salt
//! "solo-vault/v1", info "tenant-key" ‖ kid ‖ tenant)` → AES-256-GCM with a fresh
//! 96-bit random nonce per write and AAD `tenant ‖ 0x00 ‖ name`, so a blob moved to
//! another tenant or name fails to decrypt. Blob layout (version 1):
//! `0x01 ‖ kid u32 BE ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
//!
//! `rotate` re-encrypts every secret under a new key id. Each blob names its own key
//! id, and every key id's key can be derived from the master key, so a rotation cut
//! short by a crash leaves every secret readable; it resumes at the next open.
//!
//! Architecture invariant: key material and secret values live in types that zeroize on
//! drop and redact `Debug`; nothing here logs or serializes them.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use dashmap::DashMap;
use hkdf::Hkdf;
use sha2::Sha256;
use solo_store::{Store, StoreError, WriteBatch};
use solo_types::{Code, NewEvent, TenantId, valid_secret_name};
use zeroize::Zeroizing;

/// Encrypted secrets: `tenant \0 name` → blob.
pub const TABLE: &str = "vault";
/// The vault's own records: the master key check, the current key id, a rotation.
pub const META: &str = "vault_meta";
const META_CHECK: &[u8] = b"check";
const META_KID: &[u8] = b"kid";
const META_ROTATING: &[u8] = b"rotating";
const BLOB_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const SALT: &[u8] = b"solo-vault/v1";
const CHECK_PLAINTEXT: &[u8] = b"solo vault master key check";
/// The largest secret value.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Secrets re-encrypted per commit during a rotation.
const ROTATE_BATCH: usize = 256;

/// A vault failure. Integrity failures are never reported as "not found".
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    #[error("secret {0} not found")]
    NotFound(String),
    #[error(
        "secret {name} failed its integrity check (altered, or moved from another tenant or name)"
    )]
    Integrity { name: String },
    #[error("invalid secret name {0:?}: use 1-256 characters of [A-Za-z0-9_.-]")]
    InvalidName(String),
    #[error("the secret is {size} bytes, over the limit of {MAX_VALUE_BYTES}")]
    TooLarge { size: usize },
    #[error(
        "the master key does not match the one this vault was created with; nothing was changed \
         (check SOLO_MASTER_KEY or {path})"
    )]
    WrongMasterKey { path: String },
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl VaultError {
    pub fn code(&self) -> Code {
        match self {
            VaultError::NotFound(_) => Code::NotFound,
            VaultError::Integrity { .. } => Code::DataLoss,
            VaultError::InvalidName(_) | VaultError::TooLarge { .. } => Code::InvalidArgument,
            VaultError::WrongMasterKey { .. } | VaultError::MasterKey(_) => {
                Code::FailedPrecondition
            }
            VaultError::Store(e) => e.code(),
        }
    }
}

/// The master key. Zeroized on drop; never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    Created(PathBuf),
}

impl MasterKey {
    /// A key from base64 text (32 bytes).
    pub fn from_base64(text: &str) -> Result<Self, VaultError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| VaultError::MasterKey("the master key is not valid base64".into()))?,
        );
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            VaultError::MasterKey(format!(
                "the master key is {} bytes; it must be 32",
                bytes.len()
            ))
        })?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// 32 random bytes from the OS.
    pub fn generate() -> Result<Self, VaultError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut())
            .map_err(|e| VaultError::MasterKey(format!("the OS random source failed: {e}")))?;
        Ok(Self(key))
    }

    /// The key from `env` (the value of `SOLO_MASTER_KEY`) if set, else from
    /// `dir/master.key`, created 0600 on first start. A key file readable by group or
    /// others is refused.
    pub fn load_or_create(dir: &Path, env: Option<&str>) -> Result<(Self, KeySource), VaultError> {
        if let Some(text) = env {
            return Ok((Self::from_base64(text)?, KeySource::Env));
        }
        let path = dir.join("master.key");
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(VaultError::MasterKey(format!(
                        "{} is readable by group or others (mode {:o}); run chmod 600 on it",
                        path.display(),
                        mode & 0o777
                    )));
                }
                let text =
                    Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                        VaultError::MasterKey(format!("read {}: {e}", path.display()))
                    })?);
                let key = Self::from_base64(&text)
                    .map_err(|e| VaultError::MasterKey(format!("{}: {e}", path.display())))?;
                Ok((key, KeySource::File(path)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                let text = Zeroizing::new(format!(
                    "{}\n",
                    base64::engine::general_purpose::STANDARD.encode(key.0.as_ref())
                ));
                let io = |e: std::io::Error| {
                    VaultError::MasterKey(format!("create {}: {e}", path.display()))
                };
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io)?;
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok((key, KeySource::Created(path)))
            }
            Err(e) => Err(VaultError::MasterKey(format!(
                "stat {}: {e}",
                path.display()
            ))),
        }
    }

    fn derive(&self, info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(SALT), self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF's limit of 255 blocks: expand cannot fail.
        let _ = hk.expand_multi_info(info, out.as_mut());
        out
    }
}

/// A secret's value. Zeroized on drop; never printed.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue({} bytes, redacted)", self.0.len())
    }
}

fn aad(tenant: &TenantId, name: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(tenant.as_str().len() + 1 + name.len());
    a.extend_from_slice(tenant.as_str().as_bytes());
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a
}

fn key_of(tenant: &TenantId, name: &str) -> Vec<u8> {
    aad(tenant, name)
}

fn fresh_nonce() -> Result<[u8; NONCE_LEN], VaultError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n)
        .map_err(|e| VaultError::MasterKey(format!("the OS random source failed: {e}")))?;
    Ok(n)
}

/// Secrets of every tenant.
pub struct Vault {
    store: Arc<dyn Store>,
    master: MasterKey,
    kid: AtomicU32,
    ciphers: DashMap<(u32, TenantId), Arc<Aes256Gcm>>,
    /// Held to write by a rotation, to read by a put or a delete: a rotation re-encrypts
    /// what it read, so a write between its read and its commit would be undone.
    rotation: tokio::sync::RwLock<()>,
    origin: String,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("kid", &self.kid.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault in `store` with `master`. On first use it records a check value;
    /// afterwards a different master key is refused, and nothing is written. `origin`
    /// names the key's source in errors.
    pub async fn open(
        store: Arc<dyn Store>,
        master: MasterKey,
        origin: &str,
    ) -> Result<Self, VaultError> {
        let check_key = master.derive(&[b"check"]);
        let check_cipher = Aes256Gcm::new((&*check_key).into());
        let snap = store.snapshot()?;
        let kid = match snap.get(META, META_CHECK)? {
            Some(blob) => {
                if blob.len() < NONCE_LEN {
                    return Err(VaultError::WrongMasterKey {
                        path: origin.into(),
                    });
                }
                let (nonce, ct) = blob.split_at(NONCE_LEN);
                let nonce: [u8; NONCE_LEN] = nonce.try_into().unwrap_or([0; NONCE_LEN]);
                let ok = check_cipher
                    .decrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: ct,
                            aad: b"check",
                        },
                    )
                    .is_ok_and(|p| p == CHECK_PLAINTEXT);
                if !ok {
                    return Err(VaultError::WrongMasterKey {
                        path: origin.into(),
                    });
                }
                snap.get(META, META_KID)?
                    .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                    .map_or(1, u32::from_be_bytes)
            }
            None => {
                let nonce = fresh_nonce()?;
                let ct = check_cipher
                    .encrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: CHECK_PLAINTEXT,
                            aad: b"check",
                        },
                    )
                    .map_err(|_| {
                        VaultError::MasterKey("encrypting the check value failed".into())
                    })?;
                let mut blob = nonce.to_vec();
                blob.extend_from_slice(&ct);
                let mut batch = WriteBatch::new();
                batch.put(META, META_CHECK.to_vec(), blob)?;
                batch.put(META, META_KID.to_vec(), 1u32.to_be_bytes().to_vec())?;
                store.commit(batch).await?;
                1
            }
        };
        Ok(Self {
            store,
            master,
            kid: AtomicU32::new(kid),
            ciphers: DashMap::new(),
            rotation: tokio::sync::RwLock::new(()),
            origin: origin.into(),
        })
    }

    /// Where the master key came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn cipher(&self, kid: u32, tenant: &TenantId) -> Arc<Aes256Gcm> {
        if let Some(c) = self.ciphers.get(&(kid, tenant.clone())) {
            return Arc::clone(c.value());
        }
        let key = self.master.derive(&[
            b"tenant-key",
            &kid.to_be_bytes(),
            tenant.as_str().as_bytes(),
        ]);
        let cipher = Arc::new(Aes256Gcm::new((&*key).into()));
        self.ciphers
            .entry((kid, tenant.clone()))
            .or_insert(cipher)
            .value()
            .clone()
    }

    fn seal(
        &self,
        kid: u32,
        tenant: &TenantId,
        name: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let nonce = fresh_nonce()?;
        let aad = aad(tenant, name);
        let ct = self
            .cipher(kid, tenant)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: value,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::MasterKey("encryption failed".into()))?;
        let mut blob = Vec::with_capacity(HEADER_LEN + ct.len());
        blob.push(BLOB_VERSION);
        blob.extend_from_slice(&kid.to_be_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(blob)
    }

    fn open_blob(
        &self,
        tenant: &TenantId,
        name: &str,
        blob: &[u8],
    ) -> Result<(u32, SecretValue), VaultError> {
        let integrity = || VaultError::Integrity {
            name: name.to_string(),
        };
        if blob.len() < HEADER_LEN + 16 || blob[0] != BLOB_VERSION {
            return Err(integrity());
        }
        let kid = u32::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]);
        let nonce: [u8; NONCE_LEN] = blob[5..HEADER_LEN].try_into().map_err(|_| integrity())?;
        let aad = aad(tenant, name);
        let plain = self
            .cipher(kid, tenant)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &blob[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| integrity())?;
        Ok((kid, SecretValue(Zeroizing::new(plain))))
    }

    fn check(name: &str, value: Option<&[u8]>) -> Result<(), VaultError> {
        if !valid_secret_name(name) {
            return Err(VaultError::InvalidName(name.to_string()));
        }
        if let Some(v) = value
            && v.len() > MAX_VALUE_BYTES
        {
            return Err(VaultError::TooLarge { size: v.len() });
        }
        Ok(())
    }

    /// Stores (or replaces) a secret, with `events` in the same durable commit.
    pub async fn put(
        &self,
        tenant: &TenantId,
        name: &str,
        value: &[u8],
        events: Vec<NewEvent>,
    ) -> Result<Vec<u64>, VaultError> {
        Self::check(name, Some(value))?;
        let _not_while_rotating = self.rotation.read().await;
        let blob = self.seal(self.write_kid(), tenant, name, value)?;
        let mut batch = WriteBatch::new();
        batch.put(TABLE, key_of(tenant, name), blob)?;
        for e in events {
            batch.event(e);
        }
        Ok(self.store.commit(batch).await?.event_ids)
    }

    /// A secret's value.
    pub fn get(&self, tenant: &TenantId, name: &str) -> Result<SecretValue, VaultError> {
        Self::check(name, None)?;
        let blob = self
            .store
            .get(TABLE, &key_of(tenant, name))?
            .ok_or_else(|| VaultError::NotFound(name.to_string()))?;
        Ok(self.open_blob(tenant, name, &blob)?.1)
    }

    /// The names of `tenant`'s secrets, sorted.
    pub fn list(&self, tenant: &TenantId) -> Result<Vec<String>, VaultError> {
        let mut prefix = tenant.as_str().as_bytes().to_vec();
        prefix.push(0);
        let entries = self
            .store
            .snapshot()?
            .scan_prefix(TABLE, &prefix, usize::MAX)?;
        Ok(entries
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    /// Deletes a secret (a no-op if absent), with `events` in the same commit. Returns
    /// whether it existed.
    pub async fn delete(
        &self,
        tenant: &TenantId,
        name: &str,
        events: Vec<NewEvent>,
    ) -> Result<bool, VaultError> {
        Self::check(name, None)?;
        let _not_while_rotating = self.rotation.read().await;
        let existed = self.store.get(TABLE, &key_of(tenant, name))?.is_some();
        let mut batch = WriteBatch::new();
        batch.delete(TABLE, key_of(tenant, name))?;
        for e in events {
            batch.event(e);
        }
        self.store.commit(batch).await?;
        Ok(existed)
    }

    /// The key id new writes use.
    pub fn key_id(&self) -> u32 {
        self.kid.load(Ordering::Acquire)
    }

    /// The key id a write uses now: the newest this vault or its store knows, the
    /// target of a rotation under way included. On a cluster another node may have
    /// rotated, or be rotating, over the same store: nothing written here meanwhile stays
    /// under the key being retired (every node derives every key id's key from the one
    /// master key).
    fn write_kid(&self) -> u32 {
        let stored = |key: &[u8]| {
            self.store
                .get(META, key)
                .ok()
                .flatten()
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map_or(0, u32::from_be_bytes)
        };
        let newest = stored(META_KID).max(stored(META_ROTATING));
        self.kid.fetch_max(newest, Ordering::AcqRel).max(newest)
    }

    /// Whether a rotation was cut short (resume it with [`Vault::rotate`]).
    pub fn rotation_pending(&self) -> Result<Option<u32>, VaultError> {
        Ok(self
            .store
            .get(META, META_ROTATING)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map(u32::from_be_bytes))
    }

    /// Re-encrypts every secret under a new key id (or finishes a rotation cut short).
    /// Returns the number of secrets re-encrypted.
    pub async fn rotate(&self) -> Result<usize, VaultError> {
        let _one_at_a_time = self.rotation.write().await;
        let target = match self.rotation_pending()? {
            Some(t) => t,
            None => {
                let t = self.kid.load(Ordering::Acquire) + 1;
                let mut batch = WriteBatch::new();
                batch.put(META, META_ROTATING.to_vec(), t.to_be_bytes().to_vec())?;
                self.store.commit(batch).await?;
                t
            }
        };
        let mut done = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.store.snapshot()?.range(
                TABLE,
                after
                    .as_deref()
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                std::ops::Bound::Unbounded,
                ROTATE_BATCH,
            )?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let mut batch = WriteBatch::new();
            for (k, blob) in &page {
                let Some(split) = k.iter().position(|b| *b == 0) else {
                    continue;
                };
                let (Ok(tenant), Ok(name)) = (
                    TenantId::new(String::from_utf8_lossy(&k[..split]).into_owned()),
                    String::from_utf8(k[split + 1..].to_vec()),
                ) else {
                    continue;
                };
                match self.open_blob(&tenant, &name, blob) {
                    Ok((kid, _)) if kid == target => {}
                    Ok((_, value)) => {
                        let sealed = self.seal(target, &tenant, &name, value.expose())?;
                        batch.put(TABLE, k.clone(), sealed)?;
                        done += 1;
                    }
                    // An unreadable blob stays as it is (and keeps failing its check).
                    Err(e) => tracing::warn!(error = %e, "rotation skipped an unreadable secret"),
                }
            }
            if !batch.is_empty() {
                self.store.commit(batch).await?;
            }
        }
        let mut batch = WriteBatch::new();
        batch.put(META, META_KID.to_vec(), target.to_be_bytes().to_vec())?;
        batch.delete(META, META_ROTATING.to_vec())?;
        self.store.commit(batch).await?;
        self.kid.store(target, Ordering::Release);
        Ok(done)
    }
}
