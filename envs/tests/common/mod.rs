//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The datasets root: `$GRAIL_DATASETS`, else `shared/datasets` beside the repository (or
/// beside any folder above it, for clones nested deeper), else the expected default path.
pub fn datasets_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("GRAIL_DATASETS") {
        return PathBuf::from(dir);
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.ancestors()
        .skip(1)
        .map(|a| a.join("shared/datasets"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| repo.join("../shared/datasets"))
}

/// `../shared/datasets` relative to the repository root, if present.
pub fn data_dir() -> Option<PathBuf> {
    let dir = datasets_root();
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skip: datasets not found at {} (expected ../shared/datasets next to the repo)",
            dir.display()
        );
        None
    }
}

/// Whether `relative` exists under the datasets root (prints a skip message otherwise).
pub fn data_file(relative: &str) -> Option<PathBuf> {
    let dir = data_dir()?;
    if dir.join(relative).is_file() {
        Some(dir)
    } else {
        eprintln!("skip: {relative} not found under {}", dir.display());
        None
    }
}

/// Independent BLAKE2b-256 of a file.
pub fn blake2b256_file(path: &std::path::Path) -> [u8; 32] {
    use blake2::{digest::consts::U32, Blake2b, Digest};
    let bytes = std::fs::read(path).expect("read data file");
    Blake2b::<U32>::digest(&bytes).into()
}

/// Evenly spread sample of `count` seeds in `0..n`.
pub fn spread(n: u64, count: u64) -> Vec<u64> {
    let count = count.min(n).max(1);
    (0..count).map(|i| i * n / count).collect()
}

/// The datasets root holding `relative`; panics (never skips) when it is absent, for tests whose
/// point would be lost by silently passing without data.
pub fn data_dir_or_fail(relative: &str) -> PathBuf {
    let dir = datasets_root();
    assert!(
        dir.join(relative).is_file(),
        "{relative} not found under {}: this test needs the datasets (../shared/datasets beside the repository, or set GRAIL_DATASETS)",
        dir.display()
    );
    dir
}
