//! The host side of one component instance: the data of its [`Store`] (the WASI
//! context with no ambient authority, the memory limiter, the host API) and the
//! implementation of `solo:service/host` over [`HostApi`]; a guest's stdout and stderr
//! become lines of its log.
//!
//! [`Store`]: wasmtime::Store

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::solo::service::host as wit_host;
use super::runner_bindings::solo::service::js_host;
use crate::meter::Meter;
use crate::{HostApi, HostError, HttpRequest, Level};

/// The longest log line kept from a guest's stdout or stderr; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// The data of one instance's [`Store`].
pub(crate) struct State {
    host: Arc<dyn HostApi>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// `wasi:http`'s context and the hook its requests leave through.
    http: WasiHttpCtx,
    egress: super::http::Egress,
    pub(super) limiter: MemoryLimiter,
    /// What the JS runner asks of its host, when this is an instance of it.
    pub(super) js: Option<JsHost>,
    /// Where the store's fiber stack was seen, for an idle instance to hand back.
    pub(super) stack: super::stack::FiberPages,
}

/// The host side of a JS runner instance.
pub(super) struct JsHost {
    pub(super) source: Arc<str>,
    pub(super) meter: Arc<Meter>,
}

/// Room left outside QuickJS's heap for the runner's stack, statics and allocator.
const JS_HEAP_HEADROOM: u64 = 4 << 20;

impl State {
    /// A store's data for an instance of `host`'s service with `memory_bytes` of linear
    /// memory at most: WASI with stdout and stderr into the log and no network.
    pub(super) fn new(host: Arc<dyn HostApi>, memory_bytes: u64) -> Self {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(LogStream {
            host: Arc::clone(&host),
            level: Level::Info,
        })
        .stderr(LogStream {
            host: Arc::clone(&host),
            level: Level::Warn,
        })
        .secure_random(HostRng)
        .insecure_random(HostRng)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
        Self {
            egress: super::http::Egress::new(Arc::clone(&host)),
            host,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            stack: super::stack::FiberPages::default(),
            limiter: MemoryLimiter {
                limit: memory_bytes,
                current: 0,
                exceeded: false,
            },
            js: None,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `wasi:http` shares the WASI table (its bodies are `wasi:io` streams).
impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

/// The error a memory grow past the limit traps with.
#[derive(Debug)]
pub(super) struct MemoryLimitExceeded {
    limit: u64,
    pub(super) desired: usize,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest asked for {} bytes of linear memory, over its limit of {}",
            self.desired, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

pub(super) struct MemoryLimiter {
    limit: u64,
    /// Linear memory in use (the size of the latest memory grown).
    pub(super) current: u64,
    pub(super) exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.exceeded = true;
            return Err(MemoryLimitExceeded {
                limit: self.limit,
                desired,
            }
            .into());
        }
        self.current = self.current - (current as u64).min(self.current) + desired as u64;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

fn to_wit(e: HostError) -> wit_host::Error {
    wit_host::Error {
        code: e.code,
        message: e.message,
    }
}

impl wit_host::Host for State {
    async fn log(&mut self, level: wit_host::Level, message: String) {
        let level = match level {
            wit_host::Level::Trace => Level::Trace,
            wit_host::Level::Debug => Level::Debug,
            wit_host::Level::Info => Level::Info,
            wit_host::Level::Warn => Level::Warn,
            wit_host::Level::Error => Level::Error,
        };
        self.host.log(level, &message);
    }

    async fn emit(&mut self, kind: String, payload: String) -> Result<(), wit_host::Error> {
        self.host.emit(&kind, &payload).map_err(to_wit)
    }

    async fn now(&mut self) -> u64 {
        self.host.now_ns()
    }

    async fn kv_get(&mut self, key: String) -> Result<Option<Vec<u8>>, wit_host::Error> {
        self.host.kv_get(&key).await.map_err(to_wit)
    }

    async fn kv_put(&mut self, key: String, value: Vec<u8>) -> Result<(), wit_host::Error> {
        self.host.kv_put(&key, value).await.map_err(to_wit)
    }

    async fn kv_delete(&mut self, key: String) -> Result<(), wit_host::Error> {
        self.host.kv_delete(&key).await.map_err(to_wit)
    }

    async fn kv_list(&mut self, prefix: String) -> Result<Vec<String>, wit_host::Error> {
        self.host.kv_list(&prefix).await.map_err(to_wit)
    }

    async fn secret(&mut self, name: String) -> Result<Vec<u8>, wit_host::Error> {
        self.host.secret(&name).await.map_err(to_wit)
    }

    async fn http(
        &mut self,
        request: wit_host::HttpRequest,
    ) -> Result<wit_host::HttpResponse, wit_host::Error> {
        let slot = self.host.http_begin().map_err(to_wit)?;
        if request.body.len() > slot.max_body {
            return Err(wit_host::Error {
                code: "limit".into(),
                message: format!(
                    "the request body is {} bytes, over the {}-byte cap",
                    request.body.len(),
                    slot.max_body
                ),
            });
        }
        let r = self
            .host
            .http(
                slot,
                HttpRequest {
                    method: request.method,
                    url: request.url,
                    headers: request.headers,
                    body: request.body,
                },
            )
            .await
            .map_err(to_wit)?;
        Ok(wit_host::HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
            url: r.url,
        })
    }

    async fn call(
        &mut self,
        target: String,
        request: String,
        timeout_ms: u32,
        token: Option<String>,
    ) -> Result<String, wit_host::Error> {
        self.host
            .call(
                &target,
                request,
                Duration::from_millis(u64::from(timeout_ms)),
                token,
            )
            .await
            .map_err(to_wit)
    }

    async fn cast(
        &mut self,
        target: String,
        message: String,
        token: Option<String>,
    ) -> Result<(), wit_host::Error> {
        self.host.cast(&target, message, token).map_err(to_wit)
    }

    async fn whoami(&mut self) -> wit_host::Identity {
        let i = self.host.whoami();
        wit_host::Identity {
            tenant: i.tenant,
            service_id: i.service_id,
            version: i.version,
        }
    }

    async fn caller(&mut self) -> Option<wit_host::CallerInfo> {
        self.host.caller().map(|c| wit_host::CallerInfo {
            kind: c.kind.to_string(),
            tenant: c.tenant,
            service_id: c.service_id,
            token_hash: c.token_hash,
        })
    }

    async fn verify(
        &mut self,
        token: String,
        resource: String,
        permission: String,
    ) -> Result<(), String> {
        self.host.verify(&token, &resource, &permission).await
    }
}

/// The most of a crash report's message or stack kept from the runner (a script sets
/// its own exception's text).
const MAX_CRASH_TEXT: usize = 16 << 10;

/// `text` cut to at most `max` bytes, on a character boundary, marked when cut.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push('…');
    }
    text
}

/// The JS runner's report that the engine stopped a script, or that an exception had
/// nobody to go back to: the trap that ends the instance.
#[derive(Debug)]
pub(crate) struct JsCrash {
    pub(crate) kind: String,
    pub(crate) message: String,
    pub(crate) stack: String,
}

impl std::fmt::Display for JsCrash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for JsCrash {}

impl State {
    fn js_host(&self) -> wasmtime::Result<&JsHost> {
        self.js
            .as_ref()
            .ok_or_else(|| wasmtime::Error::msg("js-host is only for the JavaScript runner"))
    }
}

impl js_host::Host for State {
    async fn source(&mut self) -> wasmtime::Result<String> {
        Ok(self.js_host()?.source.to_string())
    }

