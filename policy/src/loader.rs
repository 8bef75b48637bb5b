//! Loading a model: an HF directory (config.json, single or sharded safetensors, tokenizer.json,
//! tokenizer_config.json, generation_config.json), or parts handed over by another loader
//! (GGUF). Every tensor is checked against the config before the model is built, so errors
//! name the file and tensor at fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::ModelConfig;
use crate::error::LoadError;
use crate::model::Model;
use crate::tokenizer::{load_chat_template, PolicyTokenizer};

/// Where and in which dtype to put the weights.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub device: Device,
    /// f32 on CPU; bf16 on CUDA (norms, RoPE, softmax and the LM head still run in f32).
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }
}

/// A ready-to-run policy: config, model, tokenizer, chat template, stop ids, device.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    pub config: ModelConfig,
    pub model: Model,
    pub tokenizer: PolicyTokenizer,
    /// The raw (Jinja) chat template, if the model ships one.
    pub chat_template: Option<String>,
    /// Generation stops at any of these (config.json ∪ generation_config.json, in order).
    pub eos_ids: Vec<u32>,
    /// Right-padding id: config pad, else generation_config pad, else the first eos.
    pub pad_id: u32,
    /// The validated weights by HF name (sharing storage with `model`), e.g. to seed a trainer.
    pub weights: HashMap<String, Tensor>,
    pub device: Device,
    /// The path or description the model came from.
    pub origin: String,
}

/// Loads a model from `path`: a directory is read as an HF model directory, a `*.gguf` file
/// through the GGUF loader.
pub fn load_model(path: &Path, opts: &LoadOptions) -> Result<LoadedModel, LoadError> {
    if path.is_dir() {
        return LoadedModel::from_hf_dir(path, opts);
    }
    let is_gguf = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf {
        let g = crate::gguf::load_gguf(path).map_err(|e| LoadError::Gguf {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let origin = path.display().to_string();
        return LoadedModel::from_parts(
            g.tensors,
            g.config,
            g.tokenizer,
            g.chat_template,
            &origin,
            opts,
        );
    }
    if !path.exists() {
        return Err(LoadError::MissingFile {
            path: path.to_path_buf(),
            what: "model (expected an HF model directory or a .gguf file)".into(),
        });
    }
    Err(LoadError::Unsupported {
        path: path.to_path_buf(),
        message: "expected an HF model directory or a .gguf file".into(),
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| LoadError::Invalid {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

/// The safetensors files of an HF directory: the shards named by
/// `model.safetensors.index.json`, else `model.safetensors`, else every `*.safetensors`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let value = read_json(&index)?;
        let map = value
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| LoadError::Invalid {
                path: index.clone(),
                message: "no `weight_map` object".into(),
            })?;
        let mut files: Vec<PathBuf> = Vec::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| LoadError::Invalid {
                path: index.clone(),
                message: format!("weight_map[{name:?}] is not a file name"),
            })?;
            let path = dir.join(file);
            if !files.contains(&path) {
                files.push(path);
            }
        }
        files.sort();
        for f in &files {
            if !f.exists() {
                return Err(LoadError::MissingFile {
                    path: f.clone(),
                    what: format!("shard listed in {}", index.display()),
                });
            }
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LoadError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadError::MissingFile {
            path: dir.join("model.safetensors"),
            what: "weights (model.safetensors, or shards with model.safetensors.index.json)".into(),
        });
    }
    Ok(files)
}

/// Reads every tensor `cfg` expects from the safetensors `files`, checking shape and dtype.
fn read_safetensors(
    files: &[PathBuf],
    cfg: &ModelConfig,
) -> Result<HashMap<String, Tensor>, LoadError> {
    let mut opened = Vec::with_capacity(files.len());
    let mut routing: HashMap<String, usize> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        // SAFETY: the file is mapped read-only; we copy each tensor out before returning.
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }.map_err(|e| {
                LoadError::Invalid {
                    path: file.clone(),
                    message: format!("not a readable safetensors file: {e}"),
                }
            })?;
        for (name, _) in st.tensors() {
            routing.insert(name, i);
        }
        opened.push(st);
    }
    let all_files = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = HashMap::new();
    for (name, expected) in cfg.expected_tensors() {
        let Some(&i) = routing.get(&name) else {
            return Err(LoadError::MissingTensor {
                origin: all_files,
                name,
                expected,
            });
        };
        let origin = files[i].display().to_string();
        let view = opened[i].get(&name).map_err(|e| LoadError::Invalid {
            path: files[i].clone(),
            message: format!("tensor `{name}`: {e}"),
        })?;
        let tensor = candle_core::safetensors::Load::load(&view, &Device::Cpu).map_err(|e| {
            LoadError::Invalid {
                path: files[i].clone(),
                message: format!("tensor `{name}`: {e}"),
            }
        })?;
        check_tensor(&origin, &name, &expected, &tensor)?;
        out.insert(name, tensor);
    }
    Ok(out)
}

