//! The tenant's event log and each service's logs as resources:
//! `solo://events[?after_id=&kind=&service_id=&limit=]` (one page of events, oldest
//! first, with the cursor of the next) and `solo://services/{id}/logs[?tail=]`. A
//! subscription sends `notifications/resources/updated` as events or lines arrive, with
//! the last id (or line number) in `_meta["solo/last_id"]`, so a client reads on from
//! where it was; a subscription to `solo://events?after_id=N` replays from N first. A
//! subscription outlives a lost connection: it follows again once the server answers.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rmcp::model::{
    MetaObject, NotificationMetaObject, ReadResourceResult, Resource, ResourceContents,
    ResourceTemplate, ResourceUpdatedNotificationParam,
};
use rmcp::{Peer, RoleServer};
use serde::Deserialize;
use serde_json::{Value, json};
use solo_types::api::*;
use solo_types::{Code, EventQuery, Order, ServiceId};

use crate::{Backend, Feed};

const EVENTS: &str = "solo://events";
const JSON: &str = "application/json";

/// What a resource URI names.
#[derive(Debug, PartialEq)]
enum Target {
    Events(EventParams),
    Logs(ServiceId, LogsParams),
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsParams {
    tail: Option<usize>,
    after_seq: Option<u64>,
}

fn bad_uri(uri: &str, why: impl std::fmt::Display) -> Failure {
    Failure::invalid(
        "invalid_uri",
        format!("{uri:?} is not a Solo resource ({why}); resources/templates/list shows them"),
    )
}

fn parse(uri: &str) -> Result<Target, Failure> {
    let rest = uri
        .strip_prefix("solo://")
        .ok_or_else(|| bad_uri(uri, "it does not start with solo://"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["events"] => Ok(Target::Events(params(uri, query)?)),
        ["services", id, "logs"] => Ok(Target::Logs(service_id(id)?, params(uri, query)?)),
        _ => Err(bad_uri(uri, "no such resource")),
    }
}

fn params<T: serde::de::DeserializeOwned>(uri: &str, query: &str) -> Result<T, Failure> {
    serde_urlencoded::from_str(query).map_err(|e| bad_uri(uri, e))
}

fn logs_uri(id: &ServiceId) -> String {
    format!("solo://services/{id}/logs")
}

fn contents(uri: &str, v: Value) -> ReadResourceResult {
    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    ReadResourceResult::new(vec![ResourceContents::text(text, uri).with_mime_type(JSON)])
}

/// The event log, and the logs of the caller's services (as many as one list returns).
pub(crate) async fn list<B: Backend>(b: &B) -> Vec<Resource> {
    let events = Resource::new(EVENTS, "events")
        .with_title("Your tenant's event log")
        .with_description("Every decision Solo made about your tenant, oldest first, 100 at a time: read on with ?after_id=<next_cursor>; filter with kind= and service_id=.")
        .with_mime_type(JSON);
    let mut all = vec![events];
    if let Ok(services) = b.list(ListFilter::default()).await {
        all.extend(services.services.iter().map(|s| {
            Resource::new(logs_uri(&s.service_id), format!("{} logs", s.service_id))
                .with_title(format!("Logs of {}", s.service_id))
                .with_description("The service's last log lines (?tail=N, at most 1000).")
                .with_mime_type(JSON)
        }));
    }
    all
}

pub(crate) fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("solo://events{?after_id,kind,service_id,limit}", "events")
            .with_title("Your tenant's event log, from an id")
            .with_mime_type(JSON),
        ResourceTemplate::new("solo://services/{service_id}/logs{?tail}", "logs")
            .with_title("A service's last log lines")
            .with_mime_type(JSON),
    ]
}

pub(crate) async fn read<B: Backend>(b: &B, uri: &str) -> Result<ReadResourceResult, Failure> {
    match parse(uri)? {
        Target::Events(p) => {
            let page = b.events(EventQuery::try_from(p)?).await?;
            Ok(contents(
                uri,
                json!({ "events": page.events, "next_cursor": page.next_cursor }),
            ))
        }
        Target::Logs(id, p) => {
            let lines = b.logs(id, p.tail.unwrap_or(0)).await?;
            Ok(contents(
                uri,
                serde_json::to_value(lines).unwrap_or_default(),
            ))
        }
    }
}

