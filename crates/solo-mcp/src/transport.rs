//! The two transports: stdio for `solo mcp` (one session, notifications and
//! subscriptions), and Streamable HTTP for the gateway's `/mcp` (stateless: each POST is
//! its own request under its own identity; JSON answers; `Host` and `Origin` checked
//! against the configuration against DNS rebinding).

use std::sync::Arc;

use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::{Connect, SoloMcp};

/// Serves one MCP session on stdin and stdout until the client closes it.
pub async fn serve_stdio<C: Connect>(connect: C) -> Result<(), String> {
    let running = SoloMcp::new(connect)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("the MCP session did not start: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("the MCP session failed: {e}"))?;
    Ok(())
}

/// What the HTTP face accepts.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `Host` values accepted (a name matches any port; `name:port` only that port).
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted (`scheme://host:port`, `:*` for any port); a request
    /// with any other `Origin` is refused, one without passes.
    pub allowed_origins: Vec<String>,
    /// The largest request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Cancelled when the server drains.
    pub stopping: CancellationToken,
}

/// The `/mcp` endpoint as a tower service, to mount in an axum router.
pub type HttpService<C> = StreamableHttpService<SoloMcp<C>, LocalSessionManager>;

/// The Streamable HTTP endpoint, stateless: every request builds its backend from its own
/// credentials.
pub fn http_service<C: Connect>(connect: C, o: HttpOptions) -> HttpService<C> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(o.allowed_hosts)
        .with_allowed_origins(o.allowed_origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(o.max_body_bytes)
        .with_cancellation_token(o.stopping);
    StreamableHttpService::new(
        move || Ok(SoloMcp::new(connect.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
