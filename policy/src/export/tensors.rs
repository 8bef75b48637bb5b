//! `model.safetensors`: the weights under HF names in the export dtype, with the tensors
//! transformers' classes expect for each family.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{io_err, ExportError};
use crate::checkpoint::WeightSet;
use crate::config::{Arch, ModelConfig};

/// The tensors to write: every tensor `cfg` expects, converted to `dtype` on the CPU.
///
/// Tied embeddings are written once (no `lm_head.weight`), as transformers saves them. Where
/// grail's model and transformers' class disagree on which biases exist, the missing ones are
/// written as zeros, which changes no output: transformers' Qwen2 always has q/k/v biases, and
/// Llama with `attention_bias` also has an o_proj bias grail's model does not use.
pub fn hf_tensors(
    cfg: &ModelConfig,
    weights: &WeightSet,
    dtype: DType,
) -> Result<BTreeMap<String, Tensor>, ExportError> {
    let tensor_err = |name: &str| {
        let name = name.to_string();
        move |source| ExportError::Tensor { name, source }
    };
    let mut out = BTreeMap::new();
    for (name, expected) in cfg.expected_tensors() {
        let t = weights
            .get(&name)
            .ok_or_else(|| ExportError::MissingTensor {
                name: name.clone(),
                expected: expected.clone(),
            })?;
        if t.dims() != expected.as_slice() {
            return Err(ExportError::ShapeMismatch {
                name,
                expected,
                got: t.dims().to_vec(),
            });
        }
        let t = t
            .to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .and_then(|t| t.contiguous())
            .map_err(tensor_err(&name))?;
        out.insert(name, t);
    }
    let q_out = cfg.num_attention_heads * cfg.head_dim;
    let kv_out = cfg.num_key_value_heads * cfg.head_dim;
    let zero_biases: Vec<(&str, usize)> = match (cfg.arch, cfg.qkv_bias) {
        (Arch::Qwen2, false) => vec![("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)],
        (Arch::Llama, true) => vec![("o_proj", cfg.hidden_size)],
        _ => Vec::new(),
    };
    for layer in 0..cfg.num_hidden_layers {
        for (proj, len) in &zero_biases {
            let name = format!("model.layers.{layer}.self_attn.{proj}.bias");
            let t = Tensor::zeros(*len, dtype, &Device::Cpu).map_err(tensor_err(&name))?;
            out.insert(name, t);
        }
    }
    Ok(out)
}

/// Writes `tensors` (sorted by name, with the `format: pt` metadata transformers checks) and
/// returns the file size.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<u64, ExportError> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors.iter(), Some(metadata), path)
        .map_err(|e| io_err(path, e))?;
    Ok(std::fs::metadata(path).map_err(|e| io_err(path, e))?.len())
}
