//! Deploy: resolve the spec against the defaults and limits, reserve the id and the
//! tenant's quota, compile (cached), start the first instance within the startup
//! timeout, then commit the deployment record, the code and `service_deployed` +
//! `service_started` in one batch before the actor is registered. An identical redeploy
//! is an idempotent success; a different one is `AlreadyExists`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dashmap::mapref::entry::Entry;
use serde_json::json;
use solo_sandbox::{Artifact, CodeHash};
use solo_store::WriteBatch;
use solo_types::api::{DeployRequest, Deployed};
use solo_types::{
    DeploySpec, Permission, Resource, ServiceId, ServiceLimits, TenantId, metric_names as m,
};

use crate::actor;
use crate::caller::{Caller, Role};
use crate::core::{Core, Slot};
use crate::entry::{History, ServiceEntry};
use crate::error::KernelError;
use crate::error::Stage;
use crate::records::{self, DeploymentRecord};
use crate::tenants::TenantCtx;
use crate::tunables::Key;

/// Log lines each service keeps.
pub(crate) const LOG_LINES: usize = 1000;

/// A deploy; `history` continues a service's versions (a `replace` swap).
pub(crate) async fn deploy(
    k: &Core,
    caller: &Caller,
    req: DeployRequest,
    history: Option<History>,
) -> Result<Deployed, KernelError> {
    k.check_accepting()?;
    if matches!(caller.role(), Role::Service(_)) {
        return Err(KernelError::PermissionDenied(
            "services cannot deploy services".into(),
        ));
    }
    k.require(caller, &Resource::Kernel, Permission::Deploy)?;
    k.writable()?;
    if !req.dry_run {
        k.monitor.check_pressure()?;
    }
    let tenant = caller.tenant_id().clone();
    let spec = resolve_spec(k, &req, caller.tenant_id())?;
    // The service runs with its deployer's authority: a token must be able to read every
    // secret the service lists.
    crate::swap::require_listed_secrets(k, caller, &spec.secrets)?;
    let authority = caller.scope().cloned();
    let hash = CodeHash::of(req.format, &req.code).to_hex();
    let key = (tenant.clone(), spec.service_id.clone());
    let sid = spec.service_id.clone();

    // An existing service: identical code and spec is an idempotent success.
    if let Some(slot) = k.services.get(&key) {
        return match slot.value() {
            Slot::Running(e) if e.code_hash() == hash && e.spec == spec => Ok(Deployed {
                service_id: sid,
                code_hash: hash,
                version: e.version(),
                event_id: Some(e.deployed_event.load(Ordering::Relaxed)),
                created: false,
                dry_run: req.dry_run,
                has_state: e.artifact().has_state(),
            }),
            Slot::Stopping(_) => Err(KernelError::FailedPrecondition(format!(
                "service {sid} is being killed; deploy it again once it is gone"
            ))),
            _ => Err(KernelError::AlreadyExists(format!(
                "service {sid} already exists with different code or settings; kill it first or use swap"
            ))),
        };
    }

    let ctx = k.tenants.ctx(&tenant);
    let memory = spec.limits.memory_mb;
    if !req.dry_run {
        // Reserve the id and the quota atomically.
        let tool = spec.tool.as_ref().map(|t| t.name.as_str());
        let reserved = ctx.reserve(&tenant, &sid, memory, tool, &k.config.limits, || {
            match k.services.entry(key.clone()) {
                Entry::Occupied(_) => Err(KernelError::AlreadyExists(format!(
                    "service {sid} is being deployed by another request"
                ))),
                Entry::Vacant(v) => {
                    v.insert(Slot::Deploying);
                    Ok(())
                }
            }
        });
        if let Err(e) = reserved {
            if e.reason() == "quota_exceeded" {
                note_quota(k, &ctx, &tenant, &sid, memory);
            }
            return Err(e);
        }
    }

    let artifact = match crate::hibernate::compile(k, req.format, Arc::clone(&req.code)).await {
        Ok(a) => a,
        Err(e) => {
            if !req.dry_run {
                k.release(&tenant, &sid, memory);
                record_failure(k, &tenant, &sid, "compile", &e.to_string()).await;
            }
            return Err(crate::hibernate::compile_refused(e));
        }
    };
    if req.dry_run {
        return Ok(Deployed {
            service_id: sid,
            code_hash: hash,
            version: 1,
            event_id: None,
            created: false,
            dry_run: true,
            has_state: artifact.has_state(),
        });
    }
    let started = start_service(
        k, &tenant, spec, hash, artifact, &req.code, &ctx, history, authority,
    )
    .await;
    if started.is_err() {
        k.release(&tenant, &sid, memory);
    }
    started
}

