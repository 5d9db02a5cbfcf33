//! The host API a guest may use, implemented by the caller (the kernel in production,
//! [`crate::testing::MemoryHost`] in tests). One implementation per instance, bound to
//! the service's identity, so every call is checked against its tenant and grants.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

/// A log line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// Parses a level name as JavaScript guests pass it; unknown names are `info`.
    pub fn parse_lenient(s: &str) -> Self {
        match s {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "warn" | "warning" => Level::Warn,
            "error" => Level::Error,
            _ => Level::Info,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed host call, as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// Machine-readable: `not_found`, `permission_denied`, `deadline_exceeded`,
    /// `resource_exhausted`, `invalid_argument`, `unavailable`, `service_error`,
    /// `internal`.
    pub code: String,
    pub message: String,
}

impl HostError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for HostError {}

/// Who a service is, as `whoami` tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestIdentity {
    pub tenant: String,
    pub service_id: String,
    pub version: u64,
}

/// Who sent the message a service is handling, as the kernel (never a guest) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCaller {
    /// `tenant` (a client with the tenant's certificate), `admin`, `token` (a bearer
    /// token's holder) or `service` (a service: of this tenant, or of `tenant` with the
    /// capability `token_hash`).
    pub kind: &'static str,
    pub tenant: String,
    pub service_id: Option<String>,
    /// The hash of the capability token the caller presented (never the token).
    pub token_hash: Option<String>,
}

/// An HTTP request a guest sends out of Solo (through `wasi:http` or `host.http`).
/// Header values may hold `{{secret:NAME}}` placeholders, which only the host fills.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// Absolute: `http(s)://host[:port]/path?query`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What came back to an [`HttpRequest`], after any redirects the host followed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The URL that answered (after redirects).
    pub url: String,
}

/// One outgoing request's reservation, taken before the sandbox reads the guest's body
/// and held until the host has answered: what bounds the memory and the time a guest's
/// requests can hold in the host.
pub struct HttpSlot {
    /// The largest body the host takes.
    pub max_body: usize,
    /// How long reading the guest's body may take.
    pub read_timeout: Duration,
    _held: Box<dyn Send + Sync>,
}

impl HttpSlot {
    /// A slot that holds `held` (a guard of the host's) until the request is done.
    pub fn new(max_body: usize, read_timeout: Duration, held: impl Send + Sync + 'static) -> Self {
        Self {
            max_body,
            read_timeout,
            _held: Box::new(held),
        }
    }
}

impl fmt::Debug for HttpSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSlot")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// The host API of one service instance. Functions that wait return `'static` futures;
/// the sandbox does not count the time they wait against the message's CPU deadline.
pub trait HostApi: Send + Sync + 'static {
    /// Appends a line to the service's log.
    fn log(&self, level: Level, message: &str);
    /// Appends the custom event `custom.<kind>` with a JSON payload (not waited for).
    fn emit(&self, kind: &str, payload: &str) -> Result<(), HostError>;
    /// The UTC wall clock in nanoseconds.
    fn now_ns(&self) -> u64 {
        u64::try_from(solo_types::clock::system_now_ns()).unwrap_or(0)
    }
    fn kv_get(&self, key: &str) -> BoxFuture<'static, Result<Option<Vec<u8>>, HostError>>;
    /// Resolves once the write is durable.
    fn kv_put(&self, key: &str, value: Vec<u8>) -> BoxFuture<'static, Result<(), HostError>>;
    fn kv_delete(&self, key: &str) -> BoxFuture<'static, Result<(), HostError>>;
    fn kv_list(&self, prefix: &str) -> BoxFuture<'static, Result<Vec<String>, HostError>>;
    fn secret(&self, name: &str) -> BoxFuture<'static, Result<Vec<u8>, HostError>>;
    /// Calls another service; must never block the caller's thread.
    fn call(
        &self,
        target: &str,
        request: String,
        timeout: Duration,
        token: Option<String>,
    ) -> BoxFuture<'static, Result<String, HostError>>;
    fn cast(&self, target: &str, message: String, token: Option<String>) -> Result<(), HostError>;
    /// Reserves one outgoing request (the service's requests in flight are limited), or
    /// refuses it at once.
    fn http_begin(&self) -> Result<HttpSlot, HostError> {
        Err(HostError::new(
            "host_not_allowed",
            "this host sends no requests out",
        ))
    }
    /// Sends an HTTP request where the service's egress rules allow it, holding `slot`
    /// until done. Refusals have the codes `host_not_allowed`, `private_address`,
    /// `secret_not_bound`, `limit`, `invalid_request`; failures `timeout`, `connect`,
    /// `tls`.
    fn http(
        &self,
        slot: HttpSlot,
        request: HttpRequest,
    ) -> BoxFuture<'static, Result<HttpResponse, HostError>> {
        let _ = (slot, request);
        Box::pin(async {
            Err(HostError::new(
                "host_not_allowed",
                "this host sends no requests out",
            ))
        })
    }
    /// Who the service is.
    fn whoami(&self) -> GuestIdentity {
        GuestIdentity::default()
    }
    /// Who sent the message being handled (`None` outside one: init, restore).
    fn caller(&self) -> Option<GuestCaller> {
        None
    }
    /// Checks a capability `token` for `permission` on `resource` of the service's
    /// tenant: `Ok`, or the denial reason (`not_found`, `expired`, `revoked`,
    /// `resource_mismatch`, `permission_denied`, `invalid_argument`).
    fn verify(
        &self,
        token: &str,
        resource: &str,
        permission: &str,
    ) -> BoxFuture<'static, Result<(), String>> {
        let _ = (token, resource, permission);
        Box::pin(async { Err("unavailable".to_string()) })
    }
}
