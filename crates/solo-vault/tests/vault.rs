//! The vault's contract: exact bytes, isolation per tenant and name, integrity failures
//! that are not "not found", the master key's file and checks, and rotation.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use solo_store::{Kv, RedbStore, Store, WriteBatch};
use solo_types::TenantId;
use solo_vault::{KeySource, MasterKey, Vault, VaultError};

fn t(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "HwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn vault(path: &Path, key: &str) -> (Vault, Arc<RedbStore>) {
    let store = Arc::new(RedbStore::open(path).unwrap());
    (vault_on(&store, key).await, store)
}

/// A vault over `store` (a second one over the same store: another cluster node).
async fn vault_on(store: &Arc<RedbStore>, key: &str) -> Vault {
    Vault::open(
        Arc::clone(store) as Arc<dyn Store>,
        MasterKey::from_base64(key).unwrap(),
        "test",
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn secrets_round_trip_exact_bytes_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(&dir.path().join("solo.redb"), KEY_A).await;
    let (a, b) = (t("alice"), t("bob"));
    let binary: Vec<u8> = (0..10_240u32).map(|i| (i * 7 % 256) as u8).collect();
    v.put(&a, "blob", &binary, vec![]).await.unwrap();
    v.put(&a, "db.password", b"hunter2", vec![]).await.unwrap();
    v.put(&b, "db.password", b"other", vec![]).await.unwrap();
    assert_eq!(v.get(&a, "blob").unwrap().expose(), binary.as_slice());
    assert_eq!(v.get(&a, "db.password").unwrap().expose(), b"hunter2");
    assert_eq!(v.get(&b, "db.password").unwrap().expose(), b"other");
    assert_eq!(
        format!("{:?}", v.get(&a, "db.password").unwrap()),
        "SecretValue(7 bytes, redacted)"
    );
    assert_eq!(v.list(&a).unwrap(), ["blob", "db.password"]);
    assert_eq!(v.list(&t("nobody")).unwrap(), Vec::<String>::new());
    assert!(matches!(v.get(&b, "blob"), Err(VaultError::NotFound(_))));
    assert!(v.delete(&a, "blob", vec![]).await.unwrap());
    assert!(!v.delete(&a, "blob", vec![]).await.unwrap());
    assert!(matches!(v.get(&a, "blob"), Err(VaultError::NotFound(_))));
}

#[tokio::test]
async fn the_same_value_twice_encrypts_differently() {
    let dir = tempfile::tempdir().unwrap();
    let (v, store) = vault(&dir.path().join("solo.redb"), KEY_A).await;
    v.put(&t("a"), "x", b"same", vec![]).await.unwrap();
    let first = store.get(solo_vault::TABLE, b"a\0x").unwrap().unwrap();
    v.put(&t("a"), "x", b"same", vec![]).await.unwrap();
    let second = store.get(solo_vault::TABLE, b"a\0x").unwrap().unwrap();
    assert_ne!(first, second);
    assert!(!first.windows(4).any(|w| w == b"same"));
}

#[tokio::test]
async fn a_blob_moved_to_another_tenant_or_name_is_an_integrity_error() {
    let dir = tempfile::tempdir().unwrap();
    let (v, store) = vault(&dir.path().join("solo.redb"), KEY_A).await;
    v.put(&t("alice"), "key", b"alice's secret", vec![])
        .await
        .unwrap();
    let blob = store
        .get(solo_vault::TABLE, b"alice\0key")
        .unwrap()
        .unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put(solo_vault::TABLE, b"mallory\0key".to_vec(), blob.clone())
        .unwrap();
    batch
        .put(solo_vault::TABLE, b"alice\0other".to_vec(), blob.clone())
        .unwrap();
    let mut flipped = blob.clone();
    let n = flipped.len() - 1;
    flipped[n] ^= 1;
    batch
        .put(solo_vault::TABLE, b"alice\0flipped".to_vec(), flipped)
        .unwrap();
    store.commit(batch).await.unwrap();
    for (tenant, name) in [("mallory", "key"), ("alice", "other"), ("alice", "flipped")] {
        let e = v.get(&t(tenant), name).unwrap_err();
        assert!(
            matches!(e, VaultError::Integrity { .. }),
            "{tenant}/{name}: {e}"
        );
        assert_eq!(e.code(), solo_types::Code::DataLoss);
    }
}

#[tokio::test]
async fn bad_names_and_oversized_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(&dir.path().join("solo.redb"), KEY_A).await;
    let a = t("a");
    for bad in ["", "a b", "a/b", "ü", &"x".repeat(257)] {
        assert!(
            matches!(
                v.put(&a, bad, b"v", vec![]).await,
                Err(VaultError::InvalidName(_))
            ),
            "{bad:?}"
        );
    }
    let big = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(
        v.put(&a, "big", &big, vec![]).await,
        Err(VaultError::TooLarge { .. })
    ));
    v.put(&a, "max", &big[..64 * 1024], vec![]).await.unwrap();
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solo.redb");
    {
        let (v, _) = vault(&path, KEY_A).await;
        v.put(&t("a"), "x", b"kept", vec![]).await.unwrap();
    }
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let before = store
        .snapshot()
        .unwrap()
        .scan_prefix(solo_vault::META, b"", 100)
        .unwrap();
    let e = Vault::open(
        Arc::clone(&store) as Arc<dyn Store>,
        MasterKey::from_base64(KEY_B).unwrap(),
        "SOLO_MASTER_KEY",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, VaultError::WrongMasterKey { .. }), "{e}");
    assert!(e.to_string().contains("SOLO_MASTER_KEY"), "{e}");
    let after = store
        .snapshot()
        .unwrap()
        .scan_prefix(solo_vault::META, b"", 100)
        .unwrap();
    assert_eq!(before, after);
    drop(store);
    let (v, _) = vault(&path, KEY_A).await;
    assert_eq!(v.get(&t("a"), "x").unwrap().expose(), b"kept");
}

