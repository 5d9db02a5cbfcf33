//! Hot swap (`docs/design.md`, "Hot swap"): new code for a running service without
//! losing a message.
//!
//! The kernel compiles and checks the new code first (a failure is `hot_swap_failed`
//! and the old version keeps serving), then hands the service's actor a swap message.
//! The actor applies it between two messages: it snapshots the old instance, starts
//! the new one and restores the snapshot into it, records the new version, and keeps
//! the old instance through the rollback window. A crash of the new version inside the
//! window switches back to the old instance (whose state is the snapshot carried over)
//! and records `hot_swap_rolled_back`; otherwise `hot_swap_succeeded`. Messages queued
//! behind the swap are served by the new version, each answered exactly once.
//!
//! `replace` kills the service and deploys the new code under the same id (state and
//! queued messages are not carried); it is what a caller asks for explicitly.

use std::sync::Arc;
use std::time::Duration;

use solo_sandbox::CodeHash;
use solo_types::api::{DeployRequest, KillOptions, SwapMethod, SwapMode, SwapRequest, Swapped};
use solo_types::{Permission, Resource};
use tokio::sync::oneshot;

use crate::caller::{Caller, Role};
use crate::core::Core;
use crate::deploy;
use crate::entry::{Code, Envelope, History, ServiceEntry, SwapPlan};
use crate::error::KernelError;
use crate::kill;
use crate::records;

/// How long the old version is kept for a rollback unless the request says.
pub const DEFAULT_ROLLBACK_WINDOW: Duration = Duration::from_secs(30);
/// The longest rollback window a request may ask for.
pub const MAX_ROLLBACK_WINDOW: Duration = Duration::from_secs(600);

/// Replaces a running service's code (see the module documentation).
pub(crate) async fn hot_swap(
    k: &Core,
    caller: &Caller,
    req: SwapRequest,
) -> Result<Swapped, KernelError> {
    if matches!(caller.role(), Role::Service(_)) {
        return Err(KernelError::PermissionDenied(
            "services cannot swap services".into(),
        ));
    }
    let id = req.service_id.clone();
    k.require(caller, &Resource::Service(id.clone()), Permission::Swap)?;
    k.writable()?;
    k.check_accepting()?;
    let entry = k.live_entry(caller, &id)?;
    // The new code runs with the swapper's authority: a token must be able to read
    // every secret the service lists.
    require_listed_secrets(k, caller, &entry.spec.secrets)?;
    let tenant = entry.tenant.clone();
    let window = req.rollback_window.unwrap_or(DEFAULT_ROLLBACK_WINDOW);
    if window > MAX_ROLLBACK_WINDOW {
        return Err(KernelError::InvalidArgument(format!(
            "a rollback window of {} ms is over the limit of {} ms",
            window.as_millis(),
            MAX_ROLLBACK_WINDOW.as_millis()
        )));
    }
    let hash = CodeHash::of(req.format, &req.code).to_hex();
    let old = entry.code();
    if hash == old.hash {
        return Ok(Swapped {
            service_id: id,
            version: old.version,
            code_hash: hash,
            event_id: 0,
            method: SwapMethod::Unchanged,
            snapshot_bytes: None,
            state_carried: false,
        });
    }
    let artifact = match crate::hibernate::compile(k, req.format, Arc::clone(&req.code)).await {
        Ok(a) => a,
        Err(e) => {
            record_swap_failure(k, &entry, "compile", &e.to_string()).await;
            return Err(crate::hibernate::compile_refused(e));
        }
    };
    if req.mode == SwapMode::Replace {
        return replace(k, caller, &entry, req, old.version).await;
    }
    let plan = SwapPlan {
        code: Code {
            artifact,
            hash,
            format: req.format,
            version: old.version + 1,
            authority: caller.scope().cloned(),
        },
        code_bytes: Arc::clone(&req.code),
        rollback_window: window,
    };
    let (tx, rx) = oneshot::channel();
    let envelope = Box::new(Envelope::Swap { plan, reply: tx });
    // The swap waits its turn behind the queued messages; a full mailbox is waited
    // out rather than refused.
    let budget = entry.startup_timeout() + Duration::from_secs(30);
    let sent =
        tokio::time::timeout(budget, crate::hibernate::post_waiting(k, &entry, envelope)).await;
    if sent.is_err() {
        let e = KernelError::Unavailable(format!(
            "service {id} did not take the swap within {} s",
            budget.as_secs()
        ));
        record_swap_failure(k, &entry, "queue", &e.to_string()).await;
        return Err(e);
    }
    let applied = match tokio::time::timeout(budget, rx).await {
        Ok(Ok(Ok(a))) => a,
        Ok(Ok(Err(refused))) => {
            record_swap_failure(k, &entry, refused.stage, &refused.error.to_string()).await;
            return Err(refused.error);
        }
        Ok(Err(_)) | Err(_) => {
            let e = KernelError::Unavailable(format!(
                "service {id} stopped before completing the swap"
            ));
            record_swap_failure(k, &entry, "start", &e.to_string()).await;
            return Err(e);
        }
    };
    tracing::info!(%tenant, service = %id, version = applied.version, "hot swap applied");
    Ok(Swapped {
        service_id: id,
        version: applied.version,
        code_hash: applied.code_hash,
        event_id: applied.event_id,
        method: SwapMethod::Swap,
        snapshot_bytes: applied.snapshot_bytes.map(|n| n as u64),
        state_carried: applied.state_carried,
    })
}

