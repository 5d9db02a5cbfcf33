//! Egress in the kernel: each tenant's allow-list (set by an admin), the hosts each
//! secret may be sent to (set by its tenant), and the requests services send: checked
//! against both lists, limited per tenant and service, secrets substituted into headers
//! on the way out, every request and refusal on the record.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::json;
use solo_egress::{Client, Denied, Policy, Request, Rule, parse_rules, parse_url};
use solo_sandbox::{HostError, HttpRequest, HttpResponse, HttpSlot, Level};
use solo_store::{Store, WriteBatch};
use solo_types::api::{EgressRules, SecretHosts};
use solo_types::{NewEvent, TenantId, kinds, metric_names as m};

use crate::bucket::TokenBucket;
use crate::caller::Caller;
use crate::core::Core;
use crate::entry::ServiceEntry;
use crate::error::{KernelError, Stage};
use crate::tunables::Key;

/// Each tenant's egress rules: tenant → JSON list of rules.
pub const EGRESS_RULES: &str = "egress_rules";
/// Where a secret may be sent: `tenant \0 name` → JSON list of rules (`api.example.com`
/// is `https://api.example.com:443`).
pub const SECRET_HOSTS: &str = "secret_hosts";

/// The most hosts one secret may be bound to.
const MAX_HOSTS: usize = 64;
/// `egress_denied` events per tenant and second, at most; the rest are counted.
const DENIED_PER_SECOND: u32 = 5;

/// The kernel's egress state.
pub(crate) struct Egress {
    client: Arc<Client>,
    rules: DashMap<TenantId, Arc<[Rule]>>,
    hosts: DashMap<SecretKey, Arc<[Rule]>>,
    rates: DashMap<TenantId, Mutex<TokenBucket>>,
    denied: DashMap<TenantId, crate::sampler::Window>,
    /// Held while a list changes, so each change's event names the list it made.
    changing: tokio::sync::Mutex<()>,
}

fn secret_key(tenant: &TenantId, name: &str) -> Vec<u8> {
    format!("{tenant}\0{name}").into_bytes()
}

impl Egress {
    /// Loads the lists kept in the store.
    pub(crate) fn load(store: &dyn Store, client: Arc<Client>) -> Result<Self, KernelError> {
        let e = Self {
            client,
            rules: DashMap::new(),
            hosts: DashMap::new(),
            rates: DashMap::new(),
            denied: DashMap::new(),
            changing: tokio::sync::Mutex::new(()),
        };
        let snap = store.snapshot().stage("read the egress rules")?;
        let all = |table| {
            snap.range(table, Bound::Unbounded, Bound::Unbounded, usize::MAX)
                .stage("read the egress rules")
        };
        for (k, v) in all(EGRESS_RULES)? {
            let (Ok(tenant), Ok(texts)) = (
                TenantId::new(String::from_utf8_lossy(&k).as_ref()),
                serde_json::from_slice::<Vec<String>>(&v),
            ) else {
                tracing::warn!("an unreadable egress rule list was skipped");
                continue;
            };
            match parse_rules(&texts) {
                Ok(r) => {
                    e.rules.insert(tenant, r.into());
                }
                Err(err) => tracing::warn!(%tenant, error = %err, "kept egress rules skipped"),
            }
        }
        for (k, v) in all(SECRET_HOSTS)? {
            if let Some((key, hosts)) = host_binding(&k, &v) {
                e.hosts.insert(key, hosts);
            }
        }
        Ok(e)
    }

    /// Reads `tenant`'s rules and secret bindings again from the store (an admin's change
    /// made through another node of a cluster, or the tenant's own while another node
    /// served it).
    pub(crate) fn reload_tenant(
        &self,
        store: &dyn Store,
        tenant: &TenantId,
    ) -> Result<(), KernelError> {
        let snap = store.snapshot().stage("read the egress rules")?;
        let rules = snap
            .get(EGRESS_RULES, tenant.as_str().as_bytes())
            .stage("read the egress rules")?
            .and_then(|v| serde_json::from_slice::<Vec<String>>(&v).ok())
            .and_then(|texts| parse_rules(&texts).ok())
            .unwrap_or_default();
        self.rules.insert(tenant.clone(), rules.into());
        let from = secret_key(tenant, "");
        let mut to = tenant.as_str().as_bytes().to_vec();
        to.push(1);
        let bound = snap
            .range(
                SECRET_HOSTS,
                Bound::Included(from.as_slice()),
                Bound::Excluded(to.as_slice()),
                usize::MAX,
            )
            .stage("read the egress rules")?;
        self.hosts.retain(|(t, _), _| t != tenant);
        for (k, v) in bound {
            if let Some((key, hosts)) = host_binding(&k, &v) {
                self.hosts.insert(key, hosts);
            }
        }
        Ok(())
    }

