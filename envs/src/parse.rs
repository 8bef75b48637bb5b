//! Completion-side parsing shared by all environments: where the final answer is, `\boxed{}`
//! with nested braces, numbers, and code blocks. Everything works on hostile input (no panics,
//! linear-ish time) because completions are untrusted.

use regex::Regex;
use std::sync::LazyLock;

/// How the final answer was marked in a completion (format credit depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerMarker {
    /// `<SOLUTION>…</SOLUTION>` (grail's tag).
    SolutionTag,
    /// `\boxed{…}` (or `\fbox{…}`).
    Boxed,
    /// `#### …` (GSM8K's convention).
    Hashes,
    /// "The answer is …" / "Answer: …".
    Phrase,
}

/// An explicitly marked final answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalAnswer {
    pub text: String,
    pub marker: AnswerMarker,
}

/// The text after the last closing reasoning tag (`</think>`, `</end_working_out>`), so answers
/// merely mentioned while thinking do not count; the whole text when there is none.
pub fn after_thinking(text: &str) -> &str {
    let mut start = 0;
    for tag in ["</think>", "</end_working_out>"] {
        if let Some(position) = text.rfind(tag) {
            start = start.max(position + tag.len());
        }
    }
    &text[start..]
}

/// Content of the last `<SOLUTION>…</SOLUTION>` block (tags matched case-insensitively).
pub fn solution_block(text: &str) -> Option<&str> {
    static SOLUTION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?is)<solution>(.*?)</solution>").expect("valid regex"));
    SOLUTION
        .captures_iter(text)
        .last()
        .and_then(|captures| captures.get(1))
        .map(|found| found.as_str())
}

/// Contents of every `\boxed{…}` / `\fbox{…}` (nested braces balanced) and `\boxed x` (one
/// token, the LaTeX short form), in order. An unbalanced trailing box is ignored.
pub fn boxed_contents(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some((position, command_len)) = next_box_command(rest) {
        let body_start = offset + position + command_len;
        let body = &text[body_start..];
        if let Some(inner) = body.strip_prefix('{') {
            match balanced_prefix(inner) {
                Some(content) => {
                    found.push(content);
                    offset = body_start + 1 + content.len() + 1;
                }
                None => break,
            }
        } else if let Some(short) = body.strip_prefix(' ') {
            let token_end = short
                .find(|c: char| c.is_whitespace() || c == '$')
                .unwrap_or(short.len());
            if token_end > 0 {
                found.push(&short[..token_end]);
            }
            offset = body_start + 1 + token_end;
        } else {
            offset = body_start;
        }
        rest = &text[offset..];
    }
    found
}

fn next_box_command(text: &str) -> Option<(usize, usize)> {
    let boxed = text
        .find("\\boxed")
        .map(|position| (position, "\\boxed".len()));
    let fbox = text
        .find("\\fbox")
        .map(|position| (position, "\\fbox".len()));
    match (boxed, fbox) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// The prefix of `text` up to (excluding) the `}` that closes an already-open brace.
pub fn balanced_prefix(text: &str) -> Option<&str> {
    let mut depth = 1usize;
    let mut escaped = false;
    for (index, byte) in text.bytes().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match byte {
            b'\\' => escaped = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[..index]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The last `\boxed{…}` content.
pub fn last_boxed(text: &str) -> Option<&str> {
    boxed_contents(text).pop()
}

/// The rest of the line after the last `marker` (e.g. `####`), trimmed; `None` if absent/empty.
pub fn after_marker<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let position = text.rfind(marker)?;
    let rest = &text[position + marker.len()..];
    let line = rest.lines().find(|line| !line.trim().is_empty())?;
    Some(line.trim())
}

/// The final answer of a completion: the last `<SOLUTION>` block (its `\boxed{}` if it has one),
/// else the last `\boxed{}`, else the text after the last `####`, else the text after
/// "answer is"/"answer:". Only the part after any reasoning block is searched.
pub fn final_answer(completion: &str) -> Option<FinalAnswer> {
    static PHRASE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(?:final answer|the answer)\s*(?:is|:)\s*:?\s*([^\n]+)|(?im)^\s*answer\s*:\s*([^\n]+)")
            .expect("valid regex")
    });
    let text = after_thinking(completion);
    if let Some(block) = solution_block(text) {
        let inner = last_boxed(block).unwrap_or(block);
        return Some(FinalAnswer {
            text: inner.trim().to_string(),
            marker: AnswerMarker::SolutionTag,
        });
    }
    if let Some(boxed) = last_boxed(text) {
        return Some(FinalAnswer {
            text: boxed.trim().to_string(),
            marker: AnswerMarker::Boxed,
        });
    }
    if let Some(after) = after_marker(text, "####") {
        return Some(FinalAnswer {
            text: after.to_string(),
            marker: AnswerMarker::Hashes,
        });
    }
    let captures = PHRASE.captures_iter(text).last()?;
    let phrase = captures.get(1).or_else(|| captures.get(2))?.as_str().trim();
    let phrase = phrase.trim_end_matches(['.', ' ']).trim_matches('$').trim();
    (!phrase.is_empty()).then(|| FinalAnswer {
        text: phrase.to_string(),
        marker: AnswerMarker::Phrase,
    })
}

