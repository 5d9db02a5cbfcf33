//! Deploys that failed, remembered for a while so `status` can say why: the stage and
//! the reason, until the id is deployed again or [`FAILED_DEPLOY_TTL`] passes.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use solo_types::{ServiceId, TenantId};

/// How long a failed deploy answers `status`.
pub const FAILED_DEPLOY_TTL: Duration = Duration::from_secs(600);

/// At most this many are kept (a tenant retrying broken code must not grow memory
/// without bound); past it, expired ones are dropped and then the oldest.
const MAX_KEPT: usize = 10_000;

/// Why one deploy failed.
#[derive(Debug, Clone)]
pub(crate) struct FailedDeploy {
    pub(crate) stage: String,
    pub(crate) reason: String,
    pub(crate) at: Instant,
}

/// The failed deploys by tenant and service id.
#[derive(Default)]
pub(crate) struct FailedDeploys {
    map: DashMap<(TenantId, ServiceId), FailedDeploy>,
}

impl FailedDeploys {
    pub(crate) fn note(&self, tenant: &TenantId, service: &ServiceId, f: FailedDeploy) {
        if self.map.len() >= MAX_KEPT {
            let now = f.at;
            self.map
                .retain(|_, v| now.saturating_duration_since(v.at) < FAILED_DEPLOY_TTL);
            if self.map.len() >= MAX_KEPT
                && let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|e| e.value().at)
                    .map(|e| e.key().clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert((tenant.clone(), service.clone()), f);
    }

    /// A deploy of the id succeeded: its failure is history.
    pub(crate) fn forget(&self, tenant: &TenantId, service: &ServiceId) {
        self.map.remove(&(tenant.clone(), service.clone()));
    }

    /// The last failure of the id, if it is recent.
    pub(crate) fn get(
        &self,
        tenant: &TenantId,
        service: &ServiceId,
        now: Instant,
    ) -> Option<FailedDeploy> {
        let key = (tenant.clone(), service.clone());
        let f = self.map.get(&key)?.value().clone();
        if now.saturating_duration_since(f.at) < FAILED_DEPLOY_TTL {
            Some(f)
        } else {
            drop(self.map.remove(&key));
            None
        }
    }
}
