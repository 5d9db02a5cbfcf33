//! Capability tokens: narrow, expiring, revocable rights that agents hand to other
//! agents and to services.
//!
//! A token is `solo_` + base64url(32 random bytes from the OS). Only SHA-256(token) is
//! kept, durably (table `capabilities`, one JSON record per hash) and in memory for
//! verification: a hash lookup in a sharded map (no lock shared by all tenants) and
//! constant-time comparison. Revocation cascades to every capability attenuated from
//! the revoked one; expired capabilities are purged.
//!
//! Architecture invariant: a raw token exists only in the [`Token`] returned by
//! [`Caps::grant`] and [`Caps::attenuate`]; it is never stored, logged or put in an
//! event.

pub mod model;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use solo_store::{Store, StoreError, WriteBatch};
use solo_types::{
    Code, NewEvent, Permission, Permissions, Resource, TenantId, kinds, metric_names as m,
};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use model::{AttenuateError, Scope};
pub use solo_types::api::{CapInfo, DenyReason, Granted, Narrowing, Token};

/// The table of capability records.
pub const TABLE: &str = "capabilities";
const RECORD_VERSION: u32 = 1;
const TOKEN_PREFIX: &str = "solo_";
/// The longest a capability may live.
pub const MAX_TTL_SECONDS: i64 = 365 * 24 * 3600;
/// Denial events recorded per tenant per second; the rest are counted.
const DENIAL_EVENTS_PER_SECOND: u32 = 20;

/// The SHA-256 of a token, which is how a capability is named.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapHash(pub [u8; 32]);

impl CapHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl std::fmt::Debug for CapHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CapHash({})", self.to_hex())
    }
}

/// Hashes a token of the right shape; anything else cannot be a token.
fn hash_token(token: &str) -> Option<CapHash> {
    let body = token.strip_prefix(TOKEN_PREFIX)?;
    if body.len() != 43
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some(CapHash(Sha256::digest(token.as_bytes()).into()))
}

#[derive(Serialize, Deserialize)]
struct Record {
    v: u32,
    #[serde(flatten)]
    info: CapInfo,
}

struct Cap {
    hash: CapHash,
    scope: Scope,
    parent: Option<CapHash>,
    created_at: i64,
    revoked: AtomicBool,
}

impl Cap {
    fn info(&self) -> CapInfo {
        CapInfo {
            hash: self.hash.to_hex(),
            tenant: self.scope.tenant.clone(),
            resource: self.scope.resource.clone(),
            permissions: self.scope.permissions,
            expires_at: self.scope.expires_at,
            revoked: self.revoked.load(Ordering::Acquire),
            parent: self.parent.map(|p| p.to_hex()),
            created_at: self.created_at,
        }
    }
}

/// Why an operation on capabilities failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CapsError {
    #[error("{0}")]
    Invalid(String),
    #[error("capability denied: {0}")]
    Denied(DenyReason),
    #[error(transparent)]
    Attenuate(#[from] AttenuateError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("a stored capability is unreadable: {0}")]
    Corrupt(String),
}

impl CapsError {
    pub fn code(&self) -> Code {
        match self {
            CapsError::Invalid(_) | CapsError::Attenuate(_) => Code::InvalidArgument,
            CapsError::Denied(DenyReason::NotFound) => Code::NotFound,
            CapsError::Denied(_) => Code::PermissionDenied,
            CapsError::Store(e) => e.code(),
            CapsError::Corrupt(_) => Code::DataLoss,
        }
    }
}

/// A small per-tenant rate limiter for denial events.
struct Sampler {
    window: parking_lot::Mutex<(i64, u32, u64)>,
}

/// The UTC wall clock in ns (injectable, so TTLs are tested without sleeping).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// All capabilities, in memory and in the store.
pub struct Caps {
    store: Arc<dyn Store>,
    clock: Clock,
    caps: DashMap<CapHash, Arc<Cap>>,
    children: DashMap<CapHash, Vec<CapHash>>,
    /// Denials recorded per log: a tenant's, or (`None`) the system's.
    denials: DashMap<Option<TenantId>, Sampler>,
}

fn mint() -> Result<(Token, CapHash), CapsError> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(raw.as_mut())
        .map_err(|e| CapsError::Invalid(format!("the OS random source failed: {e}")))?;
    let token = Zeroizing::new(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref())
    ));
    let hash = CapHash(Sha256::digest(token.as_bytes()).into());
    Ok((Token::new(token.to_string()), hash))
}

