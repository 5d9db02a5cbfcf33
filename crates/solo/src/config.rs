//! Server configuration: defaults < TOML file < `SOLO_*` environment < flags.
//!
//! Loaded and validated once at start, then handed to each component as its own struct.
//! Unknown keys are an error that names the key and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use solo_kernel::{
    BreakerConfig, EgressConfig, KernelConfig, MonitorConfig, ServiceDefaults, TenantLimits,
};

/// Environment variables with the `SOLO_` prefix that are not server config keys: the
/// client's endpoint and credentials, the config path itself and the master key.
const NOT_CONFIG_KEYS: &[&str] = &[
    "config",
    "endpoint",
    "cert",
    "key",
    "ca",
    "tenant",
    "token",
    "master_key",
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The effective server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the store, the master key and the certificates live.
    pub data_dir: PathBuf,
    /// The gRPC listener (port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// The HTTPS listener (port 0 picks a free port).
    pub http_addr: SocketAddr,
    /// An optional plaintext Prometheus listener, loopback only.
    pub metrics_addr: Option<SocketAddr>,
    /// A `tracing` filter such as `info` or `solo_kernel=debug,info`.
    pub log_level: String,
    pub log_format: LogFormat,
    /// The largest request body (REST) or message (gRPC) the gateway accepts.
    pub max_request_bytes: usize,
    /// Per-tenant and per-service limits.
    pub limits: TenantLimits,
    /// Defaults for the deploy-spec fields a request leaves out.
    pub service_defaults: ServiceDefaults,
    /// Budgets of the resource monitor.
    pub monitor: MonitorConfig,
    /// The per-service circuit breaker.
    pub breaker: BreakerConfig,
    /// Services' HTTP requests out of Solo: limits, timeouts, caps, an extra CA.
    pub egress: EgressConfig,
    pub tls: TlsSection,
    pub mcp: McpSection,
    pub store: StoreSection,
    pub connections: ConnectionsSection,
    pub sandbox: SandboxSection,
    pub cluster: crate::cluster::ClusterSection,
}

/// `[sandbox]`: the instance pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// Instance slots: how many services are awake at once (16 to 100,000; deployed
    /// services may be many more, the rest hibernated). Each reserves address space
    /// (not memory) for the largest instance, and each used slot holds about 7 memory
    /// mappings. Unset: 10,000, lowered at start to fit `vm.max_map_count` (with a
    /// warning); set, it is taken as given (with a warning if it does not fit).
    pub max_instances: Option<u32>,
}

/// `[connections]`: how many the gateway keeps open and how long one may stay silent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsSection {
    /// Open connections at most, on all listeners together. Lowered at start to three
    /// quarters of the process's open-file limit if that is smaller. At the cap, the
    /// quietest connection without a client certificate and with nothing in flight gives
    /// way to the newcomer.
    pub max_open: usize,
    /// A connection that has not finished its TLS handshake by then is closed.
    pub handshake_timeout_ms: u64,
    /// A connection that has not completed a request this long after its handshake is
    /// closed.
    pub first_request_timeout_ms: u64,
    /// A connection with nothing in flight (no request, no open stream) for this long is
    /// closed gracefully; clients reconnect.
    pub idle_timeout_ms: u64,
}

impl Default for ConnectionsSection {
    fn default() -> Self {
        Self {
            max_open: 4096,
            handshake_timeout_ms: 10_000,
            first_request_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
        }
    }
}

/// `[store]`: the embedded store's footprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// The write-ahead log's preallocated size, in MiB (1 to 4096). A full log only means
    /// a checkpoint (a group that does not fit is committed to the database directly),
    /// so a small disk can take a small log.
    pub wal_mb: u64,
    /// Space held back in `solo.reserve`, in MiB (0 to 8192; 0: none), and given up when
    /// a write fails, so that on a full disk the store reopens and serves reads while it
    /// waits for space; writes resume once the reserve can be taken back. Unset: twice
    /// `wal_mb` plus 4, what redb may grow by while it replays a full log.
    pub reserve_mb: Option<u64>,
    /// The database's page cache, in MiB (1 to 65536). It fills as the store is read and
    /// written and then stays at this size: part of the server's resident memory.
    pub cache_mb: u64,
}

