//! Tokens from the attacker's side, beyond one request: a refused bearer token on the
//! record where its owner sees it, and a service deployed by a narrow token that has no
//! more authority than the token.

use super::*;

#[tokio::test]
async fn a_refused_bearer_token_is_recorded_where_its_owner_sees_it() {
    let s = solo().await;
    let k = &s.kernel;
    let a = tenant("alice");
    let g = grant(k, &a, Resource::Events, &["read"], 60).await;
    let tok = g.token.expose().to_string();
    k.authenticate_token(&tok, Some("127.0.0.1:4000")).unwrap();
    k.revoke_capability(&a, &tok).await.unwrap();
    // Revoked: refused, and the denial lands in alice's log with where it came from.
    assert_eq!(
        k.authenticate_token(&tok, Some("127.0.0.1:4000"))
            .unwrap_err(),
        solo_kernel::DenyReason::Revoked
    );
    let denied = wait_count(k, &a, kinds::CAPABILITY_DENIED, 1).await;
    assert_eq!(denied[0].payload["reason"], "revoked");
    assert_eq!(denied[0].payload["source"], "127.0.0.1:4000");
    assert_eq!(denied[0].payload["stage"], "authenticate");
    assert_eq!(denied[0].payload["hash"], g.info.hash.as_str());
    // A token nobody granted has no owner: the system's log, sampled under a flood.
    let before = system_denials(k).len();
    let forged = format!("solo_{}", "B".repeat(43));
    for _ in 0..200 {
        assert_eq!(
            k.authenticate_token(&forged, Some("10.0.0.9:1"))
                .unwrap_err(),
            solo_kernel::DenyReason::NotFound
        );
    }
    for _ in 0..100 {
        if system_denials(k).len() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let unknown = system_denials(k).split_off(before);
    assert!(!unknown.is_empty());
    assert!(
        unknown.len() <= 40,
        "{} events for 200 refusals",
        unknown.len()
    );
    assert_eq!(unknown[0].payload["source"], "10.0.0.9:1");
    assert_eq!(count(k, &a, kinds::CAPABILITY_DENIED), 1);
    assert!(!all_events_text(k).contains(&tok));
    assert!(!all_events_text(k).contains(&forged));
}

/// What a narrow token deploys or swaps in runs with no more than that token allows:
/// it cannot list a secret it may not read, reach a service it may not call, or leak
/// either through an error; revoking the token takes the authority back.
#[tokio::test]
async fn a_service_deployed_by_a_token_has_no_more_authority_than_the_token() {
    let s = solo().await;
    let k = &s.kernel;
    let owner = tenant("alice");
    k.put_secret(&owner, "db", b"hunter2-secret-value")
        .await
        .unwrap();
    let echo = solo_guests::js("echo").into_bytes();
    k.deploy(
        &owner,
        DeployRequest::new(sid("private"), Format::Js, echo.clone()),
    )
    .await
    .unwrap();
    let mut api = DeployRequest::new(sid("api"), Format::Js, echo.clone());
    api.secrets = vec!["db".into()];
    k.deploy(&owner, api).await.unwrap();
    let grant = |resource: Resource, p: &[&str]| {
        let (k, owner) = (k, owner.clone());
        let permissions = perms(p);
        async move {
            let g = k
                .grant_capability(
                    &owner,
                    GrantRequest {
                        resource,
                        permissions,
                        ttl_seconds: Some(600),
                    },
                )
                .await
                .unwrap();
            let token = g.token.expose().to_string();
            (k.authenticate_token(&token, None).unwrap(), token)
        }
    };
    let (deployer, _) = grant(Resource::Kernel, &["deploy"]).await;

    // Listing a secret needs read on it.
    let mut reader = DeployRequest::new(sid("reader"), Format::Js, echo.clone());
    reader.secrets = vec!["db".into()];
    let e = k.deploy(&deployer, reader).await.unwrap_err();
    assert!(matches!(e, KernelError::PermissionDenied(_)), "{e:?}");
    assert!(e.to_string().contains("secret:db"), "{e}");

    // Its init cannot call the tenant's services, and what it throws does not come
    // back to the token holder.
    let prober = br#"
export async function init(c) {
  let got;
  try { got = await solo.call("private", { probe: 1 }); } catch (e) { got = String(e); }
  throw new Error("LEAKED:" + JSON.stringify(got));
}
export function handleCall(r) { return r; }
"#;
    let e = k
        .deploy(
            &deployer,
            DeployRequest::new(sid("prober"), Format::Js, prober.to_vec()),
        )
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("LEAKED"), "{e}");
    // The tenant sees the whole story in its log, and status keeps it from the token.
    let failed = events_of(k, &owner, kinds::SERVICE_DEPLOYMENT_FAILED);
    let told = serde_json::to_string(&failed).unwrap();
    assert!(
        told.contains("LEAKED") && told.contains("authority of the token"),
        "{told}"
    );
    let st = k.status(&deployer, &sid("prober")).unwrap_err();
    assert!(!st.to_string().contains("LEAKED"), "{st}");
    assert!(
        k.status(&owner, &sid("prober"))
            .unwrap_err()
            .to_string()
            .contains("LEAKED")
    );

    // A relay it deploys cannot reach another service either, whoever calls the relay.
    let relay = br#"export async function handleCall(r) { return await solo.call(r.to, r.body); }"#;
    k.deploy(
        &deployer,
        DeployRequest::new(sid("relay"), Format::Js, relay.to_vec()),
    )
    .await
    .unwrap();
    let e = k
        .call(
            &owner,
            &sid("relay"),
            r#"{"to":"private","body":1}"#,
            Some(SEC),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("authority of the token"), "{e}");

    // A token that may call `private` deploys a relay that can, until it is revoked.
    let (wider, wider_token) = grant(Resource::Any, &["deploy", "call"]).await;
    k.deploy(
        &wider,
        DeployRequest::new(sid("relay2"), Format::Js, relay.to_vec()),
    )
    .await
    .unwrap();
    let relay2 = sid("relay2");
    let via = || k.call(&owner, &relay2, r#"{"to":"private","body":7}"#, Some(SEC));
    assert_eq!(via().await.unwrap(), "7");
    k.revoke_capability(&owner, &wider_token).await.unwrap();
    let e = via().await.unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");

    // Swapping a service that lists a secret needs read on that secret too.
    let (swapper, _) = grant(Resource::Service(sid("api")), &["swap"]).await;
    let e = k
        .hot_swap(
            &swapper,
            solo_kernel::SwapRequest {
                service_id: sid("api"),
                format: Format::Js,
                code: relay.to_vec().into(),
                mode: solo_kernel::SwapMode::Swap,
                rollback_window: None,
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("secret:db"), "{e}");
    assert!(!all_events_text(k).contains("hunter2"));
}