    /// A tenant's rules (none: it reaches nothing).
    pub(crate) fn tenant_rules(&self, tenant: &TenantId) -> Arc<[Rule]> {
        self.rules
            .get(tenant)
            .map_or_else(|| Arc::from(Vec::new()), |r| Arc::clone(&r))
    }
}

/// Egress operations of the kernel's API.
impl crate::Kernel {
    /// Binds (or unbinds) destinations a secret of the caller's tenant may be sent to.
    #[tracing::instrument(name = "solo_kernel.bind_secret", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn bind_secret(
        &self,
        caller: &Caller,
        name: &str,
        hosts: &[String],
        unbind: bool,
    ) -> Result<SecretHosts, KernelError> {
        bind_secret(&self.core, caller, name, hosts, unbind).await
    }

    /// Adds (`allow`) or removes egress rules of a tenant (admin only).
    #[tracing::instrument(name = "solo_kernel.change_egress", skip_all, fields(tenant = %tenant))]
    pub async fn change_egress(
        &self,
        caller: &Caller,
        tenant: &TenantId,
        rules: &[String],
        allow: bool,
    ) -> Result<EgressRules, KernelError> {
        change_rules(&self.core, caller, tenant, rules, allow).await
    }

    /// Egress rules: a tenant's own; an admin's pick, or every tenant with rules.
    pub fn egress_rules(
        &self,
        caller: &Caller,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<EgressRules>, KernelError> {
        list_rules(&self.core, caller, tenant)
    }
}

/// A tenant's secret, by name.
type SecretKey = (TenantId, String);

/// A stored row of `SECRET_HOSTS` (`tenant\0secret` → its host rules) as kept in memory;
/// `None` for a row that does not read.
fn host_binding(k: &[u8], v: &[u8]) -> Option<(SecretKey, Arc<[Rule]>)> {
    let key = String::from_utf8_lossy(k);
    let (tenant, name) = key.split_once('\0')?;
    let tenant = TenantId::new(tenant).ok()?;
    let texts = serde_json::from_slice::<Vec<String>>(v).ok()?;
    let hosts = parse_rules(&texts).ok()?;
    Some(((tenant, name.to_string()), hosts.into()))
}

fn texts(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(ToString::to_string).collect()
}

fn invalid(e: impl std::fmt::Display) -> KernelError {
    KernelError::InvalidArgument(e.to_string())
}

/// Adds (`allow`) or removes rules of `tenant`'s list (admin only) and records
/// `egress_rules_changed`.
pub(crate) async fn change_rules(
    k: &Core,
    caller: &Caller,
    tenant: &TenantId,
    rules: &[String],
    allow: bool,
) -> Result<EgressRules, KernelError> {
    if !caller.is_admin() {
        return Err(KernelError::admin_only("changing a tenant's egress rules"));
    }
    if rules.is_empty() {
        return Err(invalid("name at least one egress rule"));
    }
    let given = parse_rules(rules).map_err(invalid)?;
    let e = &k.egress;
    let _one_at_a_time = e.changing.lock().await;
    let mut now: BTreeSet<Rule> = e.tenant_rules(tenant).iter().cloned().collect();
    let mut changed = Vec::new();
    for r in given {
        let did = if allow {
            now.insert(r.clone())
        } else {
            now.remove(&r)
        };
        if did {
            changed.push(r);
        }
    }
    if now.len() > solo_egress::MAX_RULES {
        return Err(invalid(format!(
            "a tenant has at most {} egress rules",
            solo_egress::MAX_RULES
        )));
    }
    let list: Vec<Rule> = now.into_iter().collect();
    let mut batch = WriteBatch::new();
    let key = tenant.as_str().as_bytes().to_vec();
    if list.is_empty() {
        batch
            .delete(EGRESS_RULES, key)
            .stage("record the egress rules")?;
    } else {
        batch
            .put(
                EGRESS_RULES,
                key,
                serde_json::to_vec(&texts(&list)).unwrap_or_default(),
            )
            .stage("record the egress rules")?;
    }
    batch.event(
        NewEvent::tenant(kinds::EGRESS_RULES_CHANGED, tenant).payload(json!({
            if allow { "allowed" } else { "removed" }: texts(&changed),
            "rules": texts(&list),
            "by": caller.tenant_id(),
        })),
    );
    k.store
        .commit(batch)
        .await
        .stage("record the egress rules")?;
    e.rules.insert(tenant.clone(), list.clone().into());
    tracing::info!(%tenant, allow, changed = changed.len(), "egress rules changed");
    Ok(EgressRules {
        tenant: tenant.clone(),
        rules: texts(&list),
    })
}

