//! Datasets for the data envs: where they live ([`data_dir`]) and `grail data fetch`, which
//! downloads each file of [`envs::catalog`] from its public home (or imports a local copy with
//! `--from`), checks its pinned SHA-256 and only then moves it into place (temp file + rename,
//! so a half-written or tampered file never sits where an env would read it).

pub mod http;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use envs::catalog::{DataFile, Dataset};
use sha2::{Digest, Sha256};

use crate::config::ClusterConfig;

/// The datasets folder inside a cluster's run dir: `[env] data_dir`'s default.
pub const RUN_DIR_SUBDIR: &str = "datasets";
/// `grail data fetch`'s and `grail eval`'s default: the default cluster's data dir (its
/// run_dir is `run`) when run from the repository root.
pub const DEFAULT_DIR: &str = "run/datasets";

/// The one place that decides where env data is read from: an explicit directory (a
/// `--data-dir` flag), else the config's `[env] data_dir` (relative to the config file), else
/// `<run_dir>/datasets`, else (no config) [`DEFAULT_DIR`] relative to the current directory.
pub fn data_dir(explicit: Option<&Path>, cfg: Option<&ClusterConfig>) -> PathBuf {
    match (explicit, cfg) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(cfg)) => match &cfg.env.data_dir {
            Some(dir) => cfg.resolve(dir),
            None => cfg.run_dir().join(RUN_DIR_SUBDIR),
        },
        (None, None) => PathBuf::from(DEFAULT_DIR),
    }
}

/// Where `grail data fetch` gets the files.
#[derive(Clone, Debug)]
pub enum Source {
    /// Each file's public home ([`DataFile::url`]).
    Web,
    /// A mirror: `<base>/<path>` for each file (e.g. `http://host/datasets/gsm8k/train.jsonl`).
    Mirror(String),
    /// A local copy: a datasets root or the dataset's own folder (`--from`).
    Local(PathBuf),
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Already there with the pinned digest; left alone.
    Present,
    /// Downloaded from this URL.
    Downloaded(String),
    /// Copied from this local file.
    Imported(PathBuf),
}

/// One file's result: where it is now and how it got there.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub path: PathBuf,
    pub sha256: &'static str,
    pub outcome: Outcome,
}

/// The dataset `id` of the catalogue, or an error listing the known ones.
pub fn dataset(id: &str) -> anyhow::Result<&'static Dataset> {
    envs::catalog::dataset(id).with_context(|| {
        format!(
            "unknown dataset {id:?}; known: {}",
            envs::catalog::dataset_ids()
        )
    })
}

/// Puts every file of `dataset` under `dir` (as `dir/<id>/<file>`), verified.
pub fn fetch(dataset: &Dataset, dir: &Path, source: &Source) -> anyhow::Result<Vec<Fetched>> {
    dataset
        .files
        .iter()
        .map(|file| fetch_file(file, dir, source))
        .collect()
}

fn fetch_file(file: &DataFile, dir: &Path, source: &Source) -> anyhow::Result<Fetched> {
    let path = dir.join(file.path);
    let done = |outcome| Fetched {
        path: path.clone(),
        sha256: file.sha256,
        outcome,
    };
    if path.is_file() && sha256_file(&path)? == file.sha256 {
        return Ok(done(Outcome::Present));
    }
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)
        .with_context(|| format!("creating {} (choose another --dir)", parent.display()))?;
    // Same directory as the target, so the final rename never crosses file systems.
    let mut temp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
    let mut hasher = Sha256::new();
    let mut write = |chunk: &[u8]| -> anyhow::Result<()> {
        hasher.update(chunk);
        temp.write_all(chunk)
            .with_context(|| format!("writing into {}", parent.display()))
    };
    let (origin, outcome) = match source {
        Source::Local(from) => {
            let local = local_copy(file, from)?;
            let mut reader = std::fs::File::open(&local)
                .with_context(|| format!("opening {}", local.display()))?;
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                let n = std::io::Read::read(&mut reader, &mut buffer)
                    .with_context(|| format!("reading {}", local.display()))?;
                if n == 0 {
                    break;
                }
                write(&buffer[..n])?;
            }
            (local.display().to_string(), Outcome::Imported(local))
        }
        Source::Web | Source::Mirror(_) => {
            let url = match source {
                Source::Mirror(base) => format!("{}/{}", base.trim_end_matches('/'), file.path),
                _ => file.url.to_string(),
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(http::get(&url, &mut write))
                .with_context(|| format!("downloading {}", file.path))?;
            (url.clone(), Outcome::Downloaded(url))
        }
    };
    let got = hex::encode(hasher.finalize());
    if got != file.sha256 {
        bail!(
            "{origin}: sha256 mismatch for {}: expected {}, got {got}; nothing was written (a corrupted transfer or a changed file: retry, or check the copy you import)",
            file.path,
            file.sha256
        );
    }
    temp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    temp.persist(&path)
        .with_context(|| format!("moving the verified file to {}", path.display()))?;
    Ok(done(outcome))
}

/// The file `--from` holds for `file`: `<from>/<id>/<name>` (a datasets root) or
/// `<from>/<name>` (the dataset's own folder), as the env loaders accept.
fn local_copy(file: &DataFile, from: &Path) -> anyhow::Result<PathBuf> {
    let name = Path::new(file.path).file_name().unwrap_or_default();
    let candidates = [from.join(file.path), from.join(name)];
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "--from {}: neither {} nor {} exists; pass the datasets root (holding {}) or the dataset's folder",
                from.display(),
                candidates[0].display(),
                candidates[1].display(),
                file.path
            )
        })
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut reader =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut reader, &mut hasher)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}
