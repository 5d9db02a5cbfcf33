//! Recovery at start (`docs/design.md`, "Recovery and shutdown"): every deployment record is a service whose desired
//! state is running (a kill deletes the record, a deploy writes it), so each comes back
//! with its last code and, when one was taken, its last snapshot. Each is recorded as
//! `service_recovered` or `service_recovery_failed`; nothing is deployed again, so
//! restarting any number of times adds no `service_deployed`. A service that was
//! hibernated comes back asleep (no instance) and wakes from its snapshot on its next
//! message, so a restart costs nothing per hibernated service but a record's read.

use std::ops::Bound;
use std::sync::Arc;

use futures::StreamExt;
use solo_types::{EventFilter, EventQuery, Order, ServiceId, TenantId};

use crate::actor;
use crate::api::Recovery;
use crate::core::{Core, Slot};
use crate::deploy::LOG_LINES;
use crate::entry::{History, ServiceEntry};
use crate::error::KernelError;
use crate::error::Stage;
use crate::records::{self, DeploymentRecord};

/// How many services are brought back at once (their `service_recovered` events share
/// commits).
const PARALLEL: usize = 64;

/// The code compiled so far in this recovery, by hash: services that share code (a
/// tenant's many counters) read and compile it once.
type Compiled = parking_lot::Mutex<std::collections::HashMap<String, solo_sandbox::Artifact>>;

/// Starts every recorded deployment of the tenants this kernel serves; failures are
/// recorded per service and do not stop the others.
pub(crate) async fn recover(k: &Core) -> Result<Recovery, KernelError> {
    recover_range(k, Bound::Unbounded, Bound::Unbounded).await
}

/// Starts the recorded deployments of `tenant` that do not run here yet.
pub(crate) async fn recover_tenant(k: &Core, tenant: &TenantId) -> Result<Recovery, KernelError> {
    let from = format!("{tenant}/").into_bytes();
    // '0' follows '/': every key of the tenant sorts before it.
    let to = format!("{tenant}0").into_bytes();
    recover_range(k, Bound::Included(from), Bound::Excluded(to)).await
}

async fn recover_range(
    k: &Core,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
) -> Result<Recovery, KernelError> {
    let snap = k.store.snapshot().stage("read the deployments")?;
    let rows = snap
        .range(records::DEPLOYMENTS, as_ref(&from), as_ref(&to), usize::MAX)
        .stage("read the deployments")?;
    drop(snap);
    let rows: Vec<(Vec<u8>, Vec<u8>)> = rows
        .into_iter()
        .filter(|(key, _)| {
            let key = String::from_utf8_lossy(key);
            let Some((t, s)) = key.split_once('/') else {
                return true; // unreadable: recover_one records why
            };
            match (TenantId::new(t), ServiceId::new(s)) {
                (Ok(t), Ok(s)) => k.serves(&t) && !k.services.contains_key(&(t, s)),
                _ => true,
            }
        })
        .collect();
    let compiled = Compiled::default();
    let results: Vec<Result<(), ()>> = futures::stream::iter(rows)
        .map(|(key, value)| recover_one(k, &compiled, key, value))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    Ok(Recovery {
        recovered: results.len() - failed,
        failed,
    })
}

