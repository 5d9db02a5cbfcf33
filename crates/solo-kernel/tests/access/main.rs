//! Secrets and capabilities through the kernel, from the attacker's side: another
//! tenant's token, a revoked or forged one, a token used beyond its scope, a service
//! reading a secret it did not list, and events that never carry a value or a token.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod delegation;
mod guests;

use std::sync::Arc;
use std::time::Duration;

use solo_kernel::{
    Caller, DeployRequest, GrantRequest, Kernel, KernelConfig, KernelError, KernelOptions,
    KillOptions, Narrowing,
};
use solo_store::{EventQuery, Store};
use solo_types::{Format, Permission, Permissions, Resource, TenantId, kinds};
use solo_vault::{MasterKey, Vault};

use common::{events_of, sid, tenant};

struct Solo {
    kernel: Kernel,
    _dir: tempfile::TempDir,
}

async fn solo() -> Solo {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = common::store(dir.path());
    let vault = Vault::open(Arc::clone(&store), MasterKey::generate().unwrap(), "test")
        .await
        .unwrap();
    let kernel = Kernel::start(
        store,
        common::sandbox(200),
        KernelConfig::default(),
        KernelOptions {
            vault: Some(Arc::new(vault)),
            ..KernelOptions::default()
        },
    )
    .await
    .unwrap();
    Solo { kernel, _dir: dir }
}

fn perms(p: &[&str]) -> Permissions {
    Permissions::parse(p.iter().copied()).unwrap()
}

const SEC: Duration = Duration::from_secs(1);

/// Grants `p` on `resource` of `owner`'s tenant for `ttl` seconds.
async fn grant(
    k: &Kernel,
    owner: &Caller,
    resource: Resource,
    p: &[&str],
    ttl: i64,
) -> solo_kernel::Granted {
    k.grant_capability(
        owner,
        GrantRequest {
            resource,
            permissions: perms(p),
            ttl_seconds: Some(ttl),
        },
    )
    .await
    .unwrap()
}

fn all_events_text(k: &Kernel) -> String {
    let admin = Caller::admin(TenantId::new("ops").unwrap());
    let page = k
        .events(
            &admin,
            EventQuery {
                limit: 10_000,
                ..EventQuery::default()
            },
        )
        .unwrap();
    serde_json::to_string(&page.events).unwrap()
}

/// `capability_denied` events in the system's log (tokens Solo does not know).
fn system_denials(k: &Kernel) -> Vec<solo_types::Event> {
    let admin = Caller::admin(TenantId::new("ops").unwrap());
    events_of(k, &admin, kinds::CAPABILITY_DENIED)
        .into_iter()
        .filter(|e| e.tenant.is_none())
        .collect()
}

/// Waits for `n` events of `kind` in `caller`'s log (denials are recorded in the
/// background).
async fn wait_count(k: &Kernel, caller: &Caller, kind: &str, n: usize) -> Vec<solo_types::Event> {
    for _ in 0..200 {
        let e = events_of(k, caller, kind);
        if e.len() >= n {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} {kind} events");
}

fn count(k: &Kernel, caller: &Caller, kind: &str) -> usize {
    events_of(k, caller, kind).len()
}

#[tokio::test]
async fn secrets_are_stored_read_listed_and_deleted_with_name_only_events() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("alice");
    k.put_secret(&a, "db.password", b"correct horse battery staple")
        .await
        .unwrap();
    k.put_secret(&a, "api_key", b"k-123456").await.unwrap();
    assert_eq!(
        k.get_secret(&a, "api_key").await.unwrap().expose(),
        b"k-123456"
    );
    assert_eq!(k.list_secrets(&a).unwrap(), ["api_key", "db.password"]);
    // Another tenant sees nothing of it.
    let b = tenant("bob");
    assert!(matches!(
        k.get_secret(&b, "api_key").await,
        Err(KernelError::NotFound(_))
    ));
    assert!(k.list_secrets(&b).unwrap().is_empty());
    assert!(k.delete_secret(&a, "api_key").await.unwrap());
    assert!(!k.delete_secret(&a, "api_key").await.unwrap());
    assert!(matches!(
        k.get_secret(&a, "api_key").await,
        Err(KernelError::NotFound(_))
    ));
    assert!(matches!(
        k.put_secret(&a, "x", &vec![0u8; 64 * 1024 + 1]).await,
        Err(KernelError::InvalidArgument(_))
    ));
    assert!(matches!(
        k.put_secret(&a, "", b"v").await,
        Err(KernelError::InvalidArgument(_))
    ));
    assert_eq!(count(k, &a, kinds::SECRET_STORED), 2);
    assert_eq!(count(k, &a, kinds::SECRET_ACCESSED), 1);
    assert_eq!(count(k, &a, kinds::SECRET_DELETED), 2);
    let text = all_events_text(k);
    assert!(!text.contains("correct horse") && !text.contains("k-123456"));
}