/// The ids (or line numbers) of what a subscription to `uri` reports.
pub(crate) async fn follow<B: Backend>(
    b: &B,
    uri: &str,
    after: Option<u64>,
) -> Result<(Feed<u64>, u64), Failure> {
    match parse(uri)? {
        Target::Events(p) => {
            let filter = event_filter(None, p.service_id.as_deref(), p.kind.as_deref())?;
            let after_id = match after.or(p.after_id) {
                Some(id) => id,
                None => head(b).await?,
            };
            let feed = b
                .watch(WatchRequest {
                    after_id,
                    filter,
                    include_logs: false,
                })
                .await?;
            Ok((Box::pin(feed.map(|e| e.map(|e| e.id))), after_id))
        }
        Target::Logs(id, p) => {
            // A log's lines are numbered by the node that runs the service: going on
            // after a lost feed, it is followed from its next line.
            let from = match after {
                Some(_) => u64::MAX,
                None => p.after_seq.unwrap_or(u64::MAX),
            };
            let feed = b.follow_logs(id, from).await?;
            Ok((Box::pin(feed.map(|l| l.map(|l| l.seq))), 0))
        }
    }
}

/// The id of the newest event the caller may read (0: none).
pub(crate) async fn head<B: Backend>(b: &B) -> Result<u64, Failure> {
    let page = b
        .events(EventQuery {
            order: Order::Descending,
            limit: 1,
            ..EventQuery::default()
        })
        .await?;
    Ok(page.events.first().map_or(0, |e| e.id))
}

/// How long a subscription whose feed was lost waits before it follows again.
pub(crate) const FOLLOW_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// Opens a feed through the backend's current connection, again a second apart while
/// the server is unavailable (a lost connection, `solo mcp` going on through another
/// node); `None` once the session has ended or the server refused it otherwise.
pub(crate) async fn open_feed<T, F>(
    peer: &Peer<RoleServer>,
    mut open: impl FnMut() -> F,
) -> Option<T>
where
    F: Future<Output = Result<T, Failure>>,
{
    loop {
        match open().await {
            Ok(feed) => return Some(feed),
            Err(f) if f.code == Code::Unavailable && !peer.is_transport_closed() => {
                tokio::time::sleep(FOLLOW_AGAIN_AFTER).await;
            }
            Err(f) => {
                tracing::debug!(error = %f, "a feed ends: the server refused it");
                return None;
            }
        }
    }
}

/// Sends `notifications/resources/updated` for `uri` as `feed` moves (a burst is one
/// notification), until the session ends. A feed that ends or fails (the connection to
/// the server lost, a server restarting, a subscriber that fell behind) is followed
/// again a second later ([`open_feed`]): the event log from the last event notified
/// (`last`; the ones between come as one notification), a log from its next line, with
/// one notification at once since lines may have come meanwhile.
pub(crate) async fn notify<B: Backend>(
    b: B,
    uri: String,
    mut feed: Feed<u64>,
    mut last: u64,
    peer: Peer<RoleServer>,
) {
    let log = matches!(parse(&uri), Ok(Target::Logs(..)));
    loop {
        while let Some(Ok(mut id)) = feed.next().await {
            while let Some(Some(Ok(next))) = feed.next().now_or_never() {
                id = next;
            }
            last = id;
            if updated(&peer, &uri, last).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(FOLLOW_AGAIN_AFTER).await;
        let Some((again, _)) = open_feed(&peer, || follow(&b, &uri, Some(last))).await else {
            return;
        };
        feed = again;
        if log && updated(&peer, &uri, last).await.is_err() {
            return;
        }
    }
}

/// One `notifications/resources/updated` for `uri`, with `last` in its `_meta`.
async fn updated(
    peer: &Peer<RoleServer>,
    uri: &str,
    last: u64,
) -> Result<(), rmcp::service::ServiceError> {
    let mut meta = serde_json::Map::new();
    meta.insert("solo/last_id".into(), Value::from(last));
    let mut note = ResourceUpdatedNotificationParam::new(uri.to_string());
    note.meta = Some(NotificationMetaObject(MetaObject(meta)));
    peer.notify_resource_updated(note).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_the_event_log_or_a_services_logs() {
        let Target::Events(p) = parse("solo://events?after_id=7&kind=custom.*").unwrap() else {
            panic!()
        };
        assert_eq!((p.after_id, p.kind.as_deref()), (Some(7), Some("custom.*")));
        assert_eq!(
            parse("solo://services/counter/logs?tail=5").unwrap(),
            Target::Logs(
                ServiceId::new("counter").unwrap(),
                LogsParams {
                    tail: Some(5),
                    after_seq: None
                }
            )
        );
        for bad in [
            "file:///etc/passwd",
            "solo://secrets/x",
            "solo://events?after_id=x",
            "solo://events?nope=1",
            "solo://services/../logs",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(
                e.reason,
                if bad.contains("..") {
                    "invalid_service_id"
                } else {
                    "invalid_uri"
                },
                "{bad}"
            );
        }
    }
}