impl Caps {
    /// Loads every stored capability.
    pub fn load(store: Arc<dyn Store>) -> Result<Self, CapsError> {
        Self::load_with_clock(store, Arc::new(solo_types::clock::system_now_ns))
    }

    /// Loads every stored capability, telling time with `clock`.
    pub fn load_with_clock(store: Arc<dyn Store>, clock: Clock) -> Result<Self, CapsError> {
        let caps = Self {
            store,
            clock,
            caps: DashMap::new(),
            children: DashMap::new(),
            denials: DashMap::new(),
        };
        caps.reload()?;
        Ok(caps)
    }

    /// Reads every stored capability again: those another writer of the same store
    /// (another node of a cluster) granted since are added, those it revoked are marked
    /// revoked here too. Returns how many were new.
    pub fn reload(&self) -> Result<usize, CapsError> {
        let mut added = 0;
        let snapshot = self.store.snapshot()?;
        let mut start: Vec<u8> = Vec::new();
        loop {
            let page = snapshot.range(
                TABLE,
                if start.is_empty() {
                    std::ops::Bound::Unbounded
                } else {
                    std::ops::Bound::Excluded(start.as_slice())
                },
                std::ops::Bound::Unbounded,
                1000,
            )?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            for (k, v) in page {
                let rec: Record = serde_json::from_slice(&v).map_err(|e| {
                    CapsError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(&k)))
                })?;
                let known = CapHash::from_hex(&rec.info.hash)
                    .and_then(|h| self.caps.get(&h).map(|c| Arc::clone(c.value())));
                match known {
                    Some(cap) => {
                        if rec.info.revoked {
                            cap.revoked.store(true, Ordering::Release);
                        }
                    }
                    None => {
                        self.insert(rec.info)?;
                        added += 1;
                    }
                }
            }
        }
        Ok(added)
    }

    fn insert(&self, info: CapInfo) -> Result<Arc<Cap>, CapsError> {
        let hash = CapHash::from_hex(&info.hash)
            .ok_or_else(|| CapsError::Corrupt(format!("bad hash {:?}", info.hash)))?;
        let parent = match &info.parent {
            Some(p) => Some(
                CapHash::from_hex(p)
                    .ok_or_else(|| CapsError::Corrupt(format!("bad parent {p:?}")))?,
            ),
            None => None,
        };
        let cap = Arc::new(Cap {
            hash,
            scope: Scope {
                tenant: info.tenant,
                resource: info.resource,
                permissions: info.permissions,
                expires_at: info.expires_at,
            },
            parent,
            created_at: info.created_at,
            revoked: AtomicBool::new(info.revoked),
        });
        self.caps.insert(hash, Arc::clone(&cap));
        if let Some(p) = parent {
            self.children.entry(p).or_default().push(hash);
        }
        Ok(cap)
    }

    fn record(info: &CapInfo) -> Result<Vec<u8>, CapsError> {
        serde_json::to_vec(&Record {
            v: RECORD_VERSION,
            info: info.clone(),
        })
        .map_err(|e| CapsError::Invalid(e.to_string()))
    }

    /// Mints a capability of `tenant` on `resource` with `permissions` for `ttl_seconds`;
    /// returns once it is durable.
    pub async fn grant(
        &self,
        tenant: &TenantId,
        resource: Resource,
        permissions: Permissions,
        ttl_seconds: i64,
    ) -> Result<Granted, CapsError> {
        if ttl_seconds <= 0 || ttl_seconds > MAX_TTL_SECONDS {
            return Err(CapsError::Invalid(format!(
                "a TTL must be between 1 and {MAX_TTL_SECONDS} seconds (got {ttl_seconds})"
            )));
        }
        if permissions.is_empty() {
            return Err(CapsError::Invalid(
                "a capability needs at least one permission".into(),
            ));
        }
        let now = (self.clock)();
        let scope = Scope {
            tenant: tenant.clone(),
            resource,
            permissions,
            expires_at: now.saturating_add(ttl_seconds.saturating_mul(1_000_000_000)),
        };
        self.mint_durable(scope, None, now, kinds::CAPABILITY_GRANTED)
            .await
    }

    async fn mint_durable(
        &self,
        scope: Scope,
        parent: Option<CapHash>,
        now: i64,
        kind: &str,
    ) -> Result<Granted, CapsError> {
        let (token, hash) = mint()?;
        let info = CapInfo {
            hash: hash.to_hex(),
            tenant: scope.tenant.clone(),
            resource: scope.resource.clone(),
            permissions: scope.permissions,
            expires_at: scope.expires_at,
            revoked: false,
            parent: parent.map(|p| p.to_hex()),
            created_at: now,
        };
        let mut batch = WriteBatch::new();
        batch.put(TABLE, info.hash.clone(), Self::record(&info)?)?;
        batch.event(NewEvent::tenant(kind, &scope.tenant).payload(json!({
            "hash": info.hash,
            "resource": info.resource,
            "permissions": info.permissions,
            "expires_at": info.expires_at,
            "parent": info.parent,
        })));
        let commit = self.store.commit(batch).await?;
        self.insert(info.clone())?;
        metrics::counter!(m::CAPABILITY_DECISIONS, "decision" => "granted").increment(1);
        Ok(Granted {
            token,
            info,
            event_id: commit.event_ids.first().copied().unwrap_or(0),
        })
    }

    /// Whether `token` allows `permission` on `resource` of `tenant` (any tenant when
    /// `None`: a bearer token acts for the tenant that granted it).
    pub fn verify(
        &self,
        token: &str,
        tenant: Option<&TenantId>,
        resource: &Resource,
        permission: Permission,
    ) -> Result<CapInfo, DenyReason> {
        self.check(token, tenant, resource, permission)
            .map(|cap| cap.info())
    }

    /// The tenant that granted `token`, if it is one this store holds (revoked or
    /// expired ones too): where a cluster routes a bearer request, not an authorization
    /// (the node that serves the tenant verifies the token). Read from memory, else from
    /// the store, which another node may have written since this one loaded it.
    pub fn tenant_of(&self, token: &str) -> Option<TenantId> {
        let hash = hash_token(token)?;
        if let Some(cap) = self.caps.get(&hash) {
            return Some(cap.scope.tenant.clone());
        }
        let v = self.store.get(TABLE, hash.to_hex().as_bytes()).ok()??;
        let rec: Record = serde_json::from_slice(&v).ok()?;
        Some(rec.info.tenant)
    }

    /// [`Caps::verify`] without describing the capability: the hot path of a guest's
    /// `verify`, which only needs the answer.
    pub fn verify_only(
        &self,
        token: &str,
        tenant: Option<&TenantId>,
        resource: &Resource,
        permission: Permission,
    ) -> Result<(), DenyReason> {
        self.check(token, tenant, resource, permission).map(|_| ())
    }

    fn check(
        &self,
        token: &str,
        tenant: Option<&TenantId>,
        resource: &Resource,
        permission: Permission,
    ) -> Result<Arc<Cap>, DenyReason> {
        let hash = hash_token(token).ok_or(DenyReason::NotFound)?;
        let cap = self
            .caps
            .get(&hash)
            .map(|c| Arc::clone(c.value()))
            .ok_or(DenyReason::NotFound)?;
        if !bool::from(cap.hash.0.ct_eq(&hash.0)) {
            return Err(DenyReason::NotFound);
        }
        // Another tenant's token is, to this verifier, no token at all: whether it is
        // valid, revoked or expired elsewhere is not the verifier's to learn.
        if tenant.is_some_and(|t| *t != cap.scope.tenant) {
            return Err(DenyReason::NotFound);
        }
        let now = (self.clock)();
        self.usable(&cap, now)?;
        model::authorizes(&cap.scope, tenant, resource, permission, now)?;
        Ok(cap)
    }

    /// The capability a bearer `token` stands for, if it is known, unrevoked and
    /// unexpired. What it allows is checked per use with [`Caps::verify`] or its scope.
    pub fn authenticate(&self, token: &str) -> Result<CapInfo, DenyReason> {
        let hash = hash_token(token).ok_or(DenyReason::NotFound)?;
        let cap = self
            .caps
            .get(&hash)
            .map(|c| Arc::clone(c.value()))
            .ok_or(DenyReason::NotFound)?;
        if !bool::from(cap.hash.0.ct_eq(&hash.0)) {
            return Err(DenyReason::NotFound);
        }
        self.usable(&cap, (self.clock)())?;
        Ok(cap.info())
    }

    /// Whether the capability with hash `hash_hex` may still act: known, neither it nor
    /// an ancestor revoked, unexpired (a service deployed by a token acts with it).
    pub fn check_hash(&self, hash_hex: &str) -> Result<(), DenyReason> {
        let hash = CapHash::from_hex(hash_hex).ok_or(DenyReason::NotFound)?;
        let cap = self
            .caps
            .get(&hash)
            .map(|c| Arc::clone(c.value()))
            .ok_or(DenyReason::NotFound)?;
        self.usable(&cap, (self.clock)())
    }

    /// Neither `cap` nor an ancestor is revoked, and it has not expired. Revocation
    /// cascades when it happens; walking up also covers a child minted while its parent
    /// was being revoked.
    fn usable(&self, cap: &Arc<Cap>, now: i64) -> Result<(), DenyReason> {
        let mut at = Some(Arc::clone(cap));
        while let Some(c) = at {
            if c.revoked.load(Ordering::Acquire) {
                return Err(DenyReason::Revoked);
            }
            at = c
                .parent
                .and_then(|p| self.caps.get(&p).map(|e| Arc::clone(e.value())));
        }
        if now >= cap.scope.expires_at {
            return Err(DenyReason::Expired);
        }
        Ok(())
    }

    /// Whether one more denial may be written to `log` (a tenant's, or `None`: the
    /// system's) now: at most a few per log per second; beyond that they are counted,
    /// and the count (`Some(n)`) goes into the next one written.
    pub fn sample_denial(&self, log: Option<&TenantId>) -> Option<u64> {
        let now_s = (self.clock)() / 1_000_000_000;
        let entry = self.denials.entry(log.cloned()).or_insert_with(|| Sampler {
            window: parking_lot::Mutex::new((now_s, 0, 0)),
        });
        let mut w = entry.window.lock();
        if w.0 != now_s {
            *w = (now_s, 0, w.2);
        }
        w.1 += 1;
        if w.1 > DENIAL_EVENTS_PER_SECOND {
            w.2 += 1;
            return None;
        }
        Some(std::mem::take(&mut w.2))
    }

    /// The tenant that granted `token`, if it is a token Solo knows (revoked and
    /// expired ones included, until they are purged).
    pub fn granted_by(&self, token: &str) -> Option<TenantId> {
        let hash = hash_token(token)?;
        let cap = self.caps.get(&hash)?;
        bool::from(cap.hash.0.ct_eq(&hash.0)).then(|| cap.scope.tenant.clone())
    }

    /// Records a denial of `token` for `permission` on `resource` as an event in `log`
    /// (the granting tenant's; `None`: the system's, for a token Solo does not know),
    /// durably before it returns; see [`Caps::record_refusal`].
    pub async fn record_denial(
        &self,
        log: Option<&TenantId>,
        token: &str,
        resource: &Resource,
        permission: Permission,
        reason: DenyReason,
    ) {
        let detail = json!({ "resource": resource, "permission": permission.as_str() });
        self.record_refusal(log, token, reason, None, detail).await;
    }

    /// Records the refusal of `token` for `reason` as `capability_denied` in `log` (the
    /// log of the tenant that granted it, or `None`: the system's, when Solo does not
    /// know the token), durably before it returns, sampled (see
    /// [`Caps::sample_denial`]) and counted. Names the token by its hash, never itself;
    /// `source` says where it came from when known; `detail` (an object) adds what was
    /// asked.
    pub async fn record_refusal(
        &self,
        log: Option<&TenantId>,
        token: &str,
        reason: DenyReason,
        source: Option<&str>,
        detail: serde_json::Value,
    ) {
        metrics::counter!(m::CAPABILITY_DECISIONS, "decision" => reason.as_str()).increment(1);
        let Some(suppressed) = self.sample_denial(log) else {
            return;
        };
        let mut payload = json!({
            "reason": reason.as_str(),
            "hash": hash_token(token).map(|h| h.to_hex()),
            "suppressed_before": suppressed,
        });
        if let Some(p) = payload.as_object_mut() {
            if let serde_json::Value::Object(d) = detail {
                p.extend(d);
            }
            if let Some(source) = source {
                p.insert("source".into(), source.into());
            }
        }
        let event = match log {
            Some(t) => NewEvent::tenant(kinds::CAPABILITY_DENIED, t),
            None => NewEvent::system(kinds::CAPABILITY_DENIED, "solo"),
        }
        .payload(payload);
        if let Err(e) = self.store.append(vec![event]).await {
            tracing::error!(error = %e, "could not record a capability denial");
        }
    }

    /// Revokes the capability named by `token_or_hash` and everything attenuated from it,
    /// if it belongs to `tenant`. Idempotent: an unknown or foreign one revokes nothing.
    pub async fn revoke(&self, tenant: &TenantId, token_or_hash: &str) -> Result<usize, CapsError> {
        let hash = hash_token(token_or_hash).or_else(|| CapHash::from_hex(token_or_hash));
        let Some(hash) = hash else {
            return Ok(0);
        };
        let Some(root) = self.caps.get(&hash).map(|c| Arc::clone(c.value())) else {
            return Ok(0);
        };
        if root.scope.tenant != *tenant {
            return Ok(0);
        }
        let mut batch = WriteBatch::new();
        let mut revoked = Vec::new();
        let mut stack = vec![hash];
        while let Some(h) = stack.pop() {
            if let Some(c) = self.caps.get(&h).map(|c| Arc::clone(c.value()))
                && !c.revoked.load(Ordering::Acquire)
            {
                let mut info = c.info();
                info.revoked = true;
                batch.put(TABLE, info.hash.clone(), Self::record(&info)?)?;
                revoked.push(c);
            }
            if let Some(kids) = self.children.get(&h) {
                stack.extend(kids.iter().copied());
            }
        }
        if revoked.is_empty() {
            return Ok(0);
        }
        batch.event(
            NewEvent::tenant(kinds::CAPABILITY_REVOKED, tenant).payload(json!({
                "hash": hash.to_hex(),
                "revoked": revoked.len(),
                "descendants": revoked.len() - 1,
            })),
        );
        self.store.commit(batch).await?;
        for c in &revoked {
            c.revoked.store(true, Ordering::Release);
        }
        metrics::counter!(m::CAPABILITY_DECISIONS, "decision" => "revoked")
            .increment(revoked.len() as u64);
        Ok(revoked.len())
    }

    /// Mints a narrower child of the capability `token` (which must still be valid and
    /// belong to `tenant`, if given).
    pub async fn attenuate(
        &self,
        tenant: Option<&TenantId>,
        token: &str,
        narrowing: &Narrowing,
    ) -> Result<Granted, CapsError> {
        let hash = hash_token(token).ok_or(CapsError::Denied(DenyReason::NotFound))?;
        let parent = self
            .caps
            .get(&hash)
            .map(|c| Arc::clone(c.value()))
            .ok_or(CapsError::Denied(DenyReason::NotFound))?;
        if tenant.is_some_and(|t| *t != parent.scope.tenant) {
            return Err(CapsError::Denied(DenyReason::TenantMismatch));
        }
        let now = (self.clock)();
        self.usable(&parent, now).map_err(CapsError::Denied)?;
        let scope = model::attenuate(&parent.scope, narrowing, now)?;
        self.mint_durable(scope, Some(hash), now, kinds::CAPABILITY_ATTENUATED)
            .await
    }

    /// The capabilities of `tenant` (hashes and metadata, never tokens), newest first.
    pub fn list(&self, tenant: &TenantId) -> Vec<CapInfo> {
        let mut out: Vec<CapInfo> = self
            .caps
            .iter()
            .filter(|c| c.scope.tenant == *tenant)
            .map(|c| c.info())
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.hash.cmp(&b.hash)));
        out
    }

    /// Removes capabilities that expired before `now` (UTC ns) from memory and the store.
    pub async fn purge_expired(&self, now: i64) -> Result<usize, CapsError> {
        let expired: Vec<CapHash> = self
            .caps
            .iter()
            .filter(|c| c.scope.expires_at <= now)
            .map(|c| c.hash)
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::new();
        for h in &expired {
            batch.delete(TABLE, h.to_hex())?;
        }
        self.store.commit(batch).await?;
        for h in &expired {
            self.caps.remove(h);
            self.children.remove(h);
        }
        Ok(expired.len())
    }

    /// How often the purger should run.
    pub const PURGE_EVERY: Duration = Duration::from_secs(10);
}