impl StoreSection {
    /// The reserve's size in MiB.
    pub fn reserve_mb(&self) -> u64 {
        self.reserve_mb
            .unwrap_or_else(|| self.wal_mb.saturating_mul(2).saturating_add(4))
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            wal_mb: 32,
            reserve_mb: None,
            cache_mb: 64,
        }
    }
}

/// `[tls]`: names the server certificate is issued for, besides localhost, 127.0.0.1
/// and ::1 (used when `solo init` creates it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub server_names: Vec<String>,
}

/// `[mcp]`: who may reach `/mcp` on the HTTPS port, against DNS rebinding. `Host` may
/// always be localhost, 127.0.0.1, ::1 or one of `tls.server_names`; add others here.
/// A request with an `Origin` header (a browser's) is refused unless the origin is listed
/// (`scheme://host:port`, `:*` for any port).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpSection {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
}

impl Config {
    /// The `Host` values `/mcp` accepts.
    pub fn mcp_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
            .map(String::from)
            .to_vec();
        hosts.extend(self.tls.server_names.iter().cloned());
        hosts.extend(self.mcp.allowed_hosts.iter().cloned());
        hosts
    }

    /// The kernel's part of the configuration.
    pub fn kernel(&self) -> KernelConfig {
        KernelConfig {
            service_defaults: self.service_defaults.clone(),
            limits: self.limits.clone(),
            monitor: self.monitor.clone(),
            breaker: self.breaker.clone(),
            egress: self.egress.clone(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./solo-data"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_addr: None,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            max_request_bytes: 8 << 20,
            limits: TenantLimits::default(),
            service_defaults: ServiceDefaults::default(),
            monitor: MonitorConfig::default(),
            breaker: BreakerConfig::default(),
            egress: EgressConfig::default(),
            tls: TlsSection::default(),
            mcp: McpSection::default(),
            store: StoreSection::default(),
            sandbox: SandboxSection::default(),
            connections: ConnectionsSection::default(),
            cluster: crate::cluster::ClusterSection::default(),
        }
    }
}

/// Values given as command-line flags; each overrides every other layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// A configuration failure, naming the key and its source where known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The layered configuration, kept so `--print-config` can say where each value came from.
pub struct Loaded {
    pub config: Config,
    figment: Figment,
}

impl Loaded {
    /// One line per top-level key: `key = value  # source`.
    pub fn describe(&self) -> String {
        let value = serde_json::to_value(&self.config).unwrap_or_default();
        let mut out = String::new();
        if let serde_json::Value::Object(map) = value {
            for (key, v) in map {
                let source = self
                    .figment
                    .find_metadata(&key)
                    .map_or_else(|| "default".to_string(), |m| m.name.to_string());
                let shown = match &v {
                    serde_json::Value::Null => "unset".to_string(),
                    v => toml::Value::try_from(v).map_or_else(|_| v.to_string(), |t| t.to_string()),
                };
                out.push_str(&format!("{key} = {shown}  # {source}\n"));
            }
        }
        out
    }
}

/// Loads the configuration from its layers. `file` is `--config`, falling back to
/// `SOLO_CONFIG`; `env` is the process environment (passed in for tests).
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &FlagOverrides,
) -> Result<Loaded, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let file = file.map(Path::to_path_buf).or_else(|| {
        env.iter()
            .find(|(k, _)| k == "SOLO_CONFIG")
            .map(|(_, v)| PathBuf::from(v))
    });
    let mut figment = Figment::from(Named(Serialized::defaults(Config::default()), "default"));
    if let Some(path) = &file {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.clone()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let solo_env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("SOLO_"))
        .collect();
    figment = figment
        .merge(EnvVars { vars: solo_env })
        .merge(Named(Serialized::globals(flags), "command-line flag"));
    let config: Config = figment
        .extract()
        .map_err(|e| ConfigError::Invalid(describe_figment_error(&e)))?;
    validate(&config)?;
    Ok(Loaded { config, figment })
}