    async fn heap_limit(&mut self) -> wasmtime::Result<u64> {
        let limit = self.limiter.limit;
        Ok(limit
            .saturating_sub(JS_HEAP_HEADROOM.max(limit / 8))
            .max(limit / 2))
    }

    async fn interrupted(&mut self) -> wasmtime::Result<bool> {
        Ok(self.js_host()?.meter.over_budget())
    }

    async fn crash(
        &mut self,
        kind: String,
        message: String,
        stack: String,
    ) -> wasmtime::Result<()> {
        Err(JsCrash {
            kind,
            message: cut(message, MAX_CRASH_TEXT),
            stack: cut(stack, MAX_CRASH_TEXT),
        }
        .into())
    }
}

/// A guest's stdout or stderr, written line by line into the service log.
struct LogStream {
    host: Arc<dyn HostApi>,
    level: Level,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            host: Arc::clone(&self.host),
            level: self.level,
            buf: Vec::new(),
        })
    }
}

struct LineWriter {
    host: Arc<dyn HostApi>,
    level: Level,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, upto: usize) {
        let line: Vec<u8> = self.buf.drain(..upto).collect();
        let mut text = String::from_utf8_lossy(&line).into_owned();
        while text.ends_with('\n') || text.ends_with('\r') {
            text.pop();
        }
        self.host.log(self.level, &cut(text, MAX_LOG_LINE));
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            self.emit(pos + 1);
        }
        if self.buf.len() > MAX_LOG_LINE * 4 {
            let n = self.buf.len();
            self.emit(n);
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.buf.is_empty() {
            let n = self.buf.len();
            self.emit(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let n = self.buf.len();
            self.emit(n);
        }
    }
}

/// `wasi:random` for every instance: the host thread's generator (a CSPRNG seeded from
/// the OS, rand's `ThreadRng`), holding no state of its own. wasmtime-wasi's default
/// boxes a generator per instance (~350 bytes each, with the insecure one), which
/// every idle service would keep.
struct HostRng;

impl rand_core::TryRng for HostRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(rand::RngCore::next_u32(&mut rand::rng()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(rand::RngCore::next_u64(&mut rand::rng()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand::RngCore::fill_bytes(&mut rand::rng(), dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand_core::TryRng;

    use super::HostRng;

    #[test]
    fn host_rng_is_stateless_and_fills_what_it_is_asked() {
        assert_eq!(std::mem::size_of::<HostRng>(), 0);
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        HostRng.try_fill_bytes(&mut a).ok();
        HostRng.try_fill_bytes(&mut b).ok();
        assert_ne!(a, [0u8; 64]);
        assert_ne!(a, b, "two draws of 64 bytes agree");
        let draws: std::collections::HashSet<u64> = (0..100)
            .filter_map(|_| HostRng.try_next_u64().ok())
            .collect();
        assert_eq!(draws.len(), 100);
    }
}
