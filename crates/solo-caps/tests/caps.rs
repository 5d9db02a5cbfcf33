//! Capabilities from the attacker's side: forged, foreign, expired, revoked and widened
//! tokens; and durability across a restart. Time is a fake clock.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use solo_caps::{Caps, DenyReason, Narrowing};
use solo_store::{EventFilter, EventLog, EventQuery, Kv, RedbStore};
use solo_types::{Permission, Permissions, Resource, TenantId, kinds};

const SEC: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * SEC;

struct Fixture {
    caps: Caps,
    store: Arc<RedbStore>,
    now: Arc<AtomicI64>,
}

/// Capabilities read from `store`, telling time by `now`.
fn caps_on(store: &Arc<RedbStore>, now: &Arc<AtomicI64>) -> Caps {
    let clock_now = Arc::clone(now);
    Caps::load_with_clock(
        Arc::clone(store) as Arc<dyn solo_store::Store>,
        Arc::new(move || clock_now.load(Ordering::SeqCst)),
    )
    .unwrap()
}

fn open(path: &Path, now: &Arc<AtomicI64>) -> Fixture {
    let store = Arc::new(RedbStore::open(path).unwrap());
    let caps = caps_on(&store, now);
    Fixture {
        caps,
        store,
        now: Arc::clone(now),
    }
}

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn r(s: &str) -> Resource {
    s.parse().unwrap()
}

fn perms(p: &[&str]) -> Permissions {
    Permissions::parse(p.iter().copied()).unwrap()
}

#[tokio::test]
async fn grant_and_verify_with_every_denial_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir.path().join("solo.redb"), &Arc::new(AtomicI64::new(T0)));
    let a = t("alice");
    let g = f
        .caps
        .grant(&a, r("service:api"), perms(&["call"]), 60)
        .await
        .unwrap();
    let token = g.token.expose().to_string();
    assert!(token.starts_with("solo_") && token.len() == 48, "{token}");
    assert_eq!(format!("{:?}", g.token), "Token(solo_…redacted)");
    let other = f
        .caps
        .grant(&a, r("service:api"), perms(&["call"]), 60)
        .await
        .unwrap();
    assert_ne!(other.token.expose(), token);

    let ok = f
        .caps
        .verify(&token, Some(&a), &r("service:api"), Permission::Call)
        .unwrap();
    assert_eq!(ok.tenant, a);
    assert_eq!(ok.hash.len(), 64);
    // A bearer token acts for its own tenant.
    assert!(
        f.caps
            .verify(&token, None, &r("service:api"), Permission::Call)
            .is_ok()
    );

    let deny = |tok: &str, tenant: &TenantId, res: &str, p: Permission| {
        f.caps.verify(tok, Some(tenant), &r(res), p).unwrap_err()
    };
    assert_eq!(
        deny(&token, &a, "service:other", Permission::Call),
        DenyReason::ResourceMismatch
    );
    assert_eq!(
        deny(&token, &a, "service:api", Permission::Kill),
        DenyReason::PermissionDenied
    );
    // Another tenant's verifier learns nothing: the token is, to it, unknown, even once
    // revoked.
    assert_eq!(
        deny(&token, &t("mallory"), "service:api", Permission::Call),
        DenyReason::NotFound
    );
    assert_eq!(
        deny("solo_not-a-token", &a, "service:api", Permission::Call),
        DenyReason::NotFound
    );
    // A forged token of the right shape is simply unknown.
    let forged = format!("solo_{}", "A".repeat(43));
    assert_eq!(
        deny(&forged, &a, "service:api", Permission::Call),
        DenyReason::NotFound
    );
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(
        deny(&flipped, &a, "service:api", Permission::Call),
        DenyReason::NotFound
    );

    // Expiry, on the fake clock.
    f.now.store(T0 + 60 * SEC, Ordering::SeqCst);
    assert_eq!(
        deny(&token, &a, "service:api", Permission::Call),
        DenyReason::Expired
    );
}

