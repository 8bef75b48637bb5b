//! `ModelConfig`: the subset of a Hugging Face `config.json` that a decoder-only Qwen2/Qwen2.5 or
//! Llama (SmolLM2) model needs, plus the list of tensors (HF names and shapes) it expects.

use serde::{Deserialize, Deserializer, Serialize};
use std::path::Path;

use crate::error::ConfigError;

/// Model family. Both share the block layout; they differ in q/k/v biases and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Qwen2 / Qwen2.5: q/k/v projections carry a bias.
    Qwen2,
    /// Llama / SmolLM2: no biases (unless `attention_bias` says otherwise).
    Llama,
}

impl Arch {
    /// The HF `architectures` entry written for this family.
    pub fn hf_architecture(self) -> &'static str {
        match self {
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
        }
    }

    /// The HF `model_type` written for this family.
    pub fn hf_model_type(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Llama => "llama",
        }
    }

    fn from_hf(architectures: &[String], model_type: Option<&str>) -> Option<Arch> {
        let by_arch = architectures.iter().find_map(|a| match a.as_str() {
            "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            "LlamaForCausalLM" => Some(Arch::Llama),
            _ => None,
        });
        by_arch.or(match model_type {
            Some("qwen2") => Some(Arch::Qwen2),
            Some("llama") => Some(Arch::Llama),
            _ => None,
        })
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "qwen2" | "qwen2.5" => Ok(Arch::Qwen2),
            "llama" | "smollm2" => Ok(Arch::Llama),
            other => Err(format!(
                "unknown architecture {other:?} (expected qwen2 or llama)"
            )),
        }
    }
}

/// `eos_token_id` is an int in some configs and a list in others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The raw JSON fields, before architecture-dependent defaults are applied.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    vocab_size: usize,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default, deserialize_with = "null_or_ids")]
    bos_token_id: Option<TokenIds>,
    #[serde(default, deserialize_with = "null_or_ids")]
    eos_token_id: Option<TokenIds>,
    #[serde(default, deserialize_with = "null_or_ids")]
    pad_token_id: Option<TokenIds>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    hidden_act: Option<String>,
}

