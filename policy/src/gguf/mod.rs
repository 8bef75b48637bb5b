//! GGUF (llama.cpp) model loading: parse, dequantise to f32, map to Hugging Face names and
//! layouts, and rebuild `config.json` and the tokenizer from metadata.
//!
//! Entry point: [`load_gguf`]. The lower layers ([`GgufFile::parse`], [`dequantize`]) are
//! public for tools and tests.

mod config;
mod dequant;
mod names;
mod reader;
mod tokenizer;
mod types;

pub use dequant::{dequantize, DequantError};
pub use names::{hf_name, unpermute_rows, Projection};
pub use reader::{GgufFile, GgufTensorInfo, GgufValue};
pub use tokenizer::build_tokenizer;
pub use types::GgmlType;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

/// A GGUF model converted to what the HF-style loader expects.
pub struct GgufModel {
    /// f32 CPU tensors under HF names, in HF (row-major `[out, in]`) shapes.
    pub tensors: HashMap<String, Tensor>,
    /// HF `config.json` equivalent.
    pub config: serde_json::Value,
    pub tokenizer: tokenizers::Tokenizer,
    /// `tokenizer.chat_template` (Jinja), when present.
    pub chat_template: Option<String>,
}

/// Everything that can go wrong reading a GGUF file. Variants name the key or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read GGUF file `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file (magic bytes are not `GGUF`)")]
    NotGguf,
    #[error("GGUF version {version} is not supported: {hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },
    #[error("GGUF file truncated while reading {what} at byte {offset}")]
    Truncated { what: &'static str, offset: u64 },
    #[error("malformed GGUF file: {0}")]
    Malformed(String),
    #[error("GGUF metadata `{key}` is invalid: {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("GGUF metadata `{0}` is missing")]
    MissingMetadata(String),
    #[error("GGUF tensor `{tensor}` is invalid: {reason}")]
    BadTensor { tensor: String, reason: String },
    #[error("GGUF architecture `{0}` is not supported (supported: llama, qwen2)")]
    UnsupportedArchitecture(String),
    #[error("GGUF tensor `{0}` has no Hugging Face counterpart this loader knows; refusing to load a model it would silently change")]
    UnknownTensor(String),
    #[error("GGUF file has no `{0}` tensor")]
    MissingTensor(String),
    #[error("cannot dequantise GGUF tensor `{tensor}`: {source}")]
    Dequant {
        tensor: String,
        #[source]
        source: DequantError,
    },
    #[error("unsupported GGUF tokenizer: {0}")]
    UnsupportedTokenizer(String),
    #[error("building tensor `{tensor}` failed: {source}")]
    Tensor {
        tensor: String,
        #[source]
        source: candle_core::Error,
    },
}

/// Dequantises one tensor to f32 in ggml layout (row-major with reversed `dims`).
pub fn dequantize_tensor(
    file_bytes: &[u8],
    file: &GgufFile,
    info: &GgufTensorInfo,
) -> Result<Vec<f32>, GgufError> {
    let data = file.tensor_data(file_bytes, info)?;
    let elements = usize::try_from(info.n_elements).map_err(|_| GgufError::BadTensor {
        tensor: info.name.clone(),
        reason: "too many elements for this platform".into(),
    })?;
    dequantize(info.ggml_type, data, elements).map_err(|source| GgufError::Dequant {
        tensor: info.name.clone(),
        source,
    })
}

/// Loads a GGUF model file (llama or qwen2 architecture, byte-level BPE tokenizer).
pub fn load_gguf(path: &Path) -> Result<GgufModel, GgufError> {
    let io_err = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    // SAFETY: the map is read-only and dropped before returning; like every mmap user we
    // assume the file is not truncated by another process meanwhile.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
    load_gguf_bytes(&bytes)
}

/// [`load_gguf`] over a GGUF file already in memory.
pub fn load_gguf_bytes(bytes: &[u8]) -> Result<GgufModel, GgufError> {
    let file = GgufFile::parse(bytes)?;
    let arch_key = "general.architecture";
    let arch = file
        .metadata
        .get(arch_key)
        .ok_or_else(|| GgufError::MissingMetadata(arch_key.into()))?
        .as_str()
        .ok_or_else(|| GgufError::BadMetadata {
            key: arch_key.into(),
            reason: "expected a string".into(),
        })?;
    let (_, _, permuted_qk) = config::architecture(arch)
        .ok_or_else(|| GgufError::UnsupportedArchitecture(arch.into()))?;
    let meta = config::Metadata {
        map: &file.metadata,
        arch,
    };
    let geometry = meta.geometry()?;

    let mut tensors = HashMap::with_capacity(file.tensors.len());
    for info in &file.tensors {
        let (name, projection) =
            hf_name(&info.name).ok_or_else(|| GgufError::UnknownTensor(info.name.clone()))?;
        let mut values = dequantize_tensor(bytes, &file, info)?;
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let heads = match projection {
            Projection::Query if permuted_qk => Some(geometry.num_heads),
            Projection::Key if permuted_qk => Some(geometry.num_kv_heads),
            _ => None,
        };
        if let Some(heads) = heads {
            let rows = shape[0];
            let cols = shape[1..].iter().product();
            values = unpermute_rows(&values, rows, cols, heads as usize).ok_or_else(|| {
                GgufError::BadTensor {
                    tensor: info.name.clone(),
                    reason: format!("{rows} rows cannot be split into {heads} heads of even size"),
                }
            })?;
        }
        let tensor =
            Tensor::from_vec(values, shape, &Device::Cpu).map_err(|source| GgufError::Tensor {
                tensor: name.clone(),
                source,
            })?;
        tensors.insert(name, tensor);
    }

    let embed = "model.embed_tokens.weight";
    let vocab_size = tensors
        .get(embed)
        .ok_or_else(|| GgufError::MissingTensor("token_embd.weight".into()))?
        .dims()[0] as u64;
    let tie = !tensors.contains_key("lm_head.weight");
    let attention_bias = tensors.keys().any(|n| n.ends_with("q_proj.bias"));
    let config = meta.hf_config(vocab_size, tie, attention_bias)?;
    let tokenizer = build_tokenizer(&file.metadata)?;
    let chat_template = file
        .metadata
        .get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
        .map(str::to_string);
    Ok(GgufModel {
        tensors,
        config,
        tokenizer,
        chat_template,
    })
}
