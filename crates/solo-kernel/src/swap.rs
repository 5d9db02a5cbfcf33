//! Hot swap (DESIGN §3.6): new code for a running service without losing a message.
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
use solo_store::WriteBatch;
use solo_types::{Format, Permission, Resource, ServiceId};
use tokio::sync::oneshot;

use crate::records::{self, DeploymentRecord};
use crate::service::{Code, Envelope, History, ServiceEntry, SwapPlan};
use crate::{Caller, DeployRequest, Kernel, KernelError, KernelInner, KillOptions, Role};

/// How long the old version is kept for a rollback unless the request says.
pub const DEFAULT_ROLLBACK_WINDOW: Duration = Duration::from_secs(5);
/// The longest rollback window a request may ask for.
pub const MAX_ROLLBACK_WINDOW: Duration = Duration::from_secs(600);

/// How to replace a service's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SwapMode {
    /// In place between two messages, carrying the state when both versions export
    /// snapshot/restore.
    #[default]
    Swap,
    /// Kill and deploy again under the same id.
    Replace,
}

impl std::str::FromStr for SwapMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "swap" => Ok(SwapMode::Swap),
            "replace" => Ok(SwapMode::Replace),
            other => Err(format!("unknown swap mode {other:?}; use swap or replace")),
        }
    }
}

