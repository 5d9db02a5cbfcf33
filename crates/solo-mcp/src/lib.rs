//! Solo's MCP face (the Model Context Protocol, through the official Rust SDK `rmcp`):
//! every operation an agent needs as a tool (`solo_deploy`, `solo_call`, ...), each
//! service a deploy offers as a tool under its own name, and the tenant's event feed and
//! services' logs as resources.
//!
//! A face is a codec: the tools decode their arguments into the operations' types
//! (`solo_types::api`), run the operation through a [`Backend`], and encode the answer
//! as a tool result; a refusal is a tool result with `isError` that names the reason,
//! the message and any crash report. Two backends exist: the gateway's operation table
//! for Streamable HTTP at `/mcp` (the request's identity, admitted like any request),
//! and the typed client for `solo mcp` on stdio.
//!
//! Architecture invariant: no kernel, gateway, client or wire types here; only the
//! operations' types and `rmcp`.

mod handler;
mod resources;
mod results;
mod tools;
mod transport;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use rmcp::model::Extensions;
use solo_types::api::*;
use solo_types::{Event, EventPage, EventQuery, Permission, Resource, ServiceId, ServiceStatus};

pub use handler::SoloMcp;
pub use rmcp::model::Extensions as RequestExtensions;
pub use tools::PLATFORM_TOOLS;
pub use transport::{HttpOptions, HttpService, http_service, serve_stdio};

/// A stream of answers.
pub type Feed<T> = BoxStream<'static, Result<T, Failure>>;

/// The operations the MCP face uses, for one caller.
pub trait Backend: Clone + Send + Sync + 'static {
    fn whoami(&self) -> impl Future<Output = Result<Identity, Failure>> + Send;
    fn list(&self, filter: ListFilter)
    -> impl Future<Output = Result<ServiceList, Failure>> + Send;
    fn status(&self, id: ServiceId) -> impl Future<Output = Result<ServiceStatus, Failure>> + Send;
    fn deploy(&self, req: DeployRequest) -> impl Future<Output = Result<Deployed, Failure>> + Send;
    fn call(
        &self,
        id: ServiceId,
        request: String,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<String, Failure>> + Send;
    fn cast(
        &self,
        id: ServiceId,
        message: String,
    ) -> impl Future<Output = Result<Accepted, Failure>> + Send;
    fn swap(&self, req: SwapRequest) -> impl Future<Output = Result<Swapped, Failure>> + Send;
    fn kill(
        &self,
        id: ServiceId,
        options: KillOptions,
    ) -> impl Future<Output = Result<Killed, Failure>> + Send;
    fn logs(
        &self,
        id: ServiceId,
        tail: usize,
    ) -> impl Future<Output = Result<LogLines, Failure>> + Send;
    fn follow_logs(
        &self,
        id: ServiceId,
        after_seq: u64,
    ) -> impl Future<Output = Result<Feed<LogLine>, Failure>> + Send;
    fn events(&self, query: EventQuery) -> impl Future<Output = Result<EventPage, Failure>> + Send;
    fn watch(&self, req: WatchRequest)
    -> impl Future<Output = Result<Feed<Event>, Failure>> + Send;
    fn verify_events(&self) -> impl Future<Output = Result<LogVerification, Failure>> + Send;
    fn put_secret(
        &self,
        name: String,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<SecretStored, Failure>> + Send;
    fn list_secrets(&self) -> impl Future<Output = Result<SecretNames, Failure>> + Send;
    fn bind_secret(
        &self,
        name: String,
        hosts: Vec<String>,
        unbind: bool,
    ) -> impl Future<Output = Result<SecretHosts, Failure>> + Send;
    fn egress_rules(&self) -> impl Future<Output = Result<EgressList, Failure>> + Send;
    fn delete_secret(
        &self,
        name: String,
    ) -> impl Future<Output = Result<SecretDeleted, Failure>> + Send;
    fn grant(&self, req: GrantRequest) -> impl Future<Output = Result<Granted, Failure>> + Send;
    fn attenuate(
        &self,
        token: String,
        narrowing: Narrowing,
    ) -> impl Future<Output = Result<Granted, Failure>> + Send;
    fn revoke(&self, token: String) -> impl Future<Output = Result<Revoked, Failure>> + Send;
    fn verify(
        &self,
        token: String,
        resource: Resource,
        permission: Permission,
    ) -> impl Future<Output = Result<Verification, Failure>> + Send;
    fn list_capabilities(&self) -> impl Future<Output = Result<CapList, Failure>> + Send;
    fn discover(
        &self,
        name: Option<String>,
        filters: BTreeMap<String, String>,
    ) -> impl Future<Output = Result<Registrations, Failure>> + Send;
    fn tree(&self) -> impl Future<Output = Result<TreeNode, Failure>> + Send;
    fn service_tools(&self) -> impl Future<Output = Result<ServiceTools, Failure>> + Send;
}

/// Where a request's backend comes from: one connection for stdio, the request's own
/// identity over HTTP.
pub trait Connect: Clone + Send + Sync + 'static {
    type Backend: Backend;

    /// The backend that acts for the caller of a request, from the request's extensions
    /// (over HTTP, its `http::request::Parts`).
    fn connect(&self, extensions: &Extensions) -> Result<Self::Backend, Failure>;

    /// Whether the client stays connected between requests, so that notifications
    /// (`tools/list_changed`, `resources/updated`) can reach it (stdio: yes; stateless
    /// HTTP: no).
    fn sessions(&self) -> bool;

    /// The largest tool arguments accepted, in bytes of JSON.
    fn max_arguments_bytes(&self) -> usize;
}
