//! Density scenario: where an idle wasm service's memory goes, each part measured. Five
//! fresh child processes each hold 10,000 echo instances at one stage (raw wasmtime
//! with nothing run; raw wasmtime after `init`; the sandbox's instance before and after
//! `init`, and after a first call; a service deployed through the kernel) and report
//! their RSS growth per instance; the differences between stages are the parts. The
//! kernel's part is split further by the sizes of what it allocates per service
//! (`solo_kernel::footprint`), the rest being heap beside them.

use serde_json::{Value, json};

use crate::report;
use crate::sandbox::probe_in_child as probe;
use crate::stats::r2;

#[allow(clippy::cast_precision_loss)]
fn kib(bytes: f64) -> f64 {
    r2(bytes / 1024.0)
}

pub fn run() -> anyhow::Result<()> {
    let per = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    let raw = probe("raw-wasm")?;
    let raw_init = probe("raw-wasm-call")?;
    let noinit = probe("solo-wasm-noinit")?;
    let sandbox = probe("solo-wasm")?;
    let kernel = probe("kernel-wasm")?;
    let (raw, raw_init, noinit) = (
        per(&raw, "bytes_per_instance"),
        per(&raw_init, "bytes_per_instance"),
        per(&noinit, "bytes_per_instance"),
    );
    let (inited, called) = (
        per(&sandbox, "bytes_per_instance"),
        per(&sandbox, "after_call"),
    );
    let service = per(&kernel, "bytes_per_instance");
    let footprint = kernel["footprint"].as_object().cloned().unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let fixed: f64 = footprint.values().filter_map(Value::as_f64).sum();
    let mut kernel_parts: Vec<Value> = footprint
        .iter()
        .map(|(k, v)| json!({ "part": k, "kib": kib(v.as_f64().unwrap_or(0.0)) }))
        .collect();
    kernel_parts.push(json!({
        "part": "other heap (spec, strings, map slots, supervisor child, allocator)",
        "kib": kib(service - inited - fixed),
    }));
    report(&json!({
        "scenario": "density.breakdown", "format": "wasm", "services": 10_000,
        "per_service_kib": {
            "wasmtime store and instance, nothing run (raw)": kib(raw),
            "guest pages written by init (raw)": kib(raw_init - raw),
            "the sandbox's state beside wasmtime's": kib(noinit - raw),
            "guest pages written by init (in the sandbox)": kib(inited - noinit),
            "guest pages written by a first call": kib(called - inited),
            "the kernel": kib(service - inited),
        },
        "kernel_parts": kernel_parts,
        "total_kib": { "deployed service": kib(service), "baseline: raw wasmtime after init": kib(raw_init) },
        "target_kib": 16,
    }));
    Ok(())
}
