//! Solo on several machines: the store traits over one replicated NATS JetStream log.
//!
//! Every write batch (key-value operations and events, exactly what the embedded store
//! commits) is one entry of a replicated, file-backed JetStream stream whose servers sync
//! every write. The stream's order is the cluster's one total order; every node applies
//! the entries in that order to a local view (a [`solo_store::RedbStore`] in its data
//! directory), stamping events from the entry's own clock, so every node assigns the same
//! dense event ids and the same hash chain. Reads, subscriptions and `verify` are served
//! by the local view; a write is acknowledged once the stream has stored it on a quorum
//! and this node's view has applied it.
//!
//! See [`JetStreamStore`] for the write path, [`check`] for what the node refuses to
//! start on, [`compact`] for how the log is kept short, and [`membership`] for the
//! heartbeats that tell who is in the cluster.

pub mod check;
pub mod compact;
mod lease;
pub mod membership;
mod options;
pub mod placement;
mod store;
pub mod testing;

pub use compact::Compaction;
pub use lease::Lease;
pub use membership::{Heartbeat, Member, Membership};
pub use options::{ClusterOptions, NatsTls};
pub use store::JetStreamStore;
