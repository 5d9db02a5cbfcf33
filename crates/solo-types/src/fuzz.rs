//! How many cases each property-based fuzz target runs: a few thousand in `cargo test`,
//! as many as `SOLO_FUZZ_CASES` says for a longer run
//! (`SOLO_FUZZ_CASES=1000000 cargo test fuzz`).

/// The cases per fuzz target.
pub fn cases() -> u32 {
    std::env::var("SOLO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}
