//! Calls and casts: validate the message, put it in the service's mailbox (full:
//! `mailbox_full`), and for a call wait with a timeout, so the caller is freed even if
//! the service is stuck. A guest's error answer is `ServiceError`, distinct from a crash
//! (`ServiceCrashed`, with the report) and from the system's own refusals. Calls go
//! through the service's circuit breaker. Service-to-service calls take the same path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use solo_sandbox::{CallError, GuestCaller};
use solo_types::{Permission, Resource, ServiceId, metric_names as m};
use tokio::sync::oneshot;

use crate::breaker::{BreakerSettings, Outcome};
use crate::caller::{Caller, Role};
use crate::core::Core;
use crate::entry::{Envelope, ServiceEntry};
use crate::error::KernelError;
use crate::records;

/// Who a message is from, as the guest's `caller()` tells it: derived from the caller
/// that the kernel authenticated (or, for a cross-tenant host call, said by the kernel).
pub(crate) fn guest_caller(caller: &Caller) -> GuestCaller {
    let (kind, service_id, token_hash) = match caller.role() {
        Role::Tenant => ("tenant", None, None),
        Role::Admin => ("admin", None, None),
        Role::Token(s) => ("token", None, Some(s.hash.clone())),
        Role::Service(id) => ("service", Some(id.to_string()), None),
    };
    GuestCaller {
        kind,
        tenant: caller.tenant_id().to_string(),
        service_id,
        token_hash,
    }
}

/// Sends `request` (JSON) to `service` and waits up to `timeout` for the reply; `from`
/// says who it is from when that is not `caller` itself.
pub(crate) async fn call(
    k: &Core,
    caller: &Caller,
    from: Option<GuestCaller>,
    service: &ServiceId,
    request: &str,
    timeout: Option<Duration>,
) -> Result<String, KernelError> {
    let started = Instant::now();
    let from = from.unwrap_or_else(|| guest_caller(caller));
    let result = checked_call(k, caller, from, service, request, timeout).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    };
    metrics::counter!(m::CALLS, "outcome" => outcome).increment(1);
    metrics::histogram!(m::CALL_SECONDS).record(started.elapsed().as_secs_f64());
    result
}

async fn checked_call(
    k: &Core,
    caller: &Caller,
    from: GuestCaller,
    service: &ServiceId,
    request: &str,
    timeout: Option<Duration>,
) -> Result<String, KernelError> {
    k.require(
        caller,
        &Resource::Service(service.clone()),
        Permission::Call,
    )?;
    k.check_accepting()?;
    let timeout = k.config.timeout(timeout)?;
    k.check_message("request", request)?;
    let entry = k.live_entry(caller, service)?;
    entry.breaker.allow(k.clock.now(), service)?;
    let result = deliver(k, &entry, from, service, request, timeout).await;
    let outcome = match &result {
        Ok(_) | Err(KernelError::ServiceError(_) | KernelError::InvalidArgument(_)) => {
            Outcome::Success
        }
        Err(KernelError::ServiceCrashed(_) | KernelError::DeadlineExceeded(_)) => Outcome::Failure,
        Err(_) => Outcome::Neutral,
    };
    let settings = BreakerSettings::current(&k.tunables);
    if let Some(e) = entry
        .breaker
        .record(k.clock.now(), outcome, settings, &entry.tenant, service)
    {
        k.record_later(vec![e], "a circuit breaker change");
    }
    result
}

/// How many `resource_violation` events a full mailbox writes a second, per service.
const MAILBOX_FULL_EVENTS_PER_SECOND: u32 = 1;

/// A full mailbox, as the caller sees it, and a `resource_violation` (sampled).
fn refused(k: &Core, entry: &ServiceEntry) -> KernelError {
    let service = &entry.id;
    if let Some(dropped) = entry
        .mailbox_full
        .admit(k.clock.now(), MAILBOX_FULL_EVENTS_PER_SECOND)
    {
        let limit = u64::from(entry.spec.limits.mailbox);
        let mut e = records::violation(
            &entry.tenant,
            service,
            "mailbox",
            limit,
            Some(limit),
            "messages",
        );
        e.payload["suppressed_before"] = dropped.into();
        k.record_later(vec![e], "a resource violation");
    }
    KernelError::ResourceExhausted {
        reason: "mailbox_full",
        message: format!("the mailbox of service {service} is full"),
    }
}

async fn deliver(
    k: &Core,
    entry: &Arc<ServiceEntry>,
    from: GuestCaller,
    service: &ServiceId,
    request: &str,
    timeout: Duration,
) -> Result<String, KernelError> {
    let (tx, rx) = oneshot::channel();
    let envelope = Box::new(Envelope::Call {
        request: request.to_string(),
        reply: tx,
        deadline: Instant::now() + timeout,
        from,
    });
    crate::hibernate::post(k, entry, envelope).map_err(|_| refused(k, entry))?;
    let reply = match tokio::time::timeout(timeout, rx).await {
        Err(_) => {
            return Err(KernelError::DeadlineExceeded(format!(
                "service {service} did not answer within {} ms",
                timeout.as_millis()
            )));
        }
        Ok(Err(_)) => {
            return Err(KernelError::Unavailable(format!(
                "service {service} stopped before answering"
            )));
        }
        Ok(Ok(r)) => r,
    };
    match reply {
        // The guest contract says a reply is JSON; every face passes it on as such.
        Ok(text) => match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            Ok(_) => Ok(text),
            Err(e) => Err(KernelError::Refused {
                code: solo_types::Code::FailedPrecondition,
                reason: "invalid_reply",
                message: format!("service {service} replied with text that is not JSON: {e}"),
            }),
        },
        Err(CallError::Guest(msg)) => Err(KernelError::ServiceError(msg)),
        Err(CallError::BadRequest(msg)) => Err(KernelError::InvalidArgument(msg)),
        Err(CallError::Unavailable(message)) => Err(KernelError::Refused {
            code: solo_types::Code::ResourceExhausted,
            reason: crate::hibernate::NO_INSTANCE_SLOT,
            message,
        }),
        Err(e @ CallError::ReplyTooLarge { .. }) => Err(KernelError::ServiceError(
            solo_sandbox::GuestError::new(e.to_string()),
        )),
        // The actor's report of this crash (with the log tail it saw): it notes the crash
        // before it answers.
        Err(CallError::Crash(c)) => Err(KernelError::ServiceCrashed(Box::new(
            entry
                .last_error()
                .unwrap_or_else(|| entry.report(c.kind.as_str(), &c.message, c.backtrace)),
        ))),
    }
}

/// Queues `message` (JSON) for `service` without waiting.
pub(crate) fn cast(
    k: &Core,
    caller: &Caller,
    from: Option<GuestCaller>,
    service: &ServiceId,
    message: &str,
) -> Result<(), KernelError> {
    k.require(
        caller,
        &Resource::Service(service.clone()),
        Permission::Call,
    )?;
    k.check_accepting()?;
    k.check_message("message", message)?;
    let entry = k.live_entry(caller, service)?;
    let envelope = Box::new(Envelope::Cast {
        message: message.to_string(),
        from: from.unwrap_or_else(|| guest_caller(caller)),
    });
    crate::hibernate::post(k, &entry, envelope).map_err(|_| refused(k, &entry))
}
