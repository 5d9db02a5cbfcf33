//! Builds the guest workspace (`guests/`) for `wasm32-wasip2`, installing the target
//! when it is missing, so tests and benchmarks can load the example components.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .expect("crates/solo-guests sits two levels below the workspace root")
        .to_path_buf();
    let guests = root.join("guests");
    for p in [
        guests.join("Cargo.toml"),
        guests.join("Cargo.lock"),
        guests.join("solo-sdk"),
        guests.join("examples"),
        root.join("wit"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("guests");
    ensure_target();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-wasip2",
    ])
    .arg("--manifest-path")
    .arg(guests.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(&guests);
    // The outer build's settings are for the host: do not leak them into the guests'
    // build (clippy's wrapper, host rustflags, the outer target dir).
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run cargo to build the guest services");
    if !out.status.success() {
        panic!(
            "building the guest services failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    println!(
        "cargo:rustc-env=SOLO_GUESTS_WASM_DIR={}",
        wasm_dir.display()
    );
    println!(
        "cargo:rustc-env=SOLO_GUESTS_JS_DIR={}",
        root.join("examples").join("js").display()
    );
}

fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2")
        })
        .unwrap_or(false);
    if !installed {
        let status = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status()
            .expect("run rustup to add the wasm32-wasip2 target");
        assert!(status.success(), "rustup target add wasm32-wasip2 failed");
    }
}
