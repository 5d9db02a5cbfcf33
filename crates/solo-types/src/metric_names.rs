//! Every Prometheus metric name Solo exports, in one place.

pub const EVENTS_APPENDED: &str = "solo_events_appended_total";
pub const STORE_COMMITS: &str = "solo_store_commits_total";
pub const STORE_COMMIT_FAILURES: &str = "solo_store_commit_failures_total";
pub const STORE_COMMIT_SECONDS: &str = "solo_store_commit_seconds";
pub const STORE_BATCH_EVENTS: &str = "solo_store_batch_events";
pub const SUBSCRIBER_CATCHUPS: &str = "solo_event_subscriber_catchups_total";
