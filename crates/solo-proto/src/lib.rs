//! Solo's wire contract: the `solo.v1` messages and the `SoloKernel` service, generated
//! from `proto/solo/v1/solo.proto`.
//!
//! Architecture invariant: this crate holds the generated code and nothing that pulls in
//! the kernel or the sandbox, so the client stays small.

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("solo.v1");
}

pub use v1::*;

/// The metadata key carrying the machine-readable reason of an error.
pub const REASON_KEY: &str = "solo-reason";
/// The metadata key an admin uses to act for a tenant.
pub const TENANT_KEY: &str = "x-solo-tenant";
