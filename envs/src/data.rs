//! Loading dataset files: path resolution, BLAKE2b-256 digests, JSON Lines.

use crate::EnvError;
use blake2::{digest::consts::U32, Blake2b, Digest};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Finds `relative` (e.g. `gsm8k/train.jsonl`) under `data_dir`, accepting either the datasets
/// root or the dataset's own folder (`data_dir/train.jsonl`).
pub(crate) fn resolve(
    env: &str,
    data_dir: Option<&Path>,
    relative: &str,
) -> Result<PathBuf, EnvError> {
    let data_dir = data_dir.ok_or_else(|| EnvError::MissingDataDir {
        env: env.to_string(),
        expected: relative.to_string(),
    })?;
    let file_name = Path::new(relative)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default();
    let candidates = [data_dir.join(relative), data_dir.join(&file_name)];
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .cloned()
        .ok_or_else(|| EnvError::DataFileMissing {
            env: env.to_string(),
            path: candidates[0].clone(),
            hint: crate::catalog::fetch_hint(env, data_dir),
            looked: candidates
                .iter()
                .map(|candidate| candidate.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, EnvError> {
    std::fs::read(path).map_err(|source| EnvError::DataFileRead {
        path: path.to_path_buf(),
        source,
    })
}

/// BLAKE2b-256 over the concatenation of `parts`.
pub(crate) fn blake2b256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Blake2b::<U32>::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Parses JSON Lines (blank lines skipped); errors name the file and line.
pub(crate) fn parse_jsonl<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<T>, EnvError> {
    let text = std::str::from_utf8(bytes).map_err(|error| EnvError::DataRow {
        path: path.to_path_buf(),
        line: 0,
        message: format!("not UTF-8: {error}"),
    })?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(line).map_err(|error| EnvError::DataRow {
            path: path.to_path_buf(),
            line: index + 1,
            message: error.to_string(),
        })?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(EnvError::EmptyDataset {
            path: path.to_path_buf(),
            detail: String::new(),
        });
    }
    Ok(rows)
}

/// Decompresses a gzip file's bytes.
pub(crate) fn gunzip(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, EnvError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|source| EnvError::DataFileRead {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}

/// Row index for a seed: `seed mod n`. Seeds are already pseudo-random (derived from the
/// window's randomness), and the bias of `mod` is below 2^-40 for any dataset size here; it
/// also lets evaluation walk seeds `0..n` to visit every row once.
pub(crate) fn row_for_seed(seed: u64, rows: usize) -> usize {
    (seed % rows as u64) as usize
}