/// A hot swap request.
#[derive(Debug, Clone)]
pub struct SwapRequest {
    pub service_id: ServiceId,
    pub format: Format,
    pub code: Arc<[u8]>,
    pub mode: SwapMode,
    /// `None` takes [`DEFAULT_ROLLBACK_WINDOW`].
    pub rollback_window: Option<Duration>,
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swapped {
    pub service_id: ServiceId,
    pub version: u64,
    pub code_hash: String,
    /// The `hot_swap_started` event (or the `service_deployed` of a replace).
    pub event_id: u64,
    /// `swap`, `replace`, or `unchanged` when the code was already running.
    pub method: &'static str,
    pub snapshot_bytes: Option<usize>,
    pub state_carried: bool,
}

impl Kernel {
    /// Replaces a running service's code (see the module documentation).
    pub async fn hot_swap(
        &self,
        caller: &Caller,
        req: SwapRequest,
    ) -> Result<Swapped, KernelError> {
        self.inner.hot_swap(caller, req).await
    }
}

impl KernelInner {
    async fn hot_swap(&self, caller: &Caller, req: SwapRequest) -> Result<Swapped, KernelError> {
        if matches!(caller.role(), Role::Service(_)) {
            return Err(KernelError::PermissionDenied(
                "services cannot swap services".into(),
            ));
        }
        let id = req.service_id.clone();
        caller.require(&Resource::Service(id.clone()), Permission::Swap)?;
        self.check_accepting()?;
        let entry = self.live_entry(caller, &id)?;
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
                method: "unchanged",
                snapshot_bytes: None,
                state_carried: false,
            });
        }
        let artifact = match self
            .sandbox
            .compile(req.format, Arc::clone(&req.code))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                self.record_swap_failure(&entry, "compile", &e.to_string())
                    .await;
                return Err(KernelError::Compile(e));
            }
        };
        if req.mode == SwapMode::Replace {
            return self.replace(caller, &entry, req, old.version).await;
        }
        let plan = SwapPlan {
            code: Code {
                artifact,
                hash,
                format: req.format,
                version: old.version + 1,
            },
            code_bytes: Arc::clone(&req.code),
            rollback_window: window,
        };
        let (tx, rx) = oneshot::channel();
        let envelope = Envelope::Swap {
            plan: Box::new(plan),
            reply: tx,
        };
        // The swap waits its turn behind the queued messages; a full mailbox is waited
        // out rather than refused.
        let budget = entry.startup_timeout() + Duration::from_secs(30);
        let sent = tokio::time::timeout(budget, entry.mailbox.send(envelope)).await;
        if !matches!(sent, Ok(Ok(()))) {
            let e = KernelError::Unavailable(format!(
                "service {id} did not take the swap within {} s",
                budget.as_secs()
            ));
            self.record_swap_failure(&entry, "queue", &e.to_string())
                .await;
            return Err(e);
        }
        let applied = match tokio::time::timeout(budget, rx).await {
            Ok(Ok(Ok(a))) => a,
            Ok(Ok(Err(refused))) => {
                self.record_swap_failure(&entry, refused.stage, &refused.error.to_string())
                    .await;
                return Err(refused.error);
            }
            Ok(Err(_)) | Err(_) => {
                let e = KernelError::Unavailable(format!(
                    "service {id} stopped before completing the swap"
                ));
                self.record_swap_failure(&entry, "start", &e.to_string())
                    .await;
                return Err(e);
            }
        };
        tracing::info!(%tenant, service = %id, version = applied.version, "hot swap applied");
        Ok(Swapped {
            service_id: id,
            version: applied.version,
            code_hash: applied.code_hash,
            event_id: applied.event_id,
            method: "swap",
            snapshot_bytes: applied.snapshot_bytes,
            state_carried: applied.state_carried,
        })
    }

    /// Kill, then deploy the new code under the same id and settings, one version up.
    async fn replace(
        &self,
        caller: &Caller,
        entry: &Arc<ServiceEntry>,
        req: SwapRequest,
        old_version: u64,
    ) -> Result<Swapped, KernelError> {
        let spec = entry.spec.clone();
        self.kill_inner(
            caller,
            &entry.id,
            KillOptions {
                timeout: Duration::from_secs(5),
                force: false,
            },
        )
        .await?;
        let mut d = DeployRequest::new(spec.service_id.clone(), req.format, req.code);
        d.config = Some(spec.config.clone());
        d.restart = Some(spec.restart);
        d.max_restarts = Some(spec.max_restarts);
        d.max_seconds = Some(spec.max_seconds);
        d.memory_mb = Some(spec.limits.memory_mb);
        d.cpu_ms_per_message = Some(spec.limits.cpu_ms_per_message);
        d.mailbox = Some(spec.limits.mailbox);
        d.startup_timeout_ms = Some(spec.limits.startup_timeout_ms);
        d.secrets = spec.secrets.clone();
        let history = History {
            version: old_version + 1,
            deployed_at: crate::access::now_ns(),
            deployed_event: 0,
        };
        let deployed = self.deploy_inner(caller, d, Some(history)).await?;
        let e = records::swap_succeeded(
            caller.tenant_id(),
            &deployed.service_id,
            deployed.version,
            "replace",
        );
        if let Err(err) = self.store.append(vec![e]).await {
            tracing::warn!(error = %err, "could not record a replace");
        }
        Ok(Swapped {
            service_id: deployed.service_id,
            version: deployed.version,
            code_hash: deployed.code_hash,
            event_id: deployed.event_id.unwrap_or(0),
            method: "replace",
            snapshot_bytes: None,
            state_carried: false,
        })
    }

    async fn record_swap_failure(&self, entry: &ServiceEntry, stage: &str, reason: &str) {
        let e = records::swap_failed(&entry.tenant, &entry.id, stage, reason);
        if let Err(err) = self.store.append(vec![e]).await {
            tracing::error!(error = %err, "could not record a failed hot swap");
        }
    }

    /// Records `code` as the service's current code (its deployment record, the code
    /// blob when given) with `events`; returns the first event's id.
    pub(crate) async fn persist_code(
        &self,
        entry: &ServiceEntry,
        code: &Code,
        code_bytes: Option<&[u8]>,
        events: Vec<solo_types::NewEvent>,
    ) -> Result<u64, KernelError> {
        let mut spec = entry.spec.clone();
        spec.format = code.format;
        let record = DeploymentRecord {
            v: records::RECORD_VERSION,
            tenant: entry.tenant.clone(),
            spec,
            code_hash: code.hash.clone(),
            version: code.version,
            deployed_event: entry
                .deployed_event
                .load(std::sync::atomic::Ordering::Relaxed),
            deployed_at: entry.deployed_at,
        };
        let mut batch = WriteBatch::new();
        batch.put(
            records::DEPLOYMENTS,
            records::deployment_key(&entry.tenant, &entry.id),
            serde_json::to_vec(&record).map_err(|e| KernelError::Internal(e.to_string()))?,
        )?;
        if let Some(bytes) = code_bytes
            && self
                .store
                .get(records::CODE, code.hash.as_bytes())?
                .is_none()
        {
            batch.put(records::CODE, code.hash.as_bytes().to_vec(), bytes.to_vec())?;
        }
        for e in events {
            batch.event(e);
        }
        let commit = self.store.commit(batch).await?;
        Ok(commit.event_ids.first().copied().unwrap_or(0))
    }
}
