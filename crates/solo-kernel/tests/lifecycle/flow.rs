//! Flow control through the kernel: the load shedder, circuit breakers, resource
//! pressure and the runtime configuration, on a fake clock where time matters.

use super::*;
use solo_types::ServiceState;

fn admin() -> Caller {
    Caller::admin(TenantId::new("ops").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_shedder_refuses_a_flood_per_tenant_and_samples_its_events() {
    let mut config = KernelConfig::default();
    config.limits.max_per_tenant = 3;
    config.limits.max_total = 5;
    let (s, clock) = clocked(config).await;
    let k = &s.kernel;
    let bob = Caller::tenant(TenantId::new("bob").unwrap());
    let held: Vec<_> = (0..3).map(|_| k.admit(&alice()).unwrap()).collect();
    for _ in 0..100 {
        let e = k.admit(&alice()).unwrap_err();
        assert_eq!(e.reason(), "load_shed");
        assert_eq!(e.code(), solo_types::Code::ResourceExhausted);
    }
    // Another tenant is served; the global limit still holds.
    let b1 = k.admit(&bob).unwrap();
    let b2 = k.admit(&bob).unwrap();
    let e = k.admit(&bob).unwrap_err();
    assert!(e.to_string().contains("Solo has 5"), "{e}");
    drop((b1, b2));
    drop(held);
    drop(k.admit(&alice()).unwrap());
    // A flood of refusals is one sampled event per tenant and second, with its count.
    wait_for(k, kinds::LOAD_SHED, 2).await;
    let shed = events_of(k, &alice(), kinds::LOAD_SHED);
    assert_eq!(shed.len(), 1, "{shed:?}");
    assert_eq!(shed[0].payload["shed"], 1);
    assert_eq!(
        events_of(k, &bob, kinds::LOAD_SHED)[0].payload["scope"],
        "global"
    );
    clock.advance(Duration::from_millis(1100));
    let held: Vec<_> = (0..3).map(|_| k.admit(&alice()).unwrap()).collect();
    let _ = k.admit(&alice()).unwrap_err();
    wait_for(k, kinds::LOAD_SHED, 3).await;
    let shed = events_of(k, &alice(), kinds::LOAD_SHED);
    assert_eq!(
        shed[1].payload["shed"], 100,
        "the refusals since the last event"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_is_refused_with_the_wait_until_its_next_token() {
    let mut config = KernelConfig::default();
    config.limits.rate_per_tenant = 2;
    config.limits.burst_per_tenant = 4;
    let (s, clock) = clocked(config).await;
    let k = &s.kernel;
    let bob = Caller::tenant(TenantId::new("bob").unwrap());
    // The burst, then refusals naming the wait; a refusal takes no token.
    for _ in 0..4 {
        drop(k.admit(&alice()).unwrap());
    }
    // The first refusal of a window is plain; refused again before its hint ran out,
    // the tenant is ignoring the hints (the gateway holds such refusals).
    let e = k.admit(&alice()).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::RateLimited {
                ignoring: false,
                ..
            }
        ),
        "{e:?}"
    );
    for _ in 0..50 {
        let e = k.admit(&alice()).unwrap_err();
        assert!(
            matches!(e, KernelError::RateLimited { ignoring: true, .. }),
            "{e:?}"
        );
        assert_eq!(
            (e.reason(), e.code()),
            ("rate_limited", solo_types::Code::ResourceExhausted)
        );
        assert_eq!(solo_types::api::Failure::from(&e).retry_after, Some(1));
    }
    // Other tenants and the admin are not touched by alice's rate.
    drop(k.admit(&bob).unwrap());
    for _ in 0..20 {
        drop(k.admit(&admin()).unwrap());
    }
    // Two tokens a second refill.
    clock.advance(Duration::from_millis(1000));
    drop(k.admit(&alice()).unwrap());
    drop(k.admit(&alice()).unwrap());
    assert_eq!(k.admit(&alice()).unwrap_err().reason(), "rate_limited");
    wait_for(k, kinds::LOAD_SHED, 2).await;
    assert_eq!(
        events_of(k, &alice(), kinds::LOAD_SHED)[0].payload["scope"],
        "rate"
    );
    // Tunable at run time: a slower rate says to wait longer; 0 turns it off.
    k.set_config(&admin(), "limits.rate_per_tenant", "0")
        .await
        .unwrap();
    for _ in 0..20 {
        drop(k.admit(&alice()).unwrap());
    }
    k.set_config(&admin(), "limits.burst_per_tenant", "1")
        .await
        .unwrap();
    k.set_config(&admin(), "limits.rate_per_tenant", "1")
        .await
        .unwrap();
    clock.advance(Duration::from_millis(1000));
    drop(k.admit(&bob).unwrap());
    let e = k.admit(&bob).unwrap_err();
    assert!(
        e.to_string().contains("rate of 1 requests per second"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_caps_every_message_cpu_budget_at_once() {
    let s = solo().await;
    let k = &s.kernel;
    let mut d = DeployRequest::new(sid("spin"), Format::Wasm, wasm("spinner"));
    d.cpu_ms_per_message = Some(5000);
    k.deploy(&alice(), d.clone()).await.unwrap();
    k.set_config(&admin(), "limits.max_cpu_ms_per_message", "100")
        .await
        .unwrap();
    // A new deploy asking more is refused, naming the setting.
    d.service_id = sid("spin2");
    let e = k.deploy(&alice(), d).await.unwrap_err();
    assert_eq!(e.reason(), "invalid_argument");
    assert!(
        e.to_string().contains("limits.max_cpu_ms_per_message"),
        "{e}"
    );
    // A running service's next message gets the new maximum.
    let t = std::time::Instant::now();
    let e = call(k, "spin", r#"{"mode":"spin"}"#).await.unwrap_err();
    let KernelError::ServiceCrashed(report) = e else {
        panic!("{e:?}")
    };
    assert_eq!(report.kind, "cpu_limit");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    k.set_config(&admin(), "limits.max_cpu_ms_per_message", "0")
        .await
        .unwrap_err();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_opens_on_crashes_and_closes_after_probes() {
    let mut config = KernelConfig::default();
    config.breaker.failures = 2;
    config.breaker.open_seconds = 1;
    let (s, clock) = clocked(config).await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("c"), Format::Wasm, wasm("crasher")),
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let e = call(k, "c", r#"{"mode":"trap"}"#).await.unwrap_err();
        assert!(matches!(e, KernelError::ServiceCrashed(_)), "{e:?}");
    }
    // Open: calls fail fast without reaching the service.
    let e = call(k, "c", r#"{"mode":"ok"}"#).await.unwrap_err();
    assert_eq!(e.reason(), "circuit_breaker_open", "{e:?}");
    wait_for(k, kinds::CIRCUIT_BREAKER_OPENED, 1).await;
    // Still open half a second later; after the open period: probes, and two successes
    // close it.
    clock.advance(Duration::from_millis(500));
    let e = call(k, "c", r#"{"mode":"ok"}"#).await.unwrap_err();
    assert_eq!(e.reason(), "circuit_breaker_open", "{e:?}");
    clock.advance(Duration::from_millis(600));
    assert_eq!(call(k, "c", r#"{"mode":"ok"}"#).await.unwrap(), r#""ok""#);
    assert_eq!(call(k, "c", r#"{"mode":"ok"}"#).await.unwrap(), r#""ok""#);
    wait_for(k, kinds::CIRCUIT_BREAKER_CLOSED, 1).await;
    // A service error is an answer, not a failure.
    for _ in 0..5 {
        let e = call(k, "c", r#"{"mode":"error"}"#).await.unwrap_err();
        assert!(matches!(e, KernelError::ServiceError(_)), "{e:?}");
    }
    assert_eq!(call(k, "c", r#"{"mode":"ok"}"#).await.unwrap(), r#""ok""#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_pressure_refuses_deploys_until_it_eases() {
    let mut config = KernelConfig::default();
    config.monitor.interval_ms = 20;
    config.monitor.services = 1;
    let s = open_with(tempfile::tempdir().unwrap(), config).await;
    let k = &s.kernel;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("a"), Format::Js, js("echo")),
    )
    .await
    .unwrap();
    let critical = wait_for(k, kinds::RESOURCE_PRESSURE_CRITICAL, 1).await;
    assert_eq!(critical[0].payload["resource"], "services");
    assert_eq!(k.runtime_config(&admin()).unwrap().pressure, "critical");
    let e = k
        .deploy(
            &alice(),
            DeployRequest::new(sid("b"), Format::Js, js("echo")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "resource_pressure_critical");
    // Running services keep serving.
    call(k, "a", "1").await.unwrap();
    // An admin raises the budget at run time: pressure eases, deploys work again.
    k.set_config(&admin(), "monitor.services", "100")
        .await
        .unwrap();
    wait_for(k, kinds::RESOURCE_PRESSURE_NORMAL, 1).await;
    k.deploy(
        &alice(),
        DeployRequest::new(sid("b"), Format::Js, js("echo")),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_config_is_admin_only_validated_and_recorded() {
    let s = solo().await;
    let k = &s.kernel;
    let e = k
        .set_config(&alice(), "limits.max_per_tenant", "5")
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "admin_only");
    let e = k
        .set_config(&admin(), "limits.nope", "5")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("limits.max_per_tenant"), "{e}");
    let e = k
        .set_config(&admin(), "limits.max_per_tenant", "0")
        .await
        .unwrap_err();
    assert!(matches!(e, KernelError::InvalidArgument(_)), "{e:?}");
    let e = k
        .set_config(&admin(), "limits.max_per_tenant", "many")
        .await
        .unwrap_err();
    assert!(matches!(e, KernelError::InvalidArgument(_)), "{e:?}");
    let change = k
        .set_config(&admin(), "limits.max_per_tenant", "1")
        .await
        .unwrap();
    assert_eq!((change.previous, change.value), (100, 1));
    let changed = events_of(k, &alice(), kinds::CONFIG_CHANGED);
    assert!(changed.is_empty(), "a tenant does not see system events");
    let all = events(k, kinds::CONFIG_CHANGED);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].payload["previous"], 100);
    // It takes effect at once.
    let _p = k.admit(&alice()).unwrap();
    assert_eq!(k.admit(&alice()).unwrap_err().reason(), "load_shed");
    let values = k.runtime_config(&admin()).unwrap();
    assert_eq!(values.values["limits.max_per_tenant"], 1);
    assert!(k.runtime_config(&alice()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_config_survives_a_restart_and_is_recorded_once() {
    let s = solo().await;
    s.kernel
        .set_config(&admin(), "breaker.failures", "9")
        .await
        .unwrap();
    s.kernel
        .set_config(&admin(), "breaker.failures", "11")
        .await
        .unwrap();
    let s = restart(s).await;
    let k = &s.kernel;
    assert_eq!(
        k.runtime_config(&admin()).unwrap().values["breaker.failures"],
        11
    );
    // Replaying is not changing: the log holds the two changes, not a third.
    let changed = events(k, kinds::CONFIG_CHANGED);
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[1].payload["previous"], 9);
    // A refused change is neither applied nor kept.
    k.set_config(&admin(), "breaker.failures", "0")
        .await
        .unwrap_err();
    let s = restart(s).await;
    assert_eq!(
        s.kernel.runtime_config(&admin()).unwrap().values["breaker.failures"],
        11
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_failed_deploy_then_crashed_and_starting_between_restarts() {
    let mut config = KernelConfig::default();
    config.service_defaults.restart_backoff_ms = 500;
    let s = open_with(tempfile::tempdir().unwrap(), config).await;
    let k = &s.kernel;
    // A deploy whose init throws: status names the stage and the reason until the id
    // is deployed again; to another tenant it is simply not there.
    let broken = b"export function init(c) { throw new Error('no database configured'); }\n\
                   export function handleCall(r) { return r; }";
    k.deploy(
        &alice(),
        DeployRequest::new(sid("b"), Format::Js, broken.to_vec()),
    )
    .await
    .unwrap_err();
    let e = k.status(&alice(), &sid("b")).unwrap_err();
    assert_eq!(e.reason(), "deployment_failed");
    assert!(e.to_string().contains("no database configured"), "{e}");
    let bob = tenant("bob");
    assert_eq!(k.status(&bob, &sid("b")).unwrap_err().reason(), "not_found");
    k.deploy(
        &alice(),
        DeployRequest::new(sid("b"), Format::Js, js("echo")),
    )
    .await
    .unwrap();
    assert_eq!(
        k.status(&alice(), &sid("b")).unwrap().state,
        ServiceState::Running
    );
    // A service whose restarts start slowly (its init spins once it has run before):
    // `crashed` while the restart backoff runs, `starting` while init runs, then
    // `running` again.
    let slow_restarts = br#"
export async function init(c) {
  if (await solo.kvGet("ran")) { const t = Date.now(); while (Date.now() - t < 500) {} }
  await solo.kvPut("ran", "yes");
}
export function handleCall(r) { function f() { return f() + 1; } return f(); }
"#;
    let mut d = DeployRequest::new(sid("s"), Format::Js, slow_restarts.to_vec());
    d.cpu_ms_per_message = Some(3000);
    k.deploy(&alice(), d).await.unwrap();
    let e = call(k, "s", "{}").await.unwrap_err();
    assert!(matches!(e, KernelError::ServiceCrashed(_)), "{e:?}");
    let mut seen = Vec::new();
    for _ in 0..300 {
        let st = k.status(&alice(), &sid("s")).unwrap().state;
        if seen.last() != Some(&st) {
            seen.push(st);
        }
        if st == ServiceState::Running && seen.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen,
        [
            ServiceState::Crashed,
            ServiceState::Starting,
            ServiceState::Running
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_deployed_service_keeps_its_limited_authority_across_a_restart() {
    let s = solo().await;
    let owner = alice();
    s.kernel
        .deploy(
            &owner,
            DeployRequest::new(sid("private"), Format::Js, js("echo")),
        )
        .await
        .unwrap();
    let g = s
        .kernel
        .grant_capability(
            &owner,
            solo_kernel::GrantRequest {
                resource: solo_types::Resource::Kernel,
                permissions: solo_types::Permissions::parse(["deploy"]).unwrap(),
                ttl_seconds: Some(3600),
            },
        )
        .await
        .unwrap();
    let deployer = s.kernel.authenticate_token(g.token.expose(), None).unwrap();
    let relay = br#"export async function handleCall(r) { return await solo.call(r.to, r.body); }"#;
    s.kernel
        .deploy(
            &deployer,
            DeployRequest::new(sid("relay"), Format::Js, relay.to_vec()),
        )
        .await
        .unwrap();
    let s = restart(s).await;
    let e = call(&s.kernel, "relay", r#"{"to":"private","body":1}"#)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authority of the token"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deploy_is_forgotten_after_ten_minutes() {
    let (s, clock) = clocked(KernelConfig::default()).await;
    let k = &s.kernel;
    let broken = b"export function init(c) { throw new Error('not yet'); }\n\
                   export function handleCall(r) { return r; }";
    k.deploy(
        &alice(),
        DeployRequest::new(sid("b"), Format::Js, broken.to_vec()),
    )
    .await
    .unwrap_err();
    clock.advance(solo_kernel::FAILED_DEPLOY_TTL - Duration::from_secs(1));
    assert_eq!(
        k.status(&alice(), &sid("b")).unwrap_err().reason(),
        "deployment_failed"
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        k.status(&alice(), &sid("b")).unwrap_err().reason(),
        "not_found"
    );
}