/// Kill, then deploy the new code under the same id and settings, one version up.
async fn replace(
    k: &Core,
    caller: &Caller,
    entry: &Arc<ServiceEntry>,
    req: SwapRequest,
    old_version: u64,
) -> Result<Swapped, KernelError> {
    let spec = entry.spec.clone();
    kill::kill(k, caller, &entry.id, KillOptions::default()).await?;
    let mut d = DeployRequest::new(spec.service_id.clone(), req.format, req.code);
    d.config = Some(spec.config.clone());
    d.restart = Some(spec.restart);
    d.max_restarts = Some(spec.max_restarts);
    d.max_seconds = Some(spec.max_seconds);
    d.memory_mb = Some(spec.limits.memory_mb);
    d.cpu_ms_per_message = Some(spec.limits.cpu_ms_per_message);
    d.mailbox = Some(spec.limits.mailbox);
    d.startup_timeout_ms = Some(spec.limits.startup_timeout_ms);
    d.message_timeout_ms = Some(spec.limits.message_timeout_ms);
    d.secrets = spec.secrets.clone();
    d.tool = spec.tool.clone();
    let history = History {
        version: old_version + 1,
        deployed_at: k.clock.now_ns(),
        deployed_event: 0,
    };
    let deployed = deploy::deploy(k, caller, d, Some(history)).await?;
    let e = records::swap_succeeded(
        caller.tenant_id(),
        &deployed.service_id,
        deployed.version,
        "replace",
    );
    k.record(vec![e], "a replace").await;
    Ok(Swapped {
        service_id: deployed.service_id,
        version: deployed.version,
        code_hash: deployed.code_hash,
        event_id: deployed.event_id.unwrap_or(0),
        method: SwapMethod::Replace,
        snapshot_bytes: None,
        state_carried: false,
    })
}

async fn record_swap_failure(k: &Core, entry: &ServiceEntry, stage: &str, reason: &str) {
    let e = records::swap_failed(&entry.tenant, &entry.id, stage, reason);
    k.record(vec![e], "a failed hot swap").await;
}

/// A caller acting within a token's scope must be able to read each of `secrets`, which
/// the code it deploys or swaps in will read.
pub(crate) fn require_listed_secrets(
    k: &Core,
    caller: &Caller,
    secrets: &[String],
) -> Result<(), KernelError> {
    if caller.scope().is_none() {
        return Ok(());
    }
    for name in secrets {
        k.require(caller, &Resource::Secret(name.clone()), Permission::Read)?;
    }
    Ok(())
}
