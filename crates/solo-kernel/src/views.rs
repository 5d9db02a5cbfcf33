//! What a caller reads: a service's status and logs, the list of services, events and
//! their live feed, the log's verification, registrations, the tree, health and the
//! runtime configuration. Each decides its defaults and scope here, once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use solo_types::api::{
    Discovered, Health, Identity, ListFilter, LogLine, LogVerification, Quotas, RuntimeConfig,
    Scope, ServiceList, ServiceTool, TreeNode,
};
use solo_types::{
    EventFilter, EventPage, EventQuery, Permission, Resource, ServiceId, ServiceStatus, TenantId,
};

use crate::api::{EventStream, LogStream};
use crate::caller::Caller;
use crate::caller::Role;
use crate::core::{Core, Slot};
use crate::error::KernelError;
use crate::error::Stage;
use crate::tunables::Key;

/// Log lines a read returns when it names no number.
pub(crate) const DEFAULT_TAIL: usize = 100;
/// The most log lines a read returns (and a service keeps).
pub(crate) const MAX_TAIL: usize = 1000;

pub(crate) fn status(
    k: &Core,
    caller: &Caller,
    service: &ServiceId,
) -> Result<ServiceStatus, KernelError> {
    k.require(
        caller,
        &Resource::Service(service.clone()),
        Permission::Read,
    )?;
    k.entry(caller, service)
        .map(|e| k.status_of(&e))
        .map_err(|e| k.failed_deploy(caller, service).unwrap_or(e))
}

pub(crate) fn list(
    k: &Core,
    caller: &Caller,
    filter: &ListFilter,
) -> Result<ServiceList, KernelError> {
    k.require(caller, &Resource::Any, Permission::Read)?;
    let tenant = caller.tenant_id();
    let all: Vec<ServiceStatus> = k
        .tenants
        .service_ids(tenant)
        .iter()
        .filter_map(
            |id| match k.services.get(&(tenant.clone(), id.clone()))?.value() {
                Slot::Running(e) => Some(k.status_of(e)),
                _ => None,
            },
        )
        .filter(|s| filter.state.is_none_or(|st| s.state == st))
        .collect();
    let limit = match filter.limit {
        0 => 100,
        n => n.min(1000),
    };
    Ok(ServiceList {
        total: all.len(),
        services: all.into_iter().skip(filter.offset).take(limit).collect(),
    })
}

/// How many past lines a read asked for: 0 is the default, more than the ring keeps
/// is all of it.
pub(crate) fn tail(asked: usize) -> usize {
    match asked {
        0 => DEFAULT_TAIL,
        n => n.min(MAX_TAIL),
    }
}

pub(crate) fn logs(
    k: &Core,
    caller: &Caller,
    service: &ServiceId,
    n: usize,
) -> Result<Vec<LogLine>, KernelError> {
    k.require(
        caller,
        &Resource::Service(service.clone()),
        Permission::Read,
    )?;
    Ok(k.entry(caller, service)?.logs.tail(n))
}

pub(crate) fn follow_logs(
    k: &Core,
    caller: &Caller,
    service: &ServiceId,
    n: usize,
) -> Result<(Vec<LogLine>, LogStream), KernelError> {
    k.require(
        caller,
        &Resource::Service(service.clone()),
        Permission::Read,
    )?;
    Ok(k.entry(caller, service)?.logs.follow(n))
}

/// The tenant filter of an event read: a tenant reads its own events (naming another
/// tenant is refused); an admin may name one, or none for all.
fn scope(k: &Core, caller: &Caller, filter: &mut EventFilter) -> Result<(), KernelError> {
    k.require(caller, &Resource::Events, Permission::Read)?;
    match &filter.tenant {
        _ if caller.is_admin() => Ok(()),
        None => {
            filter.tenant = Some(caller.tenant_id().clone());
            Ok(())
        }
        Some(t) if t == caller.tenant_id() => Ok(()),
        Some(_) => Err(KernelError::admin_only("reading another tenant's events")),
    }
}