#[tokio::test]
async fn ttls_must_be_positive_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir.path().join("solo.redb"), &Arc::new(AtomicI64::new(T0)));
    for ttl in [0, -1, -3600, solo_caps::MAX_TTL_SECONDS + 1] {
        let e = f
            .caps
            .grant(&t("a"), Resource::Any, perms(&["read"]), ttl)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("TTL"), "{ttl}: {e}");
    }
}

#[tokio::test]
async fn revocation_cascades_to_attenuated_children_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir.path().join("solo.redb"), &Arc::new(AtomicI64::new(T0)));
    let a = t("alice");
    let root = f
        .caps
        .grant(&a, Resource::Any, perms(&["call", "read"]), 600)
        .await
        .unwrap();
    let child = f
        .caps
        .attenuate(
            Some(&a),
            root.token.expose(),
            &Narrowing {
                resource: Some(r("service:api")),
                permissions: Some(perms(&["call"])),
                ttl_seconds: Some(300),
            },
        )
        .await
        .unwrap();
    let grandchild = f
        .caps
        .attenuate(None, child.token.expose(), &Narrowing::default())
        .await
        .unwrap();
    assert_eq!(
        grandchild.info.parent.as_deref(),
        Some(child.info.hash.as_str())
    );
    assert!(
        f.caps
            .verify(
                grandchild.token.expose(),
                Some(&a),
                &r("service:api"),
                Permission::Call
            )
            .is_ok()
    );
    // The child is narrower than the root.
    assert_eq!(
        f.caps
            .verify(
                child.token.expose(),
                Some(&a),
                &r("events"),
                Permission::Read
            )
            .unwrap_err(),
        DenyReason::ResourceMismatch
    );

    // Another tenant cannot revoke it.
    assert_eq!(
        f.caps
            .revoke(&t("mallory"), root.token.expose())
            .await
            .unwrap(),
        0
    );
    assert!(
        f.caps
            .verify(
                root.token.expose(),
                Some(&a),
                &Resource::Any,
                Permission::Read
            )
            .is_ok()
    );

    assert_eq!(f.caps.revoke(&a, &root.info.hash).await.unwrap(), 3);
    for tok in [&root.token, &child.token, &grandchild.token] {
        assert_eq!(
            f.caps
                .verify(tok.expose(), Some(&a), &r("service:api"), Permission::Call)
                .unwrap_err(),
            DenyReason::Revoked
        );
    }
    // Again: nothing more to revoke; unknown names revoke nothing.
    assert_eq!(f.caps.revoke(&a, root.token.expose()).await.unwrap(), 0);
    assert_eq!(f.caps.revoke(&a, &"0".repeat(64)).await.unwrap(), 0);
    assert_eq!(f.caps.revoke(&a, "garbage").await.unwrap(), 0);
    // A revoked parent's children cannot be attenuated further.
    let e = f
        .caps
        .attenuate(Some(&a), child.token.expose(), &Narrowing::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, solo_caps::CapsError::Denied(DenyReason::Revoked)),
        "{e}"
    );
}

