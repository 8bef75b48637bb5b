//! `write_tiny_model`: a complete, deterministic HF-style model directory for tests, demos and
//! benchmarks (config.json, generation_config.json, model.safetensors, tokenizer.json,
//! tokenizer_config.json with a ChatML template).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use serde_json::json;

use crate::config::{Arch, ModelConfig};
use crate::error::LoadError;
use crate::model::seeded_weights;
use crate::tokenizer::CHATML_TEMPLATE;

/// Special tokens of the tiny tokenizer, with ids following the 256 byte tokens.
pub const TINY_SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// `<|endoftext|>`: the pad token.
pub const TINY_PAD_ID: u32 = 256;
/// `<|im_start|>`.
pub const TINY_IM_START_ID: u32 = 257;
/// `<|im_end|>`: the eos token.
pub const TINY_EOS_ID: u32 = 258;

/// The tiny architecture: hidden 64, 2 layers, 4 heads, 2 kv heads, ffn 256, vocab 259.
/// Qwen2 gets untied embeddings (exercises `lm_head.weight`), Llama tied (like SmolLM2).
pub fn tiny_config(arch: Arch) -> ModelConfig {
    ModelConfig {
        arch,
        hidden_size: 64,
        intermediate_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        vocab_size: 256 + TINY_SPECIAL_TOKENS.len(),
        max_position_embeddings: 4096,
        tie_word_embeddings: arch == Arch::Llama,
        qkv_bias: arch == Arch::Qwen2,
        bos_token_id: None,
        eos_token_ids: vec![TINY_EOS_ID],
        pad_token_id: Some(TINY_PAD_ID),
    }
}

/// GPT-2's byte → printable-character map used by byte-level BPE vocabularies.
pub fn byte_to_unicode() -> [char; 256] {
    let printable = |b: u32| {
        (b'!' as u32..=b'~' as u32).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut map = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let code = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map[b as usize] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    map
}

/// tokenizer.json for a byte-level tokenizer: token id = byte value, no merges, plus the
/// ChatML special tokens. `add_prefix_space` is false so encode→decode is exact.
fn tiny_tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = byte_to_unicode()
        .iter()
        .enumerate()
        .map(|(id, c)| (c.to_string(), json!(id)))
        .collect();
    let added: Vec<serde_json::Value> = TINY_SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, content)| {
            json!({"id": 256 + i, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []
        }
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), LoadError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| LoadError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes the tiny model for `arch` into `dir` (created if needed). The same seed gives
/// byte-identical files.
pub fn write_tiny_model(dir: &Path, arch: Arch, seed: u64) -> Result<(), LoadError> {
    let io = |path: &Path, e: &dyn std::fmt::Display| LoadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let cfg = tiny_config(arch);
    write_json(&dir.join("config.json"), &cfg.to_hf_json())?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({"eos_token_id": cfg.eos_token_ids, "pad_token_id": cfg.pad_token_id,
                "bos_token_id": cfg.bos_token_id}),
    )?;
    write_json(&dir.join("tokenizer.json"), &tiny_tokenizer_json())?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHATML_TEMPLATE,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "bos_token": null,
            "add_bos_token": false,
            "clean_up_tokenization_spaces": false,
            "model_max_length": cfg.max_position_embeddings,
        }),
    )?;

    let weights_path = dir.join("model.safetensors");
    let weights = seeded_weights(&cfg, seed, &Device::Cpu)?;
    // Sorted names and a one-entry metadata map keep the file byte-identical across runs.
    let sorted: BTreeMap<String, candle_core::Tensor> = weights.into_iter().collect();
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(sorted.iter(), Some(metadata), &weights_path)
        .map_err(|e| io(&weights_path, &e))
}
