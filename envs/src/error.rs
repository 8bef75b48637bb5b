use std::path::PathBuf;

/// Errors building an environment. Each names the file or key at fault and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("unknown environment id `{id}` in [envs]; known ids: {known}")]
    UnknownEnv { id: String, known: String },

    #[error("environment `{env}` has no `data_dir`; set `data_dir` to the datasets root (the folder holding {expected}), filled by `grail data fetch {env} --dir DIR`")]
    MissingDataDir { env: String, expected: String },

    #[error("{env}: {} not found (looked in {looked}); {hint}, or point `data_dir` at the folder that holds it", path.display())]
    DataFileMissing {
        env: String,
        path: PathBuf,
        looked: String,
        /// The command that fetches the data ([`crate::catalog::fetch_hint`]).
        hint: String,
    },

    #[error("cannot read data file {}: {source}; check the path and permissions", path.display())]
    DataFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("data file {} line {line}: {message}; the file is not in the expected format (see the datasets README)", path.display())]
    DataRow {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("data file {} holds no usable problems{detail}; check that it is the right file", path.display())]
    EmptyDataset { path: PathBuf, detail: String },

    #[error(
        "environment `{env}`: unknown parameter `params.{key}`; allowed parameters: {allowed}"
    )]
    UnknownParam {
        env: String,
        key: String,
        allowed: String,
    },

    #[error("environment `{env}`: parameter `params.{key}` {message}")]
    BadParam {
        env: String,
        key: String,
        message: String,
    },

    #[error("unknown split `{given}`; use `train` (what miners sample) or `eval` (the held-out problems)")]
    BadSplit { given: String },

    #[error("python sandbox unavailable: {0}")]
    Sandbox(String),
}
