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

/// `(start, end, rss_bytes)` of each mapping.
fn mappings() -> anyhow::Result<Vec<(u64, u64, u64)>> {
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            out.push((a, b, 0));
        } else if let Some(kb) = line.strip_prefix("Rss:")
            && let Some(last) = out.last_mut()
        {
            last.2 = kb.trim().trim_end_matches("kB").trim().parse::<u64>()? * 1024;
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
    let sandbox = Sandbox::new(SandboxConfig {
        max_instances: 1100,
        ..SandboxConfig::default()
    })?;
    let host = Arc::new(MemoryHost::new());
    let artifact = sandbox
        .compile(Format::Js, solo_guests::js("echo").into_bytes().into())
        .await?;
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
    // The pool's linear memories: the largest mapping.
    let pool = *after
        .iter()
        .max_by_key(|(a, b, _)| b - a)
        .ok_or_else(|| anyhow::anyhow!("no mappings"))?;
    let pool_before = before
        .iter()
        .find(|(a, b, _)| *a == pool.0 && *b == pool.1)
        .map_or(0, |m| m.2);
    let linear = pool.2.saturating_sub(pool_before);
    // Resident pages of the first slots, by region: a slot begins where a run of
    // resident pages begins after an empty stretch (every instance has written its
    // stack's top), and the stride is the distance between two such starts.
    let scan = (64u64 << 30).min(pool.1 - pool.0);
    let pages = resident(pool.0, scan)?;
    let mut starts = Vec::new();
    let mut gap = u64::MAX;
    for (i, &r) in pages.iter().enumerate() {
        if r {
            if gap > 4096 {
                starts.push(i as u64);
            }
            gap = 0;
        } else {
            gap = gap.saturating_add(1);
        }
    }
    let stride = match starts.as_slice() {
        [a, b, ..] => b - a,
        _ => 0,
    };
    // The resident runs of one slot, from its first written page: the stack's written
    // top, then the static data at 1 MiB, then the heap.
    let mut runs = Vec::new();
    if let [first, ..] = starts.as_slice() {
        let end = first + if stride > 0 { stride } else { 1 << 16 };
        let mut run: Option<(u64, u64)> = None;
        for p in *first..end.min(pages.len() as u64) {
            let r = pages[usize::try_from(p)?];
            match (&mut run, r) {
                (Some((_, len)), true) => *len += 1,
                (None, true) => run = Some((p - first, 1)),
                (Some(_), false) => runs.extend(run.take()),
                (None, false) => {}
            }
        }
        runs.extend(run);
    }
    let runs: Vec<_> = runs
        .iter()
        .map(|(off, len)| json!({ "offset_kib": off * PAGE / 1024, "kib": len * PAGE / 1024 }))
        .collect();
    Ok(json!({
        "instances": N,
        "total_kib_per_instance": total as f64 / N as f64 / 1024.0,
        "linear_memory_kib_per_instance": linear as f64 / N as f64 / 1024.0,
        "outside_linear_memory_kib_per_instance": total.saturating_sub(linear) as f64 / N as f64 / 1024.0,
        "slot_stride_mib": (stride * PAGE) >> 20,
        "first_slot_resident_runs": runs,
    }))
}
