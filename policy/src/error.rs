//! Typed errors. Every load error names the file (or origin) and what is wrong with it.

use std::path::PathBuf;

/// A `config.json` problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read: {message}")]
    Io { origin: String, message: String },
    #[error("{origin}: not a valid HF config: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: field `{field}`: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
}

/// A problem loading a model directory (or GGUF file) into a [`crate::LoadedModel`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: missing {what}")]
    MissingFile { path: PathBuf, what: String },
    #[error("{path}: cannot read: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{origin}: missing tensor `{name}` (config.json implies shape {expected:?})")]
    MissingTensor {
        origin: String,
        name: String,
        expected: Vec<usize>,
    },
    #[error("{origin}: tensor `{name}` has shape {got:?} but config.json implies {expected:?}")]
    ShapeMismatch {
        origin: String,
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{origin}: tensor `{name}` has dtype {dtype}; only f32, f16 and bf16 weights load")]
    BadDtype {
        origin: String,
        name: String,
        dtype: String,
    },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{path}: GGUF: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("{path}: unsupported model path: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("building the model: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Errors from running the model (generation, proof forward, training).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("token id {token} at index {index} is outside the vocabulary ({vocab})")]
    TokenOutOfRange {
        token: u32,
        index: usize,
        vocab: usize,
    },
}

pub type PolicyResult<T> = Result<T, PolicyError>;

/// Fails with [`PolicyError::TokenOutOfRange`] on the first id outside `0..vocab` (an index
/// the embedding would otherwise read out of bounds).
pub fn check_token_range(tokens: &[u32], vocab: usize) -> PolicyResult<()> {
    match tokens.iter().position(|&t| t as usize >= vocab) {
        Some(index) => Err(PolicyError::TokenOutOfRange {
            token: tokens[index],
            index,
            vocab,
        }),
        None => Ok(()),
    }
}
