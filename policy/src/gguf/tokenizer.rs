//! `tokenizers::Tokenizer` rebuilt from GGUF `tokenizer.ggml.*` metadata (byte-level BPE).

use std::collections::BTreeMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::reader::GgufValue;
use super::GgufError;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Qwen2's pre-tokenizer regex (llama.cpp `qwen2` pre-type; HF Qwen2 tokenizer.json).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn bad(key: &str, reason: impl Into<String>) -> GgufError {
    GgufError::BadMetadata {
        key: key.into(),
        reason: reason.into(),
    }
}

fn string_array<'a>(
    meta: &'a BTreeMap<String, GgufValue>,
    key: &str,
) -> Result<Vec<&'a str>, GgufError> {
    let array = meta
        .get(key)
        .ok_or_else(|| GgufError::MissingMetadata(key.into()))?
        .as_array()
        .ok_or_else(|| bad(key, "expected an array"))?;
    array
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| bad(key, "expected an array of strings"))
        })
        .collect()
}

fn token_types(meta: &BTreeMap<String, GgufValue>, count: usize) -> Result<Vec<i64>, GgufError> {
    let key = "tokenizer.ggml.token_type";
    let Some(value) = meta.get(key) else {
        return Ok(vec![1; count]);
    };
    let array = value
        .as_array()
        .ok_or_else(|| bad(key, "expected an array"))?;
    if array.len() != count {
        return Err(bad(
            key,
            format!("{} entries for {count} tokens", array.len()),
        ));
    }
    array
        .iter()
        .map(|v| match *v {
            GgufValue::I32(t) => Ok(i64::from(t)),
            _ => v
                .as_u64()
                .map(|t| t as i64)
                .ok_or_else(|| bad(key, "expected integers")),
        })
        .collect()
}

/// The pre-tokenizer matching llama.cpp's `tokenizer.ggml.pre` for byte-level BPE models.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, GgufError> {
    let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
    Ok(match pre {
        // GPT-2 regex inside ByteLevel.
        "default" | "gpt-2" | "gpt2" => byte_level(true).into(),
        // SmolLM: every digit is its own pre-token, then the GPT-2 regex.
        "smollm" | "starcoder" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into()
        }
        "qwen2" => {
            let split = Split::new(
                SplitPattern::Regex(QWEN2_PATTERN.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| bad("tokenizer.ggml.pre", format!("qwen2 regex: {e}")))?;
            Sequence::new(vec![split.into(), byte_level(false).into()]).into()
        }
        other => {
            return Err(GgufError::UnsupportedTokenizer(format!(
                "pre-tokenizer `{other}` (supported: default, gpt-2, smollm, starcoder, qwen2)"
            )))
        }
    })
}

fn token_id(
    meta: &BTreeMap<String, GgufValue>,
    key: &str,
    vocab: usize,
) -> Result<Option<u32>, GgufError> {
    match meta.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(Some(id as u32)),
            _ => Err(bad(key, format!("{v:?} is not a token id below {vocab}"))),
        },
    }
}

/// Builds the tokenizer of a GGUF file whose `tokenizer.ggml.model` is `gpt2`.
pub fn build_tokenizer(meta: &BTreeMap<String, GgufValue>) -> Result<Tokenizer, GgufError> {
    let model = meta
        .get("tokenizer.ggml.model")
        .ok_or_else(|| GgufError::MissingMetadata("tokenizer.ggml.model".into()))?
        .as_str()
        .ok_or_else(|| bad("tokenizer.ggml.model", "expected a string"))?;
    if model != "gpt2" {
        return Err(GgufError::UnsupportedTokenizer(format!(
            "tokenizer model `{model}` (only byte-level BPE, `gpt2`, is supported)"
        )));
    }
    let tokens = string_array(meta, "tokenizer.ggml.tokens")?;
    let types = token_types(meta, tokens.len())?;
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        if vocab.insert(token.to_string(), id as u32).is_some() {
            return Err(bad(
                "tokenizer.ggml.tokens",
                format!("token {token:?} appears twice"),
            ));
        }
    }
    let merges = string_array(meta, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => Ok((a.to_string(), b.to_string())),
            _ => Err(bad(
                "tokenizer.ggml.merges",
                format!("merge {m:?} is not two tokens"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| bad("tokenizer.ggml.merges", e.to_string()))?;

    let mut tokenizer = Tokenizer::new(bpe);
    let pre = meta
        .get("tokenizer.ggml.pre")
        .and_then(GgufValue::as_str)
        .unwrap_or("default");
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
        .map(|(token, _)| AddedToken::from(token.to_string(), true))
        .collect();
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_USER_DEFINED)
        .map(|(token, _)| AddedToken::from(token.to_string(), false))
        .collect();
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| bad("tokenizer.ggml.token_type", e.to_string()))?;
    tokenizer
        .add_tokens(user)
        .map_err(|e| bad("tokenizer.ggml.token_type", e.to_string()))?;

    let bos = token_id(meta, "tokenizer.ggml.bos_token_id", tokens.len())?;
    let add_bos = meta
        .get("tokenizer.ggml.add_bos_token")
        .and_then(GgufValue::as_bool)
        .unwrap_or(false);
    if let (true, Some(bos)) = (add_bos, bos) {
        let bos_token = tokens[bos as usize].to_string();
        let template = TemplateProcessing::builder()
            .try_single(format!("{bos_token} $A"))
            .and_then(|b| b.try_pair(format!("{bos_token} $A {bos_token} $B")))
            .map_err(|e| bad("tokenizer.ggml.add_bos_token", e.to_string()))?
            .special_tokens(vec![(bos_token, bos)])
            .build()
            .map_err(|e| bad("tokenizer.ggml.add_bos_token", e.to_string()))?;
        tokenizer.with_post_processor(Some(template));
    }
    Ok(tokenizer)
}
