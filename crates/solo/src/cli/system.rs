//! `solo register | deregister | discover | health | metrics | tree | config | shutdown`.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use solo_client::Profile;
use solo_types::api::{RegisterRequest, TreeNode};

use super::{Cmd, refuse};
use crate::output::{fields, millis, table, time};

#[derive(Args, Debug)]
pub struct TreeArgs {
    /// Every serving node's tree, one after another (admins, on a cluster of mode
    /// tenants; elsewhere the one tree).
    #[arg(long)]
    all: bool,
}

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// The name; all registrations when left out.
    name: Option<String>,
    /// KEY=VALUE a registration's metadata must have; repeatable (needs NAME).
    #[arg(long = "filter", value_name = "KEY=VALUE", requires = "name")]
    filters: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The name to register under.
    name: String,
    /// The service, one of yours.
    #[arg(long, value_name = "ID")]
    service: String,
    /// A version label for finders to match on.
    #[arg(long, default_value = "")]
    version: String,
    /// KEY=VALUE metadata; repeatable.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Seconds until the registration lapses unless renewed (0: never).
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    ttl: i64,
}

/// `KEY=VALUE` pairs, refused with the option's name when one has no `=`.
fn pairs(option: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for f in items {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            refuse(
                "invalid_request",
                format!("--{option} {f:?}: use KEY=VALUE"),
            )
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[derive(Args, Debug)]
pub struct DeregisterArgs {
    /// The name it was registered under.
    name: String,
    /// The service.
    #[arg(long, value_name = "ID")]
    service: String,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Every runtime-tunable key with its value, and the resource pressure level.
    Show,
    /// Change a runtime-tunable key (recorded as config_changed).
    Set {
        /// The key, such as limits.max_per_tenant.
        #[arg(id = "config_key", value_name = "KEY")]
        key: String,
        /// The new value, a whole number.
        value: String,
    },
}

#[derive(Args, Debug)]
pub struct ShutdownArgs {
    /// How long in-flight work may take to finish (0: the server's default).
    #[arg(long, default_value_t = 0)]
    grace_ms: u64,
}

pub(super) async fn register(c: &Cmd, a: RegisterArgs) -> anyhow::Result<()> {
    let req = RegisterRequest {
        service_id: a.service.clone(),
        name: a.name.clone(),
        version: a.version,
        metadata: pairs("meta", &a.metadata)?,
        ttl_seconds: a.ttl,
    };
    c.out(&c.client.register(&req).await?, |r| {
        println!("registered {} as {}", a.service, a.name);
        fields(&[
            ("handle", r.service_handle.clone()),
            (
                "expires",
                if r.expires_at == 0 {
                    "never".into()
                } else {
                    time(r.expires_at)
                },
            ),
        ]);
    });
    Ok(())
}

/// Finds the registration of `--service` under NAME and removes it.
pub(super) async fn deregister(c: &Cmd, a: DeregisterArgs) -> anyhow::Result<()> {
    let found = c.client.registrations(Some(&a.name)).await?;
    let Some(r) = found
        .services
        .iter()
        .find(|r| r.service_id.as_str() == a.service)
    else {
        return Err(solo_types::api::Failure::new(
            solo_types::Code::NotFound,
            "not_found",
            format!("service {} is not registered as {}", a.service, a.name),
        )
        .into());
    };
    let d = c.client.deregister(&r.service_handle).await?;
    c.out(&d, |_| println!("deregistered {} as {}", a.service, a.name));
    Ok(())
}

pub(super) async fn discover(c: &Cmd, a: DiscoverArgs) -> anyhow::Result<()> {
    let found = match a.name {
        Some(name) => {
            let filters = pairs("filter", &a.filters)?;
            c.client.discover(&name, &filters).await?
        }
        None => c.client.registrations(None).await?,
    };
    c.out(&found, |r| {
        if r.services.is_empty() {
            println!("no registrations found");
            return;
        }
        let rows = r
            .services
            .iter()
            .map(|s| {
                vec![
                    s.service_name.clone(),
                    s.service_id.to_string(),
                    s.version.clone(),
                    s.alive.to_string(),
                    if s.expires_at == 0 {
                        "never".into()
                    } else {
                        time(s.expires_at)
                    },
                ]
            })
            .collect();
        table(&["NAME", "SERVICE", "VERSION", "ALIVE", "EXPIRES"], rows);
    });
    Ok(())
}

pub(super) async fn health(c: &Cmd) -> anyhow::Result<()> {
    c.out(&c.client.health().await?, |h| {
        let mut rows = vec![("status", h.status.clone())];
        let mut opt = |k, v: Option<String>| {
            if let Some(v) = v {
                rows.push((k, v));
            }
        };
        opt("node", h.node.clone());
        opt("version", h.version.clone());
        opt("uptime", h.uptime_ms.map(millis));
        opt("memory", h.memory_mb.map(|m| format!("{m} MiB")));
        opt("services", h.services.map(|s| s.to_string()));
        opt("last event", h.last_event_id.map(|i| i.to_string()));
        fields(&rows);
        if !h.nodes.is_empty() {
            println!();
            let rows = h
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        n.node.clone(),
                        n.role.clone(),
                        if n.beating {
                            format!("yes ({} ago)", millis(n.last_seen_ms))
                        } else {
                            format!("no, silent for {}", millis(n.last_seen_ms))
                        },
                        n.grpc.clone().unwrap_or_else(|| "-".into()),
                        n.applied_sequence.to_string(),
                        n.version.clone(),
                        time(
                            i64::try_from(n.started_at)
                                .unwrap_or(0)
                                .saturating_mul(1_000_000),
                        ),
                    ]
                })
                .collect();
            table(
                &[
                    "NODE", "ROLE", "BEATING", "GRPC", "APPLIED", "VERSION", "STARTED",
                ],
                rows,
            );
        }
    });
    Ok(())
}