fn describe_figment_error(e: &figment::Error) -> String {
    let mut parts = Vec::new();
    for err in e.clone() {
        let mut s = err.kind.to_string();
        if !err.path.is_empty() {
            s = format!("key `{}`: {s}", err.path.join("."));
        }
        if let Some(m) = &err.metadata {
            s.push_str(&format!(" (from {})", m.name));
            if let Some(src) = &m.source {
                s.push_str(&format!(" {src}"));
            }
        }
        parts.push(s);
    }
    parts.join("; ")
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    if c.data_dir.as_os_str().is_empty() {
        return Err(ConfigError::Invalid("data_dir must not be empty".into()));
    }
    if let Some(addr) = c.metrics_addr
        && !addr.ip().is_loopback()
    {
        return Err(ConfigError::Invalid(format!(
            "metrics_addr {addr} serves plaintext and must be a loopback address"
        )));
    }
    if c.max_request_bytes < 1024 {
        return Err(ConfigError::Invalid(format!(
            "max_request_bytes {} is too small; at least 1024",
            c.max_request_bytes
        )));
    }
    if !(1..=65536).contains(&c.store.cache_mb) {
        return Err(ConfigError::Invalid(format!(
            "store.cache_mb {} must be between 1 and 65536",
            c.store.cache_mb
        )));
    }
    if let Some(n) = c.sandbox.max_instances
        && !(16..=100_000).contains(&n)
    {
        return Err(ConfigError::Invalid(format!(
            "sandbox.max_instances {n} must be between 16 and 100000"
        )));
    }
    c.cluster.validate().map_err(ConfigError::Invalid)?;
    if !(1..=4096).contains(&c.store.wal_mb) {
        return Err(ConfigError::Invalid(format!(
            "store.wal_mb {} must be between 1 and 4096",
            c.store.wal_mb
        )));
    }
    if let Some(mb) = c.store.reserve_mb
        && mb > 8192
    {
        return Err(ConfigError::Invalid(format!(
            "store.reserve_mb {mb} must be between 0 and 8192"
        )));
    }
    let e = &c.egress;
    if !(1..=600_000).contains(&e.connect_timeout_ms)
        || !(1..=3_600_000).contains(&e.total_timeout_ms)
    {
        return Err(ConfigError::Invalid(format!(
            "egress.connect_timeout_ms {} must be 1 to 600000 and egress.total_timeout_ms {} 1 to 3600000",
            e.connect_timeout_ms, e.total_timeout_ms
        )));
    }
    if !(1..=(64 << 20)).contains(&e.max_request_bytes)
        || !(1..=(1 << 30)).contains(&e.max_response_bytes)
    {
        return Err(ConfigError::Invalid(format!(
            "egress.max_request_bytes {} must be 1 to 64 MiB and egress.max_response_bytes {} 1 to 1 GiB",
            e.max_request_bytes, e.max_response_bytes
        )));
    }
    if e.max_redirects > 20 {
        return Err(ConfigError::Invalid(format!(
            "egress.max_redirects {} must be 0 to 20",
            e.max_redirects
        )));
    }
    if c.connections.max_open == 0 {
        return Err(ConfigError::Invalid(
            "connections.max_open must be at least 1".into(),
        ));
    }
    for (key, ms) in [
        ("handshake_timeout_ms", c.connections.handshake_timeout_ms),
        (
            "first_request_timeout_ms",
            c.connections.first_request_timeout_ms,
        ),
        ("idle_timeout_ms", c.connections.idle_timeout_ms),
    ] {
        if !(100..=86_400_000).contains(&ms) {
            return Err(ConfigError::Invalid(format!(
                "connections.{key} {ms} must be between 100 (0.1 s) and 86400000 (a day)"
            )));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&c.log_level)
        .map_err(|e| ConfigError::Invalid(format!("log_level {:?}: {e}", c.log_level)))?;
    Ok(())
}

/// The `SOLO_*` environment variables as a figment provider: `SOLO_A__B` is key `a.b`.
/// It reads an explicit list rather than the process environment, so tests need no
/// global state.
struct EnvVars {
    vars: Vec<(String, String)>,
}

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("`SOLO_` environment variable(s)")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (k, v) in &self.vars {
            let Some(rest) = k.strip_prefix("SOLO_") else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if NOT_CONFIG_KEYS.contains(&key.as_str()) || key.is_empty() {
                continue;
            }
            let value: figment::value::Value = v.parse().unwrap_or_else(|_| v.clone().into());
            let parts: Vec<&str> = key.split("__").collect();
            insert_path(&mut dict, &parts, value);
        }
        Ok(figment::Profile::Global.collect(dict))
    }
}