#[tokio::test]
async fn attenuation_never_widens_or_outlives() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir.path().join("solo.redb"), &Arc::new(AtomicI64::new(T0)));
    let a = t("alice");
    let p = f
        .caps
        .grant(&a, r("service:api"), perms(&["call"]), 60)
        .await
        .unwrap();
    let tok = p.token.expose();
    let cases = [
        Narrowing {
            permissions: Some(perms(&["call", "kill"])),
            ..Narrowing::default()
        },
        Narrowing {
            resource: Some(Resource::Any),
            ..Narrowing::default()
        },
        Narrowing {
            resource: Some(r("service:other")),
            ..Narrowing::default()
        },
        Narrowing {
            ttl_seconds: Some(61),
            ..Narrowing::default()
        },
        Narrowing {
            ttl_seconds: Some(0),
            ..Narrowing::default()
        },
        Narrowing {
            ttl_seconds: Some(-5),
            ..Narrowing::default()
        },
    ];
    for n in cases {
        assert!(f.caps.attenuate(Some(&a), tok, &n).await.is_err(), "{n:?}");
    }
    // Not by another tenant, and not from an expired parent.
    assert!(
        f.caps
            .attenuate(Some(&t("bob")), tok, &Narrowing::default())
            .await
            .is_err()
    );
    f.now.store(T0 + 61 * SEC, Ordering::SeqCst);
    let e = f
        .caps
        .attenuate(Some(&a), tok, &Narrowing::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, solo_caps::CapsError::Denied(DenyReason::Expired)),
        "{e}"
    );
}

#[tokio::test]
async fn only_hashes_are_stored_and_they_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solo.redb");
    let now = Arc::new(AtomicI64::new(T0));
    let (keep, revoked, short) = {
        let f = open(&path, &now);
        let a = t("alice");
        let keep = f
            .caps
            .grant(&a, Resource::Events, perms(&["read"]), 600)
            .await
            .unwrap();
        let revoked = f
            .caps
            .grant(&a, Resource::Events, perms(&["read"]), 600)
            .await
            .unwrap();
        let short = f
            .caps
            .grant(&a, Resource::Events, perms(&["read"]), 5)
            .await
            .unwrap();
        f.caps.revoke(&a, revoked.token.expose()).await.unwrap();
        let listed = f.caps.list(&a);
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|c| c.hash.len() == 64));
        // Events name hashes, never tokens.
        let page = f
            .store
            .read(&EventQuery {
                limit: 100,
                ..EventQuery::default()
            })
            .unwrap();
        let text = serde_json::to_string(&page.events).unwrap();
        for g in [&keep, &revoked, &short] {
            assert!(!text.contains(g.token.expose()));
        }
        assert!(text.contains(&keep.info.hash));
        (
            keep.token.expose().to_string(),
            revoked.token.expose().to_string(),
            short.token.expose().to_string(),
        )
    };
    // No token anywhere on disk.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for tok in [&keep, &revoked, &short] {
            assert!(!bytes.windows(tok.len()).any(|w| w == tok.as_bytes()));
        }
    }
    let f = open(&path, &now);
    let a = t("alice");
    assert!(
        f.caps
            .verify(&keep, Some(&a), &Resource::Events, Permission::Read)
            .is_ok()
    );
    assert_eq!(
        f.caps
            .verify(&revoked, Some(&a), &Resource::Events, Permission::Read)
            .unwrap_err(),
        DenyReason::Revoked
    );
    // Purging drops the expired one, durably.
    now.store(T0 + 10 * SEC, Ordering::SeqCst);
    assert_eq!(f.caps.purge_expired(T0 + 10 * SEC).await.unwrap(), 1);
    assert_eq!(
        f.caps
            .verify(&short, Some(&a), &Resource::Events, Permission::Read)
            .unwrap_err(),
        DenyReason::NotFound
    );
    drop(f);
    let f = open(&path, &now);
    assert_eq!(f.caps.list(&a).len(), 2);
}

#[tokio::test]
async fn denials_are_events_sampled_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let f = open(&dir.path().join("solo.redb"), &Arc::new(AtomicI64::new(T0)));
    let a = t("alice");
    for _ in 0..1000 {
        f.caps
            .record_denial(
                Some(&a),
                "solo_forged",
                &Resource::Kernel,
                Permission::Deploy,
                DenyReason::NotFound,
            )
            .await;
    }
    let denied = f
        .store
        .read(&EventQuery {
            filter: EventFilter {
                kind: Some(kinds::CAPABILITY_DENIED.into()),
                ..EventFilter::default()
            },
            limit: 10_000,
            ..EventQuery::default()
        })
        .unwrap()
        .events;
    assert!(
        !denied.is_empty() && denied.len() <= 25,
        "{} events",
        denied.len()
    );
    assert_eq!(denied[0].payload["reason"], "not_found");
}