#[test]
fn the_master_key_file_is_created_0600_and_a_readable_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, src) = MasterKey::load_or_create(dir.path(), None).unwrap();
    assert!(matches!(src, KeySource::Created(_)));
    let path = dir.path().join("master.key");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (_, src) = MasterKey::load_or_create(dir.path(), None).unwrap();
    assert!(matches!(src, KeySource::File(_)));
    assert_eq!(format!("{k1:?}"), "MasterKey(redacted)");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = MasterKey::load_or_create(dir.path(), None).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    // The environment wins; bad values are named.
    assert!(matches!(
        MasterKey::load_or_create(dir.path(), Some(KEY_A))
            .unwrap()
            .1,
        KeySource::Env
    ));
    assert!(
        MasterKey::from_base64("not base64!")
            .unwrap_err()
            .to_string()
            .contains("base64")
    );
    assert!(
        MasterKey::from_base64("AAAA")
            .unwrap_err()
            .to_string()
            .contains("32")
    );
}

#[tokio::test]
async fn rotation_reencrypts_everything_under_a_new_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solo.redb");
    let (v, store) = vault(&path, KEY_A).await;
    for i in 0..600 {
        v.put(
            &t(&format!("t{}", i % 7)),
            &format!("s{i}"),
            format!("value {i}").as_bytes(),
            vec![],
        )
        .await
        .unwrap();
    }
    let before = store.get(solo_vault::TABLE, b"t0\0s0").unwrap().unwrap();
    assert_eq!(v.key_id(), 1);
    assert_eq!(v.rotate().await.unwrap(), 600);
    assert_eq!(v.key_id(), 2);
    let after = store.get(solo_vault::TABLE, b"t0\0s0").unwrap().unwrap();
    assert_ne!(before, after);
    assert_eq!(&after[1..5], &2u32.to_be_bytes());
    for i in 0..600 {
        assert_eq!(
            v.get(&t(&format!("t{}", i % 7)), &format!("s{i}"))
                .unwrap()
                .expose(),
            format!("value {i}").as_bytes()
        );
    }
    drop((v, store));
    let (v, _) = vault(&path, KEY_A).await;
    assert_eq!(v.key_id(), 2);
    assert_eq!(v.rotation_pending().unwrap(), None);
}

