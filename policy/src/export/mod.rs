//! Export a model (base or checkpoint) as a standard Hugging Face model directory:
//! `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json` and a `README.md` model card. The directory loads unchanged in
//! transformers (`AutoModelForCausalLM`, `AutoTokenizer`) and in [`crate::load_model`].

mod card;
mod files;
mod tensors;

pub use card::{CardCheckpoint, ModelCard};
pub use files::{config_json, generation_config_json, tokenizer_config_json};
pub use tensors::hf_tensors;

use std::path::{Path, PathBuf};

use candle_core::DType;

use crate::checkpoint::WeightSet;
use crate::config::ModelConfig;
use crate::tokenizer::PolicyTokenizer;
use crate::LoadedModel;

/// The weight dtype of `model.safetensors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportDtype {
    F32,
    Bf16,
}

impl ExportDtype {
    pub fn dtype(self) -> DType {
        match self {
            ExportDtype::F32 => DType::F32,
            ExportDtype::Bf16 => DType::BF16,
        }
    }

    /// The `torch_dtype` written to config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "float32",
            ExportDtype::Bf16 => "bfloat16",
        }
    }
}

impl std::str::FromStr for ExportDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(ExportDtype::F32),
            "bf16" | "bfloat16" => Ok(ExportDtype::Bf16),
            other => Err(format!("{other:?}: use f32 or bf16")),
        }
    }
}

/// Everything an export needs: the architecture, the weights (HF names) and the tokenizer side.
pub struct ExportModel<'a> {
    pub config: &'a ModelConfig,
    /// The weights to write (a checkpoint's, or the base model's), by HF name.
    pub weights: &'a WeightSet,
    pub tokenizer: &'a PolicyTokenizer,
    pub chat_template: Option<&'a str>,
    /// Generation stops at any of these (written to generation_config.json).
    pub eos_ids: &'a [u32],
    pub pad_id: u32,
}

/// Failures while exporting; each names the file or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: cannot write: {message}")]
    Io { path: PathBuf, message: String },
    #[error("the weights have no tensor `{name}` (the model config implies shape {expected:?}); export a weight set of this model")]
    MissingTensor { name: String, expected: Vec<usize> },
    #[error("tensor `{name}` has shape {got:?} but the model config implies {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("token id {id} ({what}) is outside the tokenizer's vocabulary")]
    UnknownToken { id: u32, what: &'static str },
    #[error("tensor `{name}`: {source}")]
    Tensor {
        name: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("tokenizer.json: cannot serialise the tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: refusing to export into a non-empty directory that is not a model directory (remove it or pick another --out)")]
    NotEmpty { path: PathBuf },
}

/// What [`export_hf_dir`] wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub dir: PathBuf,
    pub files: Vec<String>,
    pub tensors: usize,
    pub parameters: usize,
    pub weight_bytes: u64,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn write_text(path: &Path, text: &str) -> Result<(), ExportError> {
    std::fs::write(path, text).map_err(|e| io_err(path, e))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ExportError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| io_err(path, e))?;
    write_text(path, &(text + "\n"))
}

/// The files an export writes, in the order it writes them.
pub const EXPORT_FILES: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
    "README.md",
];

/// Writes `model` into `dir` (created if needed) as an HF model directory.
///
/// A directory that already holds files must look like a model directory (it has a
/// config.json); its export files are overwritten, others are left alone.
pub fn export_hf_dir(
    dir: &Path,
    model: &ExportModel<'_>,
    dtype: ExportDtype,
    card: &ModelCard,
) -> Result<ExportSummary, ExportError> {
    if dir.is_dir() {
        let non_empty = std::fs::read_dir(dir)
            .map_err(|e| io_err(dir, e))?
            .next()
            .is_some();
        if non_empty && !dir.join("config.json").exists() {
            return Err(ExportError::NotEmpty {
                path: dir.to_path_buf(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    // Tensors first: a missing or misshapen weight fails before any file is written.
    let tensors = hf_tensors(model.config, model.weights, dtype.dtype())?;
    let tokenizer_json = model
        .tokenizer
        .inner()
        .to_string(true)
        .map_err(|e| ExportError::Tokenizer(e.to_string()))?;

    write_json(&dir.join("config.json"), &config_json(model.config, dtype))?;
    write_json(
        &dir.join("generation_config.json"),
        &generation_config_json(model.config, model.eos_ids, model.pad_id),
    )?;
    write_text(&dir.join("tokenizer.json"), &(tokenizer_json + "\n"))?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer_config_json(model)?,
    )?;
    let weights_path = dir.join("model.safetensors");
    let weight_bytes = tensors::write_safetensors(&weights_path, &tensors)?;
    // safetensors creates its file owner-only; give it the permissions of the other files.
    let perms = std::fs::metadata(dir.join("config.json"))
        .map_err(|e| io_err(dir, e))?
        .permissions();
    std::fs::set_permissions(&weights_path, perms).map_err(|e| io_err(&weights_path, e))?;
    let parameters = tensors.values().map(|t| t.elem_count()).sum();
    write_text(
        &dir.join("README.md"),
        &card.render(model.config, dtype, parameters),
    )?;
    Ok(ExportSummary {
        dir: dir.to_path_buf(),
        files: EXPORT_FILES.iter().map(|f| f.to_string()).collect(),
        tensors: tensors.len(),
        parameters,
        weight_bytes,
    })
}

/// Exports a loaded model with its own weights (the base model).
pub fn export_loaded(
    dir: &Path,
    loaded: &LoadedModel,
    dtype: ExportDtype,
    card: &ModelCard,
) -> Result<ExportSummary, ExportError> {
    let weights: WeightSet = loaded
        .weights
        .iter()
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let model = ExportModel {
        config: &loaded.config,
        weights: &weights,
        tokenizer: &loaded.tokenizer,
        chat_template: loaded.chat_template.as_deref(),
        eos_ids: &loaded.eos_ids,
        pad_id: loaded.pad_id,
    };
    export_hf_dir(dir, &model, dtype, card)
}
