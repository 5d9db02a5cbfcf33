//! Write Solo services in Rust.
//!
//! A service is a type implementing [`Service`], exported with [`service!`]. Build it as
//! a `cdylib` for `wasm32-wasip2`; the output is a WebAssembly component targeting
//! `solo:service/stateful-service` (`wit/solo.wit`), ready for `solo deploy`.
//!
//! ```ignore
//! struct Echo;
//! impl solo_sdk::Service for Echo {
//!     fn handle_call(request: String) -> Result<String, String> {
//!         Ok(request)
//!     }
//! }
//! solo_sdk::service!(Echo);
//! ```
//!
//! Requests, replies and configs are JSON text. State lives in statics of the guest: each
//! instance of the component has its own memory.

extern crate self as solo_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The generated bindings of `wit/solo.wit`.
#[doc(hidden)]
#[allow(clippy::all, unsafe_code, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "stateful-service",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export",
        default_bindings_module: "solo_sdk::bindings",
        runtime_path: "solo_sdk::__wit_bindgen::rt",
    });
}

use bindings::solo::service::host;
pub use host::{CallerInfo, Error as HostError, Identity, Level};

/// A Solo service. Only `handle_call` is required.
pub trait Service {
    /// Called once per start with the deploy config (JSON text).
    fn init(config: String) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Answers a request (JSON text). An `Err` goes back to the caller as a service error.
    fn handle_call(request: String) -> Result<String, String>;

    /// Handles a fire-and-forget message.
    fn handle_cast(message: String) {
        let _ = message;
    }

    /// The state to carry across hot swaps, restarts and hibernation, if any. `None`
    /// (the default) says there is nothing to carry: an idle service hibernates anyway
    /// and wakes with only what `init` builds, so a service that keeps state in memory
    /// must implement this and `restore`.
    fn snapshot() -> Option<Vec<u8>> {
        None
    }

    /// Takes over a snapshot of a previous instance (called after `init`).
    fn restore(state: Vec<u8>) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}

/// Exports a [`Service`] implementation as the component's entry points.
#[macro_export]
macro_rules! service {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __SoloService;

        impl $crate::bindings::exports::solo::service::handler::Guest for __SoloService {
            fn init(config: String) -> Result<(), String> {
                <$ty as $crate::Service>::init(config)
            }
            fn handle_call(request: String) -> Result<String, String> {
                <$ty as $crate::Service>::handle_call(request)
            }
            fn handle_cast(message: String) {
                <$ty as $crate::Service>::handle_cast(message)
            }
        }

        impl $crate::bindings::exports::solo::service::state::Guest for __SoloService {
            fn snapshot() -> Option<Vec<u8>> {
                <$ty as $crate::Service>::snapshot()
            }
            fn restore(state: Vec<u8>) -> Result<(), String> {
                <$ty as $crate::Service>::restore(state)
            }
        }

        $crate::bindings::__export!(__SoloService with_types_in $crate::bindings);
    };
}

/// Writes a line to the service's log.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Appends the custom event `custom.<kind>` with a JSON payload.
pub fn emit(kind: &str, payload: &str) -> Result<(), HostError> {
    host::emit(kind, payload)
}

/// The UTC wall clock in nanoseconds since the Unix epoch.
pub fn now() -> u64 {
    host::now()
}

/// Who this service is: its tenant, id and version.
pub fn whoami() -> Identity {
    host::whoami()
}

/// Who sent the message being handled (set by the kernel; `None` inside `init`).
pub fn caller() -> Option<CallerInfo> {
    host::caller()
}

/// Checks a capability `token` for `permission` on `resource` of this service's tenant:
/// `Ok(())`, or the denial reason (`not_found`, `expired`, `revoked`,
/// `resource_mismatch`, `permission_denied`). Recorded like any verify.
pub fn verify(token: &str, resource: &str, permission: &str) -> Result<(), String> {
    host::verify(token, resource, permission)
}

/// The service's durable key-value store.
pub mod kv {
    use super::{HostError, host};

    /// The value under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, HostError> {
        host::kv_get(key)
    }

    /// Stores `value` under `key`; durable when this returns.
    pub fn put(key: &str, value: &[u8]) -> Result<(), HostError> {
        host::kv_put(key, value)
    }

    /// Removes `key` (a no-op if absent).
    pub fn delete(key: &str) -> Result<(), HostError> {
        host::kv_delete(key)
    }

    /// The keys starting with `prefix`, in order.
    pub fn list(prefix: &str) -> Result<Vec<String>, HostError> {
        host::kv_list(prefix)
    }
}

/// A secret of the service's tenant (the deploy spec must list its name).
pub fn secret(name: &str) -> Result<Vec<u8>, HostError> {
    host::secret(name)
}

/// Calls a service of the same tenant (by id or registered name) and waits for its reply.
pub fn call(target: &str, request: &str, timeout_ms: u32) -> Result<String, HostError> {
    host::call(target, request, timeout_ms, None)
}

/// Calls `tenant/service` of another tenant with a capability token it granted.
pub fn call_with_token(
    target: &str,
    request: &str,
    timeout_ms: u32,
    token: &str,
) -> Result<String, HostError> {
    host::call(target, request, timeout_ms, Some(token))
}

/// Sends a message to another service without waiting.
pub fn cast(target: &str, message: &str) -> Result<(), HostError> {
    host::cast(target, message, None)
}