#[tokio::test]
async fn a_service_reads_only_the_secrets_its_spec_lists() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("alice");
    k.put_secret(&a, "listed", b"yes").await.unwrap();
    k.put_secret(&a, "unlisted", b"no").await.unwrap();
    let js = r#"
        export async function handleCall(req) {
            try { return { value: await solo.secret(req.name) }; }
            catch (e) { return { error: e.code }; }
        }
    "#;
    let mut r = DeployRequest::new(sid("reader"), Format::Js, js.as_bytes().to_vec());
    r.secrets = vec!["listed".into(), "missing".into()];
    k.deploy(&a, r).await.unwrap();
    let ask = |name: &str| {
        let k = k.clone();
        let a = a.clone();
        let req = format!(r#"{{"name":"{name}"}}"#);
        async move { k.call(&a, &sid("reader"), &req, Some(SEC)).await.unwrap() }
    };
    assert_eq!(ask("listed").await, r#"{"value":"yes"}"#);
    assert_eq!(ask("unlisted").await, r#"{"error":"permission_denied"}"#);
    assert_eq!(ask("missing").await, r#"{"error":"not_found"}"#);
    // Another tenant's secret of the same name is not reachable.
    let b = tenant("bob");
    k.put_secret(&b, "listed", b"bob's").await.unwrap();
    assert_eq!(ask("listed").await, r#"{"value":"yes"}"#);
    assert_eq!(count(k, &a, kinds::SECRET_ACCESS_DENIED), 2);
    assert!(count(k, &a, kinds::SECRET_ACCESSED) >= 2);
}

#[tokio::test]
async fn cross_tenant_calls_need_a_capability_for_exactly_that_service() {
    let s = solo().await;
    let k = &s.kernel;
    let (a, b) = (tenant("alice"), tenant("bob"));
    k.deploy(
        &b,
        DeployRequest::new(sid("echo"), Format::Wasm, solo_guests::wasm("echo")),
    )
    .await
    .unwrap();
    k.deploy(
        &b,
        DeployRequest::new(sid("private"), Format::Wasm, solo_guests::wasm("echo")),
    )
    .await
    .unwrap();
    let relay = r#"
        export async function handleCall(req) {
            try { return await solo.call(req.to, 42, { timeoutMs: 1000, token: req.token }); }
            catch (e) { return "denied: " + e.code + ": " + e.message; }
        }
    "#;
    k.deploy(
        &a,
        DeployRequest::new(sid("relay"), Format::Js, relay.as_bytes().to_vec()),
    )
    .await
    .unwrap();
    let via = |to: &str, token: Option<&str>| {
        let req = serde_json::json!({ "to": to, "token": token }).to_string();
        let (k, a) = (k.clone(), a.clone());
        async move {
            k.call(&a, &sid("relay"), &req, Some(SEC * 2))
                .await
                .unwrap()
        }
    };
    // Without a token: refused, whatever exists there.
    assert!(via("bob/echo", None).await.contains("permission_denied"));
    let g = grant(k, &b, Resource::Service(sid("echo")), &["call"], 600).await;
    let tok = g.token.expose().to_string();
    assert_eq!(via("bob/echo", Some(&tok)).await, "42");
    // The same token for another service of bob's, or for someone else's tenant: refused.
    assert!(
        via("bob/private", Some(&tok))
            .await
            .contains("resource_mismatch")
    );
    // bob's token presented for carol's service answers as an unknown token would; bob
    // learns where it was presented.
    assert!(via("carol/echo", Some(&tok)).await.contains("not_found"));
    let misuse = events_of(k, &b, kinds::CAPABILITY_DENIED);
    assert!(
        misuse
            .iter()
            .any(|e| e.payload["reason"] == "tenant_mismatch"),
        "{misuse:?}"
    );
    let forged = format!("solo_{}", "x".repeat(43));
    assert!(via("bob/echo", Some(&forged)).await.contains("not_found"));
    // Denials land in the granting tenant's log, by hash only.
    assert!(count(k, &b, kinds::CAPABILITY_DENIED) >= 2);
    assert!(!all_events_text(k).contains(&tok));
    // Revoked: refused.
    k.revoke_capability(&b, &tok).await.unwrap();
    assert!(via("bob/echo", Some(&tok)).await.contains("revoked"));
}

#[tokio::test]
async fn a_bearer_token_authorizes_exactly_what_it_names() {
    let s = solo().await;
    let k = &s.kernel;
    let owner = tenant("alice");
    k.deploy(
        &owner,
        DeployRequest::new(sid("api"), Format::Js, solo_guests::js("echo").into_bytes()),
    )
    .await
    .unwrap();
    k.deploy(
        &owner,
        DeployRequest::new(
            sid("other"),
            Format::Js,
            solo_guests::js("echo").into_bytes(),
        ),
    )
    .await
    .unwrap();
    k.put_secret(&owner, "s", b"v").await.unwrap();
    let g = grant(k, &owner, Resource::Service(sid("api")), &["call"], 600).await;
    let bearer = k.authenticate_token(g.token.expose(), None).unwrap();
    assert_eq!(bearer.tenant_id().as_str(), "alice");
    assert_eq!(
        k.call(&bearer, &sid("api"), "1", Some(SEC)).await.unwrap(),
        "1"
    );
    let denied = |r: Result<(), KernelError>| {
        assert!(matches!(r, Err(KernelError::PermissionDenied(_))), "{r:?}")
    };
    denied(
        k.call(&bearer, &sid("other"), "1", Some(SEC))
            .await
            .map(|_| ()),
    );
    denied(k.status(&bearer, &sid("api")).map(|_| ()));
    denied(
        k.kill(&bearer, &sid("api"), Default::default())
            .await
            .map(|_| ()),
    );
    denied(
        k.deploy(
            &bearer,
            DeployRequest::new(sid("x"), Format::Js, solo_guests::js("echo").into_bytes()),
        )
        .await
        .map(|_| ()),
    );
    denied(k.events(&bearer, EventQuery::default()).map(|_| ()));
    denied(k.list_secrets(&bearer).map(|_| ()));
    denied(k.get_secret(&bearer, "s").await.map(|_| ()));
    // Each refusal is a capability_denied event in the granting tenant's log, naming the
    // token's hash, what was asked and what the token allows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let denials = loop {
        let d = events_of(k, &owner, "capability_denied");
        if d.len() >= 7 || tokio::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(denials.len(), 7, "{denials:?}");
    let call = &denials[0];
    assert_eq!(call.service.as_ref().map(|s| s.as_str()), Some("other"));
    assert_eq!(call.payload["permission"], "call");
    assert_eq!(call.payload["allowed_resource"], "service:api");
    assert_eq!(call.payload["hash"].as_str().map(str::len), Some(64));
    assert!(!call.payload.to_string().contains(g.token.expose()));
    // A token holder cannot grant, but can hand on a narrower copy.
    denied(
        k.grant_capability(
            &bearer,
            GrantRequest {
                resource: Resource::Any,
                permissions: perms(&["read"]),
                ttl_seconds: Some(60),
            },
        )
        .await
        .map(|_| ()),
    );
    let narrower = k
        .attenuate_capability(
            &bearer,
            g.token.expose(),
            &Narrowing {
                ttl_seconds: Some(60),
                ..Narrowing::default()
            },
        )
        .await
        .unwrap();
    let sub_agent = k.authenticate_token(narrower.token.expose(), None).unwrap();
    assert_eq!(
        k.call(&sub_agent, &sid("api"), "2", Some(SEC))
            .await
            .unwrap(),
        "2"
    );
    // Revoking the parent stops the child too.
    k.revoke_capability(&owner, &g.info.hash).await.unwrap();
    assert!(k.authenticate_token(narrower.token.expose(), None).is_err());

    // Deploy on kernel lets a sub-agent deploy; read on events lets it watch.
    let d = grant(k, &owner, Resource::Kernel, &["deploy"], 600).await;
    let deployer = k.authenticate_token(d.token.expose(), None).unwrap();
    k.deploy(
        &deployer,
        DeployRequest::new(
            sid("by-token"),
            Format::Js,
            solo_guests::js("echo").into_bytes(),
        ),
    )
    .await
    .unwrap();
    let e = grant(k, &owner, Resource::Events, &["read"], 600).await;
    let watcher = k.authenticate_token(e.token.expose(), None).unwrap();
    let page = k
        .events(
            &watcher,
            EventQuery {
                limit: 1000,
                ..EventQuery::default()
            },
        )
        .unwrap();
    assert!(
        page.events
            .iter()
            .all(|ev| ev.tenant.as_ref().map(TenantId::as_str) == Some("alice"))
    );
    assert!(
        page.events
            .iter()
            .any(|ev| ev.kind == kinds::SERVICE_DEPLOYED)
    );
}

#[tokio::test]
async fn verify_and_list_capabilities() {
    let s = solo().await;
    let k = &s.kernel;
    let (a, b) = (tenant("alice"), tenant("bob"));
    let g = grant(k, &a, Resource::Events, &["read"], 600).await;
    assert!(
        k.verify_capability(&a, g.token.expose(), &Resource::Events, Permission::Read)
            .await
            .is_ok()
    );
    // Another tenant's valid token answers exactly as an unknown one, and is recorded
    // only as an unknown-token attempt (the system's log), not in either tenant's.
    let before = system_denials(k).len();
    assert_eq!(
        k.verify_capability(&b, g.token.expose(), &Resource::Events, Permission::Read)
            .await
            .unwrap_err(),
        solo_kernel::DenyReason::NotFound
    );
    let forged = format!("solo_{}", "A".repeat(43));
    assert_eq!(
        k.verify_capability(&b, &forged, &Resource::Events, Permission::Read)
            .await
            .unwrap_err(),
        solo_kernel::DenyReason::NotFound
    );
    assert_eq!(count(k, &a, kinds::CAPABILITY_DENIED), 0);
    assert_eq!(count(k, &b, kinds::CAPABILITY_DENIED), 0);
    let unknown = system_denials(k);
    assert_eq!(unknown.len(), before + 2);
    assert!(unknown.iter().all(|e| e.payload["reason"] == "not_found"));
    assert_eq!(k.list_capabilities(&a).unwrap().len(), 1);
    assert!(k.list_capabilities(&b).unwrap().is_empty());
    assert_eq!(count(k, &a, kinds::CAPABILITY_GRANTED), 1);
    assert!(matches!(
        k.grant_capability(
            &a,
            GrantRequest {
                resource: Resource::Events,
                permissions: perms(&["read"]),
                ttl_seconds: Some(0)
            }
        )
        .await,
        Err(KernelError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn only_an_admin_rotates_keys_and_secrets_stay_readable() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("alice");
    k.put_secret(&a, "x", b"before").await.unwrap();
    assert!(matches!(
        k.rotate_secrets(&a).await,
        Err(KernelError::PermissionDenied(_))
    ));
    let admin = Caller::admin(TenantId::new("ops").unwrap());
    assert_eq!(k.rotate_secrets(&admin).await.unwrap(), 1);
    assert_eq!(k.get_secret(&a, "x").await.unwrap().expose(), b"before");
    assert_eq!(count(k, &admin, kinds::SECRETS_ROTATED), 1);
}

fn tool(name: &str) -> solo_types::ToolSpec {
    solo_types::ToolSpec {
        name: name.into(),
        description: "Echoes its arguments.".into(),
        input_schema: serde_json::json!({"type": "object"}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_offered_as_tools_are_listed_to_whoever_may_call_them() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("tools-a");
    let echo = || solo_guests::js("echo").into_bytes();
    for (id, name) in [("e1", "echo_one"), ("e2", "echo_two")] {
        let mut d = DeployRequest::new(sid(id), Format::Js, echo());
        d.tool = Some(tool(name));
        k.deploy(&a, d).await.unwrap();
    }
    k.deploy(&a, DeployRequest::new(sid("plain"), Format::Js, echo()))
        .await
        .unwrap();
    let names = |c: &Caller| -> Vec<String> {
        k.service_tools(c)
            .into_iter()
            .map(|t| t.tool.name)
            .collect()
    };
    assert_eq!(names(&a), ["echo_one", "echo_two"]);
    assert!(
        names(&tenant("tools-b")).is_empty(),
        "another tenant sees none"
    );
    // A tool name is unique in its tenant, and Solo's own prefix is reserved.
    let mut dup = DeployRequest::new(sid("e3"), Format::Js, echo());
    dup.tool = Some(tool("echo_one"));
    assert!(matches!(
        k.deploy(&a, dup).await,
        Err(KernelError::AlreadyExists(_))
    ));
    for bad in [
        tool("solo_deploy"),
        tool("a b"),
        solo_types::ToolSpec {
            input_schema: serde_json::json!({"type": "string"}),
            ..tool("fine")
        },
    ] {
        let mut d = DeployRequest::new(sid("e4"), Format::Js, echo());
        d.tool = Some(bad);
        assert!(matches!(
            k.deploy(&a, d).await,
            Err(KernelError::InvalidArgument(_))
        ));
    }
    // A token that may call one service sees only that service's tool.
    let g = grant(k, &a, Resource::Service(sid("e2")), &["call"], 600).await;
    let bearer = k.authenticate_token(g.token.expose(), None).unwrap();
    assert_eq!(names(&bearer), ["echo_two"]);
    let me = k.whoami(&bearer);
    assert_eq!((me.role.as_str(), me.quotas.services), ("token", 3));
    assert_eq!(me.scope.unwrap().resource, "service:e2");
    // A killed service's tool goes with it, and its name is free again.
    k.kill(&a, &sid("e1"), KillOptions::default())
        .await
        .unwrap();
    assert_eq!(names(&a), ["echo_two"]);
    let mut again = DeployRequest::new(sid("e5"), Format::Js, echo());
    again.tool = Some(tool("echo_one"));
    k.deploy(&a, again).await.unwrap();
    assert_eq!(
        k.status(&a, &sid("e5")).unwrap().tool,
        Some(tool("echo_one"))
    );
}