pub(super) async fn whoami(c: &Cmd) -> anyhow::Result<()> {
    c.out(&c.client.whoami().await?, |i| {
        let q = &i.quotas;
        let mut rows = vec![("tenant", i.tenant.to_string()), ("role", i.role.clone())];
        if let Some(s) = &i.scope {
            rows.push((
                "scope",
                format!("{} on {}", s.permissions.join(","), s.resource),
            ));
            rows.push(("expires", time(s.expires_at)));
        }
        rows.push(("services", format!("{} / {}", q.services, q.max_services)));
        rows.push((
            "memory",
            format!("{} / {} MiB", q.memory_mb, q.max_memory_mb),
        ));
        rows.push(("in flight", format!("at most {}", q.max_in_flight)));
        fields(&rows);
    });
    Ok(())
}

pub(super) async fn tools(c: &Cmd) -> anyhow::Result<()> {
    c.out(&c.client.service_tools().await?, |t| {
        if t.tools.is_empty() {
            println!("no services are offered as tools; deploy one with --tool NAME");
            return;
        }
        let rows = t
            .tools
            .iter()
            .map(|s| {
                vec![
                    s.tool.name.clone(),
                    s.service_id.to_string(),
                    s.tool.description.clone(),
                ]
            })
            .collect();
        table(&["TOOL", "SERVICE", "DESCRIPTION"], rows);
    });
    Ok(())
}

pub(super) async fn metrics(c: &Cmd) -> anyhow::Result<()> {
    c.out(&c.client.metrics().await?, |m| print!("{}", m.text));
    Ok(())
}

pub(super) async fn tree(c: &Cmd, a: TreeArgs, profile: &Profile) -> anyhow::Result<()> {
    if !a.all {
        c.out(&c.client.tree().await?, |t| print_tree(t, "", true, true));
        return Ok(());
    }
    // The nodes serving tenants, as health lists them to an admin; none (an embedded
    // server, mode active): the one tree there is.
    let serving: Vec<String> = c
        .client
        .health()
        .await?
        .nodes
        .into_iter()
        .filter(|n| n.role == "serving")
        .map(|n| n.node)
        .collect();
    let mut trees = Vec::new();
    if serving.is_empty() {
        trees.push(c.client.tree().await?);
    }
    for node in serving {
        trees.push(profile.on_node(&node)?.open().await?.tree().await?);
    }
    c.out(&trees, |ts| {
        for t in ts {
            print_tree(t, "", true, true);
        }
    });
    Ok(())
}

pub(super) async fn config(c: &Cmd, cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Show => c.out(&c.client.get_config().await?, |r| {
            let mut rows: Vec<(&str, String)> = r
                .values
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_string()))
                .collect();
            rows.push(("pressure", r.pressure.clone()));
            fields(&rows);
        }),
        ConfigCmd::Set { key, value } => c.out(&c.client.set_config(&key, &value).await?, |r| {
            println!("{} = {} (was {})", r.key, r.value, r.previous);
        }),
    }
    Ok(())
}

pub(super) async fn shutdown(c: &Cmd, a: ShutdownArgs) -> anyhow::Result<()> {
    let grace = (a.grace_ms > 0).then(|| Duration::from_millis(a.grace_ms));
    c.out(&c.client.shutdown(grace).await?, |r| {
        println!("{}", r.message)
    });
    Ok(())
}

fn print_tree(node: &TreeNode, prefix: &str, last: bool, root: bool) {
    let strategy = node
        .strategy
        .as_deref()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let branch = match (root, last) {
        (true, _) => "",
        (false, true) => "└── ",
        (false, false) => "├── ",
    };
    let restarts = if node.restarts > 0 {
        format!(", {} restarts", node.restarts)
    } else {
        String::new()
    };
    let on = node
        .node
        .as_deref()
        .map(|n| format!(" on node {n}"))
        .unwrap_or_default();
    println!(
        "{prefix}{branch}{} ({}{strategy}, {}{restarts}){on}",
        node.name, node.kind, node.state
    );
    let child_prefix = if root {
        String::new()
    } else {
        format!("{prefix}{}", if last { "    " } else { "│   " })
    };
    let n = node.children.len();
    for (i, c) in node.children.iter().enumerate() {
        print_tree(c, &child_prefix, i + 1 == n, false);
    }
}
