//! Placement: which node serves which tenant. A tenant is placed on a node by a lease
//! held under the node's own (`tenant/<id>` under `node/<node>`, see [`crate::Lease`]),
//! so it stays there exactly as long as the node keeps its lease, and is placed again,
//! on a node that still holds its own, once that one lapses.
//!
//! The plan is a pure function of what the log holds: a tenant placed on a live node
//! stays (moving it would restart every service it runs); every other tenant goes to
//! the live node with the least load, counted in services, the heaviest tenants first
//! and ties by name, so that every placer given the same view plans the same moves. Two
//! placers racing for one tenant are decided by the log: one placement holds, the other
//! is refused as held and skipped.

use std::collections::BTreeMap;

use solo_store::{Kv, StoreError};

use crate::lease::Leases;
use crate::{JetStreamStore, Lease};

/// The scope of a node's own lease: `node/<node>`.
pub fn node_scope(node: &str) -> String {
    format!("{NODE_PREFIX}{node}")
}

/// The scope of a tenant's placement: `tenant/<tenant>`.
pub fn tenant_scope(tenant: &str) -> String {
    format!("{TENANT_PREFIX}{tenant}")
}

const NODE_PREFIX: &str = "node/";
const TENANT_PREFIX: &str = "tenant/";

/// The moves that place every tenant of `wanted` (tenant → how many services it runs)
/// not already on a node of `live` (node → the tenants placed on it, with theirs): each
/// to the least-loaded live node. No move when no node is live.
pub fn plan(
    wanted: &BTreeMap<String, usize>,
    live: &BTreeMap<String, Vec<String>>,
) -> Vec<(String, String)> {
    let mut load: BTreeMap<&str, usize> = live
        .iter()
        .map(|(node, tenants)| {
            let services = tenants.iter().map(|t| wanted.get(t).copied().unwrap_or(0));
            (node.as_str(), services.sum())
        })
        .collect();
    let placed: std::collections::HashSet<&str> =
        live.values().flatten().map(String::as_str).collect();
    let mut unplaced: Vec<(&str, usize)> = wanted
        .iter()
        .filter(|(t, _)| !placed.contains(t.as_str()))
        .map(|(t, n)| (t.as_str(), *n))
        .collect();
    unplaced.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut moves = Vec::with_capacity(unplaced.len());
    for (tenant, services) in unplaced {
        // The least-loaded node, ties by name (the map's order: min_by keeps the first).
        let Some((&node, _)) = load.iter().min_by_key(|(_, l)| **l) else {
            break;
        };
        *load.entry(node).or_default() += services.max(1);
        moves.push((tenant.to_string(), node.to_string()));
    }
    moves
}

impl JetStreamStore {
    /// The live nodes (holding their own lease at `now_ns` in this node's view), each
    /// with the tenants placed on it.
    pub fn placements(&self, now_ns: i64) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        let snap = Leases::load(self.view().snapshot()?.as_ref())?;
        let mut live: BTreeMap<String, Vec<String>> = snap
            .with_prefix(NODE_PREFIX)
            .into_iter()
            .filter(|l| l.under.is_none() && l.expires_ns > now_ns)
            .filter_map(|l| Some((l.scope.strip_prefix(NODE_PREFIX)?.to_string(), Vec::new())))
            .collect();
        for l in snap.with_prefix(TENANT_PREFIX) {
            if l.expires_ns > now_ns
                && let (Some(tenant), Some(tenants)) =
                    (l.scope.strip_prefix(TENANT_PREFIX), live.get_mut(&l.holder))
            {
                tenants.push(tenant.to_string());
            }
        }
        Ok(live)
    }

    /// Places every tenant of `wanted` (tenant → its services) that is not on a live
    /// node by this node's view at `now_ns`, per [`plan`]; returns the placements made.
    /// A tenant another placer placed first, or a node whose lease lapsed meanwhile, is
    /// skipped (the next round plans again); any other refusal is returned.
    pub async fn place_tenants(
        &self,
        wanted: &BTreeMap<String, usize>,
        now_ns: i64,
    ) -> Result<Vec<Lease>, StoreError> {
        let live = self.placements(now_ns)?;
        let mut placed = Vec::new();
        for (tenant, node) in plan(wanted, &live) {
            match self
                .place(&tenant_scope(&tenant), &node, &node_scope(&node))
                .await
            {
                Ok(lease) => placed.push(lease),
                Err(StoreError::LeaseHeld { .. } | StoreError::Fenced { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(placed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wanted(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(t, n)| ((*t).to_string(), *n)).collect()
    }

    fn live(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(n, ts)| {
                (
                    (*n).to_string(),
                    ts.iter().map(|t| (*t).to_string()).collect(),
                )
            })
            .collect()
    }

    fn moves(m: &[(&str, &str)]) -> Vec<(String, String)> {
        m.iter()
            .map(|(t, n)| ((*t).to_string(), (*n).to_string()))
            .collect()
    }

    #[test]
    fn tenants_go_to_the_least_loaded_node_heaviest_first() {
        let w = wanted(&[("a", 1), ("b", 5), ("c", 2), ("d", 2)]);
        let plan = plan(&w, &live(&[("n1", &[]), ("n2", &[]), ("n3", &[])]));
        // b (5) to n1; c and d (2, by name) to n2 and n3; a to n2 (2 < 5, by name).
        assert_eq!(
            plan,
            moves(&[("b", "n1"), ("c", "n2"), ("d", "n3"), ("a", "n2")])
        );
    }

    #[test]
    fn placed_tenants_stay_and_count_toward_their_node() {
        let w = wanted(&[("a", 4), ("b", 1), ("c", 1)]);
        let plan = plan(&w, &live(&[("n1", &["a"]), ("n2", &[])]));
        assert_eq!(plan, moves(&[("b", "n2"), ("c", "n2")]));
        // Everything placed: nothing to do. A tenant with no services counts one.
        let w = wanted(&[("a", 0), ("b", 0)]);
        assert!(super::plan(&w, &live(&[("n1", &["a", "b"])])).is_empty());
        let plan = super::plan(&w, &live(&[("n1", &[]), ("n2", &[])]));
        assert_eq!(plan, moves(&[("a", "n1"), ("b", "n2")]));
    }

    #[test]
    fn no_live_node_no_move() {
        assert!(plan(&wanted(&[("a", 1)]), &BTreeMap::new()).is_empty());
    }
}
