//! Chat rendering without a Jinja engine.
//!
//! Every model this project runs (Qwen2/2.5/3, SmolLM2, and the tiny byte-level test models)
//! uses ChatML: `<|im_start|>{role}\n{content}<|im_end|>\n` per message and
//! `<|im_start|>assistant\n` as the generation prompt. We render ChatML when the model's template
//! contains `<|im_start|>` and also when there is no template at all. **Fallback:** for any
//! other template (Llama-3, Gemma, ...) we still render ChatML, because evaluating arbitrary Jinja
//! is out of scope; such models will see tokens they were not trained on, so use a ChatML model.
//!
//! One template feature is reproduced: Qwen2.5 and SmolLM2 templates insert a literal default
//! system prompt when the conversation has none. We find it as the literal text between
//! `<|im_start|>system\n` and `<|im_end|>` inside a template string (skipping the branch that
//! splices in `messages[0]['content']`) and prepend it, matching what HF `apply_chat_template`
//! would produce.

use serde::{Deserialize, Serialize};

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }
}

const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

/// Renders `messages` as the model would see them; see the module docs for the fallback.
pub fn render_chat(
    template: Option<&str>,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> String {
    let mut out = String::new();
    let has_system = messages
        .first()
        .is_some_and(|message| message.role == "system");
    if !has_system {
        if let Some(default_system) = template.and_then(default_system_prompt) {
            push_turn(&mut out, "system", &default_system);
        }
    }
    for message in messages {
        push_turn(&mut out, &message.role, &message.content);
    }
    if add_generation_prompt {
        out.push_str(IM_START);
        out.push_str("assistant\n");
    }
    out
}

fn push_turn(out: &mut String, role: &str, content: &str) {
    out.push_str(IM_START);
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str(IM_END);
    out.push('\n');
}

/// The literal default system prompt a ChatML template inserts when none is given, if any.
pub fn default_system_prompt(template: &str) -> Option<String> {
    if !template.contains(IM_START) {
        return None;
    }
    // Jinja sources spell the newline either as an escape (`\\n`) or literally.
    let opener = format!("{IM_START}system");
    let mut rest = template;
    while let Some(start) = rest.find(&opener) {
        let after = &rest[start + opener.len()..];
        let Some(after) = after
            .strip_prefix("\\n")
            .or_else(|| after.strip_prefix('\n'))
        else {
            rest = after;
            continue;
        };
        let end = after.find(IM_END)?;
        let candidate = &after[..end];
        // A literal prompt contains no Jinja or string concatenation.
        let literal =
            !candidate.is_empty() && !candidate.contains(['\'', '"', '{', '}', '+', '\\']);
        if literal {
            return Some(candidate.to_string());
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_without_template() {
        let messages = [ChatMessage::system("Be brief."), ChatMessage::user("1+1=")];
        assert_eq!(
            render_chat(None, &messages, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1=<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            render_chat(None, &messages[1..], false),
            "<|im_start|>user\n1+1=<|im_end|>\n"
        );
    }

    #[test]
    fn inserts_the_templates_default_system_prompt() {
        // Abbreviated Qwen2.5-Instruct template (the parts that matter here).
        let qwen = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}";
        let rendered = render_chat(Some(qwen), &[ChatMessage::user("hi")], true);
        assert!(rendered.starts_with(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi"
        ));
        // An explicit system message wins.
        let rendered = render_chat(
            Some(qwen),
            &[ChatMessage::system("S"), ChatMessage::user("hi")],
            false,
        );
        assert!(rendered.starts_with("<|im_start|>system\nS<|im_end|>"));
    }

    #[test]
    fn plain_chatml_template_has_no_default_system_prompt() {
        let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
        assert_eq!(default_system_prompt(template), None);
        assert_eq!(
            render_chat(Some(template), &[ChatMessage::user("x")], false),
            "<|im_start|>user\nx<|im_end|>\n"
        );
    }
}
