//! Solo's kernel: the only front door to tenants' services.
//!
//! [`Kernel`] is the facade: every operation, in one place, takes the [`Caller`] first,
//! acts inside the caller's tenant only (another tenant's services are not found), and
//! runs in a `solo_kernel.<operation>` span with the tenant and service. Behind it,
//! subsystems own their state (`shedder`, `breaker`, `monitor`, `tunables`, `tenants`,
//! `secrets`, `capabilities`, `discovery`, `egress`) and verbs are functions over the shared
//! `Core` (`deploy`, `calls`, `kill`, `swap`, `recovery`, `views`, `actor`, `system`).
//!
//! Architecture invariant: the kernel knows nothing of gRPC, HTTP or JSON bodies; the
//! faces convert at their edge into the types of [`api`]. It depends on the store
//! through its traits only, and no crate above it needs the store's types.

mod actor;
pub mod api;
mod breaker;
mod bucket;
mod caller;
mod calls;
mod capabilities;
mod cluster;
mod config;
mod core;
mod deploy;
mod discovery;
mod egress;
mod entry;
mod error;
mod failed;
mod hibernate;
mod host;
mod kill;
mod logs;
mod mailbox;
mod monitor;
mod park;
pub mod records;
mod recovery;
mod sampler;
mod secrets;
mod shedder;
mod swap;
mod swap_apply;
mod system;
mod tenants;
mod tree;
mod tunables;
mod views;

use std::{collections::BTreeMap, sync::Arc, sync::atomic::Ordering, time::Duration};

use solo_sandbox::Sandbox;
use solo_store::Store;
use solo_types::{Permission, Resource, ServiceId, ServiceStatus};
use tracing::instrument;

pub use crate::api::*;
pub use caller::{Caller, Role, TokenScope};
pub use capabilities::DEFAULT_TOKEN_TTL_SECONDS;
pub use config::{
    BreakerConfig, DEFAULT_TIMEOUT, EgressConfig, KernelConfig, MonitorConfig, ServiceDefaults,
    TenantLimits,
};
pub use entry::footprint;
pub use error::KernelError;
pub use failed::FAILED_DEPLOY_TTL;
pub use shedder::Permit;
pub use swap::{DEFAULT_ROLLBACK_WINDOW, MAX_ROLLBACK_WINDOW};
pub use system::{CallElsewhere, Elsewhere, KernelOptions, Members, Serves};
pub use tree::{ComponentBody, ComponentCtx, SYSTEM_COMPONENTS};
pub use tunables::TUNABLE_KEYS;

/// The kernel. Cheap to clone.
#[derive(Clone)]
pub struct Kernel {
    core: Arc<core::Core>,
}

type R<T> = Result<T, KernelError>;

impl Kernel {
    /// Starts the kernel and its supervision tree, records `system_started`, and brings
    /// back every recorded service.
    pub async fn start(
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        config: KernelConfig,
        options: KernelOptions,
    ) -> R<Self> {
        let core = system::boot(store, sandbox, config, options).await?;
        Ok(Self { core })
    }

    /// Refuses new work from now on (`shutting_down`); what is in flight carries on.
    pub fn stop_accepting(&self) {
        self.core.accepting.store(false, Ordering::Release);
    }

    /// Stops every service (tenants first; each takes its snapshot), then the system.
    pub async fn shutdown(&self) {
        self.stop_accepting();
        park::shutdown(&self.core).await;
    }

    /// Resolves when the root supervisor gave up (the process should exit).
    pub async fn fatal(&self) {
        if let Some(t) = self.core.tree.get() {
            t.fatal.notified().await;
        }
    }

