//! Guards that keep the picture in ARCHITECTURE.md true: the layering rules, read from
//! `cargo metadata` (the resolved graph of normal dependencies), and the tidy rules
//! every source file follows (a `//!` opening line; no file over 700 lines in the
//! upper crates; the kernel's facade short).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The platform this test runs on (`rustc -vV`'s host).
fn host() -> String {
    let out = Command::new("rustc").arg("-vV").output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names its host")
        .to_string()
}

/// Package name → the names of its normal (not dev, not build) dependencies, resolved
/// for this platform (with what the build already fetched: no network).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host()])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut g = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| name_of[d["pkg"].as_str().unwrap()].to_string())
            .collect();
        g.insert(name_of[node["id"].as_str().unwrap()].to_string(), deps);
    }
    g
}

/// Every package `from` depends on, directly or not, with one path to each.
fn reachable(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut todo = vec![(from.to_string(), from.to_string())];
    while let Some((pkg, path)) = todo.pop() {
        for d in g.get(&pkg).into_iter().flatten() {
            if !seen.contains_key(d) {
                let p = format!("{path} -> {d}");
                seen.insert(d.clone(), p.clone());
                todo.push((d.clone(), p));
            }
        }
    }
    seen
}

/// The rules: a crate, and what it must never depend on (directly or not).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "solo-kernel",
        &["tonic", "axum", "solo-proto", "solo-gateway", "solo-client"],
        "the kernel knows nothing of the wire: the faces convert at their edge",
    ),
    (
        "solo-client",
        &[
            "solo-kernel",
            "solo-sandbox",
            "wasmtime",
            "solo-store",
            "solo-gateway",
        ],
        "the client speaks the wire and the API types only, so it stays small",
    ),
    (
        "solo-mcp",
        &[
            "solo-kernel",
            "solo-gateway",
            "solo-client",
            "solo-proto",
            "solo-store",
            "solo-sandbox",
            "tonic",
        ],
        "the MCP face is a codec over the operations' types: a backend brings the operations",
    ),
    (
        "solo-proto",
        &["solo-kernel", "solo-sandbox", "wasmtime", "solo-store"],
        "the wire contract pulls in nothing of the server",
    ),
    (
        "solo-types",
        &["tokio", "solo-store", "solo-sandbox", "solo-kernel"],
        "the shared types do no IO and know nothing of async",
    ),
    (
        "solo-store",
        &[
            "solo-kernel",
            "solo-gateway",
            "solo-sandbox",
            "solo-caps",
            "solo-vault",
            "solo-supervisor",
            "solo-proto",
            "solo-client",
            "solo-cluster",
            "async-nats",
            "solo",
        ],
        "the store is below everything but the types",
    ),
    (
        "solo-cluster",
        &[
            "solo-kernel",
            "solo-gateway",
            "solo-sandbox",
            "solo-caps",
            "solo-vault",
            "solo-supervisor",
            "solo-proto",
            "solo-client",
            "wasmtime",
            "solo",
        ],
        "the replicated store sits beside the embedded one, under the kernel",
    ),
];

/// Rules on direct dependencies only.
const DIRECT: &[(&str, &[&str], &str)] = &[(
    "solo-gateway",
    &[
        "solo-store",
        "solo-sandbox",
        "wasmtime",
        "solo-vault",
        "solo-caps",
    ],
    "the gateway reaches the store, the sandbox and the vault only through the kernel",
)];

/// Rules with gates: a crate reaches a package only through the named crates.
const GATED: &[(&str, &str, &[&str], &str)] = &[(
    "solo-kernel",
    "hyper",
    &["solo-egress", "wasmtime-wasi-http"],
    "HTTP reaches the kernel only as services' requests out (the egress client) and \
     wasi:http's types, never as a face",
)];

/// What `from` depends on without passing through `gates`.
fn reachable_except(
    g: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    gates: &[&str],
) -> BTreeMap<String, String> {
    let mut cut = g.clone();
    for gate in gates {
        cut.insert((*gate).to_string(), BTreeSet::new());
    }
    reachable(&cut, from)
}

#[test]
fn the_layering_rules_hold() {
    let g = graph();
    let mut broken = Vec::new();
    for (krate, never, gates, why) in GATED {
        if let Some(path) = reachable_except(&g, krate, gates).get(*never) {
            broken.push(format!(
                "{krate} must not depend on {never} ({why}): {path}"
            ));
        }
    }
    for (krate, never, why) in RULES {
        assert!(g.contains_key(*krate), "no package {krate}");
        let deps = reachable(&g, krate);
        for n in *never {
            if let Some(path) = deps.get(*n) {
                broken.push(format!("{krate} must not depend on {n} ({why}): {path}"));
            }
        }
    }
    for (krate, never, why) in DIRECT {
        for n in *never {
            if g[*krate].contains(*n) {
                broken.push(format!("{krate} must not depend directly on {n} ({why})"));
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

/// Every Rust file the repository tracks, except generated ones.
fn sources() -> Vec<PathBuf> {
    let out = Command::new("git")
        .args(["ls-files", "-co", "--exclude-standard", "*.rs"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| root().join(l))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let files = sources();
    assert!(files.len() > 50, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files that do not open with a //! line:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_module_in_the_upper_crates_is_too_big() {
    let root = root();
    let upper = [
        "crates/solo-kernel/",
        "crates/solo-gateway/",
        "crates/solo-mcp/",
        "crates/solo/",
    ];
    let mut big = Vec::new();
    for p in sources() {
        let rel = p.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        if !upper.iter().any(|u| rel.starts_with(u)) {
            continue;
        }
        let lines = std::fs::read_to_string(&p).unwrap().lines().count();
        let limit = if rel == "crates/solo-kernel/src/lib.rs" {
            400
        } else {
            700
        };
        if lines > limit {
            big.push(format!(
                "{rel}: {lines} lines (at most {limit}); what is the second module?"
            ));
        }
    }
    assert!(big.is_empty(), "{}", big.join("\n"));
}
