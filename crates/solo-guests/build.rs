//! Builds the guest workspace (`guests/`) for `wasm32-wasip2`, installing the target
//! when it is missing, so tests and benchmarks can load the example components and the
//! JavaScript runner.
//!
//! The runner compiles QuickJS's C for wasm32 with Debian's `clang-19`, `lld-19`,
//! `wasi-libc` and `libclang-rt-19-dev-wasm32` (installed with apt when missing and
//! possible). `rquickjs-sys` expects a WASI SDK; a directory laid out like one, whose
//! compiler and sysroot are those packages, is made under the target directory and named
//! by `WASI_SDK`, so nothing is downloaded.

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
        guests.join(".cargo").join("config.toml"),
        guests.join("solo-sdk"),
        guests.join("js-runner"),
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
    let wasi_sdk = wasi_sdk_shim(&target_dir);

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
    .current_dir(&guests)
    .env("WASI_SDK", &wasi_sdk);
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

/// The Debian packages that compile C for wasm32.
const C_PACKAGES: [&str; 4] = [
    "clang-19",
    "lld-19",
    "wasi-libc",
    "libclang-rt-19-dev-wasm32",
];

/// Installs the C toolchain for wasm32 with apt when it is missing.
fn ensure_c_toolchain() {
    let present = Path::new("/usr/bin/clang-19").exists()
        && Path::new("/usr/bin/llvm-ar-19").exists()
        && Path::new("/usr/lib/wasm32-wasi/libc.a").exists()
        && Path::new("/usr/lib/llvm-19/lib/clang/19/lib/wasi").exists();
    if present {
        return;
    }
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(C_PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "the JavaScript runner needs a C compiler for wasm32; install the Debian packages {} \
         (apt-get install {})",
        C_PACKAGES.join(", "),
        C_PACKAGES.join(" ")
    );
}

/// A directory laid out like the WASI SDK (`bin/clang`, `bin/ar`,
/// `share/wasi-sysroot/{include,lib}/wasm32-wasi*`) over Debian's packages.
fn wasi_sdk_shim(target_dir: &Path) -> PathBuf {
    ensure_c_toolchain();
    let root = target_dir.join("wasi-sdk");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("create the WASI SDK shim");
    for (name, real) in [("clang", "clang-19"), ("ar", "llvm-ar-19")] {
        let script = format!("#!/bin/sh\nexec {real} \"$@\"\n");
        let path = bin.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(script.as_str()) {
            std::fs::write(&path, script).expect("write the WASI SDK shim");
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make the WASI SDK shim executable");
    }
    for (dir, real) in [
        ("include", "/usr/include/wasm32-wasi"),
        ("lib", "/usr/lib/wasm32-wasi"),
    ] {
        let parent = root.join("share/wasi-sysroot").join(dir);
        std::fs::create_dir_all(&parent).expect("create the WASI SDK shim");
        for triple in ["wasm32-wasi", "wasm32-wasip1", "wasm32-wasip2"] {
            let link = parent.join(triple);
            if std::fs::read_link(&link).ok().as_deref() != Some(Path::new(real)) {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(real, &link).expect("link the WASI sysroot");
            }
        }
    }
    root
}