/// The spec of a request: defaults applied, every limit checked.
fn resolve_spec(
    k: &Core,
    req: &DeployRequest,
    caller_tenant: &TenantId,
) -> Result<DeploySpec, KernelError> {
    let d = &k.config.service_defaults;
    let l = &k.config.limits;
    let spec = DeploySpec {
        service_id: req.service_id.clone(),
        format: req.format,
        config: req.config.clone().unwrap_or_else(|| json!({})),
        restart: req.restart.unwrap_or(d.restart),
        max_restarts: req.max_restarts.unwrap_or(d.max_restarts),
        max_seconds: req.max_seconds.unwrap_or(d.max_seconds),
        limits: ServiceLimits {
            memory_mb: req.memory_mb.unwrap_or(d.memory_mb),
            cpu_ms_per_message: req.cpu_ms_per_message.unwrap_or(d.cpu_ms_per_message),
            mailbox: req.mailbox.unwrap_or(d.mailbox),
            startup_timeout_ms: req.startup_timeout_ms.unwrap_or(d.startup_timeout_ms),
            message_timeout_ms: req.message_timeout_ms.unwrap_or(d.message_timeout_ms),
        },
        secrets: req.secrets.clone(),
        egress: solo_egress::parse_rules(&req.egress)
            .map_err(|e| KernelError::InvalidArgument(e.to_string()))?,
        tool: req.tool.clone(),
    };
    let tenant_rules = k.egress.tenant_rules(caller_tenant);
    if let Some(r) = solo_egress::first_outside(&spec.egress, &tenant_rules) {
        return Err(KernelError::PermissionDenied(format!(
            "egress rule {r} is outside the tenant's egress rules ({}); an admin adds it with \
             `solo egress allow {caller_tenant} {r}`",
            if tenant_rules.is_empty() {
                "none".to_string()
            } else {
                tenant_rules
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    if let Some(t) = &spec.tool {
        t.check().map_err(KernelError::InvalidArgument)?;
    }
    let within = |what: &str, v: u64, lo: u64, hi: u64| {
        if v < lo || v > hi {
            Err(KernelError::InvalidArgument(format!(
                "{what} is {v}; it must be between {lo} and {hi}"
            )))
        } else {
            Ok(())
        }
    };
    let lim = &spec.limits;
    within(
        "memory_mb",
        lim.memory_mb.into(),
        1,
        l.max_memory_mb_per_service.into(),
    )?;
    let max_cpu = k.tunables.get(Key::MaxCpuMs);
    if u64::from(lim.cpu_ms_per_message) > max_cpu {
        return Err(KernelError::InvalidArgument(format!(
            "cpu_ms_per_message is {}; this server gives one message at most {max_cpu} ms \
             (limits.max_cpu_ms_per_message)",
            lim.cpu_ms_per_message
        )));
    }
    within(
        "cpu_ms_per_message",
        lim.cpu_ms_per_message.into(),
        1,
        max_cpu,
    )?;
    within("mailbox", lim.mailbox.into(), 1, 1_000_000)?;
    within(
        "startup_timeout_ms",
        lim.startup_timeout_ms.into(),
        1,
        600_000,
    )?;
    within(
        "message_timeout_ms",
        lim.message_timeout_ms.into(),
        100,
        l.max_message_timeout_ms.into(),
    )?;
    within("max_restarts", spec.max_restarts.into(), 0, 10_000)?;
    within("max_seconds", spec.max_seconds.into(), 1, 86_400)?;
    if spec.secrets.len() > 64 {
        return Err(KernelError::InvalidArgument(
            "a service may list at most 64 secrets".into(),
        ));
    }
    if let Some(s) = spec
        .secrets
        .iter()
        .find(|s| !solo_types::valid_secret_name(s))
    {
        return Err(KernelError::InvalidArgument(format!(
            "secret name {s:?} is invalid: use 1-256 characters of [A-Za-z0-9_.-]"
        )));
    }
    let config_len = spec.config.to_string().len();
    if config_len > l.max_message_bytes {
        return Err(KernelError::InvalidArgument(format!(
            "the config is {config_len} bytes, over the limit of {}",
            l.max_message_bytes
        )));
    }
    Ok(spec)
}

async fn record_failure(
    k: &Core,
    tenant: &TenantId,
    service: &solo_types::ServiceId,
    stage: &str,
    reason: &str,
) {
    k.failed.note(
        tenant,
        service,
        crate::failed::FailedDeploy {
            stage: stage.to_string(),
            reason: reason.to_string(),
            at: k.clock.now(),
        },
    );
    let e = records::deployment_failed(tenant, service, stage, reason);
    k.record(vec![e], "a failed deployment").await;
}

/// Starts the first instance, commits the deployment, and hands the actor to the
/// tenant's supervisor.
#[allow(clippy::too_many_arguments)]
async fn start_service(
    k: &Core,
    tenant: &TenantId,
    spec: DeploySpec,
    hash: String,
    artifact: Artifact,
    code: &[u8],
    ctx: &TenantCtx,
    history: Option<History>,
    authority: Option<crate::caller::TokenScope>,
) -> Result<Deployed, KernelError> {
    let sid = spec.service_id.clone();
    let entry = ServiceEntry::new(
        tenant.clone(),
        spec.clone(),
        hash.clone(),
        artifact.clone(),
        LOG_LINES,
        k.config.limits.max_emits_per_second,
        history,
        authority.clone(),
    );
    let version = entry.version();
    let instance = match actor::start_instance(k, &entry).await {
        Ok(i) => i,
        Err(report) if report.kind == crate::hibernate::NO_INSTANCE_SLOT => {
            return Err(KernelError::Refused {
                code: solo_types::Code::ResourceExhausted,
                reason: crate::hibernate::NO_INSTANCE_SLOT,
                message: format!("service {sid} cannot start now: {}", report.message),
            });
        }
        Err(report) => {
            let reason = format!("{}: {}", report.kind, report.message);
            record_failure(k, tenant, &sid, &report.kind, &reason).await;
            // What the guest said may carry what a token may not read (a secret its
            // init read): a token's caller learns the kind; the tenant's log has it all.
            let told = if authority.is_some() {
                format!(
                    "service {sid} failed to start: {} (the details are in the \
                     service's events)",
                    report.kind
                )
            } else {
                format!("service {sid} failed to start: {reason}")
            };
            return Err(KernelError::InvalidArgument(told));
        }
    };

    let record = DeploymentRecord {
        v: records::RECORD_VERSION,
        tenant: tenant.clone(),
        spec,
        code_hash: hash.clone(),
        version,
        deployed_event: 0,
        deployed_at: entry.deployed_at,
        deployer: authority,
    };
    let key = records::deployment_key(tenant, &sid);
    let mut batch = WriteBatch::new();
    let record_json = serde_json::to_vec(&record).stage("encode the deployment record")?;
    batch
        .put(records::DEPLOYMENTS, key.clone(), record_json)
        .stage("record the deployment")?;
    if k.store
        .get(records::CODE, hash.as_bytes())
        .stage("look up the code")?
        .is_none()
    {
        batch
            .put(records::CODE, hash.as_bytes().to_vec(), code.to_vec())
            .stage("record the code")?;
    }
    // A fresh deployment starts from no state, whatever an earlier one left.
    batch
        .delete(records::HIBERNATED, key.clone())
        .stage("record the deployment")?;
    batch
        .delete(records::SNAPSHOTS, key)
        .stage("record the deployment")?;
    batch.event(records::deployed(&record));
    batch.event_caused_by(
        records::started(tenant, &sid, version, k.node.as_deref()),
        0,
    );
    let commit = k.store.commit(batch).await.stage("commit the deployment")?;
    let event_id = commit.event_ids.first().copied();
    entry
        .deployed_event
        .store(event_id.unwrap_or(0), Ordering::Relaxed);
    entry.hand_over(instance);

    ctx.supervisor
        .add_child(actor::child_spec(k, &entry))
        .await
        .stage("supervise the service")?;
    k.services.insert(
        (tenant.clone(), sid.clone()),
        Slot::Running(Arc::clone(&entry)),
    );
    metrics::counter!(m::DEPLOYMENTS).increment(1);
    k.failed.forget(tenant, &sid);
    Ok(Deployed {
        service_id: sid,
        code_hash: hash,
        version,
        event_id,
        created: true,
        dry_run: false,
        has_state: artifact.has_state(),
    })
}

/// A deploy refused by its tenant's quota is a `resource_violation` (sampled: a few a
/// second per tenant), naming the quota, its limit and what the deploy would have made
/// of it.
fn note_quota(k: &Core, ctx: &TenantCtx, tenant: &TenantId, sid: &ServiceId, memory_mb: u32) {
    if ctx.quota_refused.admit(k.clock.now(), 5).is_none() {
        return;
    }
    let (l, used) = (&k.config.limits, k.tenants.usage(tenant));
    let (limit, observed, unit) = if used.services >= u64::from(l.max_services_per_tenant) {
        (
            u64::from(l.max_services_per_tenant),
            used.services + 1,
            "services",
        )
    } else {
        (
            l.max_memory_mb_per_tenant,
            used.memory_mb + u64::from(memory_mb),
            "MiB",
        )
    };
    let e = records::violation(tenant, sid, "quota", limit, Some(observed), unit);
    k.record_later(vec![e], "a resource violation");
}
