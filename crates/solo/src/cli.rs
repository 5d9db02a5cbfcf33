//! The client commands of `solo`: each resolves a profile, calls one RPC (or follows one
//! stream) and prints a table, lines, or with `--json` JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};
use solo_client::{Client, Flags, Profile, describe_status};
use solo_proto::v1 as pb;

use crate::Global;
use crate::output::{self, bytes, fields, millis, spinner, table, time};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Another name (DNS or IP) the server certificate is valid for; repeatable.
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum CertsCmd {
    /// Issue a client certificate for TENANT (its CN): writes DIR/TENANT.pem,
    /// DIR/TENANT-key.pem (0600) and DIR/ca.pem.
    Issue {
        #[arg(id = "tenant_name", value_name = "TENANT")]
        tenant: String,
        /// Make it an admin certificate (O solo-admin).
        #[arg(long)]
        admin: bool,
        /// Where to write the files (default DATA_DIR/certs/clients).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Deploy a service from a JavaScript file or a WebAssembly component.
    Deploy(DeployArgs),
    /// List your services.
    List {
        /// Only services in this state (running, restarting, stopped, failed, ...).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 0)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show one service.
    Status { id: String },
    /// Call a service with a JSON request and print its reply.
    Call {
        id: String,
        /// The request, as JSON.
        request: String,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u32,
    },
    /// Send a service a JSON message without waiting for an answer.
    Cast { id: String, message: String },
    /// Replace a running service's code, keeping its state.
    Swap {
        id: String,
        file: PathBuf,
        #[arg(long)]
        format: Option<String>,
        /// swap (keep state) or replace (restart under the same id).
        #[arg(long)]
        mode: Option<String>,
    },
    /// Stop a service.
    Kill {
        id: String,
        /// Do not wait for the service to finish its current message.
        #[arg(long)]
        force: bool,
        #[arg(long, default_value_t = 5000)]
        timeout_ms: i32,
    },
    /// Print a service's log lines.
    Logs {
        id: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// How many past lines (at most 1000).
        #[arg(long, default_value_t = 100)]
        tail: u32,
    },
    /// Follow events as they happen.
    Watch {
        /// Only this service's events.
        #[arg(long)]
        service: Option<String>,
        /// Replay the events after this id first.
        #[arg(long, value_name = "EVENT_ID", default_value_t = 0)]
        since: u64,
        /// Only events of this type.
        #[arg(long)]
        kind: Option<String>,
        /// With --service: its log lines too.
        #[arg(long)]
        logs: bool,
    },
    /// Query the event log, or verify its hash chain (`solo events verify`).
    Events(EventsArgs),
    /// Keep secrets for your services.
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Grant, check and revoke capability tokens.
    #[command(subcommand)]
    Caps(CapsCmd),
    /// Find registered services: all of yours, or the live ones under NAME whose
    /// metadata matches every --filter.
    Discover {
        /// The name; all registrations when left out.
        name: Option<String>,
        /// KEY=VALUE a registration's metadata must have; repeatable (needs NAME).
        #[arg(long = "filter", value_name = "KEY=VALUE", requires = "name")]
        filters: Vec<String>,
    },
    /// Is the server up?
    Health,
    /// Prometheus metrics (admin).
    Metrics,
    /// The supervision tree.
    Tree,
    /// Show the runtime-tunable settings, or change one (admin).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Stop the server gracefully (admin).
    Shutdown {
        /// How long in-flight work may take to finish.
        #[arg(long, default_value_t = 5000)]
        grace_ms: i32,
    },
}

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
    #[arg(long)]
    memory_mb: Option<u32>,
    #[arg(long)]
    cpu_ms: Option<u32>,
    #[arg(long)]
    mailbox: Option<u32>,
    /// A secret the service may read; repeatable.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Check everything, start nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    #[command(subcommand)]
    verify: Option<EventsCmd>,
    #[arg(long)]
    service: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    /// Admins: another tenant's events.
    #[arg(long = "of-tenant", value_name = "TENANT")]
    of_tenant: Option<String>,
    #[arg(long, value_name = "EVENT_ID", default_value_t = 0)]
    after: u64,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Newest first.
    #[arg(long)]
    desc: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Every runtime-tunable key with its value, and the resource pressure level.
    Show,
    /// Change a runtime-tunable key (recorded as config_changed).
    Set {
        #[arg(id = "config_key", value_name = "KEY")]
        key: String,
        value: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Check the hash chain of the whole log (admin).
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Store a secret: the value from the argument, --from-file, or stdin.
    Set {
        name: String,
        value: Option<String>,
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        from_file: Option<PathBuf>,
    },
    /// Print a secret's value.
    Get { name: String },
    /// List secret names.
    List,
    /// Delete a secret.
    Rm { name: String },
    /// Re-encrypt every secret under a new key.
    Rotate,
}

#[derive(Subcommand, Debug)]
pub enum CapsCmd {
    /// Mint a token for RESOURCE (service:ID, secret:NAME, events, kernel) with PERMISSIONS.
    Grant {
        resource: String,
        #[arg(required = true, value_delimiter = ',')]
        permissions: Vec<String>,
        /// Lifetime in seconds (0: the default).
        #[arg(long, default_value_t = 0)]
        ttl: i64,
    },
    /// Would TOKEN allow PERMISSION on RESOURCE?
    Verify {
        #[arg(id = "token_arg", value_name = "TOKEN")]
        token: String,
        resource: String,
        permission: String,
    },
    /// Revoke a token (or its hash) and everything attenuated from it.
    Revoke {
        #[arg(id = "token_arg", value_name = "TOKEN")]
        token: String,
    },
    /// Mint a narrower token from TOKEN.
    Attenuate {
        #[arg(id = "token_arg", value_name = "TOKEN")]
        token: String,
        #[arg(long)]
        resource: Option<String>,
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        #[arg(long, default_value_t = 0)]
        ttl: i64,
    },
    /// List your capabilities (never their tokens).
    List,
}

fn data_dir(g: &Global) -> PathBuf {
    g.data_dir
        .clone()
        .or_else(|| std::env::var_os("SOLO_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("./solo-data"))
}

/// `solo init`.
pub fn init(g: &Global, args: &InitArgs) -> anyhow::Result<()> {
    let dir = data_dir(g);
    let done = solo_gateway::pki::init(&dir, &args.server_names)?;
    let certs = solo_gateway::pki::CertPaths::new(&dir);
    if g.json {
        output::json(&json!({ "created": done.created, "certs": certs.dir }));
    } else if done.created {
        println!(
            "created the CA, the server and the admin certificates in {}",
            certs.dir.display()
        );
    } else {
        println!(
            "certificates already exist in {}; nothing to do",
            certs.dir.display()
        );
    }
    Ok(())
}

/// `solo certs issue`.
pub fn certs(g: &Global, cmd: CertsCmd) -> anyhow::Result<()> {
    let CertsCmd::Issue { tenant, admin, out } = cmd;
    let dir = data_dir(g);
    let out = out.unwrap_or_else(|| dir.join("certs").join("clients"));
    let cert = solo_gateway::pki::issue(&dir, &tenant, admin, &out)?;
    let key = out.join(format!("{tenant}-key.pem"));
    let ca = out.join("ca.pem");
    if g.json {
        output::json(
            &json!({ "tenant": tenant, "admin": admin, "cert": cert, "key": key, "ca": ca }),
        );
    } else {
        println!(
            "issued {} certificate for {tenant}:",
            if admin { "an admin" } else { "a" }
        );
        fields(&[
            ("cert", cert.display().to_string()),
            ("key", key.display().to_string()),
            ("ca", ca.display().to_string()),
        ]);
        println!(
            "use it with: SOLO_CERT={} SOLO_KEY={} SOLO_CA={} solo list",
            cert.display(),
            key.display(),
            ca.display()
        );
    }
    Ok(())
}

/// Runs a client command on a fresh runtime.
pub fn run(g: &Global, cmd: ClientCmd) -> anyhow::Result<()> {
    let flags = Flags {
        endpoint: g.endpoint.clone(),
        data_dir: g.data_dir.clone(),
        cert: g.cert.clone(),
        key: g.key.clone(),
        ca: g.ca.clone(),
        token: g.token.clone(),
        tenant: g.tenant.clone(),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let profile = Profile::resolve(&flags, &env)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async move {
        let client = profile.connect().await?;
        Cmd {
            client,
            json: g.json,
        }
        .run(cmd)
        .await
    })
}

struct Cmd {
    client: Client,
    json: bool,
}

/// A failed RPC as an error with the server's reason.
fn rpc(s: tonic::Status) -> anyhow::Error {
    anyhow!(describe_status(&s))
}

fn parse_json_arg(what: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text)
        .map_err(|e| anyhow!("the {what} is not JSON: {e} (argument {text:?})"))
}

fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {}", path.display()))
}

fn format_value(f: Option<&str>, file: &Path, code: &[u8]) -> anyhow::Result<i32> {
    use pb::deploy_request::DeployFormat as F;
    let f = match f {
        Some(f) => f.to_ascii_lowercase(),
        None if code.starts_with(b"\0asm") => "wasm".into(),
        None => match file.extension().and_then(|e| e.to_str()) {
            Some("wasm") => "wasm".into(),
            _ => "js".into(),
        },
    };
    Ok(match f.as_str() {
        "js" | "javascript" => F::Javascript,
        "wasm" | "component" => F::WasmComponent,
        other => bail!("unknown format {other:?}; use js or wasm"),
    } as i32)
}

/// A service id from a file name: `examples/js/counter.js` → `counter`.
fn id_from_file(file: &Path) -> anyhow::Result<String> {
    let stem = file.file_stem().and_then(|s| s.to_str()).ok_or_else(|| {
        anyhow!(
            "cannot make a service id from {}; give --id",
            file.display()
        )
    })?;
    Ok(stem.replace(
        |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "-",
    ))
}

fn event_json(e: &pb::Event) -> Value {
    json!({
        "id": e.id,
        "timestamp": e.timestamp,
        "event_type": e.event_type,
        "subject": e.subject,
        "tenant": e.tenant,
        "service_id": e.service_id,
        "payload": serde_json::from_slice::<Value>(&e.payload).unwrap_or(Value::Null),
        "causation_id": e.causation_id,
        "hash": e.hash,
    })
}

fn event_line(e: &pb::Event) -> String {
    let payload = String::from_utf8_lossy(&e.payload);
    let id = if e.id == 0 {
        "-".to_string()
    } else {
        format!("#{}", e.id)
    };
    format!(
        "{id:>7}  {}  {:<24} {:<24} {payload}",
        time(e.timestamp),
        e.event_type,
        e.subject
    )
}

fn cap_json(c: &pb::CapabilityInfo) -> Value {
    json!({
        "hash": c.hash,
        "tenant": c.tenant,
        "resource": c.resource,
        "permissions": c.permissions,
        "expires_at": c.expires_at,
        "revoked": c.revoked,
        "parent": (!c.parent.is_empty()).then_some(&c.parent),
        "created_at": c.created_at,
    })
}

impl Cmd {
    fn out(&self, v: &Value, human: impl FnOnce()) {
        if self.json { output::json(v) } else { human() }
    }

    async fn run(mut self, cmd: ClientCmd) -> anyhow::Result<()> {
        match cmd {
            ClientCmd::Deploy(a) => self.deploy(a).await,
            ClientCmd::List {
                state,
                limit,
                offset,
            } => self.list(state, limit, offset).await,
            ClientCmd::Status { id } => self.status(id).await,
            ClientCmd::Call {
                id,
                request,
                timeout_ms,
            } => {
                parse_json_arg("request", &request)?;
                let r = self
                    .client
                    .call(pb::CallRequest {
                        service_id: id,
                        request,
                        timeout_ms,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                let reply: Value = serde_json::from_str(&r.reply).unwrap_or(Value::String(r.reply));
                if self.json {
                    output::json_line(&reply);
                } else {
                    output::json(&reply);
                }
                Ok(())
            }
            ClientCmd::Cast { id, message } => {
                parse_json_arg("message", &message)?;
                self.client
                    .cast(pb::CastRequest {
                        service_id: id.clone(),
                        message,
                    })
                    .await
                    .map_err(rpc)?;
                self.out(&json!({ "service_id": id, "accepted": true }), || {
                    println!("sent to {id}")
                });
                Ok(())
            }
            ClientCmd::Swap {
                id,
                file,
                format,
                mode,
            } => {
                let code = read_file(&file)?;
                let format = format_value(format.as_deref(), &file, &code)?;
                let pb = spinner(format!("swapping {id}"));
                let r = self
                    .client
                    .hot_swap(pb::HotSwapRequest {
                        service_id: id,
                        code: String::new(),
                        format,
                        code_bytes: code,
                        mode: mode.unwrap_or_default(),
                        rollback_window_ms: 0,
                    })
                    .await;
                pb.finish_and_clear();
                let r = r.map_err(rpc)?.into_inner();
                self.out(
                    &json!({
                        "service_id": r.service_id, "version": r.version, "code_hash": r.code_hash,
                        "event_id": r.event_id, "method": r.method, "state_carried": r.state_carried,
                        "snapshot_bytes": r.snapshot_bytes,
                    }),
                    || match r.method.as_str() {
                        "unchanged" => println!("{} already runs that code (version {})", r.service_id, r.version),
                        "replace" => println!("replaced {}: version {} (restarted, state not kept)", r.service_id, r.version),
                        _ if r.state_carried => println!(
                            "swapped {} to version {}, state carried ({})",
                            r.service_id,
                            r.version,
                            bytes(r.snapshot_bytes)
                        ),
                        _ => println!("swapped {} to version {} (no state to carry)", r.service_id, r.version),
                    },
                );
                Ok(())
            }
            ClientCmd::Kill {
                id,
                force,
                timeout_ms,
            } => {
                let pb = spinner(format!("stopping {id}"));
                let r = self
                    .client
                    .kill(pb::KillRequest {
                        service_id: id,
                        timeout_ms,
                        force,
                    })
                    .await;
                pb.finish_and_clear();
                let r = r.map_err(rpc)?.into_inner();
                self.out(
                    &json!({ "service_id": r.service_id, "event_id": r.event_id, "snapshot_bytes": r.snapshot_bytes }),
                    || println!("stopped {}", r.service_id),
                );
                Ok(())
            }
            ClientCmd::Logs { id, follow, tail } => self.logs(id, follow, tail).await,
            ClientCmd::Watch {
                service,
                since,
                kind,
                logs,
            } => {
                let mut s = self
                    .client
                    .watch(pb::WatchRequest {
                        service_id: service.unwrap_or_default(),
                        include_logs: logs,
                        after_id: since,
                        kind: kind.unwrap_or_default(),
                        tenant: String::new(),
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                while let Some(e) = s.next().await {
                    let e = e.map_err(rpc)?;
                    if self.json {
                        output::json_line(&event_json(&e));
                    } else {
                        println!("{}", event_line(&e));
                    }
                }
                Ok(())
            }
            ClientCmd::Events(a) => self.events(a).await,
            ClientCmd::Secrets(c) => self.secrets(c).await,
            ClientCmd::Caps(c) => self.caps(c).await,
            ClientCmd::Discover { name, filters } => {
                let services = match name {
                    Some(name) => {
                        let mut map = std::collections::HashMap::new();
                        for f in &filters {
                            let (k, v) = f
                                .split_once('=')
                                .ok_or_else(|| anyhow!("--filter {f:?}: use KEY=VALUE"))?;
                            map.insert(k.to_string(), v.to_string());
                        }
                        self.client
                            .discover_service(pb::DiscoverServiceRequest {
                                service_name: name,
                                filters: map,
                            })
                            .await
                            .map_err(rpc)?
                            .into_inner()
                            .services
                    }
                    None => {
                        self.client
                            .get_services(pb::GetServicesRequest::default())
                            .await
                            .map_err(rpc)?
                            .into_inner()
                            .services
                    }
                };
                let v: Vec<Value> = services
                    .iter()
                    .map(|s| json!({ "service_id": s.service_id, "service_handle": s.service_handle, "service_name": s.service_name, "version": s.version, "alive": s.alive, "metadata": s.metadata, "expires_at": s.expires_at }))
                    .collect();
                self.out(&json!({ "services": v, "total": services.len() }), || {
                    if services.is_empty() {
                        println!("no registrations found");
                        return;
                    }
                    table(
                        &["NAME", "SERVICE", "VERSION", "ALIVE", "EXPIRES"],
                        services
                            .iter()
                            .map(|s| {
                                vec![
                                    s.service_name.clone(),
                                    s.service_id.clone(),
                                    s.version.clone(),
                                    s.alive.to_string(),
                                    if s.expires_at == 0 {
                                        "never".into()
                                    } else {
                                        time(s.expires_at)
                                    },
                                ]
                            })
                            .collect(),
                    );
                });
                Ok(())
            }
            ClientCmd::Health => {
                let h = self
                    .client
                    .health(pb::HealthRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(
                    &json!({ "status": h.status, "version": h.version, "uptime_ms": h.uptime_ms, "memory_mb": h.memory_mb, "services": h.services, "last_event_id": h.last_event_id }),
                    || {
                        fields(&[
                            ("status", h.status.clone()),
                            ("version", h.version.clone()),
                            ("uptime", millis(h.uptime_ms)),
                            ("memory", format!("{} MiB", h.memory_mb)),
                            ("services", h.services.to_string()),
                            ("last event", h.last_event_id.to_string()),
                        ]);
                    },
                );
                Ok(())
            }
            ClientCmd::Metrics => {
                let m = self
                    .client
                    .metrics(pb::MetricsRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(&json!({ "text": m.text }), || print!("{}", m.text));
                Ok(())
            }
            ClientCmd::Tree => {
                let t = self
                    .client
                    .system_tree(pb::SystemTreeRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner();
                let tree: Value = serde_json::from_str(&t.tree_json)
                    .context("the server sent a malformed tree")?;
                self.out(&tree, || print_tree(&tree, "", true, true));
                Ok(())
            }
            ClientCmd::Config(ConfigCmd::Show) => {
                let r = self
                    .client
                    .get_config(pb::GetConfigRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner();
                let mut values: Vec<(String, u64)> = r.values.into_iter().collect();
                values.sort();
                let map: serde_json::Map<String, Value> =
                    values.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                self.out(&json!({ "values": map, "pressure": r.pressure }), || {
                    let mut rows: Vec<(&str, String)> = values
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.to_string()))
                        .collect();
                    rows.push(("pressure", r.pressure.clone()));
                    fields(&rows);
                });
                Ok(())
            }
            ClientCmd::Config(ConfigCmd::Set { key, value }) => {
                let r = self
                    .client
                    .set_config(pb::SetConfigRequest { key, value })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(
                    &json!({ "key": r.key, "value": r.value, "previous": r.previous }),
                    || {
                        println!("{} = {} (was {})", r.key, r.value, r.previous);
                    },
                );
                Ok(())
            }
            ClientCmd::Shutdown { grace_ms } => {
                let r = self
                    .client
                    .shutdown(pb::ShutdownRequest {
                        grace_period_ms: grace_ms,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(&json!({ "status": r.status, "message": r.message }), || {
                    println!("{}", r.message)
                });
                Ok(())
            }
        }
    }

    async fn deploy(&mut self, a: DeployArgs) -> anyhow::Result<()> {
        let code = read_file(&a.file)?;
        let format = format_value(a.format.as_deref(), &a.file, &code)?;
        let id = match a.id {
            Some(id) => id,
            None => id_from_file(&a.file)?,
        };
        let config_json = match a.config.as_deref() {
            None => String::new(),
            Some(c) => {
                let text = match c.strip_prefix('@') {
                    Some(path) => String::from_utf8(read_file(Path::new(path))?)
                        .context("the config file is not UTF-8")?,
                    None => c.to_string(),
                };
                parse_json_arg("config", &text)?;
                text
            }
        };
        let pb = spinner(format!("deploying {id}"));
        let r = self
            .client
            .deploy(pb::DeployRequest {
                service_id: id,
                code: String::new(),
                format,
                code_bytes: code,
                config_json,
                restart: a.restart.unwrap_or_default(),
                memory_mb: a.memory_mb.unwrap_or(0),
                cpu_ms_per_message: a.cpu_ms.unwrap_or(0),
                mailbox: a.mailbox.unwrap_or(0),
                secrets: a.secrets,
                dry_run: a.dry_run,
                ..pb::DeployRequest::default()
            })
            .await;
        pb.finish_and_clear();
        let r = r.map_err(rpc)?.into_inner();
        self.out(
            &json!({
                "service_id": r.service_id, "code_hash": r.code_hash, "version": r.version,
                "event_id": r.event_id, "created": r.created, "dry_run": r.dry_run, "has_state": r.has_state,
            }),
            || {
                let what = if r.dry_run {
                    "checked (dry run; nothing started)"
                } else if r.created {
                    "deployed"
                } else {
                    "already running with the same code"
                };
                println!("{} {what}", r.service_id);
                fields(&[
                    ("version", r.version.to_string()),
                    ("code hash", r.code_hash.chars().take(16).collect()),
                    ("event", r.event_id.to_string()),
                ]);
            },
        );
        Ok(())
    }

    async fn list(&mut self, state: Option<String>, limit: u32, offset: u32) -> anyhow::Result<()> {
        let r = self
            .client
            .list(pb::ListRequest {
                limit,
                offset,
                state: state.unwrap_or_default(),
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let v: Vec<Value> = r
            .services
            .iter()
            .map(|s| json!({ "service_id": s.service_id, "alive": s.alive, "state": s.state, "format": s.format, "restarts": s.restarts, "messages": s.messages, "version": s.version }))
            .collect();
        self.out(&json!({ "services": v, "total": r.total }), || {
            if r.services.is_empty() {
                println!("no services; deploy one with `solo deploy FILE`");
                return;
            }
            table(
                &[
                    "SERVICE", "STATE", "FORMAT", "VERSION", "RESTARTS", "MESSAGES",
                ],
                r.services
                    .iter()
                    .map(|s| {
                        vec![
                            s.service_id.clone(),
                            s.state.clone(),
                            s.format.clone(),
                            s.version.to_string(),
                            s.restarts.to_string(),
                            s.messages.to_string(),
                        ]
                    })
                    .collect(),
            );
            if r.total as usize > r.services.len() {
                println!("{} of {} shown", r.services.len(), r.total);
            }
        });
        Ok(())
    }

    async fn status(&mut self, id: String) -> anyhow::Result<()> {
        let s = self
            .client
            .status(pb::StatusRequest { service_id: id })
            .await
            .map_err(rpc)?
            .into_inner();
        let last_error: Value = if s.last_error_json.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&s.last_error_json).unwrap_or(Value::Null)
        };
        self.out(
            &json!({
                "service_id": s.service_id, "alive": s.alive, "state": s.state, "format": s.format,
                "code_hash": s.code_hash, "version": s.version, "uptime_ms": s.uptime_ms,
                "restarts": s.restarts, "messages": s.messages, "memory_bytes": s.memory_bytes,
                "mailbox_len": s.message_queue_len, "cpu_time_us": s.cpu_time_us,
                "restart": s.restart, "memory_limit_mb": s.memory_limit_mb,
                "cpu_ms_per_message": s.cpu_ms_per_message, "mailbox_limit": s.mailbox_limit,
                "deployed_at": s.deployed_at, "last_error": last_error,
            }),
            || {
                let mut rows = vec![
                    ("service", s.service_id.clone()),
                    ("state", s.state.clone()),
                    ("format", s.format.clone()),
                    (
                        "version",
                        format!(
                            "{} ({})",
                            s.version,
                            s.code_hash.chars().take(16).collect::<String>()
                        ),
                    ),
                    ("uptime", millis(s.uptime_ms)),
                    ("restarts", format!("{} (policy {})", s.restarts, s.restart)),
                    ("messages", s.messages.to_string()),
                    (
                        "mailbox",
                        format!("{} / {}", s.message_queue_len, s.mailbox_limit),
                    ),
                    (
                        "memory",
                        format!(
                            "{} / {} MiB",
                            bytes(u64::try_from(s.memory_bytes).unwrap_or(0)),
                            s.memory_limit_mb
                        ),
                    ),
                    (
                        "cpu",
                        format!(
                            "{} ms total, {} ms per message",
                            s.cpu_time_us / 1000,
                            s.cpu_ms_per_message
                        ),
                    ),
                    ("deployed", time(s.deployed_at)),
                ];
                if let Some(e) = last_error.as_object() {
                    let reason = e.get("reason").and_then(Value::as_str).unwrap_or("?");
                    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
                    rows.push(("last error", format!("{reason}: {msg}")));
                }
                fields(&rows);
            },
        );
        Ok(())
    }

    async fn logs(&mut self, id: String, follow: bool, tail: u32) -> anyhow::Result<()> {
        let mut s = self
            .client
            .logs(pb::LogsRequest {
                service_id: id,
                tail,
                follow,
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let as_json = |l: &pb::LogLine| json!({ "seq": l.seq, "timestamp": l.timestamp, "level": l.level, "message": l.message });
        let mut lines = Vec::new();
        while let Some(l) = s.next().await {
            let l = l.map_err(rpc)?;
            if self.json && !follow {
                lines.push(as_json(&l));
            } else if self.json {
                output::json_line(&as_json(&l));
            } else {
                println!("{}  {:<5} {}", time(l.timestamp), l.level, l.message);
            }
        }
        if self.json && !follow {
            output::json(&json!({ "lines": lines }));
        }
        Ok(())
    }

    async fn events(&mut self, a: EventsArgs) -> anyhow::Result<()> {
        if let Some(EventsCmd::Verify) = a.verify {
            let pb = spinner("verifying the event log");
            let r = self.client.verify_events(pb::VerifyEventsRequest {}).await;
            pb.finish_and_clear();
            let r = r.map_err(rpc)?.into_inner();
            self.out(
                &json!({ "ok": r.ok, "checked": r.checked, "last_id": r.last_id, "first_broken_id": (r.first_broken_id != 0).then_some(r.first_broken_id), "reason": (!r.reason.is_empty()).then_some(&r.reason) }),
                || {
                    if r.ok {
                        println!("ok: {} events checked, the chain is intact up to #{}", r.checked, r.last_id);
                    }
                },
            );
            if !r.ok {
                bail!(
                    "the hash chain breaks at event #{}: {}",
                    r.first_broken_id,
                    r.reason
                );
            }
            return Ok(());
        }
        let r = self
            .client
            .query_events(pb::QueryEventsRequest {
                after_id: a.after,
                tenant: a.of_tenant.unwrap_or_default(),
                service_id: a.service.unwrap_or_default(),
                kind: a.kind.unwrap_or_default(),
                limit: a.limit,
                descending: a.desc,
                ..pb::QueryEventsRequest::default()
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let v: Vec<Value> = r.events.iter().map(event_json).collect();
        self.out(
            &json!({ "events": v, "next_cursor": r.next_cursor }),
            || {
                for e in &r.events {
                    println!("{}", event_line(e));
                }
                if r.next_cursor != 0 {
                    println!("more: --after {}", r.next_cursor);
                }
            },
        );
        Ok(())
    }

    async fn secrets(&mut self, c: SecretsCmd) -> anyhow::Result<()> {
        match c {
            SecretsCmd::Set {
                name,
                value,
                from_file,
            } => {
                let value = match (value, from_file) {
                    (Some(v), _) => v.into_bytes(),
                    (None, Some(f)) => read_file(&f)?,
                    (None, None) => {
                        use std::io::Read;
                        let mut buf = Vec::new();
                        std::io::stdin()
                            .read_to_end(&mut buf)
                            .context("read the value from stdin")?;
                        if buf.ends_with(b"\n") {
                            buf.pop();
                        }
                        buf
                    }
                };
                let r = self
                    .client
                    .put_secret(pb::PutSecretRequest {
                        name: name.clone(),
                        value,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(&json!({ "name": name, "event_id": r.event_id }), || {
                    println!("stored {name}")
                });
            }
            SecretsCmd::Get { name } => {
                let r = self
                    .client
                    .get_secret(pb::GetSecretRequest { name: name.clone() })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                match String::from_utf8(r.value) {
                    Ok(s) => self.out(&json!({ "name": name, "value": s }), || println!("{s}")),
                    Err(e) => {
                        use base64::Engine;
                        let b64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                        self.out(&json!({ "name": name, "value_base64": b64 }), || {
                            println!("{b64}")
                        });
                    }
                }
            }
            SecretsCmd::List => {
                let r = self
                    .client
                    .list_secrets(pb::ListSecretsRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(&json!({ "names": r.names }), || {
                    for n in &r.names {
                        println!("{n}");
                    }
                });
            }
            SecretsCmd::Rm { name } => {
                let r = self
                    .client
                    .delete_secret(pb::DeleteSecretRequest { name: name.clone() })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(&json!({ "name": name, "existed": r.existed }), || {
                    println!(
                        "{}",
                        if r.existed {
                            format!("deleted {name}")
                        } else {
                            format!("{name} did not exist")
                        }
                    );
                });
            }
            SecretsCmd::Rotate => {
                let pb = spinner("re-encrypting secrets");
                let r = self
                    .client
                    .rotate_secrets(pb::RotateSecretsRequest {})
                    .await;
                pb.finish_and_clear();
                let r = r.map_err(rpc)?.into_inner();
                self.out(&json!({ "rotated": r.rotated }), || {
                    println!("re-encrypted {} secrets", r.rotated)
                });
            }
        }
        Ok(())
    }

    async fn caps(&mut self, c: CapsCmd) -> anyhow::Result<()> {
        match c {
            CapsCmd::Grant {
                resource,
                permissions,
                ttl,
            } => {
                let r = self
                    .client
                    .grant_capability(pb::GrantCapabilityRequest {
                        resource,
                        permissions,
                        ttl_seconds: ttl,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.print_granted(&r);
            }
            CapsCmd::Attenuate {
                token,
                resource,
                permissions,
                ttl,
            } => {
                let r = self
                    .client
                    .attenuate_capability(pb::AttenuateCapabilityRequest {
                        token,
                        resource: resource.unwrap_or_default(),
                        permissions,
                        ttl_seconds: ttl,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.print_granted(&r);
            }
            CapsCmd::Verify {
                token,
                resource,
                permission,
            } => {
                let r = self
                    .client
                    .verify_capability(pb::VerifyCapabilityRequest {
                        token,
                        resource,
                        permission,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(
                    &json!({ "valid": r.valid, "reason": (!r.reason.is_empty()).then_some(&r.reason), "capability": r.capability.as_ref().map(cap_json) }),
                    || println!("{}", if r.valid { "valid".to_string() } else { format!("refused: {}", r.reason) }),
                );
                if !r.valid && !self.json {
                    bail!("the token does not allow it ({})", r.reason);
                }
            }
            CapsCmd::Revoke { token } => {
                let r = self
                    .client
                    .revoke_capability(pb::RevokeCapabilityRequest { token })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                self.out(&json!({ "revoked": r.revoked }), || {
                    println!("revoked {} capabilities", r.revoked)
                });
            }
            CapsCmd::List => {
                let r = self
                    .client
                    .list_capabilities(pb::ListCapabilitiesRequest {})
                    .await
                    .map_err(rpc)?
                    .into_inner();
                let v: Vec<Value> = r.capabilities.iter().map(cap_json).collect();
                self.out(&json!({ "capabilities": v }), || {
                    table(
                        &["HASH", "RESOURCE", "PERMISSIONS", "EXPIRES", "REVOKED"],
                        r.capabilities
                            .iter()
                            .map(|c| {
                                vec![
                                    c.hash.chars().take(12).collect(),
                                    c.resource.clone(),
                                    c.permissions.join(","),
                                    time(c.expires_at),
                                    c.revoked.to_string(),
                                ]
                            })
                            .collect(),
                    );
                });
            }
        }
        Ok(())
    }

    fn print_granted(&self, r: &pb::GrantCapabilityResponse) {
        let cap = r.capability.as_ref().map(cap_json).unwrap_or(Value::Null);
        self.out(&json!({ "token": r.token, "capability": cap }), || {
            println!("{}", r.token);
            if let Some(c) = &r.capability {
                eprintln!(
                    "{} on {} until {} (the token is shown once; only its hash is kept)",
                    c.permissions.join(","),
                    c.resource,
                    time(c.expires_at)
                );
            }
        });
    }
}

fn print_tree(node: &Value, prefix: &str, last: bool, root: bool) {
    let name = node.get("name").and_then(Value::as_str).unwrap_or("?");
    let kind = node.get("kind").and_then(Value::as_str).unwrap_or("");
    let state = node.get("state").and_then(Value::as_str).unwrap_or("");
    let restarts = node.get("restarts").and_then(Value::as_u64).unwrap_or(0);
    let strategy = node
        .get("strategy")
        .and_then(Value::as_str)
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let branch = if root {
        String::new()
    } else if last {
        "└── ".into()
    } else {
        "├── ".into()
    };
    let restarts = if restarts > 0 {
        format!(", {restarts} restarts")
    } else {
        String::new()
    };
    println!("{prefix}{branch}{name} ({kind}{strategy}, {state}{restarts})");
    let children = node
        .get("children")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let child_prefix = if root {
        String::new()
    } else {
        format!("{prefix}{}", if last { "    " } else { "│   " })
    };
    for (i, c) in children.iter().enumerate() {
        print_tree(c, &child_prefix, i + 1 == children.len(), false);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Positional arguments must not share an id with a global flag (a revoked token
    /// would otherwise become the caller's credentials).
    /// clap's own consistency check of the whole command line (duplicate ids, ...).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        crate::Cli::command().debug_assert();
    }

    #[test]
    fn positionals_do_not_alias_global_flags() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from(["solo", "caps", "revoke", "solo_x"]).unwrap();
        assert_eq!(cli.global.token, None);
        let cli = crate::Cli::try_parse_from(["solo", "certs", "issue", "alice"]).unwrap();
        assert_eq!(cli.global.tenant, None);
        let cli =
            crate::Cli::try_parse_from(["solo", "config", "set", "limits.max_total", "5"]).unwrap();
        assert_eq!(cli.global.key, None);
        let cli = crate::Cli::try_parse_from([
            "solo", "--token", "t", "caps", "verify", "solo_x", "events", "read",
        ])
        .unwrap();
        assert_eq!(cli.global.token.as_deref(), Some("t"));
    }

    #[test]
    fn ids_from_files() {
        assert_eq!(
            id_from_file(Path::new("examples/js/counter.js")).unwrap(),
            "counter"
        );
        assert_eq!(id_from_file(Path::new("a b.wasm")).unwrap(), "a-b");
    }

    #[test]
    fn formats_from_files() {
        use pb::deploy_request::DeployFormat as F;
        assert_eq!(
            format_value(None, Path::new("x.js"), b"1").unwrap(),
            F::Javascript as i32
        );
        assert_eq!(
            format_value(None, Path::new("x"), b"\0asm").unwrap(),
            F::WasmComponent as i32
        );
        assert!(format_value(Some("elixir"), Path::new("x"), b"").is_err());
    }
}
