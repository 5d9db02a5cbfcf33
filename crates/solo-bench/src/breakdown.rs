//! Where an idle JavaScript service's memory goes: resident pages of the instances'
//! linear memories (split by region: the runner's stack, its static data, its heap)
//! against everything else the process holds for them (wasmtime's per-store state, the
//! sandbox's and the host API's), read from `/proc/self/smaps`, and the resident runs
//! of one instance's linear memory from `/proc/self/pagemap`, after 1,000 JS echo
//! services are instantiated and init'd.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use serde_json::json;
use solo_sandbox::testing::MemoryHost;
use solo_sandbox::{Format, Instance, Sandbox, SandboxConfig};

const N: usize = 1000;
const PAGE: u64 = 4096;

/// `(start, end, rss_bytes, private_bytes)` of each mapping (private: pages only this
/// mapping has, clean or dirty; the rest of its RSS is shared, for instance with the
/// copy-on-write memory image every instance of a component maps).
fn mappings() -> anyhow::Result<Vec<(u64, u64, u64, u64)>> {
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            out.push((a, b, 0, 0));
        } else if let Some((key, value)) = line.split_once(':')
            && let Some(last) = out.last_mut()
        {
            let kb = || value.trim().trim_end_matches("kB").trim().parse::<u64>();
            match key {
                "Rss" => last.2 = kb()? * 1024,
                "Private_Clean" | "Private_Dirty" => last.3 += kb()? * 1024,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Which pages of `[start, start + len)` are resident.
fn resident(start: u64, len: u64) -> anyhow::Result<Vec<bool>> {
    let mut f = std::fs::File::open("/proc/self/pagemap")?;
    f.seek(SeekFrom::Start(start / PAGE * 8))?;
    let mut buf = vec![0u8; usize::try_from(len / PAGE * 8)?];
    f.read_exact(&mut buf)?;
    Ok(buf
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) >> 63 == 1)
        .collect())
}

#[allow(clippy::cast_precision_loss)]
pub async fn js() -> anyhow::Result<serde_json::Value> {
    linear(Format::Js, solo_guests::js("echo").into_bytes()).await
}

/// The same for the WebAssembly echo component (built with the SDK).
pub async fn wasm() -> anyhow::Result<serde_json::Value> {
    linear(Format::Wasm, solo_guests::wasm("echo")).await
}

#[allow(clippy::cast_precision_loss)]
async fn linear(format: Format, code: Vec<u8>) -> anyhow::Result<serde_json::Value> {
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 1100,
        ..SandboxConfig::default()
    })?;
    let host = Arc::new(MemoryHost::new());
    let artifact = sandbox.compile(format, code.into()).await?;
    let before = mappings()?;
    let total_before = crate::sandbox::rss();
    let mut all: Vec<Box<dyn Instance>> = Vec::with_capacity(N);
    for _ in 0..N {
        let mut inst = sandbox
            .instantiate(&artifact, crate::sandbox::limits(), host.clone())
            .await?;
        inst.init("{}").await.map_err(|e| anyhow::anyhow!("{e}"))?;
        all.push(inst);
    }
    let total = crate::sandbox::rss().saturating_sub(total_before);
    let after = mappings()?;
    // Linear memories are the pool's read-write windows, one per instance, all of the
    // same size: group the mappings that grew by size, and take the group of about N.
    // (count, rss grown, private grown, one start) by mapping size.
    let mut groups: std::collections::BTreeMap<u64, (usize, u64, u64, u64)> = Default::default();
    for &(a, b, rss, private) in &after {
        let was = before.iter().find(|m| m.0 == a && m.1 == b);
        let (rss_was, private_was) = was.map_or((0, 0), |m| (m.2, m.3));
        if rss > rss_was {
            let g = groups.entry(b - a).or_default();
            g.0 += 1;
            g.1 += rss - rss_was;
            g.2 += private.saturating_sub(private_was);
            g.3 = a;
        }
    }
    let (size, (count, linear, _, one)) = groups
        .iter()
        .max_by_key(|(_, g)| g.0)
        .map(|(s, g)| (*s, *g))
        .ok_or_else(|| anyhow::anyhow!("no mapping grew"))?;
    let private_total: u64 = groups.values().map(|g| g.2).sum();
    // The resident runs of one of them, from its start: the runner's stack (up to
    // 1 MiB), its static data, its heap.
    let pages = resident(one, size)?;
    let mut runs = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    for (i, r) in pages.iter().enumerate() {
        let i = i as u64;
        match (&mut run, *r) {
            (Some((_, len)), true) => *len += 1,
            (None, true) => run = Some((i, 1)),
            (Some(_), false) => runs.extend(run.take()),
            (None, false) => {}
        }
    }
    runs.extend(run);
    let runs: Vec<_> = runs
        .iter()
        .map(|(off, len)| json!({ "offset_kib": off * PAGE / 1024, "kib": len * PAGE / 1024 }))
        .collect();
    let biggest_others: Vec<_> = groups
        .iter()
        .filter(|(s, _)| **s != size)
        .map(|(s, g)| {
            // For a mapping every instance has, where in one of them its pages are.
            let pages: Vec<u64> = if g.0 >= N / 2 {
                resident(g.3, *s)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| **r)
                    .map(|(i, _)| i as u64 * PAGE / 1024)
                    .collect()
            } else {
                Vec::new()
            };
            json!({ "mapping_kib": s / 1024, "count": g.0, "rss_grew_kib": g.1 / 1024,
                    "private_grew_kib": g.2 / 1024, "one_start": format!("{:x}", g.3),
                    "resident_pages_at_kib": pages })
        })
        .collect();
    Ok(json!({
        "instances": N,
        "total_kib_per_instance": total as f64 / N as f64 / 1024.0,
        "private_kib_per_instance": private_total as f64 / N as f64 / 1024.0,
        "linear_memory_kib_per_instance": linear as f64 / N as f64 / 1024.0,
        "outside_linear_memory_kib_per_instance": total.saturating_sub(linear) as f64 / N as f64 / 1024.0,
        "linear_memory_mappings": count, "linear_memory_kib": size / 1024,
        "one_linear_memory_resident_runs": runs,
        "other_mappings_that_grew": biggest_others,
    }))
}
