//! HF `config.json` rebuilt from GGUF `{arch}.*` metadata.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::reader::GgufValue;
use super::GgufError;

/// Architectures whose GGUF layout this loader understands, with their HF class and whether
/// llama.cpp's converter permuted the q/k rows.
pub fn architecture(arch: &str) -> Option<(&'static str, &'static str, bool)> {
    match arch {
        "llama" => Some(("LlamaForCausalLM", "llama", true)),
        "qwen2" => Some(("Qwen2ForCausalLM", "qwen2", false)),
        _ => None,
    }
}

/// Model geometry read from metadata; also drives the q/k un-permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub hidden_size: u64,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
}

pub struct Metadata<'a> {
    pub map: &'a BTreeMap<String, GgufValue>,
    pub arch: &'a str,
}

impl Metadata<'_> {
    fn key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    fn get(&self, key: &str) -> Option<&GgufValue> {
        self.map.get(key)
    }

    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| GgufError::BadMetadata {
                key: key.into(),
                reason: format!("expected an unsigned integer, found {v:?}"),
            }),
        }
    }

    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        self.u64_opt(key)?
            .ok_or_else(|| GgufError::MissingMetadata(key.into()))
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| GgufError::BadMetadata {
                key: key.into(),
                reason: format!("expected a number, found {v:?}"),
            }),
        }
    }

    pub fn geometry(&self) -> Result<Geometry, GgufError> {
        let num_heads = self.u64(&self.key("attention.head_count"))?;
        let num_kv_heads = self
            .u64_opt(&self.key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(GgufError::BadMetadata {
                key: self.key("attention.head_count_kv"),
                reason: format!("{num_heads} heads cannot be shared by {num_kv_heads} kv heads"),
            });
        }
        Ok(Geometry {
            hidden_size: self.u64(&self.key("embedding_length"))?,
            num_layers: self.u64(&self.key("block_count"))?,
            num_heads,
            num_kv_heads,
        })
    }

    /// The HF config; `vocab_size` and tying come from the tensors actually present.
    pub fn hf_config(
        &self,
        vocab_size: u64,
        tie_word_embeddings: bool,
        attention_bias: bool,
    ) -> Result<Value, GgufError> {
        let (class, model_type, _) = architecture(self.arch)
            .ok_or_else(|| GgufError::UnsupportedArchitecture(self.arch.to_string()))?;
        let g = self.geometry()?;
        let head_dim = match self.u64_opt(&self.key("attention.key_length"))? {
            Some(d) => d,
            None => g.hidden_size / g.num_heads,
        };
        let mut config = Map::new();
        let mut set = |k: &str, v: Value| {
            config.insert(k.to_string(), v);
        };
        set("architectures", json!([class]));
        set("model_type", json!(model_type));
        set("hidden_act", json!("silu"));
        set("hidden_size", json!(g.hidden_size));
        set(
            "intermediate_size",
            json!(self.u64(&self.key("feed_forward_length"))?),
        );
        set("num_hidden_layers", json!(g.num_layers));
        set("num_attention_heads", json!(g.num_heads));
        set("num_key_value_heads", json!(g.num_kv_heads));
        set("head_dim", json!(head_dim));
        let eps_key = self.key("attention.layer_norm_rms_epsilon");
        set(
            "rms_norm_eps",
            json!(self
                .f64_opt(&eps_key)?
                .ok_or(GgufError::MissingMetadata(eps_key))?),
        );
        set(
            "rope_theta",
            json!(self
                .f64_opt(&self.key("rope.freq_base"))?
                .unwrap_or(10000.0)),
        );
        set("vocab_size", json!(vocab_size));
        let context = self.u64_opt(&self.key("context_length"))?.unwrap_or(2048);
        set("max_position_embeddings", json!(context));
        set("tie_word_embeddings", json!(tie_word_embeddings));
        set("attention_bias", json!(attention_bias));
        set("torch_dtype", json!("float32"));
        for (hf, gguf) in [
            ("bos_token_id", "tokenizer.ggml.bos_token_id"),
            ("eos_token_id", "tokenizer.ggml.eos_token_id"),
            ("pad_token_id", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = self.u64_opt(gguf)? {
                set(hf, json!(id));
            }
        }
        Ok(Value::Object(config))
    }
}
