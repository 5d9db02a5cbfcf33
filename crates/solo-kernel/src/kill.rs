//! Kill: mark the service stopping (no new messages, no redeploy of the id), ask its
//! supervisor to terminate the actor (graceful: finish the current message and take a
//! snapshot; forced: interrupt the guest at once), then delete the deployment record,
//! the service's key-value data and registrations with `service_killed` in one commit.

use std::sync::Arc;
use std::time::Duration;

use solo_store::WriteBatch;
use solo_types::api::{KillOptions, Killed};
use solo_types::{Permission, Resource, ServiceId, ServiceState};

use crate::caller::{Caller, Role};
use crate::core::{Core, Slot};
use crate::error::KernelError;
use crate::error::Stage;
use crate::records;

pub(crate) async fn kill(
    k: &Core,
    caller: &Caller,
    service: &ServiceId,
    opts: KillOptions,
) -> Result<Killed, KernelError> {
    if matches!(caller.role(), Role::Service(_)) {
        return Err(KernelError::PermissionDenied(
            "services cannot kill services".into(),
        ));
    }
    k.require(
        caller,
        &Resource::Service(service.clone()),
        Permission::Kill,
    )?;
    k.writable()?;
    let timeout = if opts.force {
        Duration::ZERO
    } else {
        k.config.timeout(opts.timeout)?
    };
    let tenant = caller.tenant_id().clone();
    let key = (tenant.clone(), service.clone());
    let entry = {
        let Some(mut slot) = k.services.get_mut(&key) else {
            return Err(KernelError::not_found(service));
        };
        match slot.value().clone() {
            Slot::Running(e) => {
                *slot.value_mut() = Slot::Stopping(Arc::clone(&e));
                e
            }
            Slot::Stopping(_) => {
                return Err(KernelError::FailedPrecondition(format!(
                    "service {service} is already being killed"
                )));
            }
            Slot::Deploying => return Err(KernelError::not_found(service)),
        }
    };
    entry.set_state(ServiceState::Stopping);
    if opts.force {
        entry.interrupt();
    }
    if let Some(ctx) = k.tenants.get(&tenant) {
        let _ = ctx
            .supervisor
            .terminate_child(service.as_str(), Some(timeout))
            .await;
    }
    // A parked service has no task to stop: its instance is stopped here.
    crate::park::stop_parked(k, &entry, !opts.force).await;
    entry.drain(&format!("service {service} was killed"));
    let snapshot = *entry.final_snapshot.lock();
    let record_key = records::deployment_key(&tenant, service);
    let mut batch = WriteBatch::new();
    let stage = "record the kill";
    batch
        .delete(records::DEPLOYMENTS, record_key.clone())
        .stage(stage)?;
    batch
        .delete_prefix(records::SERVICE_KV, records::kv_prefix(&tenant, service))
        .stage(stage)?;
    batch
        .delete(records::HIBERNATED, record_key.clone())
        .stage(stage)?;
    batch.delete(records::SNAPSHOTS, record_key).stage(stage)?;
    batch.event(records::killed(&tenant, service, opts.force, snapshot));
    let gone = k
        .registry
        .deregister_service(&mut batch, &tenant, service)?;
    let commit = k.store.commit(batch).await;
    if commit.is_ok() {
        k.registry.forget(&gone);
    }
    entry.set_state(ServiceState::Undeployed);
    k.release(&tenant, service, entry.spec.limits.memory_mb);
    let commit = commit.stage(stage)?;
    Ok(Killed {
        service_id: service.clone(),
        event_id: commit.event_ids.first().copied().unwrap_or(0),
        forced: opts.force,
        snapshot_bytes: snapshot.map(|n| n as u64),
    })
}