/// The rules of `tenant` (an admin: any tenant, or every tenant with rules when `None`;
/// a tenant: its own).
pub(crate) fn list_rules(
    k: &Core,
    caller: &Caller,
    tenant: Option<&TenantId>,
) -> Result<Vec<EgressRules>, KernelError> {
    let one = |t: &TenantId| EgressRules {
        tenant: t.clone(),
        rules: texts(&k.egress.tenant_rules(t)),
    };
    if !caller.is_admin() {
        let own = caller.tenant_id();
        if tenant.is_some_and(|t| t != own) {
            return Err(KernelError::admin_only("another tenant's egress rules"));
        }
        return Ok(vec![one(own)]);
    }
    Ok(match tenant {
        Some(t) => vec![one(t)],
        None => {
            let mut all: Vec<EgressRules> = k.egress.rules.iter().map(|r| one(r.key())).collect();
            all.sort_by(|a, b| a.tenant.cmp(&b.tenant));
            all
        }
    })
}

/// Binds (or with `unbind`, unbinds) secret `name` of the caller's tenant to `hosts`:
/// only there may a service's request carry it. Records `secret_bound`.
pub(crate) async fn bind_secret(
    k: &Core,
    caller: &Caller,
    name: &str,
    hosts: &[String],
    unbind: bool,
) -> Result<SecretHosts, KernelError> {
    k.require(
        caller,
        &solo_types::Resource::Secret(name.to_string()),
        solo_types::Permission::Write,
    )?;
    if !solo_types::valid_secret_name(name) {
        return Err(invalid(format!(
            "secret name {name:?} is invalid: use 1-256 characters of [A-Za-z0-9_.-]"
        )));
    }
    let given = parse_rules(hosts).map_err(invalid)?;
    let tenant = caller.tenant_id().clone();
    let e = &k.egress;
    let _one_at_a_time = e.changing.lock().await;
    let key = (tenant.clone(), name.to_string());
    let mut now: BTreeSet<Rule> = e
        .hosts
        .get(&key)
        .map(|h| h.iter().cloned().collect())
        .unwrap_or_default();
    for h in given {
        if unbind {
            now.remove(&h);
        } else {
            now.insert(h);
        }
    }
    if now.len() > MAX_HOSTS {
        return Err(invalid(format!(
            "a secret is bound to at most {MAX_HOSTS} hosts"
        )));
    }
    let list: Vec<String> = now.iter().map(ToString::to_string).collect();
    let mut batch = WriteBatch::new();
    if list.is_empty() {
        batch
            .delete(SECRET_HOSTS, secret_key(&tenant, name))
            .stage("record the secret's hosts")?;
    } else {
        batch
            .put(
                SECRET_HOSTS,
                secret_key(&tenant, name),
                serde_json::to_vec(&list).unwrap_or_default(),
            )
            .stage("record the secret's hosts")?;
    }
    batch.event(
        NewEvent::tenant(kinds::SECRET_BOUND, &tenant).payload(json!({
            "name": name, "hosts": list, "unbound": unbind, "by": caller.tenant_id(),
        })),
    );
    k.store
        .commit(batch)
        .await
        .stage("record the secret's hosts")?;
    e.hosts
        .insert(key, now.into_iter().collect::<Vec<_>>().into());
    Ok(SecretHosts {
        name: name.to_string(),
        hosts: list,
    })
}

/// The secret placeholders in a header value: `{{secret:NAME}}`.
fn placeholders(value: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find("{{secret:") {
        let after = &rest[i + 9..];
        let Some(end) = after.find("}}") else { break };
        names.push(&after[..end]);
        rest = &after[end + 2..];
    }
    names
}

/// What a service's request leaves with: the headers with secrets filled in, and which
/// secrets.
struct Prepared {
    request: Request,
    secrets: Vec<String>,
}

