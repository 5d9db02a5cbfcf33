//! Recovery at start (DESIGN §9): every deployment record is a service whose desired
//! state is running (a kill deletes the record, a deploy writes it), so each comes back
//! with its last code and, when one was taken, its last snapshot. Each is recorded as
//! `service_recovered` or `service_recovery_failed`; nothing is deployed again, so
//! restarting any number of times adds no `service_deployed`.

use std::ops::Bound;
use std::sync::Arc;

use futures::StreamExt;
use solo_types::{ServiceId, TenantId};

use crate::records::{self, DeploymentRecord};
use crate::service::{History, ServiceEntry};
use crate::{KernelError, KernelInner, Slot};

/// How many services are brought back at once.
const PARALLEL: usize = 16;

/// What recovery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    pub recovered: usize,
    pub failed: usize,
}

impl KernelInner {
    /// Starts every recorded deployment; failures are recorded per service and do not
    /// stop the others.
    pub(crate) async fn recover(&self) -> Result<Recovery, KernelError> {
        let snap = self.store.snapshot()?;
        let rows = snap.range(
            records::DEPLOYMENTS,
            Bound::Unbounded,
            Bound::Unbounded,
            usize::MAX,
        )?;
        drop(snap);
        let results: Vec<Result<(), ()>> = futures::stream::iter(rows)
            .map(|(key, value)| self.recover_one(key, value))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        Ok(Recovery {
            recovered: results.len() - failed,
            failed,
        })
    }

    async fn recover_one(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), ()> {
        let record: DeploymentRecord = match serde_json::from_slice(&value) {
            Ok(r) => r,
            Err(e) => {
                let key = String::from_utf8_lossy(&key).into_owned();
                tracing::error!(%key, error = %e, "a deployment record cannot be read; skipped");
                if let Some((t, s)) = key.split_once('/')
                    && let (Ok(t), Ok(s)) = (TenantId::new(t), ServiceId::new(s))
                {
                    self.record_recovery(records::recovery_failed(
                        &t,
                        &s,
                        &format!("the deployment record cannot be read: {e}"),
                        0,
                    ))
                    .await;
                }
                return Err(());
            }
        };
        let (tenant, sid) = (record.tenant.clone(), record.spec.service_id.clone());
        let original = self.deployed_event_of(&tenant, &sid);
        match self.start_recorded(&record).await {
            Ok(snapshot_bytes) => {
                self.record_recovery(records::recovered(
                    &tenant,
                    &sid,
                    record.version,
                    snapshot_bytes,
                    original,
                ))
                .await;
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(%tenant, service = %sid, %reason, "a service could not be recovered");
                self.record_recovery(records::recovery_failed(&tenant, &sid, &reason, original))
                    .await;
                Err(())
            }
        }
    }

    /// The id of the last `service_deployed` event of a service (an indexed read).
    fn deployed_event_of(&self, tenant: &TenantId, service: &ServiceId) -> u64 {
        let q = solo_store::EventQuery {
            filter: solo_store::EventFilter {
                tenant: Some(tenant.clone()),
                service: Some(service.clone()),
                kind: Some(solo_types::kinds::SERVICE_DEPLOYED.into()),
            },
            limit: 1,
            order: solo_store::Order::Descending,
            ..solo_store::EventQuery::default()
        };
        self.store
            .read(&q)
            .ok()
            .and_then(|p| p.events.first().map(|e| e.id))
            .unwrap_or(0)
    }

    async fn record_recovery(&self, e: solo_types::NewEvent) {
        if let Err(err) = self.store.append(vec![e]).await {
            tracing::error!(error = %err, "could not record a recovery");
        }
    }

    /// Starts one recorded service; returns the size of the snapshot it was restored
    /// from.
    async fn start_recorded(&self, record: &DeploymentRecord) -> Result<Option<usize>, String> {
        let tenant = &record.tenant;
        let spec = &record.spec;
        let sid = spec.service_id.clone();
        let key = records::deployment_key(tenant, &sid);
        let code = self
            .store
            .get(records::CODE, record.code_hash.as_bytes())
            .map_err(|e| format!("read the code: {e}"))?
            .ok_or_else(|| format!("the code {} is missing from the store", record.code_hash))?;
        let snapshot = self
            .store
            .get(records::SNAPSHOTS, &key)
            .map_err(|e| format!("read the snapshot: {e}"))?;
        let artifact = self
            .sandbox
            .compile(spec.format, Arc::<[u8]>::from(code))
            .await
            .map_err(|e| format!("compile: {e}"))?;

        let ctx = self.tenant_ctx(tenant);
        let map_key = (tenant.clone(), sid.clone());
        if self.services.contains_key(&map_key) {
            return Err(format!("service {sid} is already running"));
        }
        self.services.insert(map_key.clone(), Slot::Deploying);
        {
            let mut a = ctx.admission.lock();
            a.services.insert(sid.clone());
            a.memory_mb += u64::from(spec.limits.memory_mb);
        }
        let entry = ServiceEntry::new(
            tenant.clone(),
            spec.clone(),
            record.code_hash.clone(),
            artifact,
            1000,
            self.config.limits.max_emits_per_second,
            Some(History {
                version: record.version,
                deployed_at: record.deployed_at,
                deployed_event: record.deployed_event,
            }),
        );
        let started = async {
            let mut instance = self
                .start_instance(&entry)
                .await
                .map_err(|r| format!("start: {}: {}", r.kind, r.message))?;
            if let Some(state) = &snapshot
                && instance.has_state()
            {
                instance
                    .restore(state)
                    .await
                    .map_err(|e| format!("restore the last snapshot: {e}"))?;
            }
            Ok::<_, String>(instance)
        };
        let instance = match started.await {
            Ok(i) => i,
            Err(e) => {
                self.release(tenant, &sid, spec.limits.memory_mb);
                return Err(e);
            }
        };
        *entry.ready.lock() = Some(instance);
        if let Err(e) = ctx.supervisor.add_child(self.service_child(&entry)).await {
            self.release(tenant, &sid, spec.limits.memory_mb);
            return Err(format!("supervise: {e}"));
        }
        self.services
            .insert(map_key, Slot::Running(Arc::clone(&entry)));
        Ok(snapshot.as_ref().map(Vec::len))
    }
}
