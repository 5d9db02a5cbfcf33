//! `solo mcp`: an MCP server on stdin and stdout for a local agent, talking to the Solo
//! server through the typed client with the CLI's own profile (flags > `SOLO_*` > the
//! data directory). Only MCP goes to stdout; diagnostics go to stderr. If the server stops
//! answering mid-session, `solo mcp` says so on stderr and exits non-zero, so the agent's
//! host sees the tool server go away instead of a session that hangs; unless the profile
//! names several endpoints (a cluster's nodes) and another answers within
//! [`FAILOVER_WINDOW`]: then the session goes on through it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use parking_lot::RwLock;
use solo_client::Solo;
use solo_mcp::{Backend, Connect, Feed, RequestExtensions};
use solo_types::api::*;
use solo_types::{Event, EventPage, EventQuery, Permission, Resource, ServiceId, ServiceStatus};

use crate::Global;

type R<T> = Result<T, Failure>;

/// The largest tool arguments sent on (the server's default `max_request_bytes`; the
/// server refuses beyond its own limit either way).
const MAX_ARGUMENTS_BYTES: usize = 8 << 20;
/// How often the server is asked whether it is still there.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Failed probes in a row after which the session ends.
const PROBES_BEFORE_GIVING_UP: u32 = 3;
/// How long a session whose profile names several endpoints looks for one that answers
/// after its server stopped answering (a cluster's standby takes over within a lease).
const FAILOVER_WINDOW: Duration = Duration::from_secs(30);
/// How long reopening the profile may take per endpoint it names (the client's connect
/// timeout is 5 s).
const OPEN_EACH: Duration = Duration::from_secs(6);

/// Runs `solo mcp` until the client closes stdin (success) or the server goes away.
pub fn run(g: &Global) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let profile = g.profile()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async move {
        let client = profile.open().await?;
        client.health().await.map_err(|f| {
            anyhow::anyhow!("the Solo server at {} does not answer: {f}", profile.endpoint)
        })?;
        let backend = SoloBackend(Arc::new(RwLock::new(client)));
        let lost = tokio::spawn(keep_server(profile.clone(), backend.clone()));
        tokio::select! {
            r = solo_mcp::serve_stdio(ClientConnect(backend)) => {
                r.map_err(anyhow::Error::msg)
            }
            Ok(f) = lost => {
                // The stdin reader blocks a thread that would keep the runtime alive.
                #[allow(clippy::print_stderr)]
                {
                    eprintln!(
                        "solo mcp: the Solo server at {} stopped answering ({f}); ending the session",
                        profile.endpoint
                    );
                }
                std::process::exit(1);
            }
        }
    })
}

/// Resolves with the last failure once the server has not answered several probes in a
/// row and, when the profile names several endpoints, none of them answers within
/// [`FAILOVER_WINDOW`]; until then, a server that answers replaces the lost one.
async fn keep_server(profile: solo_client::Profile, backend: SoloBackend) -> Failure {
    loop {
        let lost = watch_server(backend.client()).await;
        if !profile.endpoint.contains(',') {
            return lost;
        }
        let until = tokio::time::Instant::now() + FAILOVER_WINDOW;
        // Each endpoint may take its whole connect timeout (a machine that is gone).
        let endpoints = u32::try_from(profile.endpoint.split(',').count()).unwrap_or(u32::MAX);
        let open_within = OPEN_EACH.saturating_mul(endpoints);
        let replaced = loop {
            if let Ok(Ok(c)) = tokio::time::timeout(open_within, profile.open()).await
                && let Ok(Ok(_)) = tokio::time::timeout(PROBE_EVERY * 5, c.health()).await
            {
                break Some(c);
            }
            if tokio::time::Instant::now() >= until {
                break None;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        };
        let Some(client) = replaced else {
            return lost;
        };
        *backend.0.write() = client;
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "solo mcp: the Solo server stopped answering ({lost}); the session goes on \
                 through the first of {} that answers",
                profile.endpoint
            );
        }
    }
}

/// Resolves with the last failure once the server has not answered several probes in a
/// row.
async fn watch_server(client: Solo) -> Failure {
    let mut failed = 0;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        match tokio::time::timeout(PROBE_EVERY, client.health()).await {
            Ok(Ok(_)) => failed = 0,
            Ok(Err(f)) => {
                failed += 1;
                if failed >= PROBES_BEFORE_GIVING_UP {
                    return f;
                }
            }
            Err(_) => {
                failed += 1;
                if failed >= PROBES_BEFORE_GIVING_UP {
                    return Failure::new(solo_types::Code::Unavailable, "unavailable", "no answer");
                }
            }
        }
    }
}