async fn recover_one(
    k: &Core,
    compiled: &Compiled,
    key: Vec<u8>,
    value: Vec<u8>,
) -> Result<(), ()> {
    let record: DeploymentRecord = match serde_json::from_slice(&value) {
        Ok(r) => r,
        Err(e) => {
            let key = String::from_utf8_lossy(&key).into_owned();
            tracing::error!(%key, error = %e, "a deployment record cannot be read; skipped");
            if let Some((t, s)) = key.split_once('/')
                && let (Ok(t), Ok(s)) = (TenantId::new(t), ServiceId::new(s))
            {
                k.record(
                    vec![records::recovery_failed(
                        &t,
                        &s,
                        &format!("the deployment record cannot be read: {e}"),
                        0,
                    )],
                    "a recovery",
                )
                .await;
            }
            return Err(());
        }
    };
    let (tenant, sid) = (record.tenant.clone(), record.spec.service_id.clone());
    let original = deployed_event_of(k, &tenant, &sid);
    match start_recorded(k, compiled, &record).await {
        Ok(snapshot_bytes) => {
            let node = k.node.as_deref();
            let e = records::recovered(
                &tenant,
                &sid,
                record.version,
                snapshot_bytes,
                original,
                node,
            );
            k.record(vec![e], "a recovery").await;
            Ok(())
        }
        Err(reason) => {
            tracing::warn!(%tenant, service = %sid, %reason, "a service could not be recovered");
            let e = records::recovery_failed(&tenant, &sid, &reason, original);
            k.record(vec![e], "a recovery").await;
            Err(())
        }
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The id of the last `service_deployed` event of a service (an indexed read).
fn deployed_event_of(k: &Core, tenant: &TenantId, service: &ServiceId) -> u64 {
    let q = EventQuery {
        filter: EventFilter {
            tenant: Some(tenant.clone()),
            service: Some(service.clone()),
            kind: Some(solo_types::kinds::SERVICE_DEPLOYED.into()),
        },
        limit: 1,
        order: Order::Descending,
        ..EventQuery::default()
    };
    k.store
        .read(&q)
        .ok()
        .and_then(|p| p.events.first().map(|e| e.id))
        .unwrap_or(0)
}

/// Starts one recorded service; returns the size of the snapshot it was restored from.
async fn start_recorded(
    k: &Core,
    compiled: &Compiled,
    record: &DeploymentRecord,
) -> Result<Option<usize>, String> {
    let tenant = &record.tenant;
    let spec = &record.spec;
    let sid = spec.service_id.clone();
    let key = records::deployment_key(tenant, &sid);
    let snapshot = k
        .store
        .get(records::SNAPSHOTS, &key)
        .map_err(|e| format!("read the snapshot: {e}"))?;
    let cached = compiled.lock().get(&record.code_hash).cloned();
    let artifact = match cached {
        Some(a) => a,
        None => {
            let code = k
                .store
                .get(records::CODE, record.code_hash.as_bytes())
                .map_err(|e| format!("read the code: {e}"))?
                .ok_or_else(|| {
                    format!("the code {} is missing from the store", record.code_hash)
                })?;
            let a = crate::hibernate::compile(k, spec.format, Arc::<[u8]>::from(code))
                .await
                .map_err(|e| format!("compile: {e}"))?;
            compiled.lock().insert(record.code_hash.clone(), a.clone());
            a
        }
    };
    // A service that was hibernated stays asleep until its next message.
    let asleep = artifact.has_state()
        && k.store
            .get(records::HIBERNATED, &key)
            .map_err(|e| format!("read the hibernation mark: {e}"))?
            .is_some();

    let ctx = k.tenants.ctx(tenant);
    let map_key = (tenant.clone(), sid.clone());
    if k.services.contains_key(&map_key) {
        return Err(format!("service {sid} is already running"));
    }
    k.services.insert(map_key.clone(), Slot::Deploying);
    ctx.readmit(
        &sid,
        spec.limits.memory_mb,
        spec.tool.as_ref().map(|t| t.name.as_str()),
    );
    let entry = ServiceEntry::new(
        tenant.clone(),
        spec.clone(),
        record.code_hash.clone(),
        artifact,
        LOG_LINES,
        k.config.limits.max_emits_per_second,
        Some(History {
            version: record.version,
            deployed_at: record.deployed_at,
            deployed_event: record.deployed_event,
        }),
        record.deployer.clone(),
    );
    if asleep {
        entry
            .asleep
            .store(true, std::sync::atomic::Ordering::Release);
        entry.set_state(solo_types::ServiceState::Hibernated);
    } else {
        let started = async {
            let mut instance = actor::start_instance(k, &entry)
                .await
                .map_err(|r| format!("start: {}: {}", r.kind, r.message))?;
            if let Some(state) = &snapshot
                && instance.has_state()
            {
                instance
                    .restore(state)
                    .await
                    .map_err(|e| format!("restore the last snapshot: {e}"))?;
            }
            Ok::<_, String>(instance)
        };
        match started.await {
            Ok(i) => entry.hand_over(i),
            Err(e) => {
                k.release(tenant, &sid, spec.limits.memory_mb);
                return Err(e);
            }
        }
    }
    if let Err(e) = ctx.supervisor.add_child(actor::child_spec(k, &entry)).await {
        k.release(tenant, &sid, spec.limits.memory_mb);
        return Err(format!("supervise: {e}"));
    }
    k.services
        .insert(map_key, Slot::Running(Arc::clone(&entry)));
    Ok(snapshot.as_ref().map(Vec::len))
}

/// Cluster placement through the kernel.
impl crate::Kernel {
    /// Every tenant with recorded deployments (services whose desired state is
    /// running), with how many: what a cluster places on its nodes, by load.
    pub fn deployed_tenants(
        &self,
    ) -> Result<std::collections::BTreeMap<TenantId, usize>, KernelError> {
        let snap = self.core.store.snapshot().stage("read the deployments")?;
        let mut tenants = std::collections::BTreeMap::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let page = snap
                .range(
                    records::DEPLOYMENTS,
                    Bound::Excluded(from.as_slice()),
                    Bound::Unbounded,
                    4096,
                )
                .stage("read the deployments")?;
            let Some((last, _)) = page.last() else {
                return Ok(tenants);
            };
            from = last.clone();
            for (key, _) in &page {
                let key = String::from_utf8_lossy(key);
                if let Some(t) = key.split_once('/').and_then(|(t, _)| TenantId::new(t).ok()) {
                    *tenants.entry(t).or_insert(0) += 1;
                }
            }
        }
    }

    /// Takes `tenant` on once it is placed on this node: reloads what this kernel keeps
    /// of it in memory from the store (another node may have changed it since this
    /// kernel read it: its registrations, its egress lists, the capabilities), then
    /// brings back its recorded services with their last snapshots, as recovery at
    /// start does (`service_recovered`). Its services already running here are left
    /// alone, so adopting twice starts nothing twice.
    #[tracing::instrument(name = "solo_kernel.adopt", skip_all, fields(%tenant))]
    pub async fn adopt(&self, tenant: &TenantId) -> Result<Recovery, KernelError> {
        let k = &self.core;
        k.registry.reload_tenant(tenant)?;
        k.egress.reload_tenant(k.store.as_ref(), tenant)?;
        k.caps.caps().reload().stage("reload the capabilities")?;
        let recovery = recover_tenant(k, tenant).await?;
        tracing::info!(
            recovered = recovery.recovered,
            failed = recovery.failed,
            "tenant adopted"
        );
        Ok(recovery)
    }
}
