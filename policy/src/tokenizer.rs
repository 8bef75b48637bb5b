//! Tokenizer wrapper (HF `tokenizer.json` via the `tokenizers` crate) and chat templates.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{LoadError, PolicyError};

/// A loaded tokenizer. Encoding never adds special tokens (the chat template already has them)
/// but recognises special tokens written in the text, such as `<|im_start|>`.
#[derive(Clone)]
pub struct PolicyTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for PolicyTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl PolicyTokenizer {
    pub fn new(inner: Tokenizer) -> Self {
        Self { inner }
    }

    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        if !path.exists() {
            return Err(LoadError::MissingFile {
                path: path.to_path_buf(),
                what: "tokenizer.json (the HF fast-tokenizer file)".into(),
            });
        }
        let inner = Tokenizer::from_file(path).map_err(|e| LoadError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self { inner })
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PolicyError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| PolicyError::InvalidInput(format!("tokenizer encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, PolicyError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| PolicyError::InvalidInput(format!("tokenizer decode: {e}")))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The ChatML template every tiny model ships (Qwen's format without a default system prompt).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Renders messages in ChatML, the format of [`CHATML_TEMPLATE`]. (Arbitrary Jinja templates
/// need a template engine; callers with one can render `LoadedModel::chat_template` instead.)
pub fn render_chatml(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str("<|im_start|>");
        out.push_str(&m.role);
        out.push('\n');
        out.push_str(&m.content);
        out.push_str("<|im_end|>\n");
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

/// Reads `chat_template` from `tokenizer_config.json`: a string, or a list of
/// `{name, template}` (the entry named "default", else the first). `Ok(None)` if the file or
/// the field is absent.
pub fn load_chat_template(path: &Path) -> Result<Option<String>, LoadError> {
    if !path.exists() {
        return Ok(None);
    }
    let invalid = |message: String| LoadError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    match value.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(entries)) => {
            let template_of = |e: &serde_json::Value| {
                e.get("template")
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            };
            let default = entries
                .iter()
                .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("default"));
            default
                .or(entries.first())
                .map(|e| {
                    template_of(e).ok_or_else(|| {
                        invalid("chat_template list entry has no string `template`".into())
                    })
                })
                .transpose()
        }
        Some(other) => Err(invalid(format!(
            "chat_template must be a string or a list of {{name, template}}, found {other}"
        ))),
    }
}