/// One session, one connection.
#[derive(Clone)]
struct ClientConnect(SoloBackend);

impl Connect for ClientConnect {
    type Backend = SoloBackend;

    fn connect(&self, _: &RequestExtensions) -> R<SoloBackend> {
        Ok(self.0.clone())
    }

    fn sessions(&self) -> bool {
        true
    }

    fn max_arguments_bytes(&self) -> usize {
        MAX_ARGUMENTS_BYTES
    }
}

/// The typed client as the MCP face's backend; replaced when its server is lost and
/// another of the profile's endpoints answers.
#[derive(Clone)]
struct SoloBackend(Arc<RwLock<Solo>>);

impl SoloBackend {
    fn client(&self) -> Solo {
        self.0.read().clone()
    }
}

impl Backend for SoloBackend {
    async fn whoami(&self) -> R<Identity> {
        self.client().whoami().await
    }

    async fn list(&self, filter: ListFilter) -> R<ServiceList> {
        self.client().list(&filter).await
    }

    async fn status(&self, id: ServiceId) -> R<ServiceStatus> {
        self.client().status(&id).await
    }

    async fn deploy(&self, req: DeployRequest) -> R<Deployed> {
        self.client().deploy(&req).await
    }

    async fn call(&self, id: ServiceId, request: String, timeout: Option<Duration>) -> R<String> {
        self.client().call(&id, &request, timeout).await
    }

    async fn cast(&self, id: ServiceId, message: String) -> R<Accepted> {
        self.client().cast(&id, &message).await
    }

    async fn swap(&self, req: SwapRequest) -> R<Swapped> {
        self.client().swap(&req).await
    }

    async fn kill(&self, id: ServiceId, options: KillOptions) -> R<Killed> {
        self.client().kill(&id, options).await
    }

    async fn logs(&self, id: ServiceId, tail: usize) -> R<LogLines> {
        self.client().logs(&id, tail).await
    }

    async fn follow_logs(&self, id: ServiceId, after_seq: u64) -> R<Feed<LogLine>> {
        self.client().follow_logs(&id, 1, after_seq).await
    }

    async fn events(&self, query: EventQuery) -> R<EventPage> {
        self.client().events(&query).await
    }

    async fn watch(&self, req: WatchRequest) -> R<Feed<Event>> {
        let feed = self.client().watch(&req).await?;
        Ok(Box::pin(feed.filter(|e| {
            std::future::ready(!matches!(e, Ok(e) if e.kind == SERVICE_LOG))
        })))
    }

    async fn verify_events(&self) -> R<LogVerification> {
        self.client().verify_events().await
    }

    async fn put_secret(&self, name: String, value: Vec<u8>) -> R<SecretStored> {
        self.client().put_secret(&name, &value).await
    }

    async fn list_secrets(&self) -> R<SecretNames> {
        self.client().list_secrets().await
    }

    async fn delete_secret(&self, name: String) -> R<SecretDeleted> {
        self.client().delete_secret(&name).await
    }

    async fn bind_secret(&self, name: String, hosts: Vec<String>, unbind: bool) -> R<SecretHosts> {
        self.client().bind_secret(&name, &hosts, unbind).await
    }

    async fn egress_rules(&self) -> R<EgressList> {
        self.client().egress_rules(None).await
    }

    async fn grant(&self, req: GrantRequest) -> R<Granted> {
        self.client().grant(&req).await
    }

    async fn attenuate(&self, token: String, narrowing: Narrowing) -> R<Granted> {
        self.client().attenuate(&token, &narrowing).await
    }

    async fn revoke(&self, token: String) -> R<Revoked> {
        self.client().revoke(&token).await
    }

    async fn verify(
        &self,
        token: String,
        resource: Resource,
        permission: Permission,
    ) -> R<Verification> {
        self.client().verify(&token, &resource, permission).await
    }

    async fn list_capabilities(&self) -> R<CapList> {
        self.client().list_capabilities().await
    }

    async fn discover(
        &self,
        name: Option<String>,
        filters: BTreeMap<String, String>,
    ) -> R<Registrations> {
        match name {
            Some(n) => self.client().discover(&n, &filters).await,
            None => self.client().registrations(None).await,
        }
    }

    async fn tree(&self) -> R<TreeNode> {
        self.client().tree().await
    }

    async fn service_tools(&self) -> R<ServiceTools> {
        self.client().service_tools().await
    }
}
