//! An in-memory [`HostApi`] for tests: key-value in a map, secrets from a list, log
//! lines and emitted events recorded, calls answered by a closure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::{HostApi, HostError, Level};

type CallHandler = dyn Fn(&str, &str) -> Result<String, HostError> + Send + Sync;

/// A host whose state lives in memory; clones share it.
#[derive(Clone, Default)]
pub struct MemoryHost {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    kv: Mutex<BTreeMap<String, Vec<u8>>>,
    secrets: Mutex<BTreeMap<String, Vec<u8>>>,
    logs: Mutex<Vec<(Level, String)>>,
    events: Mutex<Vec<(String, String)>>,
    casts: Mutex<Vec<(String, String)>>,
    on_call: Mutex<Option<Arc<CallHandler>>>,
    delay: Mutex<Duration>,
}

impl MemoryHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `secret(name)` return `value`.
    pub fn set_secret(&self, name: &str, value: &[u8]) {
        self.inner
            .secrets
            .lock()
            .insert(name.to_string(), value.to_vec());
    }

    /// Answers `call(target, request)` with `f`.
    pub fn on_call(
        &self,
        f: impl Fn(&str, &str) -> Result<String, HostError> + Send + Sync + 'static,
    ) {
        *self.inner.on_call.lock() = Some(Arc::new(f));
    }

    /// Makes every host function that waits take `delay` first (time the sandbox must
    /// not count as CPU).
    pub fn set_delay(&self, delay: Duration) {
        *self.inner.delay.lock() = delay;
    }

    fn delay(&self) -> Duration {
        *self.inner.delay.lock()
    }

    /// The log lines written so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.inner.logs.lock().clone()
    }

    /// The `(kind, payload)` of the events emitted so far.
    pub fn events(&self) -> Vec<(String, String)> {
        self.inner.events.lock().clone()
    }

    /// The `(target, message)` of the casts sent so far.
    pub fn casts(&self) -> Vec<(String, String)> {
        self.inner.casts.lock().clone()
    }

    /// A copy of the key-value store.
    pub fn kv(&self) -> BTreeMap<String, Vec<u8>> {
        self.inner.kv.lock().clone()
    }
}

impl HostApi for MemoryHost {
    fn log(&self, level: Level, message: &str) {
        self.inner.logs.lock().push((level, message.to_string()));
    }

    fn emit(&self, kind: &str, payload: &str) -> Result<(), HostError> {
        if serde_json::from_str::<serde_json::Value>(payload).is_err() {
            return Err(HostError::new(
                "invalid_argument",
                "the payload is not JSON",
            ));
        }
        self.inner
            .events
            .lock()
            .push((format!("custom.{kind}"), payload.to_string()));
        Ok(())
    }

    fn kv_get(&self, key: &str) -> BoxFuture<'static, Result<Option<Vec<u8>>, HostError>> {
        let (this, key) = (self.clone(), key.to_string());
        Box::pin(async move {
            tokio::time::sleep(this.delay()).await;
            Ok(this.inner.kv.lock().get(&key).cloned())
        })
    }

    fn kv_put(&self, key: &str, value: Vec<u8>) -> BoxFuture<'static, Result<(), HostError>> {
        let (this, key) = (self.clone(), key.to_string());
        Box::pin(async move {
            tokio::time::sleep(this.delay()).await;
            this.inner.kv.lock().insert(key, value);
            Ok(())
        })
    }

    fn kv_delete(&self, key: &str) -> BoxFuture<'static, Result<(), HostError>> {
        let (this, key) = (self.clone(), key.to_string());
        Box::pin(async move {
            tokio::time::sleep(this.delay()).await;
            this.inner.kv.lock().remove(&key);
            Ok(())
        })
    }

    fn kv_list(&self, prefix: &str) -> BoxFuture<'static, Result<Vec<String>, HostError>> {
        let keys = self
            .inner
            .kv
            .lock()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        Box::pin(async move { Ok(keys) })
    }

    fn secret(&self, name: &str) -> BoxFuture<'static, Result<Vec<u8>, HostError>> {
        let v = self.inner.secrets.lock().get(name).cloned();
        let name = name.to_string();
        Box::pin(async move {
            v.ok_or_else(|| HostError::new("not_found", format!("secret {name} not found")))
        })
    }

    fn call(
        &self,
        target: &str,
        request: String,
        timeout: Duration,
        _token: Option<String>,
    ) -> BoxFuture<'static, Result<String, HostError>> {
        let handler = self.inner.on_call.lock().clone();
        let target = target.to_string();
        let delay = self.delay();
        Box::pin(async move {
            tokio::time::sleep(delay.min(timeout)).await;
            if delay >= timeout {
                return Err(HostError::new("deadline_exceeded", "the call timed out"));
            }
            let handler = handler.ok_or_else(|| {
                HostError::new("not_found", format!("service {target} not found"))
            })?;
            tokio::time::timeout(timeout, async { handler(&target, &request) })
                .await
                .map_err(|_| HostError::new("deadline_exceeded", "the call timed out"))?
        })
    }

    fn cast(&self, target: &str, message: String, _token: Option<String>) -> Result<(), HostError> {
        self.inner.casts.lock().push((target.to_string(), message));
        Ok(())
    }
}
