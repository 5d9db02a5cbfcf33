//! The actor's side of a hot swap: between two messages, snapshot the old instance,
//! start the new code and restore into it, record the new version and switch, keeping
//! the old instance through the rollback window; then record success, or go back to
//! the old instance after a crash inside the window (`swap.rs` is the verb's side).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use solo_sandbox::{CallError, Crash, Instance, Level};
use solo_store::WriteBatch;
use solo_types::{CrashReport, NewEvent};

use crate::actor::start_instance_of;
use crate::core::Core;
use crate::entry::{Code, ServiceEntry, SwapApplied, SwapPlan, SwapRefused};
use crate::error::{KernelError, Stage};
use crate::records::{self, DeploymentRecord};

/// The old version, kept through the rollback window.
pub(crate) struct Rollback {
    pub(crate) old: Box<dyn Instance>,
    pub(crate) old_code: Code,
    pub(crate) deadline: Instant,
}

/// Snapshot the old instance, start the new code and restore the snapshot into it,
/// record the new version, then switch. On any failure the old instance keeps serving;
/// a crash of the old instance while taking its snapshot is returned to be handled as
/// a crash.
pub(crate) async fn apply_swap(
    kernel: &Weak<Core>,
    entry: &Arc<ServiceEntry>,
    instance: &mut Box<dyn Instance>,
    plan: SwapPlan,
) -> Result<(Rollback, SwapApplied), (SwapRefused, Option<Crash>)> {
    use crate::error::KernelError as E;
    let refuse = |stage: &'static str, error: E| (SwapRefused { stage, error }, None);
    let Some(k) = kernel.upgrade() else {
        return Err(refuse("start", E::shutting_down()));
    };
    let carry = instance.has_state() && plan.code.artifact.has_state();
    let state = if carry {
        match instance.snapshot().await {
            Ok(s) => s,
            Err(CallError::Crash(c)) => {
                let msg = format!("the old version crashed taking its snapshot: {}", c.message);
                return Err((
                    SwapRefused {
                        stage: "snapshot",
                        error: E::FailedPrecondition(msg),
                    },
                    Some(c),
                ));
            }
            Err(e) => {
                return Err(refuse(
                    "snapshot",
                    E::FailedPrecondition(format!("the old version's snapshot failed: {e}")),
                ));
            }
        }
    } else {
        None
    };
    let token_swap = plan.code.authority.is_some();
    let mut new = start_instance_of(&k, entry, &plan.code.artifact, plan.code.authority.clone())
        .await
        .map_err(|r| {
            refuse(
                "start",
                E::InvalidArgument(if token_swap {
                    // What the guest said may carry what the token may not read.
                    format!(
                        "the new version failed to start: {} (the details are in the \
                         service's events)",
                        r.kind
                    )
                } else {
                    format!("the new version failed to start: {}: {}", r.kind, r.message)
                }),
            )
        })?;
    if let Some(state) = &state
        && let Err(e) = new.restore(state).await
    {
        let why = if token_swap {
            "see the service's events".to_string()
        } else {
            e.to_string()
        };
        return Err(refuse(
            "restore",
            E::InvalidArgument(format!(
                "the new version could not restore the old version's state: {why}"
            )),
        ));
    }
    let old_code = entry.code();
    let snapshot_bytes = state.as_ref().map(Vec::len);
    let event = crate::records::swap_started(
        &entry.tenant,
        &entry.id,
        (old_code.version, &old_code.hash),
        (plan.code.version, &plan.code.hash),
        "swap",
        snapshot_bytes,
    );
    let event_id = persist_code(&k, entry, &plan.code, Some(&plan.code_bytes), vec![event])
        .await
        .map_err(|e| refuse("record", e))?;
    let old = std::mem::replace(instance, new);
    entry.set_code(plan.code.clone());
    *entry.interrupt.lock() = Some(instance.interrupt_handle());
    entry
        .memory_bytes
        .store(instance.stats().memory_bytes, Ordering::Relaxed);
    let applied = SwapApplied {
        version: plan.code.version,
        code_hash: plan.code.hash.clone(),
        event_id,
        snapshot_bytes,
        state_carried: carry,
    };
    let rb = Rollback {
        old,
        old_code,
        deadline: Instant::now() + plan.rollback_window,
    };
    Ok((rb, applied))
}

/// The rollback window passed without a crash: the old version goes.
pub(crate) async fn swap_succeeded(kernel: &Weak<Core>, entry: &ServiceEntry, rb: Rollback) {
    drop(rb.old);
    let Some(k) = kernel.upgrade() else { return };
    let e = crate::records::swap_succeeded(&entry.tenant, &entry.id, entry.version(), "swap");
    if let Err(err) = k.store.append(vec![e]).await {
        tracing::warn!(service = %entry.id, error = %err, "could not record a hot swap's success");
    }
}

/// Goes back to the old version and records why.
pub(crate) async fn roll_back(
    kernel: &Weak<Core>,
    entry: &Arc<ServiceEntry>,
    rb: Rollback,
    report: &CrashReport,
) -> Box<dyn Instance> {
    let from = entry.version();
    let instance = rb.old;
    entry.set_code(rb.old_code.clone());
    *entry.interrupt.lock() = Some(instance.interrupt_handle());
    *entry.last_error.lock() = Some(Box::new(report.clone()));
    entry.logs.push(
        Level::Warn,
        &format!(
            "version {from} crashed within its rollback window ({}: {}); rolled back to version {}",
            report.kind, report.message, rb.old_code.version
        ),
    );
    if let Some(k) = kernel.upgrade() {
        let e = crate::records::swap_rolled_back(
            &entry.tenant,
            &entry.id,
            from,
            rb.old_code.version,
            report,
        );
        if let Err(err) = persist_code(&k, entry, &rb.old_code, None, vec![e]).await {
            tracing::warn!(service = %entry.id, error = %err, "could not record a rollback");
        }
    }
    instance
}

/// Records `code` as the service's current code (its deployment record, the code blob
/// when given) with `events`; returns the first event's id.
async fn persist_code(
    k: &Core,
    entry: &ServiceEntry,
    code: &Code,
    code_bytes: Option<&[u8]>,
    events: Vec<NewEvent>,
) -> Result<u64, KernelError> {
    let mut spec = entry.spec.clone();
    spec.format = code.format;
    let record = DeploymentRecord {
        v: records::RECORD_VERSION,
        tenant: entry.tenant.clone(),
        spec,
        code_hash: code.hash.clone(),
        version: code.version,
        deployed_event: entry.deployed_event.load(Ordering::Relaxed),
        deployed_at: entry.deployed_at,
        deployer: code.authority.clone(),
    };
    let mut batch = WriteBatch::new();
    batch
        .put(
            records::DEPLOYMENTS,
            records::deployment_key(&entry.tenant, &entry.id),
            serde_json::to_vec(&record).stage("encode the deployment record")?,
        )
        .stage("record the new code")?;
    if let Some(bytes) = code_bytes
        && k.store
            .get(records::CODE, code.hash.as_bytes())
            .stage("look up the code")?
            .is_none()
    {
        batch
            .put(records::CODE, code.hash.as_bytes().to_vec(), bytes.to_vec())
            .stage("record the new code")?;
    }
    for e in events {
        batch.event(e);
    }
    let commit = k.store.commit(batch).await.stage("record the new code")?;
    Ok(commit.event_ids.first().copied().unwrap_or(0))
}