fn check_tensor(origin: &str, name: &str, expected: &[usize], t: &Tensor) -> Result<(), LoadError> {
    if !matches!(
        t.dtype(),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64
    ) {
        return Err(LoadError::BadDtype {
            origin: origin.to_string(),
            name: name.to_string(),
            dtype: format!("{:?}", t.dtype()),
        });
    }
    if t.dims() != expected {
        return Err(LoadError::ShapeMismatch {
            origin: origin.to_string(),
            name: name.to_string(),
            expected: expected.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    Ok(())
}

fn token_ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl LoadedModel {
    /// Loads an HF model directory.
    pub fn from_hf_dir(dir: &Path, opts: &LoadOptions) -> Result<Self, LoadError> {
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(LoadError::MissingFile {
                path: config_path,
                what: "config.json (HF model config)".into(),
            });
        }
        let config_json = read_json(&config_path)?;
        let cfg = ModelConfig::from_hf_json(&config_json, &config_path.display().to_string())?;
        let weights = read_safetensors(&safetensors_files(dir)?, &cfg)?;
        let tokenizer = PolicyTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let chat_template = load_chat_template(&dir.join("tokenizer_config.json"))?;
        let gen_path = dir.join("generation_config.json");
        let generation = if gen_path.exists() {
            Some(read_json(&gen_path)?)
        } else {
            None
        };
        let mut loaded = Self::from_parts(
            weights,
            config_json,
            tokenizer.inner().clone(),
            chat_template,
            &dir.display().to_string(),
            opts,
        )?;
        if let Some(generation) = generation {
            for id in token_ids(generation.get("eos_token_id")) {
                if !loaded.eos_ids.contains(&id) {
                    loaded.eos_ids.push(id);
                }
            }
            if loaded.config.pad_token_id.is_none() {
                if let Some(&pad) = token_ids(generation.get("pad_token_id")).first() {
                    loaded.pad_id = pad;
                }
            }
        }
        Ok(loaded)
    }

    /// Builds a model from parts another loader produced: HF-named tensors (any float dtype),
    /// an HF-style config.json value, a tokenizer and an optional chat template. `origin`
    /// names the source in errors.
    pub fn from_parts(
        tensors: HashMap<String, Tensor>,
        config_json: serde_json::Value,
        tokenizer: tokenizers::Tokenizer,
        chat_template: Option<String>,
        origin: &str,
        opts: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let config = ModelConfig::from_hf_json(&config_json, origin)?;
        let mut weights = HashMap::new();
        for (name, expected) in config.expected_tensors() {
            let t = tensors.get(&name).ok_or_else(|| LoadError::MissingTensor {
                origin: origin.to_string(),
                name: name.clone(),
                expected: expected.clone(),
            })?;
            check_tensor(origin, &name, &expected, t)?;
            let t = t.to_dtype(opts.dtype)?.to_device(&opts.device)?;
            weights.insert(name, t);
        }
        let vb = VarBuilder::from_tensors(weights.clone(), opts.dtype, &opts.device);
        let model = Model::new(&config, vb)?;
        let tokenizer = PolicyTokenizer::new(tokenizer);
        let mut eos_ids = config.eos_token_ids.clone();
        if eos_ids.is_empty() {
            let from_vocab = ["<|im_end|>", "<|endoftext|>", "</s>"]
                .iter()
                .find_map(|t| tokenizer.token_to_id(t));
            eos_ids.extend(from_vocab);
        }
        let Some(&first_eos) = eos_ids.first() else {
            return Err(LoadError::Invalid {
                path: PathBuf::from(origin),
                message: "no eos_token_id in config.json and no known eos token in the vocabulary"
                    .into(),
            });
        };
        let pad_id = config.pad_token_id.unwrap_or(first_eos);
        Ok(Self {
            config,
            model,
            tokenizer,
            chat_template,
            eos_ids,
            pad_id,
            weights,
            device: opts.device.clone(),
            origin: origin.to_string(),
        })
    }
}