pub(crate) fn events(
    k: &Core,
    caller: &Caller,
    mut query: EventQuery,
) -> Result<EventPage, KernelError> {
    scope(k, caller, &mut query.filter)?;
    k.store.read(&query).stage("read the events")
}

pub(crate) fn watch(
    k: &Core,
    caller: &Caller,
    after_id: u64,
    mut filter: EventFilter,
) -> Result<EventStream, KernelError> {
    scope(k, caller, &mut filter)?;
    let sub = k.store.subscribe(after_id, filter);
    Ok(Box::pin(sub.into_stream().map(|e| {
        e.map_err(|source| KernelError::Store {
            stage: "follow the events",
            source,
        })
    })))
}

/// Walks the whole log's hash chain (admin only).
pub(crate) async fn verify_events(
    k: &Core,
    caller: &Caller,
) -> Result<LogVerification, KernelError> {
    if !caller.is_admin() {
        return Err(KernelError::admin_only("verifying the event log"));
    }
    verify(k).await
}

/// Walks the whole log's hash chain off the async threads.
pub(crate) async fn verify(k: &Core) -> Result<LogVerification, KernelError> {
    let store = Arc::clone(&k.store);
    let report = tokio::task::spawn_blocking(move || store.verify())
        .await
        .map_err(|e| KernelError::internal("verify the event log", e))?
        .stage("verify the event log")?;
    Ok(LogVerification {
        ok: report.first_broken.is_none(),
        checked: report.checked,
        last_id: report.last_id,
        first_broken_id: report.first_broken.as_ref().map(|b| b.id),
        reason: report.first_broken.map(|b| b.reason),
    })
}

/// The caller's unexpired registrations (under `name` when given).
pub(crate) fn registrations(
    k: &Core,
    caller: &Caller,
    name: Option<&str>,
) -> Result<Vec<Discovered>, KernelError> {
    k.require(caller, &Resource::Kernel, Permission::Read)?;
    let tenant = caller.tenant_id();
    Ok(k.registry
        .registrations(tenant, name, |s| k.is_alive(tenant, s)))
}

/// The caller's live registrations under `name` whose metadata has every pair of
/// `filters`.
pub(crate) fn discover(
    k: &Core,
    caller: &Caller,
    name: &str,
    filters: &BTreeMap<String, String>,
) -> Result<Vec<Discovered>, KernelError> {
    Ok(registrations(k, caller, Some(name))?
        .into_iter()
        .filter(|d| d.alive && filters.iter().all(|(k, v)| d.metadata.get(k) == Some(v)))
        .collect())
}

/// The supervision tree; a tenant sees the system and its own subtree.
pub(crate) fn tree(k: &Core, caller: &Caller) -> Result<TreeNode, KernelError> {
    k.require(caller, &Resource::Any, Permission::Read)?;
    let only = (!caller.is_admin()).then(|| caller.tenant_id().to_string());
    let mut root = match k.tree.get() {
        Some(t) => t.snapshot(|tenant| tenant_tree(k, tenant), only.as_deref()),
        None => TreeNode {
            name: "solo".into(),
            kind: "supervisor".into(),
            strategy: None,
            state: "starting".into(),
            restarts: 0,
            node: None,
            children: Vec::new(),
        },
    };
    root.node.clone_from(&k.node);
    Ok(root)
}

fn tenant_tree(k: &Core, tenant: &str) -> Vec<TreeNode> {
    let Ok(t) = TenantId::new(tenant) else {
        return Vec::new();
    };
    k.tenants
        .children(&t)
        .into_iter()
        .map(|c| {
            let state = ServiceId::new(c.name.clone())
                .ok()
                .and_then(|s| k.running(&t, &s))
                .map_or_else(|| "stopped".to_string(), |e| e.state().to_string());
            TreeNode {
                name: c.name,
                kind: "service".into(),
                strategy: None,
                state,
                restarts: c.restarts,
                node: None,
                children: Vec::new(),
            }
        })
        .collect()
}