/// Two vaults over one store, as two cluster nodes share the log: once one has rotated,
/// or while it is rotating, the other writes under the new key id, not its own stale one.
#[tokio::test]
async fn a_rotation_by_another_vault_on_the_same_store_is_followed_by_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, store) = vault(&dir.path().join("solo.redb"), KEY_A).await;
    let b = vault_on(&store, KEY_A).await;
    let kid_of = |name: &[u8]| store.get(solo_vault::TABLE, name).unwrap().unwrap()[1..5].to_vec();
    a.put(&t("x"), "one", b"1", vec![]).await.unwrap();
    assert_eq!(a.rotate().await.unwrap(), 1);
    b.put(&t("x"), "two", b"2", vec![]).await.unwrap();
    assert_eq!(kid_of(b"x\0two"), 2u32.to_be_bytes());
    // A rotation under way (cut short here): writes go under its target already.
    let mut batch = WriteBatch::new();
    batch
        .put(
            solo_vault::META,
            b"rotating".to_vec(),
            3u32.to_be_bytes().to_vec(),
        )
        .unwrap();
    store.commit(batch).await.unwrap();
    b.put(&t("x"), "three", b"3", vec![]).await.unwrap();
    assert_eq!(kid_of(b"x\0three"), 3u32.to_be_bytes());
    for (name, value) in [("one", b"1"), ("two", b"2"), ("three", b"3")] {
        assert_eq!(a.get(&t("x"), name).unwrap().expose(), value);
    }
}

/// A rotation re-encrypts what it read: a secret written meanwhile keeps the value
/// written, not the one the rotation read before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_written_during_a_rotation_keeps_its_new_value() {
    let dir = tempfile::tempdir().unwrap();
    let (v, _store) = vault(&dir.path().join("solo.redb"), KEY_A).await;
    let v = Arc::new(v);
    for i in 0..600 {
        v.put(&t("x"), &format!("s{i}"), b"old", vec![])
            .await
            .unwrap();
    }
    let rotating = tokio::spawn({
        let v = Arc::clone(&v);
        async move { v.rotate().await.unwrap() }
    });
    for i in (0..600).rev().step_by(37) {
        v.put(&t("x"), &format!("s{i}"), b"new", vec![])
            .await
            .unwrap();
    }
    rotating.await.unwrap();
    for i in (0..600).rev().step_by(37) {
        assert_eq!(
            v.get(&t("x"), &format!("s{i}")).unwrap().expose(),
            b"new",
            "s{i}"
        );
    }
}

/// Fuzzing the blob parser: a stored blob replaced by arbitrary bytes, or by a real blob
/// cut short, grown or with bytes changed, reads as an integrity error, never a panic
/// and never a value.
#[test]
fn any_stored_blob_is_a_value_or_an_integrity_error() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (v, store) = rt.block_on(vault(&dir.path().join("solo.redb"), KEY_A));
    rt.block_on(v.put(&t("alice"), "real", b"the real value", vec![]))
        .unwrap();
    let real = store
        .get(solo_vault::TABLE, b"alice\0real")
        .unwrap()
        .unwrap();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (0..real.len(), any::<u8>(), 0..real.len() + 8).prop_map({
            let real = real.clone();
            move |(at, x, cut)| {
                let mut b = real.clone();
                b[at] ^= x.max(1);
                b.resize(cut, 0);
                b
            }
        }),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(
        solo_types::fuzz::cases() / 4,
    ));
    runner
        .run(&strategy, |blob| {
            let mut batch = WriteBatch::new();
            batch
                .put(solo_vault::TABLE, b"alice\0fuzz".to_vec(), blob.clone())
                .unwrap();
            rt.block_on(store.commit(batch)).unwrap();
            match v.get(&t("alice"), "fuzz") {
                Err(VaultError::Integrity { .. }) => Ok(()),
                Err(e) => Err(TestCaseError::fail(format!("not an integrity error: {e}"))),
                Ok(_) => Err(TestCaseError::fail("arbitrary bytes decrypted")),
            }
        })
        .unwrap();
}
