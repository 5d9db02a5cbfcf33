//! What a kernel does as one node of a cluster: it follows the changes other kernels
//! make to what every kernel keeps in memory (an admin's change reaches the node the
//! admin called, and every other node applies it from the log), and says which tenant a
//! bearer token belongs to, so the node's gateway can route the request.

use std::time::Duration;

use solo_store::Subscription;
use solo_types::{EventFilter, kinds};

use crate::core::Core;
use crate::error::Stage;
use crate::system::{apply_to_sandbox, replay_config};

fn of_kind(k: &Core, kind: &str) -> Subscription {
    k.store.subscribe(
        k.loaded_after,
        EventFilter {
            kind: Some(kind.into()),
            ..EventFilter::default()
        },
    )
}

/// Applies each runtime configuration change (`config_changed`) and each change of a
/// tenant's egress rules (`egress_rules_changed`) recorded since this kernel read its
/// state, whoever made it, for as long as the store lives. Applying one twice (this
/// kernel's own) changes nothing.
pub(crate) async fn follow(k: &Core) {
    let mut config = of_kind(k, kinds::CONFIG_CHANGED);
    let mut egress = of_kind(k, kinds::EGRESS_RULES_CHANGED);
    loop {
        let next = tokio::select! {
            e = config.next() => e.map(|e| e.map(|_| None)),
            e = egress.next() => e.map(|e| e.map(|e| e.tenant)),
        };
        let applied = match next {
            None => return,
            Some(Ok(None)) => replay_config(k.store.as_ref(), &k.tunables).map(|()| {
                apply_to_sandbox(k);
            }),
            Some(Ok(Some(tenant))) => k.egress.reload_tenant(k.store.as_ref(), &tenant),
            Some(Err(e)) => Err::<(), _>(e).stage("follow the log"),
        };
        if let Err(e) = applied {
            tracing::warn!(error = %e, "applying another node's change failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl crate::Kernel {
    /// Applies the changes other kernels sharing this store make to the runtime
    /// configuration and to tenants' egress rules, until the store closes (a cluster
    /// node runs it beside its kernel; a single server needs none).
    pub async fn follow(&self) {
        follow(&self.core).await;
    }

    /// The tenant that granted a bearer `token`, if this store holds it: where to route
    /// the request, not whether to serve it (the serving node verifies the token).
    pub fn token_tenant(&self, token: &str) -> Option<solo_types::TenantId> {
        self.core.caps.caps().tenant_of(token)
    }
}