/// Fuzzing token parsing and the stored records: any string, or one shaped like a token,
/// authenticates as "not found" (never as a capability); and a store holding a real
/// record damaged anywhere, or arbitrary bytes, loads or is refused as corrupt, never a
/// panic.
#[test]
fn arbitrary_tokens_and_stored_records_never_panic() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let f = open(&dir.path().join("solo.redb"), &now);
    let a = t("alice");
    let g = rt
        .block_on(f.caps.grant(&a, r("service:api"), perms(&["call"]), 60))
        .unwrap();
    let cases = solo_types::fuzz::cases();

    let token = prop_oneof![
        any::<String>(),
        "solo_[A-Za-z0-9_-]{43}",
        "solo_[A-Za-z0-9_-]{0,60}",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&token, |tok| {
            prop_assert!(f.caps.authenticate(&tok).is_err());
            let v = f
                .caps
                .verify(&tok, Some(&a), &r("service:api"), Permission::Call);
            prop_assert!(v.is_err());
            Ok(())
        })
        .unwrap();

    let stored = rt.block_on(async {
        let page = f
            .store
            .snapshot()
            .unwrap()
            .scan_prefix(solo_caps::TABLE, b"", 10)
            .unwrap();
        page[0].clone()
    });
    let record = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (0..stored.1.len(), any::<u8>(), 0..stored.1.len() + 4).prop_map({
            let real = stored.1.clone();
            move |(at, x, cut)| {
                let mut b = real.clone();
                b[at] ^= x.max(1);
                b.resize(cut, b' ');
                b
            }
        }),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases / 8));
    runner
        .run(&record, |bytes| {
            let mut batch = solo_store::WriteBatch::new();
            batch
                .put(solo_caps::TABLE, stored.0.clone(), bytes)
                .unwrap();
            rt.block_on(f.store.commit(batch)).unwrap();
            let clock_now = Arc::clone(&now);
            let _ = Caps::load_with_clock(
                Arc::clone(&f.store) as Arc<dyn solo_store::Store>,
                Arc::new(move || clock_now.load(Ordering::SeqCst)),
            );
            Ok(())
        })
        .unwrap();
    drop(g);
}

#[tokio::test]
async fn a_second_reader_of_the_store_sees_grants_and_revocations_once_it_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(T0));
    let f = open(&dir.path().join("solo.redb"), &now);
    // Another node's view of the same store (on a cluster: the same buckets).
    let other = caps_on(&f.store, &now);
    let a = t("alice");
    let g = f
        .caps
        .grant(&a, r("service:api"), perms(&["call"]), 60)
        .await
        .unwrap();
    let token = g.token.expose().to_string();
    let check = |c: &Caps| c.verify(&token, Some(&a), &r("service:api"), Permission::Call);
    assert!(check(&other).is_err(), "not read yet");
    // Where to route it is known at once, from the store.
    assert_eq!(other.tenant_of(&token), Some(a.clone()));
    let forged = format!("solo_{}", "A".repeat(43));
    for bad in [forged.as_str(), "", "solo_", "Bearer x", "solo_\u{0}"] {
        assert_eq!(other.tenant_of(bad), None, "{bad:?}");
    }
    assert_eq!(other.reload().unwrap(), 1);
    assert!(check(&other).is_ok());
    assert_eq!(other.reload().unwrap(), 0, "nothing new");
    f.caps.revoke(&a, &token).await.unwrap();
    assert!(check(&other).is_ok(), "not read yet");
    assert_eq!(other.reload().unwrap(), 0);
    assert_eq!(check(&other).unwrap_err(), DenyReason::Revoked);
    assert_eq!(other.tenant_of(&token), Some(a), "revoked, still alice's");
}
