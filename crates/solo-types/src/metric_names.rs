//! Every Prometheus metric name Solo exports, in one place.

pub const EVENTS_APPENDED: &str = "solo_events_appended_total";
pub const STORE_COMMITS: &str = "solo_store_commits_total";
pub const STORE_COMMIT_FAILURES: &str = "solo_store_commit_failures_total";
pub const STORE_AVAILABLE: &str = "solo_store_available";
pub const STORE_COMMIT_SECONDS: &str = "solo_store_commit_seconds";
pub const STORE_BATCH_EVENTS: &str = "solo_store_batch_events";
pub const SUBSCRIBER_CATCHUPS: &str = "solo_event_subscriber_catchups_total";
pub const EVENTS_LAST_ID: &str = "solo_events_last_id";
pub const DEPLOYMENTS: &str = "solo_deployments_total";
pub const CALLS: &str = "solo_calls_total";
pub const CALL_SECONDS: &str = "solo_call_seconds";
pub const SERVICES: &str = "solo_services";
/// Running services whose actor is parked: idle, the instance kept, no task.
pub const SERVICES_PARKED: &str = "solo_services_parked";
pub const RESTARTS: &str = "solo_service_restarts_total";
/// Idle services put to sleep (state saved, instance given back).
pub const HIBERNATIONS: &str = "solo_service_hibernations_total";
/// Awake services' snapshots saved between messages (`services.checkpoint_every_ms`).
pub const CHECKPOINTS: &str = "solo_service_checkpoints_total";
/// Hibernated services woken by a message, by outcome (`ok`, `failed`).
pub const WAKES: &str = "solo_service_wakes_total";
/// How long a wake took (instance, init, restore), in seconds.
pub const WAKE_SECONDS: &str = "solo_service_wake_seconds";
pub const CAPABILITY_DECISIONS: &str = "solo_capability_decisions_total";
pub const SECRET_ACCESSES: &str = "solo_secret_accesses_total";
/// Services' HTTP requests out of Solo, by tenant and outcome (`ok`, `denied`, `failed`).
pub const EGRESS_REQUESTS: &str = "solo_egress_requests_total";
pub const GATEWAY_CONNECTIONS: &str = "solo_gateway_connections_open";
pub const GATEWAY_HANDSHAKE_FAILURES: &str = "solo_gateway_tls_handshake_failures_total";
pub const GATEWAY_CONNECTIONS_CLOSED: &str = "solo_gateway_connections_closed_total";
pub const GATEWAY_ACCEPT_FAILURES: &str = "solo_gateway_accept_failures_total";
pub const LOAD_SHED: &str = "solo_load_shed_total";
/// Rate-limit refusals held before their answer (the tenant ignored its retry hints).
pub const REFUSALS_HELD: &str = "solo_refusals_held_total";
pub const BREAKER_OPEN: &str = "solo_circuit_breaker_open";
pub const RESOURCE_PRESSURE: &str = "solo_resource_pressure";
/// Cluster mode: the last entry of the log this node's view has applied.
pub const CLUSTER_APPLIED_SEQUENCE: &str = "solo_cluster_applied_sequence";
/// Cluster mode: publishes of this node's writes retried while the log had no leader or
/// no quorum.
pub const CLUSTER_PUBLISH_RETRIES: &str = "solo_cluster_publish_retries_total";
/// Cluster mode: the active node's lease renewals, by outcome (`ok`, `failed`).
pub const CLUSTER_LEASE_RENEWALS: &str = "solo_cluster_lease_renewals_total";
/// Cluster mode: the epoch of the lease the active node holds.
pub const CLUSTER_LEASE_EPOCH: &str = "solo_cluster_lease_epoch";
/// Cluster mode: the nodes whose last heartbeat is younger than a lease, as this node
/// last read them (itself included).
pub const CLUSTER_NODES_BEATING: &str = "solo_cluster_nodes_beating";
/// Cluster mode: 1 while this node is the active one, 0 while it stands by.
pub const CLUSTER_ACTIVE: &str = "solo_cluster_active";
/// Cluster mode: the log's first entry (compaction purged those before it).
pub const CLUSTER_LOG_FIRST_SEQUENCE: &str = "solo_cluster_log_first_sequence";
/// Cluster mode: the active node's compactions of the log, by outcome (`ok`, `failed`).
pub const CLUSTER_COMPACTIONS: &str = "solo_cluster_compactions_total";
/// Cluster mode: requests a standby forwarded, by outcome (`forwarded` to the active
/// node and answered, `refused` with nobody to reach, `lost` when the serving node went
/// away before it answered).
pub const CLUSTER_FORWARDED_REQUESTS: &str = "solo_cluster_forwarded_requests_total";
