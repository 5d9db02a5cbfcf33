//! A kill -9 in the middle of `rotate` leaves every secret readable, and the rotation
//! finishes at the next open. `harness = false`: with `SOLO_VAULT_CHILD` set, this
//! binary is the child that rotates until it is killed.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use solo_store::{RedbStore, Store};
use solo_types::TenantId;
use solo_vault::{MasterKey, Vault};

const CHILD_ENV: &str = "SOLO_VAULT_CHILD";
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const SECRETS: usize = 3000;
const ROUNDS: usize = 8;

fn name(i: usize) -> (TenantId, String) {
    (
        TenantId::new(format!("t{}", i % 11)).unwrap(),
        format!("secret-{i}"),
    )
}

async fn open(path: &str) -> Vault {
    let store = Arc::new(RedbStore::open(path).unwrap());
    Vault::open(
        store as Arc<dyn Store>,
        MasterKey::from_base64(KEY).unwrap(),
        "test",
    )
    .await
    .unwrap()
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Ok(path) = std::env::var(CHILD_ENV) {
        rt.block_on(async {
            let v = open(&path).await;
            println!("ready");
            loop {
                v.rotate().await.unwrap();
            }
        });
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solo.redb");
    rt.block_on(async {
        let v = open(path.to_str().unwrap()).await;
        for i in 0..SECRETS {
            let (t, n) = name(i);
            v.put(&t, &n, format!("value of {i}").as_bytes(), vec![])
                .await
                .unwrap();
        }
    });
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut interrupted = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        std::thread::sleep(Duration::from_millis(rng.random_range(20..400)));
        child.kill().unwrap();
        child.wait().unwrap();
        rt.block_on(async {
            let v = open(path.to_str().unwrap()).await;
            if v.rotation_pending().unwrap().is_some() {
                interrupted += 1;
            }
            for i in 0..SECRETS {
                let (t, n) = name(i);
                let got = v
                    .get(&t, &n)
                    .unwrap_or_else(|e| panic!("round {round}: {t}/{n}: {e}"));
                assert_eq!(got.expose(), format!("value of {i}").as_bytes());
            }
            // Finishing the rotation leaves one key id everywhere.
            v.rotate().await.unwrap();
            assert_eq!(v.rotation_pending().unwrap(), None);
        });
    }
    assert!(
        interrupted > 0,
        "no kill landed in the middle of a rotation"
    );
    println!(
        "rotate crash test: {ROUNDS} rounds, {interrupted} cut a rotation short; every secret readable"
    );
}
