//! `solo deploy | list | status | call | cast | swap | kill | logs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use solo_types::api::{
    DeployRequest, KillOptions, ListFilter, SwapMethod, SwapRequest, format_named, infer_format,
    restart_named, service_id, state_named, swap_mode_named,
};
use solo_types::{Format, ServiceId, ToolSpec};

use super::{Cmd, check_json, read_file, refuse};
use crate::output::{self, bytes, fields, millis, spinner, table, time};

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// A .js file or a .wasm component.
    file: PathBuf,
    /// The service id (default: the file name without its extension).
    #[arg(long)]
    id: Option<String>,
    /// js or wasm (default: from the file).
    #[arg(long)]
    format: Option<String>,
    /// The service's config: JSON, or @FILE.
    #[arg(long)]
    config: Option<String>,
    /// permanent, transient or temporary.
    #[arg(long)]
    restart: Option<String>,
    /// Restart intensity: at most this many restarts within --max-seconds, after which
    /// the service is given up as failed.
    #[arg(long, value_name = "N")]
    max_restarts: Option<u32>,
    /// The window --max-restarts counts in, in seconds.
    #[arg(long, value_name = "SECONDS")]
    max_seconds: Option<u32>,
    /// How long the service's init may take, in milliseconds.
    #[arg(long, value_name = "MS")]
    startup_timeout_ms: Option<u32>,
    /// How long one message may take, in wall-clock milliseconds, before it counts as a
    /// crash (kind timeout) and the service is restarted.
    #[arg(long, value_name = "MS")]
    message_timeout_ms: Option<u32>,
    /// The most memory the service may use, in MiB.
    #[arg(long)]
    memory_mb: Option<u32>,
    /// The CPU time one message may use, in milliseconds.
    #[arg(long)]
    cpu_ms: Option<u32>,
    /// How many messages may wait in the service's mailbox.
    #[arg(long)]
    mailbox: Option<u32>,
    /// A secret the service may read; repeatable.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// A destination the service may send HTTP requests to, inside its tenant's egress
    /// rules (`api.example.com`, `*.example.com`, `http://10.0.0.5:8080`); repeatable.
    #[arg(long = "egress", value_name = "RULE")]
    egress: Vec<String>,
    /// Offer the service to agents as a tool (MCP) with this name.
    #[arg(long, value_name = "NAME", requires = "tool_description")]
    tool: Option<String>,
    /// What the tool does, written for a model.
    #[arg(long, value_name = "TEXT", requires = "tool")]
    tool_description: Option<String>,
    /// The tool's input JSON Schema: JSON, or @FILE (default: any object).
    #[arg(long, value_name = "SCHEMA", requires = "tool")]
    tool_schema: Option<String>,
    /// Check everything, start nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only services in this state (running, crashed, failed, stopping, ...).
    #[arg(long)]
    state: Option<String>,
    /// How many to show (0: 100; at most 1000).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// How many to skip.
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

#[derive(Args, Debug)]
pub struct IdArg {
    /// The service id.
    id: String,
}

#[derive(Args, Debug)]
pub struct CallArgs {
    /// The service id.
    id: String,
    /// The request, as JSON.
    request: String,
    /// How long to wait for the reply (0: the server's default).
    #[arg(long, default_value_t = 0)]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
pub struct CastArgs {
    /// The service id.
    id: String,
    /// The message, as JSON.
    message: String,
}

#[derive(Args, Debug)]
pub struct SwapArgs {
    /// The service id.
    id: String,
    /// The new code: a .js file or a .wasm component.
    file: PathBuf,
    /// js or wasm (default: from the file).
    #[arg(long)]
    format: Option<String>,
    /// swap (keep state) or replace (restart under the same id).
    #[arg(long)]
    mode: Option<String>,
    /// How long the old version is kept, in milliseconds: a crash of the new version
    /// within it puts the old one back (0: the server's default, 30 s; at most 600,000).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    rollback_window_ms: u64,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// The service id.
    id: String,
    /// Do not wait for the service to finish its current message.
    #[arg(long)]
    force: bool,
    /// How long a graceful stop may take (0: the server's default).
    #[arg(long, default_value_t = 0)]
    timeout_ms: u64,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The service id.
    id: String,
    /// Keep printing new lines.
    #[arg(short, long)]
    follow: bool,
    /// How many past lines (0: 100; at most 1000).
    #[arg(long, default_value_t = 0)]
    tail: usize,
}

fn id_of(s: &str) -> anyhow::Result<ServiceId> {
    Ok(service_id(s)?)
}

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

/// A service id from a file name: `examples/js/counter.js` → `counter`.
fn id_from_file(file: &Path) -> anyhow::Result<String> {
    let stem = file.file_stem().and_then(|s| s.to_str()).ok_or_else(|| {
        refuse(
            "invalid_service_id",
            format!(
                "cannot make a service id from {}; give --id",
                file.display()
            ),
        )
    })?;
    Ok(stem.replace(
        |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "-",
    ))
}

/// A JSON argument, given inline or as @FILE.
fn json_arg(what: &str, arg: &str) -> anyhow::Result<serde_json::Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => String::from_utf8(read_file(Path::new(path))?)
            .map_err(|_| refuse("invalid_json", format!("the {what} file is not UTF-8")))?,
        None => arg.to_string(),
    };
    check_json(what, &text)?;
    Ok(serde_json::from_str(&text)?)
}

