//! Solo's wire contract: the `solo.v1` messages and the `SoloKernel` service, generated
//! from `proto/solo/v1/solo.proto`, and the conversions between them and the operations'
//! types in `solo_types::api` ([`convert`]), used by the gateway and the client alike.
//!
//! Architecture invariant: this crate holds the generated code and the conversions, and
//! nothing that pulls in the kernel or the sandbox, so the client stays small.

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("solo.v1");
}

pub mod convert;

pub use v1::*;

/// The metadata key carrying the machine-readable reason of an error.
pub const REASON_KEY: &str = "solo-reason";
/// The metadata key carrying a failure's details (a crash report), as JSON.
pub const DETAILS_KEY: &str = "solo-details";
/// The metadata key carrying how many seconds to wait before a retry.
pub const RETRY_AFTER_KEY: &str = "retry-after";
/// The metadata key an admin uses to act for a tenant.
pub const TENANT_KEY: &str = "x-solo-tenant";
/// The metadata key an admin uses to address one node of a cluster (mode `tenants`):
/// the request is served by that node (its tree, its health, its metrics).
pub const NODE_KEY: &str = "x-solo-node";
