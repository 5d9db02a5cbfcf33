//! What a node checks before it trusts the cluster's log: the stream exists (created on
//! first start), keeps the configured number of replicas on file storage, refuses
//! deleting single entries (purging a prefix is compaction), and every server holding a
//! replica syncs each write to disk before it acknowledges it (`jetstream {
//! sync_interval: always }`), without which a coordinated crash loses acknowledged
//! writes.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::ClusterOptions;

/// Why a node refuses to use the cluster's log.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {urls}: {detail}")]
    Connect { urls: String, detail: String },
    #[error("the log stream {stream}: {detail}")]
    Stream { stream: String, detail: String },
    #[error("the log stream {stream} is not safe to write: {detail}; solo refuses to start on it")]
    Unsafe { stream: String, detail: String },
    #[error("the NATS monitoring endpoint {url}: {detail}")]
    Monitor { url: String, detail: String },
    #[error("the local view of the log: {0}")]
    View(#[from] solo_store::StoreError),
    #[error("{0}")]
    FellBehind(String),
}

/// The stream configuration the log needs.
pub fn stream_config(opts: &ClusterOptions) -> stream::Config {
    stream::Config {
        name: opts.stream.clone(),
        description: Some("Solo's replicated log: one write batch per message".into()),
        subjects: vec![opts.subject()],
        num_replicas: opts.replicas,
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        // Compaction purges the entries before the latest copy of a view (`compact.rs`).
        deny_purge: false,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Gets (creating it on first use) the log's stream and checks it is safe: replicated as
/// configured, on files, append-only, with a leader, and every server holding it synced
/// on every write. Waits up to `retry_for` for a leader.
pub async fn ensure_stream(
    js: &jetstream::Context,
    opts: &ClusterOptions,
) -> Result<stream::Stream, ClusterError> {
    let err = |detail: String| ClusterError::Stream {
        stream: opts.stream.clone(),
        detail,
    };
    let deadline = tokio::time::Instant::now() + opts.retry_for;
    let stream = loop {
        match js.get_or_create_stream(stream_config(opts)).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "the log stream is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(err(e.to_string())),
        }
    };
    let servers = loop {
        let info = stream
            .get_info()
            .await
            .map_err(|e| err(format!("stream info: {e}")))?;
        match replica_servers(&info, opts)? {
            Some(servers) => break servers,
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            None => return Err(err("no leader was elected".into())),
        }
    };
    check_synced(&servers, opts).await?;
    Ok(stream)
}

/// The servers holding the stream (leader first) once it has a leader, after checking
/// its configuration; `None` while it has no leader.
fn replica_servers(
    info: &stream::Info,
    opts: &ClusterOptions,
) -> Result<Option<Vec<String>>, ClusterError> {
    let unsafe_ = |detail: String| ClusterError::Unsafe {
        stream: opts.stream.clone(),
        detail,
    };
    let c = &info.config;
    if c.num_replicas.max(1) < opts.replicas {
        return Err(unsafe_(format!(
            "it keeps {} replica(s) where this node is configured for {}",
            c.num_replicas.max(1),
            opts.replicas
        )));
    }
    if c.storage != stream::StorageType::File {
        return Err(unsafe_("it is kept in memory, not on files".into()));
    }
    if !c.deny_delete {
        return Err(unsafe_("it allows deleting single entries".into()));
    }
    if c.persist_mode
        .as_ref()
        .is_some_and(|m| *m != stream::PersistenceMode::Default)
    {
        return Err(unsafe_("its persist mode is asynchronous".into()));
    }
    if !c.subjects.iter().any(|s| *s == opts.subject()) {
        return Err(unsafe_(format!(
            "it does not hold the subject {}",
            opts.subject()
        )));
    }
    let Some(cluster) = &info.cluster else {
        return if opts.replicas <= 1 {
            Ok(Some(Vec::new()))
        } else {
            Err(unsafe_("its servers are not clustered".into()))
        };
    };
    let Some(leader) = &cluster.leader else {
        return Ok(None);
    };
    let mut servers = vec![leader.clone()];
    servers.extend(cluster.replicas.iter().map(|p| p.name.clone()));
    Ok(Some(servers))
}

/// One monitoring endpoint's server name and whether it syncs every write; retried
/// briefly.
async fn varz(client: &reqwest::Client, url: &str) -> Result<(String, bool), String> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let answer = client
            .get(format!("{}/varz", url.trim_end_matches('/')))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let body: serde_json::Value = match answer {
            Ok(r) => match r.json().await {
                Ok(v) => v,
                Err(e) => return Err(format!("not a /varz answer: {e}")),
            },
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let name = body["server_name"]
            .as_str()
            .ok_or_else(|| "/varz names no server".to_string())?;
        let always = body["jetstream"]["config"]["sync_always"].as_bool() == Some(true);
        return Ok((name.to_string(), always));
    }
    Err(last)
}

/// Checks, through the monitoring endpoints, that every named server syncs each write.
async fn check_synced(servers: &[String], opts: &ClusterOptions) -> Result<(), ClusterError> {
    // Monitoring endpoints are plain HTTP on the servers' private network; TLS (unused)
    // gets an explicit provider, since reqwest is built without one.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Monitor {
            url: String::new(),
            detail: e.to_string(),
        })?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| ClusterError::Monitor {
            url: String::new(),
            detail: e.to_string(),
        })?;
    let mut synced: BTreeMap<String, bool> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for url in &opts.monitor_urls {
        match varz(&client, url).await {
            Ok((name, always)) => {
                synced.insert(name, always);
            }
            Err(detail) => unreachable.push(format!("{url}: {detail}")),
        }
    }
    if servers.is_empty() {
        // A single server outside any cluster: every monitored server must sync.
        if synced.is_empty() || synced.values().any(|s| !s) {
            return Err(ClusterError::Unsafe {
                stream: opts.stream.clone(),
                detail: "its server does not sync each write to disk, or is not monitored \
                         (set jetstream { sync_interval: always } and give its monitoring URL)"
                    .into(),
            });
        }
    }
    // A server down now cannot be checked, nor can it acknowledge anything; the node
    // starts if the servers it could check hold a majority of the replicas.
    let checked = servers
        .iter()
        .filter(|s| synced.get(*s) == Some(&true))
        .count();
    let majority = servers.len() / 2 + 1;
    for server in servers {
        match synced.get(server) {
            Some(true) => {}
            None if checked >= majority => {
                tracing::warn!(
                    server = %server,
                    unreachable = ?unreachable,
                    "a NATS server holding a replica of the log could not be checked (down?); \
                     the others hold a majority and sync every write"
                );
            }
            Some(false) => {
                return Err(ClusterError::Unsafe {
                    stream: opts.stream.clone(),
                    detail: format!(
                        "NATS server {server} acknowledges writes before syncing them to disk \
                         (set jetstream {{ sync_interval: always }} on every server)"
                    ),
                });
            }
            // Some endpoints down (their servers too, likely): too few servers checked
            // for now, which a server coming back mends.
            None if !unreachable.is_empty() => {
                return Err(ClusterError::Monitor {
                    url: unreachable.join("; "),
                    detail: format!(
                        "NATS server {server} holds a replica of the log and cannot be \
                         checked, and the servers checked do not hold a majority of the \
                         replicas"
                    ),
                });
            }
            None => {
                return Err(ClusterError::Unsafe {
                    stream: opts.stream.clone(),
                    detail: format!(
                        "NATS server {server} holds a replica but none of the monitoring \
                         endpoints ({}) is its, so its syncing cannot be checked",
                        opts.monitor_urls.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}
