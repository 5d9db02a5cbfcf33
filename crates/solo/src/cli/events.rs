//! `solo watch`, `solo events`, `solo events verify`.

use clap::{Args, Subcommand};
use futures::StreamExt;
use solo_types::api::{WatchRequest, event_filter};
use solo_types::{Event, EventQuery, Order};

use super::{Cmd, refuse};
use crate::output::{self, spinner, time};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only this service's events.
    #[arg(long)]
    service: Option<String>,
    /// Replay the events after this id first.
    #[arg(long, value_name = "EVENT_ID", default_value_t = 0)]
    since: u64,
    /// Only events of this type (`custom.*` matches by prefix).
    #[arg(long)]
    kind: Option<String>,
    /// With --service: its log lines too.
    #[arg(long)]
    logs: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    #[command(subcommand)]
    verify: Option<EventsCmd>,
    /// Only this service's events.
    #[arg(long)]
    service: Option<String>,
    /// Only events of this type (`custom.*` matches by prefix).
    #[arg(long)]
    kind: Option<String>,
    /// Admins: another tenant's events.
    #[arg(long = "of-tenant", value_name = "TENANT")]
    of_tenant: Option<String>,
    /// Only events after this id (the next page of an oldest-first read).
    #[arg(long, value_name = "EVENT_ID", conflicts_with = "before")]
    after: Option<u64>,
    /// Only events before this id (the next page of a newest-first read).
    #[arg(long, value_name = "EVENT_ID")]
    before: Option<u64>,
    /// How many events at most.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Newest first.
    #[arg(long)]
    desc: bool,
}

#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Check the hash chain of the whole log (admin).
    Verify,
}

fn event_line(e: &Event) -> String {
    let id = if e.id == 0 {
        "-".to_string()
    } else {
        format!("#{}", e.id)
    };
    format!(
        "{id:>7}  {}  {:<24} {:<24} {}",
        time(e.ts),
        e.kind,
        e.subject,
        e.payload
    )
}

pub(super) async fn watch(c: &Cmd, a: WatchArgs) -> anyhow::Result<()> {
    let req = WatchRequest {
        after_id: a.since,
        filter: event_filter(None, a.service.as_deref(), a.kind.as_deref())?,
        include_logs: a.logs,
    };
    if req.include_logs && req.filter.service.is_none() {
        return Err(refuse("invalid_request", "--logs needs --service"));
    }
    let mut feed = c.client.watch(&req).await?;
    while let Some(e) = feed.next().await {
        let e = e?;
        if c.json {
            output::json_line(&serde_json::to_value(&e)?);
        } else {
            println!("{}", event_line(&e));
        }
    }
    Ok(())
}

pub(super) async fn events(c: &Cmd, a: EventsArgs) -> anyhow::Result<()> {
    if let Some(EventsCmd::Verify) = a.verify {
        let pb = spinner("verifying the event log");
        let r = c.client.verify_events().await;
        pb.finish_and_clear();
        let r = r?;
        c.out(&r, |r| {
            if r.ok {
                println!(
                    "ok: {} events checked, the chain is intact up to #{}",
                    r.checked, r.last_id
                );
            }
        });
        if !r.ok {
            anyhow::bail!(
                "the hash chain breaks at event #{}: {}",
                r.first_broken_id.unwrap_or(0),
                r.reason.unwrap_or_default()
            );
        }
        return Ok(());
    }
    let q = EventQuery {
        filter: event_filter(
            a.of_tenant.as_deref(),
            a.service.as_deref(),
            a.kind.as_deref(),
        )?,
        after_id: a.after,
        before_id: a.before,
        limit: a.limit,
        order: if a.desc {
            Order::Descending
        } else {
            Order::Ascending
        },
        ..EventQuery::default()
    };
    c.out(&c.client.events(&q).await?, |page| {
        for e in &page.events {
            println!("{}", event_line(e));
        }
        if let Some(next) = page.next_cursor {
            let flag = if a.desc { "--desc --before" } else { "--after" };
            println!("more: {flag} {next}");
        }
    });
    Ok(())
}