/// The format of code from a file: as named, else the wasm magic, else the extension.
fn format_of(named: Option<&str>, file: &Path, code: &[u8]) -> anyhow::Result<Format> {
    Ok(match named {
        Some(f) => format_named(f)?,
        None if file.extension().is_some_and(|e| e == "wasm") => Format::Wasm,
        None => infer_format(code),
    })
}

pub(super) async fn deploy(c: &Cmd, a: DeployArgs) -> anyhow::Result<()> {
    let code = read_file(&a.file)?;
    let format = format_of(a.format.as_deref(), &a.file, &code)?;
    let id = match a.id {
        Some(id) => id,
        None => id_from_file(&a.file)?,
    };
    let mut req = DeployRequest::new(id_of(&id)?, format, code);
    if let Some(config) = a.config.as_deref() {
        req.config = Some(json_arg("config", config)?);
    }
    if let Some(name) = a.tool {
        req.tool = Some(ToolSpec {
            name,
            description: a.tool_description.unwrap_or_default(),
            input_schema: match a.tool_schema.as_deref() {
                Some(s) => json_arg("tool schema", s)?,
                None => serde_json::json!({"type": "object"}),
            },
        });
    }
    req.restart = a.restart.as_deref().map(restart_named).transpose()?;
    req.max_restarts = a.max_restarts;
    req.max_seconds = a.max_seconds;
    req.startup_timeout_ms = a.startup_timeout_ms;
    req.message_timeout_ms = a.message_timeout_ms;
    req.memory_mb = a.memory_mb;
    req.cpu_ms_per_message = a.cpu_ms;
    req.mailbox = a.mailbox;
    req.secrets = a.secrets;
    req.egress = a.egress;
    req.dry_run = a.dry_run;
    let pb = spinner(format!("deploying {id}"));
    let r = c.client.deploy(&req).await;
    pb.finish_and_clear();
    c.out(&r?, |d| {
        let what = if d.dry_run {
            "checked (dry run; nothing started)"
        } else if d.created {
            "deployed"
        } else {
            "already running with the same code"
        };
        println!("{} {what}", d.service_id);
        fields(&[
            ("version", d.version.to_string()),
            ("code hash", d.code_hash.chars().take(16).collect()),
            (
                "event",
                d.event_id.map_or_else(|| "-".into(), |e| e.to_string()),
            ),
        ]);
    });
    Ok(())
}

pub(super) async fn list(c: &Cmd, a: ListArgs) -> anyhow::Result<()> {
    let filter = ListFilter {
        state: a.state.as_deref().map(state_named).transpose()?,
        limit: a.limit,
        offset: a.offset,
    };
    c.out(&c.client.list(&filter).await?, |l| {
        if l.services.is_empty() {
            println!("no services; deploy one with `solo deploy FILE`");
            return;
        }
        // A cluster node names itself; an embedded server has no node column.
        let nodes = l.services.iter().any(|s| s.node.is_some());
        let rows = l
            .services
            .iter()
            .map(|s| {
                let mut row = vec![
                    s.service_id.to_string(),
                    s.state.to_string(),
                    s.format.to_string(),
                    s.version.to_string(),
                    s.restarts.to_string(),
                    s.messages.to_string(),
                ];
                if nodes {
                    row.push(s.node.clone().unwrap_or_default());
                }
                row
            })
            .collect();
        let mut head = vec![
            "SERVICE", "STATE", "FORMAT", "VERSION", "RESTARTS", "MESSAGES",
        ];
        if nodes {
            head.push("NODE");
        }
        table(&head, rows);
        if l.total > l.services.len() {
            println!("{} of {} shown", l.services.len(), l.total);
        }
    });
    Ok(())
}

