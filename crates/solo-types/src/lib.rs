//! Solo's shared domain types: validated ids, events, event queries, error codes,
//! metric names, the clock, and the operations' inputs and answers (`api`).
//!
//! Architecture invariant: this crate does no IO and knows nothing of async, storage,
//! sandboxes or the wire. Everything above it converts into these types at its edge.

pub mod api;
pub mod caps;
pub mod clock;
pub mod code;
pub mod egress;
pub mod event;
pub mod fuzz;
pub mod ids;
pub mod metric_names;
pub mod query;
pub mod spec;

pub use caps::{Permission, Permissions, Resource, valid_secret_name};
pub use code::Code;
pub use event::{Event, NewEvent, kinds};
pub use ids::{IdError, ServiceId, TenantId};
pub use query::{EventFilter, EventPage, EventQuery, Order};
pub use spec::{
    CrashReport, DeploySpec, Format, RESERVED_TOOL_PREFIX, RestartPolicy, ServiceLimits,
    ServiceState, ServiceStatus, ToolSpec,
};
