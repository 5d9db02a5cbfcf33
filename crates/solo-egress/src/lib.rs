//! Egress: how a guest's HTTP request leaves Solo. Deny by default: a destination must be
//! allowed by its tenant's rules (set by the admin) and by its service's (its deploy
//! spec); a private address only by a rule naming it exactly. The client connects to the
//! address it checked, follows redirects only where the same checks pass, and enforces
//! timeouts and body caps. Secrets are substituted by the caller before [`Client::send`]
//! and never cross a redirect to another origin.

pub mod addr;
pub mod client;
#[cfg(feature = "testing")]
pub mod testing;

use std::time::Duration;

pub use hyper::Method;
pub use hyper::header::{HeaderName, HeaderValue};

pub use client::{Client, Destination, Policy, Request, Response, parse_url};
pub use solo_types::egress::{
    Host, HostPattern, MAX_RULES, Rule, RuleError, Scheme, first_outside, parse_rules,
};

/// Why a request did not get a response. `reason()` is the machine-readable word
/// recorded in `egress_denied` events and shown to the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("host_not_allowed: {0} is not in the service's egress rules")]
    HostNotAllowed(String),
    #[error("private_address: {0}")]
    PrivateAddress(String),
    #[error("secret_not_bound: {0}")]
    SecretNotBound(String),
    #[error("limit: {0}")]
    Limit(String),
    #[error("invalid_request: {0}")]
    BadRequest(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("connect: {0}")]
    Connect(String),
    #[error("tls: {0}")]
    Tls(String),
}

impl Denied {
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::HostNotAllowed(_) => "host_not_allowed",
            Denied::PrivateAddress(_) => "private_address",
            Denied::SecretNotBound(_) => "secret_not_bound",
            Denied::Limit(_) => "limit",
            Denied::BadRequest(_) => "invalid_request",
            Denied::Timeout(_) => "timeout",
            Denied::Connect(_) => "connect",
            Denied::Tls(_) => "tls",
        }
    }

    /// Whether Solo refused the request (a policy decision, recorded as
    /// `egress_denied`), rather than the network failing it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Denied::HostNotAllowed(_)
                | Denied::PrivateAddress(_)
                | Denied::SecretNotBound(_)
                | Denied::Limit(_)
                | Denied::BadRequest(_)
        )
    }
}

/// Egress limits, server-wide (`[egress]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressLimits {
    pub connect_timeout: Duration,
    /// From the request to the response's last byte, redirects included; a slow drip
    /// ends here.
    pub total_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    pub max_redirects: u8,
}

impl Default for EgressLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_request_bytes: 4 << 20,
            max_response_bytes: 16 << 20,
            max_redirects: 5,
        }
    }
}