    /// Makes a system component panic, to test its supervision.
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, component: &str) -> bool {
        self.core
            .tree
            .get()
            .is_some_and(|t| t.inject_fault(component))
    }

    /// What recovery at start did.
    pub fn recovery(&self) -> Recovery {
        *self.core.recovery.lock()
    }

    pub fn config(&self) -> &KernelConfig {
        &self.core.config
    }

    /// Admits one request of `caller` if its tenant is served here (`not_placed_here`), against
    /// its tenant's rate (`rate_limited`; not an admin) and the in-flight limits (`load_shed`).
    pub fn admit(&self, caller: &Caller) -> R<Permit> {
        self.core.placed_here(caller)?;
        self.core
            .shedder
            .admit(caller.tenant_id(), !caller.is_admin())
    }

    /// The caller a bearer token stands for: its tenant, limited to its scope. A refusal
    /// is recorded as `capability_denied` (the granting tenant's log, or the system's
    /// for an unknown token, with `source`: where the request came from).
    pub fn authenticate_token(
        &self,
        token: &str,
        source: Option<&str>,
    ) -> Result<Caller, DenyReason> {
        self.core.caps.authenticate(token, source)
    }

    /// Validates, compiles, starts and registers a service.
    #[instrument(name = "solo_kernel.deploy", skip_all, fields(tenant = %caller.tenant_id(), service = %req.service_id))]
    pub async fn deploy(&self, caller: &Caller, req: DeployRequest) -> R<Deployed> {
        deploy::deploy(&self.core, caller, req, None).await
    }

    /// Sends `request` (JSON) and waits for the reply (`None`: the default timeout).
    #[instrument(name = "solo_kernel.call", skip_all, fields(tenant = %caller.tenant_id(), service = %service))]
    pub async fn call(
        &self,
        caller: &Caller,
        service: &ServiceId,
        request: &str,
        timeout: Option<Duration>,
    ) -> R<String> {
        calls::call(&self.core, caller, None, service, request, timeout).await
    }

    /// Queues `message` (JSON) for `service` without waiting.
    #[instrument(name = "solo_kernel.cast", skip_all, fields(tenant = %caller.tenant_id(), service = %service))]
    pub fn cast(&self, caller: &Caller, service: &ServiceId, message: &str) -> R<()> {
        calls::cast(&self.core, caller, None, service, message)
    }

    #[instrument(name = "solo_kernel.status", skip_all, fields(tenant = %caller.tenant_id(), service = %service))]
    pub fn status(&self, caller: &Caller, service: &ServiceId) -> R<ServiceStatus> {
        views::status(&self.core, caller, service)
    }

    #[instrument(name = "solo_kernel.list", skip_all, fields(tenant = %caller.tenant_id()))]
    pub fn list(&self, caller: &Caller, filter: &ListFilter) -> R<ServiceList> {
        views::list(&self.core, caller, filter)
    }

    /// Stops a service for good: gracefully (a snapshot) or forced.
    #[instrument(name = "solo_kernel.kill", skip_all, fields(tenant = %caller.tenant_id(), service = %service))]
    pub async fn kill(
        &self,
        caller: &Caller,
        service: &ServiceId,
        options: KillOptions,
    ) -> R<Killed> {
        kill::kill(&self.core, caller, service, options).await
    }

    /// Replaces a running service's code, between two of its messages.
    #[instrument(name = "solo_kernel.swap", skip_all, fields(tenant = %caller.tenant_id(), service = %req.service_id))]
    pub async fn hot_swap(&self, caller: &Caller, req: SwapRequest) -> R<Swapped> {
        swap::hot_swap(&self.core, caller, req).await
    }

    /// The last `tail` log lines of a service (0: 100; at most the 1,000 kept).
    #[instrument(name = "solo_kernel.logs", skip_all, fields(tenant = %caller.tenant_id(), service = %service))]
    pub fn logs(&self, caller: &Caller, service: &ServiceId, tail: usize) -> R<Vec<LogLine>> {
        views::logs(&self.core, caller, service, views::tail(tail))
    }

    /// Past log lines and a feed of every later one: the lines after `after_seq` when it
    /// is set (a resumed feed), else the last `tail` (0: 100).
    #[instrument(name = "solo_kernel.follow_logs", skip_all, fields(tenant = %caller.tenant_id(), service = %service))]
    pub fn follow_logs(
        &self,
        caller: &Caller,
        service: &ServiceId,
        tail: usize,
        after_seq: u64,
    ) -> R<(Vec<LogLine>, LogStream)> {
        let n = if after_seq > 0 {
            views::MAX_TAIL
        } else {
            views::tail(tail)
        };
        let (mut backlog, live) = views::follow_logs(&self.core, caller, service, n)?;
        backlog.retain(|l| l.seq > after_seq);
        Ok((backlog, live))
    }

    /// One page of events; a tenant only ever sees its own.
    #[instrument(name = "solo_kernel.events", skip_all, fields(tenant = %caller.tenant_id()))]
    pub fn events(&self, caller: &Caller, query: EventQuery) -> R<EventPage> {
        views::events(&self.core, caller, query)
    }

    /// Events after `after_id`, then live ones; a tenant only ever sees its own.
    #[instrument(name = "solo_kernel.watch", skip_all, fields(tenant = %caller.tenant_id()))]
    pub fn watch(&self, caller: &Caller, after_id: u64, filter: EventFilter) -> R<EventStream> {
        views::watch(&self.core, caller, after_id, filter)
    }

    /// Walks the whole event log's hash chain (admin only).
    #[instrument(name = "solo_kernel.verify_events", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn verify_events(&self, caller: &Caller) -> R<LogVerification> {
        views::verify_events(&self.core, caller).await
    }

    /// Stores (or replaces) a secret of the caller's tenant.
    #[instrument(name = "solo_kernel.put_secret", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn put_secret(&self, caller: &Caller, name: &str, value: &[u8]) -> R<u64> {
        self.core.secrets.put(caller, name, value).await
    }

    /// Reads a secret of the caller's tenant; the read is recorded first.
    #[instrument(name = "solo_kernel.get_secret", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn get_secret(&self, caller: &Caller, name: &str) -> R<solo_vault::SecretValue> {
        self.core.secrets.get(caller, name).await
    }

    /// The names of the caller's tenant's secrets, sorted.
    pub fn list_secrets(&self, caller: &Caller) -> R<Vec<String>> {
        self.core.secrets.list(caller)
    }

    /// Deletes a secret (idempotent); returns whether it existed.
    #[instrument(name = "solo_kernel.delete_secret", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn delete_secret(&self, caller: &Caller, name: &str) -> R<bool> {
        self.core.secrets.delete(caller, name).await
    }

    /// Re-encrypts every secret under a new key id (admin only).
    #[instrument(name = "solo_kernel.rotate_secrets", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn rotate_secrets(&self, caller: &Caller) -> R<usize> {
        self.core.secrets.rotate(caller).await
    }

    /// Grants a capability on the caller's tenant (the tenant itself only).
    #[instrument(name = "solo_kernel.grant_capability", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn grant_capability(&self, caller: &Caller, req: GrantRequest) -> R<Granted> {
        self.core.caps.grant(caller, req).await
    }

    /// Mints a narrower child of `token`, which must belong to the caller's tenant.
    #[instrument(name = "solo_kernel.attenuate_capability", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn attenuate_capability(
        &self,
        caller: &Caller,
        token: &str,
        n: &Narrowing,
    ) -> R<Granted> {
        self.core.caps.attenuate(caller, token, n).await
    }

    /// Revokes a capability (by token or hash) and its descendants; idempotent.
    #[instrument(name = "solo_kernel.revoke_capability", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn revoke_capability(&self, caller: &Caller, token_or_hash: &str) -> R<usize> {
        self.core.caps.revoke(caller, token_or_hash).await
    }

    /// Checks `token` against a resource and permission of the caller's tenant,
    /// recording a denial.
    #[instrument(name = "solo_kernel.verify_capability", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn verify_capability(
        &self,
        caller: &Caller,
        token: &str,
        resource: &Resource,
        permission: Permission,
    ) -> Result<CapInfo, DenyReason> {
        self.core
            .caps
            .verify(caller, token, resource, permission)
            .await
    }

    /// The caller's tenant's capabilities (hashes and metadata, never tokens).
    pub fn list_capabilities(&self, caller: &Caller) -> R<Vec<CapInfo>> {
        self.core.caps.list(caller)
    }

    /// Registers one of the caller's services under a name for discovery.
    #[instrument(name = "solo_kernel.register_service", skip_all, fields(tenant = %caller.tenant_id(), service = %req.service_id))]
    pub async fn register_service(&self, caller: &Caller, req: RegisterRequest) -> R<Registered> {
        let (k, tenant) = (&self.core, caller.tenant_id());
        let running = |s: &ServiceId| k.is_deployed(tenant, s);
        let r = k.registry.register(caller, req, running).await?;
        Ok(Registered {
            registered: true,
            service_handle: r.handle,
            expires_at: r.expires_at,
        })
    }

    /// Removes one of the caller's registrations by handle; idempotent.
    pub async fn deregister_service(&self, caller: &Caller, handle: &str) -> R<bool> {
        self.core.registry.deregister(caller, handle).await
    }

    /// The caller's live registrations under `name` matching every filter pair.
    pub fn discover(
        &self,
        caller: &Caller,
        name: &str,
        filters: &BTreeMap<String, String>,
    ) -> R<Vec<Discovered>> {
        views::discover(&self.core, caller, name, filters)
    }

    /// The caller's unexpired registrations (under `name` when given).
    pub fn registrations(&self, caller: &Caller, name: Option<&str>) -> R<Vec<Discovered>> {
        views::registrations(&self.core, caller, name)
    }

    /// Who the caller is, with its tenant's quotas.
    pub fn whoami(&self, caller: &Caller) -> Identity {
        views::whoami(&self.core, caller)
    }

    /// The services offered as tools that the caller may call.
    pub fn service_tools(&self, caller: &Caller) -> Vec<ServiceTool> {
        views::service_tools(&self.core, caller)
    }

    /// The supervision tree; a tenant sees the system and its own subtree.
    pub fn tree(&self, caller: &Caller) -> R<TreeNode> {
        views::tree(&self.core, caller)
    }

    /// Whether Solo is up; details for an authenticated caller (`None`: anonymous).
    pub fn health(&self, caller: Option<&Caller>) -> Health {
        views::health(&self.core, caller)
    }

    /// Every runtime-tunable setting and the monitor's level (admin only).
    pub fn runtime_config(&self, caller: &Caller) -> R<RuntimeConfig> {
        views::runtime_config(&self.core, caller)
    }

    /// Changes a runtime-tunable setting (admin only), recorded as `config_changed`.
    #[instrument(name = "solo_kernel.set_config", skip_all, fields(tenant = %caller.tenant_id()))]
    pub async fn set_config(&self, caller: &Caller, key: &str, value: &str) -> R<ConfigChange> {
        system::set_config(&self.core, caller, key, value).await
    }

    /// Asks the binary to shut down within `grace` (admin only); returns the grace.
    #[instrument(name = "solo_kernel.shutdown", skip_all, fields(tenant = %caller.tenant_id()))]
    pub fn request_shutdown(&self, caller: &Caller, grace: Option<Duration>) -> R<Duration> {
        system::request_shutdown(&self.core, caller, grace)
    }

    /// Checks that the caller is an admin (metrics, for one).
    pub fn require_admin(&self, caller: &Caller, what: &str) -> R<()> {
        (caller.is_admin().then_some(())).ok_or_else(|| KernelError::admin_only(what))
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("services", &self.core.services.len())
            .finish_non_exhaustive()
    }
}