/// Checks the request's shape and fills in its secrets (each listed in the service's
/// spec and bound to the destination host).
async fn prepare(
    k: &Core,
    entry: &ServiceEntry,
    acting: &Caller,
    policy: &Policy,
    req: HttpRequest,
) -> Result<Prepared, Denied> {
    let method = solo_egress::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| Denied::BadRequest(format!("method {:?}", clip(&req.method))))?;
    let (dest, _) = parse_url(&req.url)?;
    // No secret is read for a request that would be refused anyway.
    if !policy.allows(dest.scheme, &dest.host, dest.port) {
        return Err(Denied::HostNotAllowed(dest.to_string()));
    }
    let mut headers = Vec::with_capacity(req.headers.len());
    let mut secret_headers = Vec::new();
    let mut secrets = Vec::new();
    for (name, value) in req.headers {
        let name = solo_egress::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Denied::BadRequest(format!("header name {:?}", clip(&name))))?;
        let names = placeholders(&value);
        let mut filled = value.clone();
        for s in &names {
            if !entry.spec.secrets.iter().any(|l| l == s) {
                return Err(Denied::SecretNotBound(format!(
                    "secret {s} is not listed in the service's deploy spec"
                )));
            }
            let bound = k
                .egress
                .hosts
                .get(&(entry.tenant.clone(), (*s).to_string()))
                .is_some_and(|h| {
                    h.iter()
                        .any(|r| r.allows(dest.scheme, &dest.host, dest.port))
                });
            if !bound {
                return Err(Denied::SecretNotBound(format!(
                    "secret {s} is not bound to {dest}: solo secrets bind {s} --host {dest}"
                )));
            }
            k.require(
                acting,
                &solo_types::Resource::Secret((*s).to_string()),
                solo_types::Permission::Read,
            )
            .map_err(|e| Denied::SecretNotBound(format!("secret {s}: {e}")))?;
            let v = k
                .secrets
                .for_service(&entry.tenant, &entry.id, &entry.spec.secrets, s)
                .await
                .map_err(|e| Denied::SecretNotBound(format!("secret {s}: {e}")))?;
            let text = std::str::from_utf8(v.expose())
                .map_err(|_| Denied::BadRequest(format!("secret {s} is not text")))?;
            filled = filled.replace(&format!("{{{{secret:{s}}}}}"), text);
            secrets.push((*s).to_string());
        }
        let mut value = solo_egress::HeaderValue::from_str(&filled).map_err(|_| {
            Denied::BadRequest(format!(
                "the value of header {name} is not a valid header value"
            ))
        })?;
        if !names.is_empty() {
            // Never printed, even by `Debug`.
            value.set_sensitive(true);
            secret_headers.push(name.clone());
        }
        headers.push((name, value));
    }
    secrets.sort();
    secrets.dedup();
    Ok(Prepared {
        request: Request {
            method,
            url: req.url,
            headers,
            body: req.body.into(),
            secret_headers,
        },
        secrets,
    })
}

/// Reserves one of the service's requests in flight (held until the request is done).
pub(crate) fn begin(k: &Core, entry: &Arc<ServiceEntry>) -> Result<HttpSlot, HostError> {
    let guard = InFlight::enter(k, Arc::clone(entry)).map_err(|d| {
        record(k, entry, "", "", 0, Instant::now(), Err(&d));
        HostError::new(d.reason(), d.to_string())
    })?;
    Ok(HttpSlot::new(
        k.config.egress.max_request_bytes,
        std::time::Duration::from_millis(k.config.egress.total_timeout_ms),
        guard,
    ))
}

/// Sends a service's request: its tenant's rate, the policy, its secrets, the record.
pub(crate) async fn send(
    k: &Core,
    entry: &ServiceEntry,
    acting: &Caller,
    slot: HttpSlot,
    req: HttpRequest,
) -> Result<HttpResponse, HostError> {
    let started = Instant::now();
    let (method, url) = (clip(&req.method), req.url.clone());
    let bytes_out = req.body.len();
    let policy = Policy {
        tenant: k.egress.tenant_rules(&entry.tenant),
        service: entry.spec.egress.clone().into(),
    };
    let result = async {
        take_rate(k, &entry.tenant)?;
        let p = prepare(k, entry, acting, &policy, req).await?;
        let r = k.egress.client.send(p.request, &policy).await?;
        Ok((r, p.secrets))
    }
    .await;
    drop(slot);
    match result {
        Ok((r, secrets)) => {
            record(
                k,
                entry,
                &method,
                &url,
                bytes_out,
                started,
                Ok((&r, &secrets)),
            );
            Ok(HttpResponse {
                status: r.status,
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: r.body.to_vec(),
                url: r.url,
            })
        }
        Err(d) => {
            record(k, entry, &method, &url, bytes_out, started, Err(&d));
            Err(HostError::new(d.reason(), d.to_string()))
        }
    }
}

