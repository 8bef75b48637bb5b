//! The JSON files of an export: `config.json` with each family's own fields,
//! `generation_config.json` and `tokenizer_config.json`.

use serde_json::{json, Value};

use super::{ExportDtype, ExportError, ExportModel};
use crate::config::{Arch, ModelConfig};

/// One id as a number, several as a list (what HF configs do).
fn ids_value(ids: &[u32]) -> Value {
    match ids {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    }
}

/// `config.json`: the fields grail reads plus the ones transformers' `LlamaConfig` /
/// `Qwen2Config` would otherwise default differently (sliding window, rope scaling, ...).
pub fn config_json(cfg: &ModelConfig, dtype: ExportDtype) -> Value {
    let mut value = cfg.to_hf_json();
    let map = value
        .as_object_mut()
        .expect("ModelConfig::to_hf_json is an object");
    map.insert("torch_dtype".into(), json!(dtype.torch_name()));
    map.insert("eos_token_id".into(), ids_value(&cfg.eos_token_ids));
    map.insert("use_cache".into(), json!(true));
    map.insert("attention_dropout".into(), json!(0.0));
    map.insert("initializer_range".into(), json!(0.02));
    map.insert("rope_scaling".into(), Value::Null);
    match cfg.arch {
        Arch::Llama => {
            map.insert("mlp_bias".into(), json!(false));
            map.insert("pretraining_tp".into(), json!(1));
        }
        Arch::Qwen2 => {
            // grail's attention is full causal attention on every layer.
            map.insert("use_sliding_window".into(), json!(false));
            map.insert("sliding_window".into(), Value::Null);
            map.insert("max_window_layers".into(), json!(cfg.num_hidden_layers));
        }
    }
    value
}

/// `generation_config.json`: the stop ids grail generates with and the pad id.
pub fn generation_config_json(cfg: &ModelConfig, eos_ids: &[u32], pad_id: u32) -> Value {
    json!({
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": ids_value(eos_ids),
        "pad_token_id": pad_id,
    })
}

fn token(model: &ExportModel<'_>, id: u32, what: &'static str) -> Result<String, ExportError> {
    model
        .tokenizer
        .inner()
        .id_to_token(id)
        .ok_or(ExportError::UnknownToken { id, what })
}

/// `tokenizer_config.json`: the fast tokenizer class (everything else lives in
/// tokenizer.json), the special tokens by content and the chat template.
pub fn tokenizer_config_json(model: &ExportModel<'_>) -> Result<Value, ExportError> {
    let bos = model
        .config
        .bos_token_id
        .map(|id| token(model, id, "bos_token_id"))
        .transpose()?;
    let eos = model
        .eos_ids
        .first()
        .map(|&id| token(model, id, "eos_token_id"))
        .transpose()?;
    let pad = token(model, model.pad_id, "pad_token_id")?;
    let mut value = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "unk_token": null,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model.config.max_position_embeddings,
    });
    if let Some(template) = model.chat_template {
        value["chat_template"] = json!(template);
    }
    Ok(value)
}