/// A provider under a name of our choosing, for `--print-config`.
struct Named<P>(P, &'static str);

impl<P: figment::Provider> figment::Provider for Named<P> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.1)
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        self.0.data()
    }
}

fn insert_path(dict: &mut figment::value::Dict, parts: &[&str], value: figment::value::Value) {
    match parts {
        [] => {}
        [leaf] => {
            dict.insert((*leaf).to_string(), value);
        }
        [head, rest @ ..] => {
            let entry = dict
                .entry((*head).to_string())
                .or_insert_with(|| figment::value::Dict::new().into());
            if !matches!(entry, figment::value::Value::Dict(..)) {
                *entry = figment::value::Dict::new().into();
            }
            if let figment::value::Value::Dict(_, sub) = entry {
                insert_path(sub, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("solo.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults() {
        let c = load(None, env(&[]), &FlagOverrides::default())
            .unwrap()
            .config;
        assert_eq!(c, Config::default());
        assert_eq!(c.data_dir, PathBuf::from("./solo-data"));
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "data_dir = \"/from/file\"\ngrpc_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\n",
        );
        let e = env(&[
            ("SOLO_GRPC_ADDR", "127.0.0.1:3"),
            ("SOLO_HTTP_ADDR", "127.0.0.1:4"),
            ("SOLO_ENDPOINT", "ignored: a client variable"),
            ("OTHER", "x"),
        ]);
        let flags = FlagOverrides {
            http_addr: Some("127.0.0.1:5".parse().unwrap()),
            ..FlagOverrides::default()
        };
        let loaded = load(Some(&file), e, &flags).unwrap();
        let c = &loaded.config;
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:3");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:5");
        let described = loaded.describe();
        assert!(
            described.contains("data_dir = \"/from/file\"  # TOML file"),
            "{described}"
        );
        assert!(
            described.contains("log_level = \"info\"  # default"),
            "{described}"
        );
        assert!(
            described.contains("http_addr = \"127.0.0.1:5\"  # command-line flag"),
            "{described}"
        );
        assert!(
            described.contains("grpc_addr = \"127.0.0.1:3\"  # `SOLO_` environment"),
            "{described}"
        );
    }

    #[test]
    fn store_and_pool_sizes_are_configurable_within_bounds() {
        let e = env(&[
            ("SOLO_STORE__WAL_MB", "2"),
            ("SOLO_STORE__CACHE_MB", "8"),
            ("SOLO_SANDBOX__MAX_INSTANCES", "64"),
        ]);
        let c = load(None, e, &FlagOverrides::default()).unwrap().config;
        let got = (c.store.wal_mb, c.store.cache_mb, c.sandbox.max_instances);
        assert_eq!(got, (2, 8, Some(64)));
        for (key, bad, name) in [
            ("SOLO_STORE__CACHE_MB", "0", "store.cache_mb"),
            ("SOLO_STORE__WAL_MB", "0", "store.wal_mb"),
            ("SOLO_STORE__WAL_MB", "5000", "store.wal_mb"),
            ("SOLO_SANDBOX__MAX_INSTANCES", "15", "sandbox.max_instances"),
            (
                "SOLO_SANDBOX__MAX_INSTANCES",
                "100001",
                "sandbox.max_instances",
            ),
        ] {
            let Err(e) = load(None, env(&[(key, bad)]), &FlagOverrides::default()) else {
                panic!("{key}={bad} was taken");
            };
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn connection_limits_are_configurable_within_bounds() {
        let e = env(&[
            ("SOLO_CONNECTIONS__MAX_OPEN", "300"),
            ("SOLO_CONNECTIONS__IDLE_TIMEOUT_MS", "60000"),
        ]);
        let c = load(None, e, &FlagOverrides::default()).unwrap().config;
        assert_eq!(c.connections.max_open, 300);
        assert_eq!(c.connections.idle_timeout_ms, 60_000);
        assert_eq!(c.connections.first_request_timeout_ms, 10_000);
        for (key, bad) in [
            ("SOLO_CONNECTIONS__MAX_OPEN", "0"),
            ("SOLO_CONNECTIONS__FIRST_REQUEST_TIMEOUT_MS", "5"),
            ("SOLO_CONNECTIONS__HANDSHAKE_TIMEOUT_MS", "100000000"),
        ] {
            let Err(e) = load(None, env(&[(key, bad)]), &FlagOverrides::default()) else {
                panic!("{key}={bad} was taken");
            };
            assert!(e.to_string().contains("connections."), "{e}");
        }
    }

    #[test]
    fn sections_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "[limits]\nmax_services_per_tenant = 7\n[tls]\nserver_names = [\"solo.example\"]\n\
             [mcp]\nallowed_origins = [\"https://agent.example:443\"]\n",
        );
        let e = env(&[("SOLO_SERVICE_DEFAULTS__MEMORY_MB", "32")]);
        let c = load(Some(&file), e, &FlagOverrides::default())
            .unwrap()
            .config;
        assert_eq!(c.limits.max_services_per_tenant, 7);
        assert_eq!(c.tls.server_names, vec!["solo.example".to_string()]);
        assert!(c.mcp_hosts().contains(&"solo.example".to_string()));
        assert!(c.mcp_hosts().contains(&"127.0.0.1".to_string()));
        assert_eq!(
            c.mcp.allowed_origins,
            vec!["https://agent.example:443".to_string()]
        );
        assert_eq!(c.kernel().service_defaults.memory_mb, 32);
        let err = load(
            None,
            env(&[("SOLO_LIMITS__MAX_SERVICES", "1")]),
            &FlagOverrides::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("max_services"), "{err}");
    }

    #[test]
    fn config_path_from_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "log_level = \"debug\"\n");
        let e = vec![("SOLO_CONFIG".to_string(), file.display().to_string())];
        let c = load(None, e, &FlagOverrides::default()).unwrap().config;
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "grpc_adr = \"127.0.0.1:1\"\n");
        let err = load(Some(&file), env(&[]), &FlagOverrides::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("grpc_adr"), "{err}");
        assert!(err.contains("TOML file"), "{err}");

        let err = load(
            None,
            env(&[("SOLO_GRPC_PORT", "1")]),
            &FlagOverrides::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("grpc_port"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = load(
            None,
            env(&[("SOLO_GRPC_ADDR", "not an address")]),
            &FlagOverrides::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("grpc_addr"), "{err}");

        let err = load(
            None,
            env(&[("SOLO_METRICS_ADDR", "0.0.0.0:9000")]),
            &FlagOverrides::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load(
            Some(Path::new("/nonexistent/solo.toml")),
            env(&[]),
            &FlagOverrides::default(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, ConfigError::MissingFile(_)));
    }
}