/// Records a request: an `egress_request` event (answered, or failed by the network),
/// or a sampled `egress_denied` one and a line in the service's log (refused).
fn record(
    k: &Core,
    entry: &ServiceEntry,
    method: &str,
    url: &str,
    bytes_out: usize,
    started: Instant,
    outcome: Result<(&solo_egress::Response, &[String]), &Denied>,
) {
    let (destination, path) = match parse_url(url) {
        Ok((d, u)) => (d.to_string(), clip(u.path())),
        Err(_) => (clip(url), String::new()),
    };
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let tenant = entry.tenant.to_string();
    let event =
        |kind: &str, payload| NewEvent::service(kind, &entry.tenant, &entry.id).payload(payload);
    match outcome {
        Ok((r, secrets)) => {
            metrics::counter!(m::EGRESS_REQUESTS, "tenant" => tenant, "outcome" => "ok")
                .increment(1);
            drop(k.store.append(vec![event(
                kinds::EGRESS_REQUEST,
                json!({
                    "destination": r.destination, "requested": destination, "method": method,
                    "path": path, "status": r.status, "bytes_out": bytes_out,
                    "bytes_in": r.body.len(), "duration_ms": ms, "redirects": r.redirects,
                    "secrets": secrets,
                }),
            )]));
        }
        Err(d) => {
            let outcome = if d.is_refusal() { "denied" } else { "failed" };
            metrics::counter!(m::EGRESS_REQUESTS, "tenant" => tenant, "outcome" => outcome)
                .increment(1);
            entry
                .logs
                .push(Level::Warn, &format!("egress {method} {destination}: {d}"));
            let mut payload = json!({
                "destination": destination, "method": method, "path": path,
                "reason": d.reason(), "message": clip(&d.to_string()), "duration_ms": ms,
            });
            if !d.is_refusal() {
                drop(k.store.append(vec![event(kinds::EGRESS_REQUEST, payload)]));
                return;
            }
            let window = k.egress.denied.entry(entry.tenant.clone()).or_default();
            if let Some(dropped) = window.admit(Instant::now(), DENIED_PER_SECOND) {
                payload["suppressed_before"] = json!(dropped);
                drop(k.store.append(vec![event(kinds::EGRESS_DENIED, payload)]));
            }
        }
    }
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Takes a token of the tenant's egress rate.
fn take_rate(k: &Core, tenant: &TenantId) -> Result<(), Denied> {
    let rate = k.tunables.get(Key::EgressRate);
    if rate == 0 {
        return Ok(());
    }
    #[allow(clippy::cast_precision_loss)]
    let (r, b) = (rate as f64, k.tunables.get(Key::EgressBurst).max(1) as f64);
    let bucket = k.egress.rates.entry(tenant.clone()).or_default();
    let taken = bucket.lock().take(Instant::now(), r, b);
    taken.map_err(|wait| {
        Denied::Limit(format!(
            "over the tenant's {rate} requests a second (egress.rate_per_tenant); the next in {} ms",
            wait.as_millis()
        ))
    })
}

/// A request in flight for a service, counted while it lives.
struct InFlight(Arc<ServiceEntry>);

impl InFlight {
    fn enter(k: &Core, entry: Arc<ServiceEntry>) -> Result<Self, Denied> {
        let max = k.tunables.get(Key::EgressInFlight);
        let now = entry.egress_in_flight.fetch_add(1, Ordering::AcqRel);
        if u64::from(now) >= max {
            entry.egress_in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Denied::Limit(format!(
                "more than {max} requests in flight for this service (egress.max_in_flight_per_service)"
            )));
        }
        Ok(Self(entry))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.egress_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_are_found_wherever_they_sit() {
        assert_eq!(placeholders("Bearer {{secret:OPENAI}}"), ["OPENAI"]);
        assert_eq!(placeholders("{{secret:A}}:{{secret:B.c}}"), ["A", "B.c"]);
        assert!(placeholders("{{secret:open").is_empty());
        assert!(placeholders("plain").is_empty());
    }
}
