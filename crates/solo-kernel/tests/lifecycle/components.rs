//! A fault injected into each system component in turn: the system supervisor restarts
//! it (and, `rest_for_one`, the components after it), the work it owns goes on after the
//! restart, and no service notices. (The store's recovery, which `event_store` drives,
//! is tested from outside with a real full disk: `crates/solo/tests/e2e/faults.rs`.)

use std::time::Duration;

use solo_kernel::{Caller, DeployRequest, KernelConfig, SYSTEM_COMPONENTS};
use solo_types::{Format, TenantId, kinds};

use crate::common::sid;
use crate::{alice, call, clocked, events, register, wait_for, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_resumes_its_work_after_a_restart() {
    let (s, clock) = clocked(KernelConfig::default()).await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("eu"), Format::Wasm, wasm("echo")),
    )
    .await
    .unwrap();
    wait_for(k, kinds::EVENT_LOG_VERIFIED, 1).await;
    let admin = Caller::admin(TenantId::new("ops").unwrap());

    let restarts = |name: &str| {
        let tree = k.tree(&admin).unwrap();
        let system = &tree.children[0];
        let all_running = system.children.iter().all(|c| c.state == "running");
        let me = system.children.iter().find(|c| c.name == name).unwrap();
        (me.restarts, all_running)
    };
    for name in SYSTEM_COMPONENTS {
        // Apart enough to stay within the system supervisor's intensity (3 restarts in
        // 5 s), past which it would escalate and restart the whole subtree.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let (before, _) = restarts(name);
        assert!(k.inject_fault(name), "{name}");
        let mut restarted = false;
        for _ in 0..400 {
            let (now, all_running) = restarts(name);
            if now > before && all_running {
                restarted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(restarted, "{name} was not restarted");
    }

    // `discovery` sweeps again: a registration past its TTL is removed, with an event.
    k.register_service(&alice(), register("eu", "echo", &[], 1))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let gone = wait_for(k, kinds::SERVICE_DEREGISTERED, 1).await;
    assert_eq!(gone[0].payload["reason"], "expired");
    // `event_store` checks the log after the server's start only, not after its own
    // restart (which resumed watching the store).
    assert_eq!(events(k, kinds::EVENT_LOG_VERIFIED).len(), 1);
    // The service never noticed.
    assert_eq!(call(k, "eu", r#"{"n":1}"#).await.unwrap(), r#"{"n":1}"#);
    assert_eq!(k.status(&alice(), &sid("eu")).unwrap().restarts, 0);
}
