//! The guest components: the JavaScript runner every JS service runs in, and the
//! example services used by tests and benchmarks.
//!
//! The build script compiles `guests/` for `wasm32-wasip2` (installing the target and
//! the C toolchain for wasm32 when missing); this crate embeds the runner and tells
//! where the examples are.

use std::path::PathBuf;

/// The JavaScript runner (`guests/js-runner`): QuickJS as a Solo component.
pub const JS_RUNNER: &[u8] =
    include_bytes!(concat!(env!("SOLO_GUESTS_WASM_DIR"), "/js_runner.wasm"));

/// The example services, each available as a Rust component and as JavaScript.
pub const EXAMPLES: &[&str] = &[
    "echo",
    "counter",
    "kv-notes",
    "crasher",
    "spinner",
    "hog",
    "gatekeeper",
    "intruder",
];

/// Where the component of example `name` was built.
pub fn wasm_path(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLO_GUESTS_WASM_DIR")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// The component of example `name`.
///
/// # Panics
/// If the example does not exist: a bug in the calling test.
pub fn wasm(name: &str) -> Vec<u8> {
    let path = wasm_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Where the JavaScript of example `name` lives.
pub fn js_path(name: &str) -> PathBuf {
    PathBuf::from(env!("SOLO_GUESTS_JS_DIR")).join(format!("{name}.js"))
}

/// The JavaScript source of example `name`.
///
/// # Panics
/// If the example does not exist: a bug in the calling test.
pub fn js(name: &str) -> String {
    let path = js_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_exists_in_both_formats() {
        for name in EXAMPLES {
            let wasm = wasm(name);
            assert_eq!(&wasm[..4], b"\0asm", "{name}");
            assert!(js(name).contains("handleCall"), "{name}");
        }
    }
}