/// Whether Solo is up; details only for an authenticated caller, server-wide ones only
/// for an admin.
pub(crate) fn health(k: &Core, caller: Option<&Caller>) -> Health {
    let accepting = k.accepting.load(Ordering::Acquire);
    let mut h = Health {
        status: if accepting { "ok" } else { "stopping" }.into(),
        timestamp: u64::try_from(k.clock.now_ns() / 1_000_000).unwrap_or(0),
        ..Health::default()
    };
    let fault = k.store.fault();
    if accepting && fault.is_some() {
        h.status = "degraded".into();
        h.reason = Some("store_unavailable".into());
    }
    let Some(caller) = caller else { return h };
    if caller.is_admin() {
        h.detail = fault;
    }
    h.version = Some(env!("CARGO_PKG_VERSION").into());
    h.node.clone_from(&k.node);
    h.uptime_ms = Some(u64::try_from(k.started.elapsed().as_millis()).unwrap_or(u64::MAX));
    if caller.is_admin() {
        h.services = Some(k.services.len() as u64);
        h.memory_mb = Some(crate::monitor::resident_memory_mb());
        h.last_event_id = Some(k.store.last_id());
        h.nodes = k.members.as_ref().map(|m| m()).unwrap_or_default();
    } else {
        h.services = Some(k.tenants.service_ids(caller.tenant_id()).len() as u64);
    }
    h
}

/// Every runtime-tunable setting and the monitor's level (admin only).
pub(crate) fn runtime_config(k: &Core, caller: &Caller) -> Result<RuntimeConfig, KernelError> {
    if !caller.is_admin() {
        return Err(KernelError::admin_only("reading the runtime configuration"));
    }
    Ok(RuntimeConfig {
        values: k
            .tunables
            .all()
            .into_iter()
            .map(|(key, v)| (key.to_string(), v))
            .collect(),
        pressure: k.monitor.level().into(),
    })
}

/// The services offered as tools that the caller may call (a token: only those its
/// scope covers), by tool name.
pub(crate) fn service_tools(k: &Core, caller: &Caller) -> Vec<ServiceTool> {
    let tenant = caller.tenant_id();
    let mut tools: Vec<ServiceTool> = k
        .tenants
        .service_ids(tenant)
        .into_iter()
        .filter(|id| {
            caller
                .require(&Resource::Service(id.clone()), Permission::Call)
                .is_ok()
        })
        .filter_map(
            |id| match k.services.get(&(tenant.clone(), id.clone()))?.value() {
                Slot::Running(e) => Some(ServiceTool {
                    service_id: id,
                    tool: e.spec.tool.clone()?,
                }),
                _ => None,
            },
        )
        .collect();
    tools.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
    tools
}

/// Who the caller is, and its tenant's quotas and use of them.
pub(crate) fn whoami(k: &Core, caller: &Caller) -> Identity {
    let l = &k.config.limits;
    let usage = k.tenants.usage(caller.tenant_id());
    let (role, scope) = match caller.role() {
        Role::Tenant => ("tenant", None),
        Role::Admin => ("admin", None),
        Role::Service(_) => ("service", None),
        Role::Token(t) => (
            "token",
            Some(Scope {
                resource: t.resource.to_string(),
                permissions: t
                    .permissions
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect(),
                expires_at: t.expires_at,
            }),
        ),
    };
    Identity {
        tenant: caller.tenant_id().clone(),
        role: role.into(),
        admin: caller.is_admin(),
        scope,
        quotas: Quotas {
            services: usage.services,
            max_services: u64::from(l.max_services_per_tenant),
            memory_mb: usage.memory_mb,
            max_memory_mb: l.max_memory_mb_per_tenant,
            max_memory_mb_per_service: u64::from(l.max_memory_mb_per_service),
            max_in_flight: k.tunables.get(Key::MaxPerTenant),
            max_timeout_ms: l.max_timeout_ms,
        },
    }
}