/// Every number in `text` (optional sign, digits with `,` thousands separators, decimals).
pub fn numbers(text: &str) -> Vec<&str> {
    static NUMBER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+").expect("valid regex"));
    NUMBER
        .find_iter(text)
        .map(|found| found.as_str().trim_end_matches(','))
        .collect()
}

/// The last number in `text`.
pub fn last_number(text: &str) -> Option<&str> {
    numbers(text).pop()
}

/// Code extracted from a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedCode {
    pub code: String,
    /// The code came from a fenced block or a `<SOLUTION>` tag (format credit).
    pub marked: bool,
}

/// Code in a completion: the last fenced block tagged python/py3/py or untagged that defines
/// something (`def`/`class`), else the last such block, else the `<SOLUTION>` content, else the
/// raw text. A fence left open (generation cut off) runs to the end of the text.
pub fn extract_code(completion: &str) -> ExtractedCode {
    let text = after_thinking(completion);
    let search_in = solution_block(text).unwrap_or(text);
    let blocks = fenced_blocks(search_in);
    let python: Vec<&str> = blocks
        .iter()
        .filter(|(lang, _)| matches!(lang.as_str(), "" | "python" | "py" | "python3" | "py3"))
        .map(|(_, code)| *code)
        .collect();
    let chosen = python
        .iter()
        .rev()
        .find(|code| code.contains("def ") || code.contains("class "))
        .or(python.last())
        .copied();
    match chosen {
        Some(code) => ExtractedCode {
            code: code.to_string(),
            marked: true,
        },
        None => ExtractedCode {
            code: search_in.trim_matches('\n').to_string(),
            marked: solution_block(text).is_some(),
        },
    }
}

/// `(language, body)` of every ``` fenced block.
fn fenced_blocks(text: &str) -> Vec<(String, &str)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(open) = rest.find("```") {
        let after_ticks = offset + open + 3;
        let line_end = text[after_ticks..]
            .find('\n')
            .map(|index| after_ticks + index);
        let Some(line_end) = line_end else { break };
        let lang = text[after_ticks..line_end].trim().to_ascii_lowercase();
        let body_start = line_end + 1;
        let (body, next) = match text[body_start..].find("```") {
            Some(close) => (
                &text[body_start..body_start + close],
                body_start + close + 3,
            ),
            None => (&text[body_start..], text.len()),
        };
        blocks.push((lang, body));
        offset = next;
        rest = &text[offset..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_handles_nesting_and_short_form() {
        assert_eq!(
            boxed_contents(r"so \boxed{\frac{1}{2}} and \fbox{3}"),
            vec![r"\frac{1}{2}", "3"]
        );
        assert_eq!(last_boxed(r"\boxed 5$"), Some("5"));
        assert_eq!(last_boxed(r"\boxed{unclosed {"), None);
        assert_eq!(last_boxed(r"\boxed{a\{b}"), Some(r"a\{b"));
    }

    #[test]
    fn final_answer_prefers_explicit_markers() {
        let answer =
            final_answer("<think>\\boxed{1}</think> work \\boxed{2} <SOLUTION>3</SOLUTION>")
                .unwrap();
        assert_eq!(
            (answer.text.as_str(), answer.marker),
            ("3", AnswerMarker::SolutionTag)
        );
        let answer = final_answer("steps\n#### 1,234\n").unwrap();
        assert_eq!(
            (answer.text.as_str(), answer.marker),
            ("1,234", AnswerMarker::Hashes)
        );
        let answer = final_answer("So the answer is $42$.").unwrap();
        assert_eq!(
            (answer.text.as_str(), answer.marker),
            ("42", AnswerMarker::Phrase)
        );
        assert_eq!(final_answer("no marker 17"), None);
    }

    #[test]
    fn numbers_and_last_number() {
        assert_eq!(numbers("a -3 b 1,000.5, c .5"), vec!["-3", "1,000.5", ".5"]);
        assert_eq!(last_number("x"), None);
    }

    #[test]
    fn code_extraction() {
        let text = "Here:\n```python\ndef f():\n    return 1\n```\nand test:\n```\nprint(f())\n```";
        let code = extract_code(text);
        assert_eq!(code.code, "def f():\n    return 1\n");
        assert!(code.marked);
        let raw = extract_code("def g(): pass");
        assert_eq!((raw.code.as_str(), raw.marked), ("def g(): pass", false));
        let open = extract_code("```python\ndef h(): return 2\n");
        assert_eq!(open.code, "def h(): return 2\n");
        let tagged = extract_code("<SOLUTION>\ndef k(): return 3\n</SOLUTION>");
        assert_eq!(
            (tagged.code.as_str(), tagged.marked),
            ("def k(): return 3", true)
        );
    }
}