pub(super) async fn status(c: &Cmd, a: IdArg) -> anyhow::Result<()> {
    c.out(&c.client.status(&id_of(&a.id)?).await?, |s| {
        let mut rows = vec![
            ("service", s.service_id.to_string()),
            ("state", s.state.to_string()),
            ("format", s.format.to_string()),
            (
                "version",
                format!(
                    "{} ({})",
                    s.version,
                    s.code_hash.chars().take(16).collect::<String>()
                ),
            ),
            ("uptime", millis(s.uptime_ms)),
            (
                "restarts",
                format!("{} (policy {})", s.restarts, s.restart.as_str()),
            ),
            ("messages", s.messages.to_string()),
            (
                "mailbox",
                format!("{} / {}", s.mailbox_len, s.limits.mailbox),
            ),
            (
                "memory",
                format!("{} / {} MiB", bytes(s.memory_bytes), s.limits.memory_mb),
            ),
            (
                "cpu",
                format!(
                    "{} ms total, {} ms per message",
                    s.cpu_time_us / 1000,
                    s.limits.cpu_ms_per_message
                ),
            ),
            ("deployed", time(s.deployed_at)),
        ];
        if let Some(n) = &s.node {
            rows.push(("node", n.clone()));
        }
        if let Some(e) = &s.last_error {
            rows.push(("last error", format!("{}: {}", e.kind, e.message)));
        }
        fields(&rows);
    });
    Ok(())
}

/// Prints the reply itself: pretty for people, as the service wrote it with `--json`.
pub(super) async fn call(c: &Cmd, a: CallArgs) -> anyhow::Result<()> {
    check_json("request", &a.request)?;
    let reply = c
        .client
        .call(&id_of(&a.id)?, &a.request, ms(a.timeout_ms))
        .await?;
    match serde_json::from_str::<serde_json::Value>(&reply) {
        Ok(v) if !c.json => output::json(&v),
        _ => println!("{reply}"),
    }
    Ok(())
}

pub(super) async fn cast(c: &Cmd, a: CastArgs) -> anyhow::Result<()> {
    check_json("message", &a.message)?;
    let r = c.client.cast(&id_of(&a.id)?, &a.message).await?;
    c.out(&r, |r| println!("sent to {}", r.service_id));
    Ok(())
}

pub(super) async fn swap(c: &Cmd, a: SwapArgs) -> anyhow::Result<()> {
    let code = read_file(&a.file)?;
    let req = SwapRequest {
        service_id: id_of(&a.id)?,
        format: format_of(a.format.as_deref(), &a.file, &code)?,
        code: code.into(),
        mode: swap_mode_named(a.mode.as_deref().unwrap_or(""))?,
        rollback_window: ms(a.rollback_window_ms),
    };
    let pb = spinner(format!("swapping {}", a.id));
    let r = c.client.swap(&req).await;
    pb.finish_and_clear();
    c.out(&r?, |s| match s.method {
        SwapMethod::Unchanged => {
            println!(
                "{} already runs that code (version {})",
                s.service_id, s.version
            );
        }
        SwapMethod::Replace => println!(
            "replaced {}: version {} (restarted, state not kept)",
            s.service_id, s.version
        ),
        SwapMethod::Swap if s.state_carried => println!(
            "swapped {} to version {}, state carried ({})",
            s.service_id,
            s.version,
            bytes(s.snapshot_bytes.unwrap_or(0))
        ),
        SwapMethod::Swap => println!(
            "swapped {} to version {} (no state to carry)",
            s.service_id, s.version
        ),
    });
    Ok(())
}

pub(super) async fn kill(c: &Cmd, a: KillArgs) -> anyhow::Result<()> {
    let opts = KillOptions {
        timeout: ms(a.timeout_ms),
        force: a.force,
    };
    let pb = spinner(format!("stopping {}", a.id));
    let r = c.client.kill(&id_of(&a.id)?, opts).await;
    pb.finish_and_clear();
    c.out(&r?, |k| println!("stopped {}", k.service_id));
    Ok(())
}

pub(super) async fn logs(c: &Cmd, a: LogsArgs) -> anyhow::Result<()> {
    let id = id_of(&a.id)?;
    let human = |l: &solo_types::api::LogLine| {
        println!("{}  {:<5} {}", time(l.ts), l.level, l.message);
    };
    if !a.follow {
        c.out(&c.client.logs(&id, a.tail).await?, |ls| {
            ls.lines.iter().for_each(human);
        });
        return Ok(());
    }
    let mut feed = c.client.follow_logs(&id, a.tail, 0).await?;
    while let Some(l) = feed.next().await {
        let l = l?;
        if c.json {
            output::json_line(&serde_json::to_value(&l)?);
        } else {
            human(&l);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_and_formats_from_files() {
        assert_eq!(
            id_from_file(Path::new("examples/js/counter.js")).unwrap(),
            "counter"
        );
        assert_eq!(id_from_file(Path::new("a b.wasm")).unwrap(), "a-b");
        assert_eq!(
            format_of(None, Path::new("x.js"), b"1").unwrap(),
            Format::Js
        );
        assert_eq!(
            format_of(None, Path::new("x"), b"\0asm").unwrap(),
            Format::Wasm
        );
        assert_eq!(
            format_of(None, Path::new("x.wasm"), b"").unwrap(),
            Format::Wasm
        );
        assert!(format_of(Some("elixir"), Path::new("x"), b"").is_err());
    }
}