fn null_or_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TokenIds>, D::Error> {
    Option::<TokenIds>::deserialize(d)
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_max_positions() -> usize {
    32_768
}

/// Architecture hyper-parameters, validated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2: true; Llama: `attention_bias`, default false). The
    /// o projection never has a bias in either family.
    pub qkv_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

impl ModelConfig {
    /// Parses an HF `config.json` value. `origin` names the file in errors.
    pub fn from_hf_json(value: &serde_json::Value, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            serde_json::from_value(value.clone()).map_err(|e| ConfigError::Parse {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
        let bad = |field: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let arch = Arch::from_hf(&raw.architectures, raw.model_type.as_deref()).ok_or_else(|| {
            bad(
                "architectures",
                format!(
                    "unsupported {:?} / model_type {:?}; supported: Qwen2ForCausalLM, LlamaForCausalLM",
                    raw.architectures, raw.model_type
                ),
            )
        })?;
        if let Some(act) = raw.hidden_act.as_deref() {
            if act != "silu" {
                return Err(bad(
                    "hidden_act",
                    format!("{act:?} is not supported (only silu)"),
                ));
            }
        }
        if raw.mlp_bias {
            return Err(bad("mlp_bias", "MLP biases are not supported".into()));
        }
        if let Some(scaling) = &raw.rope_scaling {
            let kind = scaling
                .get("rope_type")
                .or_else(|| scaling.get("type"))
                .and_then(|v| v.as_str());
            if !scaling.is_null() && kind != Some("default") {
                return Err(bad(
                    "rope_scaling",
                    format!("{scaling} is not supported (only plain RoPE)"),
                ));
            }
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(bad(
                "num_key_value_heads",
                format!("{kv_heads} must be non-zero and divide num_attention_heads {heads}"),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if raw.hidden_size.is_multiple_of(heads) => raw.hidden_size / heads,
            None => {
                return Err(bad(
                    "hidden_size",
                    format!("{} is not divisible by {heads} heads", raw.hidden_size),
                ))
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(
                "head_dim",
                format!("{head_dim} must be even and non-zero"),
            ));
        }
        for (field, v) in [
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("vocab_size", raw.vocab_size),
        ] {
            if v == 0 {
                return Err(bad(field, "must be non-zero".into()));
            }
        }
        if !(raw.rms_norm_eps.is_finite() && raw.rms_norm_eps > 0.0) {
            return Err(bad(
                "rms_norm_eps",
                format!("{} must be > 0", raw.rms_norm_eps),
            ));
        }
        if !(raw.rope_theta.is_finite() && raw.rope_theta > 0.0) {
            return Err(bad("rope_theta", format!("{} must be > 0", raw.rope_theta)));
        }
        let single = |ids: Option<TokenIds>| ids.and_then(|t| t.to_vec().first().copied());
        Ok(ModelConfig {
            arch,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta,
            vocab_size: raw.vocab_size,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            qkv_bias: raw.attention_bias.unwrap_or(arch == Arch::Qwen2),
            bos_token_id: single(raw.bos_token_id),
            eos_token_ids: raw.eos_token_id.map(|t| t.to_vec()).unwrap_or_default(),
            pad_token_id: single(raw.pad_token_id),
        })
    }

    /// Reads and parses `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
        Self::from_hf_json(&value, &origin)
    }

    /// An HF-style `config.json` value for this config (what `write_tiny_model` saves).
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": [self.arch.hf_architecture()],
            "model_type": self.arch.hf_model_type(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.qkv_bias,
            "hidden_act": "silu",
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_ids,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": "float32",
        })
    }

    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Every tensor the model reads, with its HF name and shape, in a fixed order.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q_out = self.num_attention_heads * self.head_dim;
        let kv_out = self.num_key_value_heads * self.head_dim;
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for layer in 0..self.num_hidden_layers {
            let p = format!("model.layers.{layer}");
            let mut push = |name: &str, shape: Vec<usize>| out.push((format!("{p}.{name}"), shape));
            push("input_layernorm.weight", vec![h]);
            push("self_attn.q_proj.weight", vec![q_out, h]);
            push("self_attn.k_proj.weight", vec![kv_out, h]);
            push("self_attn.v_proj.weight", vec![kv_out, h]);
            if self.qkv_bias {
                push("self_attn.q_proj.bias", vec![q_out]);
                push("self_attn.k_proj.bias", vec![kv_out]);
                push("self_attn.v_proj.bias", vec![kv_out]);
            }
            push("self_attn.o_proj.weight", vec![h, q_out]);
            push("post_attention_layernorm.weight", vec![h]);
            push("mlp.gate_proj.weight", vec![i, h]);
            push("mlp.up_proj.weight", vec![i, h]);
            push("mlp.down_proj.weight", vec![h, i]);
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        out
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn parameter_count(&self) -> usize {
        self.expected_tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 256,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6, "rope_theta": 1e6, "vocab_size": 300,
            "tie_word_embeddings": true, "eos_token_id": 7, "bos_token_id": null
        })
    }

    #[test]
    fn parses_int_or_list_eos_and_arch_defaults() {
        let cfg = ModelConfig::from_hf_json(&base(), "x").unwrap();
        assert_eq!(cfg.eos_token_ids, vec![7]);
        assert!(cfg.qkv_bias);
        assert_eq!(cfg.head_dim, 16);
        let mut v = base();
        v["eos_token_id"] = serde_json::json!([7, 9]);
        v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
        let cfg = ModelConfig::from_hf_json(&v, "x").unwrap();
        assert_eq!(cfg.eos_token_ids, vec![7, 9]);
        assert!(!cfg.qkv_bias);
        let round = ModelConfig::from_hf_json(&cfg.to_hf_json(), "y").unwrap();
        assert_eq!(round, cfg);
    }

    #[test]
    fn rejects_bad_head_counts_and_unknown_arch_naming_the_field() {
        let mut v = base();
        v["num_key_value_heads"] = serde_json::json!(3);
        let err = ModelConfig::from_hf_json(&v, "cfg.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("num_key_value_heads") && err.contains("cfg.json"),
            "{err}"
        );
        let mut v = base();
        v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        let err = ModelConfig::from_hf_json(&v, "cfg.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("architectures"), "{err}");
    }
}
