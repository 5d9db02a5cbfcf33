//! Security scenario: capability verify (one thread and two), grant (durable), vault put
//! (durable, concurrent) and get; beside a bare SHA-256 + hash-map lookup and a bare
//! AES-256-GCM seal/open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde_json::json;
use sha2::{Digest, Sha256};
use solo_caps::Caps;
use solo_kernel::{Caller, DeployRequest, GrantRequest, Kernel, KernelConfig, KernelOptions};
use solo_sandbox::{Sandbox, SandboxConfig};
use solo_store::{RedbStore, Store};
use solo_types::{Format, Permission, Permissions, Resource, ServiceId, TenantId};
use solo_vault::{MasterKey, Vault};

use crate::stats::r2;
use crate::{on_worker, report};

const VALUE: &[u8; 56] = b"a 56-byte secret value, like an API key or a password...";

fn per_sec(n: u64, d: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let r = n as f64 / d.as_secs_f64();
    r.round()
}

pub fn run(secs: Duration) -> anyhow::Result<()> {
    on_worker(async move {
        caps(secs).await?;
        guest_verify(secs).await?;
        vault(secs).await
    })
}

async fn caps(secs: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("solo.redb"))?);
    let caps = Arc::new(Caps::load(Arc::clone(&store))?);
    let tenant = TenantId::new("bench")?;
    let resource = Resource::Service(ServiceId::new("api")?);
    let perms = Permissions::parse(["call"]).map_err(anyhow::Error::msg)?;

    // Grant: durable, sequential and 64 at a time.
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < secs / 2 {
        caps.grant(&tenant, resource.clone(), perms, 3600).await?;
        n += 1;
    }
    let grant_seq = per_sec(n, t.elapsed());
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (caps, tenant, resource) = (Arc::clone(&caps), tenant.clone(), resource.clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            while t.elapsed() < secs / 2 {
                caps.grant(&tenant, resource.clone(), perms, 3600).await?;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    let grant_conc = per_sec(total, t.elapsed());

    let token = caps
        .grant(&tenant, resource.clone(), perms, 3600)
        .await?
        .token
        .expose()
        .to_string();
    let verify_for = |threads: usize| -> anyhow::Result<f64> {
        let t = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (caps, token, tenant, resource) = (
                    Arc::clone(&caps),
                    token.clone(),
                    tenant.clone(),
                    resource.clone(),
                );
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while t.elapsed() < secs {
                        for _ in 0..1000 {
                            let ok = caps
                                .verify(&token, Some(&tenant), &resource, Permission::Call)
                                .is_ok();
                            std::hint::black_box(ok);
                        }
                        n += 1000;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h
                .join()
                .map_err(|_| anyhow::anyhow!("verify thread panicked"))?;
        }
        Ok(per_sec(total, t.elapsed()))
    };
    let one = verify_for(1)?;
    let two = verify_for(2)?;
    // Baseline: hash the token and look it up in a plain map.
    let mut map = HashMap::new();
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    map.insert(key, 1u64);
    for i in 0..10_000u64 {
        map.insert(Sha256::digest(i.to_le_bytes()).into(), i);
    }
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < secs {
        for _ in 0..1000 {
            let h: [u8; 32] = Sha256::digest(std::hint::black_box(token.as_bytes())).into();
            std::hint::black_box(map.get(&h));
        }
        n += 1000;
    }
    let bare = per_sec(n, t.elapsed());
    report(&json!({
        "scenario": "caps.verify",
        "verifies_per_sec_1_thread": one, "verifies_per_sec_2_threads": two,
        "baseline": { "name": "bare SHA-256 + HashMap lookup, 1 thread", "per_sec": bare },
        "ratio": r2(one / bare), "target_per_sec": 1_000_000, "elixir_original_per_sec": 107_000,
    }));
    report(&json!({
        "scenario": "caps.grant", "durable": true,
        "grants_per_sec_sequential": grant_seq, "grants_per_sec_64_concurrent": grant_conc,
    }));
    Ok(())
}

async fn vault(secs: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("solo.redb"))?);
    let vault = Arc::new(Vault::open(store, MasterKey::generate()?, "bench").await?);
    let tenants: Vec<TenantId> = (0..8)
        .map(|i| TenantId::new(format!("t{i}")))
        .collect::<Result<_, _>>()?;

    // Put: durable, 64 concurrent writers.
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64usize {
        let (vault, tenant) = (Arc::clone(&vault), tenants[w % tenants.len()].clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            while t.elapsed() < secs {
                vault
                    .put(&tenant, &format!("w{w}-{}", n % 100), VALUE, vec![])
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r??;
    }
    let puts = per_sec(total, t.elapsed());

    // Get: two threads.
    let t = Instant::now();
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let (vault, tenant) = (Arc::clone(&vault), tenants[i].clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while t.elapsed() < secs {
                    let name = format!("w{i}-{}", n % 100);
                    std::hint::black_box(
                        vault
                            .get(&tenant, &name)
                            .map(|v| v.expose().len())
                            .unwrap_or(0),
                    );
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("get thread panicked"))?;
    }
    let gets = per_sec(total, t.elapsed());

    // Baselines: bare AES-256-GCM of the same value, one thread.
    let cipher = Aes256Gcm::new(&[7u8; 32].into());
    let nonce = Nonce::from([1u8; 12]);
    let aad = b"t0\0name";
    let sealed = cipher
        .encrypt(&nonce, Payload { msg: VALUE, aad })
        .map_err(|_| anyhow::anyhow!("seal failed"))?;
    let bench = |f: &dyn Fn()| {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < secs / 2 {
            for _ in 0..1000 {
                f();
            }
            n += 1000;
        }
        per_sec(n, t.elapsed())
    };
    let seal = bench(&|| {
        std::hint::black_box(cipher.encrypt(&nonce, Payload { msg: VALUE, aad }).ok());
    });
    let open = bench(&|| {
        std::hint::black_box(cipher.decrypt(&nonce, Payload { msg: &sealed, aad }).ok());
    });
    report(&json!({
        "scenario": "vault.put", "durable": true, "writers": 64, "value_bytes": VALUE.len(),
        "puts_per_sec": puts,
        "baseline": { "name": "bare AES-256-GCM seal, 1 thread, no storage", "per_sec": seal },
        "target_per_sec": 20_000, "elixir_original_per_sec": 331,
    }));
    report(&json!({
        "scenario": "vault.get", "threads": 2, "value_bytes": VALUE.len(),
        "gets_per_sec": gets,
        "baseline": { "name": "bare AES-256-GCM open, 1 thread, no storage", "per_sec": open },
        "target_per_sec": 200_000, "elixir_original_per_sec": 2_400,
    }));
    Ok(())
}

/// `verify` from inside a guest: the gatekeeper example, in both formats, verifying one
/// token in a loop (`"repeat"`) through the host API, the kernel and the capability
/// store; beside the store's own verify in the same run.
async fn guest_verify(secs: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path().join("solo.redb"))?);
    let kernel = Kernel::start(
        store,
        Sandbox::new(SandboxConfig::default())?,
        KernelConfig::default(),
        KernelOptions::default(),
    )
    .await?;
    let owner = Caller::tenant(TenantId::new("bench")?);
    let mut figures = serde_json::Map::new();
    for (id, format, code) in [
        ("gk-wasm", Format::Wasm, solo_guests::wasm("gatekeeper")),
        (
            "gk-js",
            Format::Js,
            solo_guests::js("gatekeeper").into_bytes(),
        ),
    ] {
        let sid = ServiceId::new(id)?;
        let mut req = DeployRequest::new(sid.clone(), format, code);
        req.cpu_ms_per_message = Some(60_000);
        kernel
            .deploy(&owner, req)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let token = kernel
            .grant_capability(
                &owner,
                GrantRequest {
                    resource: Resource::Service(sid.clone()),
                    permissions: Permissions::parse(["call"]).map_err(anyhow::Error::msg)?,
                    ttl_seconds: Some(3600),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .token
            .expose()
            .to_string();
        let repeat = 20_000u64;
        let body = json!({ "token": token, "repeat": repeat }).to_string();
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < secs {
            kernel
                .call(&owner, &sid, &body, Some(Duration::from_secs(60)))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            n += repeat;
        }
        figures.insert(format.to_string(), json!(per_sec(n, t.elapsed()).round()));
    }
    kernel.shutdown().await;
    report(&json!({
        "scenario": "caps.guest_verify",
        "verifies_per_sec": figures,
        "baseline": "caps.verify above (the capability store alone, same run)",
        "target_per_sec": 1_000_000,
    }));
    Ok(())
}
