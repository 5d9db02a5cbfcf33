//! What a kernel does as one node of a cluster: it follows the changes other kernels
//! make to what every kernel keeps in memory (an admin's change reaches the node the
//! admin called, and every other node applies it from the log), and says which tenant a
//! bearer token belongs to, so the node's gateway can route the request. A service's
//! call to another tenant served on another node goes there through [`Elsewhere`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use solo_store::Subscription;
use solo_types::api::Failure;
use solo_types::{EventFilter, ServiceId, TenantId, kinds};

use crate::core::Core;
use crate::error::Stage;
use crate::system::{apply_to_sandbox, replay_config};

/// A service's call or cast to a service of another tenant, which this kernel does not
/// serve, with a capability token that tenant granted: the node serving the tenant
/// verifies the token and answers as it answers any holder of the token.
#[derive(Debug, Clone)]
pub struct CallElsewhere {
    pub tenant: TenantId,
    pub service: ServiceId,
    /// The request (a cast's message), JSON.
    pub request: String,
    /// A call's deadline; `None` for a cast, whose delivery is all that is awaited.
    pub timeout: Option<Duration>,
    pub token: String,
}

/// Carries a [`CallElsewhere`] to the node serving its tenant, and answers its reply
/// (JSON; a cast's is `null`) or the refusal that node gave.
pub type Elsewhere =
    Arc<dyn Fn(CallElsewhere) -> BoxFuture<'static, Result<String, Failure>> + Send + Sync>;

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
