//! Compiled code: the artifact, its content hash, and the in-memory cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::{js, wasm};

pub use solo_types::Format;

/// The SHA-256 of a service's code, and of nothing else.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeHash(pub [u8; 32]);

impl CodeHash {
    /// The hash of `code` (the format is part of the cache key, not of the hash).
    pub fn of(_format: Format, code: &[u8]) -> Self {
        Self(Sha256::digest(code).into())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeHash({})", self.to_hex())
    }
}

/// Validated, compiled code, ready to instantiate many times. Cheap to clone.
#[derive(Clone)]
pub struct Artifact {
    inner: Arc<Inner>,
}

struct Inner {
    hash: CodeHash,
    format: Format,
    code_bytes: usize,
    has_state: bool,
    backend: Backend,
}

pub(crate) enum Backend {
    Wasm(wasm::WasmArtifact),
    Js(js::JsArtifact),
}

impl fmt::Debug for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Artifact")
            .field("hash", &self.inner.hash)
            .field("format", &self.inner.format)
            .field("code_bytes", &self.inner.code_bytes)
            .field("has_state", &self.inner.has_state)
            .finish()
    }
}

impl Artifact {
    pub(crate) fn new(
        hash: CodeHash,
        format: Format,
        code_bytes: usize,
        has_state: bool,
        backend: Backend,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                hash,
                format,
                code_bytes,
                has_state,
                backend,
            }),
        }
    }

    pub fn hash(&self) -> CodeHash {
        self.inner.hash
    }

    pub fn format(&self) -> Format {
        self.inner.format
    }

    /// The size of the source code.
    pub fn code_bytes(&self) -> usize {
        self.inner.code_bytes
    }

    /// Whether the code exports `snapshot` and `restore`.
    pub fn has_state(&self) -> bool {
        self.inner.has_state
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }
}

/// The most artifacts kept when none of them is in use elsewhere.
const CACHE_CAPACITY: usize = 1024;

type Cell = Arc<tokio::sync::OnceCell<Artifact>>;

/// Artifacts by (format, hash). Concurrent compiles of the same code share one compile.
#[derive(Default)]
pub(crate) struct Cache {
    map: parking_lot::Mutex<HashMap<CodeHash, Cell>>,
}

impl Cache {
    pub(crate) fn get(&self, hash: &CodeHash) -> Option<Artifact> {
        self.map.lock().get(hash).and_then(|c| c.get().cloned())
    }

    /// The cell where the artifact of `hash` is (or will be) kept.
    pub(crate) fn cell(&self, hash: CodeHash) -> Cell {
        let mut map = self.map.lock();
        if map.len() >= CACHE_CAPACITY && !map.contains_key(&hash) {
            // Drop artifacts nobody else holds (no live service uses them).
            map.retain(|_, c| c.get().is_none_or(Artifact::is_shared));
        }
        Arc::clone(map.entry(hash).or_default())
    }

    pub(crate) fn forget_failed(&self, hash: &CodeHash) {
        let mut map = self.map.lock();
        if map.get(hash).is_some_and(|c| c.get().is_none()) {
            map.remove(hash);
        }
    }
}
