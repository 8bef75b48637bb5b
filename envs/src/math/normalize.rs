//! Answer equivalence for MATH: LaTeX normalisation plus numeric and element-wise comparison.
//!
//! [`normalize`] rewrites an answer into a canonical string: `\left`/`\right` and spacing
//! commands (`\!`, `\,`, `\;`, `\:`, `~`, whitespace) dropped, `\dfrac`/`\tfrac`/`\cfrac` →
//! `\frac`, `\frac12` → `\frac{1}{2}`, `\sqrt3` → `\sqrt{3}`, `^{2}` → `^2`, degrees (`^\circ`,
//! `°`), `$`, `%` and trailing periods removed, `\text{…}`-style wrappers unwrapped, thousands
//! separators removed from plain numbers, `5.0` → `5`, `.5` → `0.5`, a leading `x=` dropped, and
//! everything lower-cased. [`equivalent`] then accepts equal canonical strings, equal strings
//! once `\text{…}` units are removed, equal numeric values (integers, decimals, `a/b`,
//! `\frac{a}{b}`, mixed numbers like `15\frac{39}{40}`, within 1e-6) and tuples/intervals whose
//! elements are pairwise equivalent. There is no symbolic algebra (no sympy): `x+11` and `11+x`
//! are different.

/// Canonical form of a LaTeX answer; see the module docs.
pub fn normalize(answer: &str) -> String {
    let mut text = answer.trim().to_string();
    text = drop_sizing(&text, "\\left");
    text = drop_sizing(&text, "\\right");
    for (from, to) in [
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\cfrac", "\\frac"),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\circ", ""),
        ("\\degree", ""),
        ("°", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\:", ""),
        ("\\ ", ""),
        ("~", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\%", ""),
        ("%", ""),
        ("{,}", ""),
        ("\\displaystyle", ""),
    ] {
        text = text.replace(from, to);
    }
    for wrapper in [
        "\\text",
        "\\textbf",
        "\\textrm",
        "\\textit",
        "\\mbox",
        "\\mathrm",
        "\\mathbf",
        "\\mathit",
        "\\boldsymbol",
        "\\operatorname",
    ] {
        text = unwrap_command(&text, wrapper);
    }
    text.retain(|c| !c.is_whitespace());
    text = brace_single_argument(&text, "\\sqrt", 1);
    text = brace_single_argument(&text, "\\frac", 2);
    text = unbrace_single_char_scripts(&text);
    for (from, to) in [("\\le", "\\leq"), ("\\ge", "\\geq"), ("\\ne", "\\neq")] {
        text = replace_command(&text, from, to);
    }
    while text.ends_with('.') || text.ends_with(',') {
        text.pop();
    }
    if let Some(rhs) = strip_variable_assignment(&text) {
        text = rhs;
    }
    text = canonical_plain_number(&text).unwrap_or(text);
    text.to_lowercase()
}

/// Whether a predicted answer matches the gold answer; see the module docs.
pub fn equivalent(predicted: &str, gold: &str) -> bool {
    let (a, b) = (normalize(predicted), normalize(gold));
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    let (a_units, b_units) = (
        normalize(&strip_text_blocks(predicted)),
        normalize(&strip_text_blocks(gold)),
    );
    if !a_units.is_empty() && a_units == b_units {
        return true;
    }
    equivalent_normalized(&a_units_or(&a, &a_units), &a_units_or(&b, &b_units))
}

fn a_units_or(full: &str, without_units: &str) -> String {
    if without_units.is_empty() {
        full.to_string()
    } else {
        without_units.to_string()
    }
}

fn equivalent_normalized(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if let (Some(x), Some(y)) = (numeric_value(a), numeric_value(b)) {
        return crate::gsm8k::numbers_equal(x, y);
    }
    let (Some(left), Some(right)) = (split_tuple(a), split_tuple(b)) else {
        return false;
    };
    left.0 == right.0
        && left.2 == right.2
        && left.1.len() == right.1.len()
        && left.1.len() > 1
        && left
            .1
            .iter()
            .zip(&right.1)
            .all(|(x, y)| equivalent_normalized(x, y))
}

/// `(open, elements, close)` of `(a,b)`, `[a,b)`, or a bare top-level `a,b` list.
fn split_tuple(text: &str) -> Option<(char, Vec<String>, char)> {
    let first = text.chars().next()?;
    let last = text.chars().last()?;
    let (open, inner, close) =
        if matches!(first, '(' | '[') && matches!(last, ')' | ']') && text.len() >= 2 {
            (first, &text[1..text.len() - 1], last)
        } else {
            (' ', text, ' ')
        };
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in inner.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    (parts.len() > 1).then_some((open, parts, close))
}

/// Value of a normalised plain number, `a/b`, `\frac{a}{b}` or mixed number `n\frac{a}{b}`.
pub fn numeric_value(text: &str) -> Option<f64> {
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text.strip_prefix('+').unwrap_or(text)),
    };
    if let Ok(value) = body.parse::<f64>() {
        return (value.is_finite() && body.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .then_some(sign * value);
    }
    if let Some((numerator, denominator)) = body.split_once('/') {
        let (n, d) = (plain(numerator)?, plain(denominator)?);
        return (d != 0.0).then(|| sign * n / d);
    }
    let frac_at = body.find("\\frac{")?;
    let whole = if frac_at == 0 {
        0.0
    } else {
        plain(&body[..frac_at])?
    };
    let rest = &body[frac_at + "\\frac{".len()..];
    let numerator = crate::parse::balanced_prefix(rest)?;
    let rest = rest[numerator.len() + 1..].strip_prefix('{')?;
    let denominator = crate::parse::balanced_prefix(rest)?;
    if rest.len() != denominator.len() + 1 {
        return None;
    }
    let (n, d) = (plain(numerator)?, plain(denominator)?);
    (d != 0.0).then(|| sign * (whole + n / d))
}

fn plain(text: &str) -> Option<f64> {
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    valid.then(|| text.parse().ok()).flatten()
}

/// Removes `\left`/`\right` when used as delimiter sizing (not `\rightarrow`, `\leftarrow`).
fn drop_sizing(text: &str, command: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find(command) {
        out.push_str(&rest[..position]);
        let after = &rest[position + command.len()..];
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(command);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Replaces the command `from` by `to` where `from` is not the prefix of a longer command.
fn replace_command(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find(from) {
        out.push_str(&rest[..position]);
        let after = &rest[position + from.len()..];
        out.push_str(if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            from
        } else {
            to
        });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `\text{abc}` → `abc` (the command followed directly or after spaces by a braced group).
fn unwrap_command(text: &str, command: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find(command) {
        out.push_str(&rest[..position]);
        let after = &rest[position + command.len()..];
        let trimmed = after.trim_start();
        match trimmed
            .strip_prefix('{')
            .and_then(|inner| crate::parse::balanced_prefix(inner).map(|c| (inner, c)))
        {
            Some((inner, content)) if !after.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                out.push_str(content);
                rest = &inner[content.len() + 1..];
            }
            _ => {
                out.push_str(command);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Removes `\text{…}`/`\mbox{…}` blocks entirely (units, words), used as a second comparison.
fn strip_text_blocks(text: &str) -> String {
    let mut out = text.to_string();
    for command in ["\\text", "\\mbox", "\\textrm", "\\mathrm"] {
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(position) = rest.find(command) {
            result.push_str(&rest[..position]);
            let after = &rest[position + command.len()..];
            match after.trim_start().strip_prefix('{').and_then(|inner| {
                crate::parse::balanced_prefix(inner).map(|content| &inner[content.len() + 1..])
            }) {
                Some(remaining) if !after.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                    rest = remaining
                }
                _ => {
                    result.push_str(command);
                    rest = after;
                }
            }
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// Braces the arguments of `\sqrt3`, `\frac12`, `\frac{1}2` (single-character arguments).
fn brace_single_argument(text: &str, command: &str, arguments: usize) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(position) = rest.find(command) {
        out.push_str(&rest[..position]);
        out.push_str(command);
        let mut after = &rest[position + command.len()..];
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            rest = after;
            continue;
        }
        for _ in 0..arguments {
            if let Some(inner) = after.strip_prefix('{') {
                match crate::parse::balanced_prefix(inner) {
                    Some(content) => {
                        out.push('{');
                        out.push_str(content);
                        out.push('}');
                        after = &inner[content.len() + 1..];
                    }
                    None => break,
                }
            } else if let Some(c) = after.chars().next().filter(|c| c.is_ascii_alphanumeric()) {
                out.push('{');
                out.push(c);
                out.push('}');
                after = &after[c.len_utf8()..];
            } else {
                break;
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `^{2}` → `^2`, `_{7}` → `_7`.
fn unbrace_single_char_scripts(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if (c == '^' || c == '_')
            && index + 3 < chars.len() + 1
            && chars.get(index + 1) == Some(&'{')
            && chars.get(index + 3) == Some(&'}')
        {
            out.push(c);
            out.push(chars[index + 2]);
            index += 4;
            continue;
        }
        out.push(c);
        index += 1;
    }
    out
}

/// `x=5` → `5` (a short variable name on the left of the only `=`).
fn strip_variable_assignment(text: &str) -> Option<String> {
    let (lhs, rhs) = text.split_once('=')?;
    let short_name =
        !lhs.is_empty() && lhs.len() <= 2 && lhs.chars().all(|c| c.is_ascii_alphabetic());
    (short_name && !rhs.is_empty() && !rhs.contains('=')).then(|| rhs.to_string())
}

/// `1,000` → `1000`, `5.0` → `5`, `2.50` → `2.5`, `.5` → `0.5`, `+3` → `3`.
fn canonical_plain_number(text: &str) -> Option<String> {
    let (sign, body) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let digits_and_commas = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'.');
    if !digits_and_commas || body.matches('.').count() > 1 {
        return None;
    }
    let (integer, fraction) = body.split_once('.').unwrap_or((body, ""));
    if integer.contains(',') {
        let groups: Vec<&str> = integer.split(',').collect();
        let thousands = groups[0].len() <= 3
            && !groups[0].is_empty()
            && groups[1..].iter().all(|group| group.len() == 3);
        if !thousands {
            return None;
        }
    }
    if fraction.contains(',') {
        return None;
    }
    let integer: String = integer.chars().filter(|c| *c != ',').collect();
    let integer = if integer.is_empty() {
        "0".to_string()
    } else {
        integer
    };
    let fraction = fraction.trim_end_matches('0');
    let sign = if integer.bytes().all(|b| b == b'0') && fraction.is_empty() {
        ""
    } else {
        sign
    };
    Some(if fraction.is_empty() {
        format!("{sign}{integer}")
    } else {
        format!("{sign}{integer}.{fraction}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_forms_match() {
        for (a, b) in [
            ("10\\sqrt{2}", "10\\sqrt 2"),
            ("\\frac{3}{2}", "\\frac32"),
            ("0.25\\text{ cm}", "0.25\\,\\text{ cm}"),
            ("0.25\\text{ cm}", "0.25"),
            ("-3\\sqrt5-5", "-3 \\sqrt{5} - 5"),
            (
                "\\left(\\tfrac32, -\\tfrac52\\right)",
                "(\\frac{3}{2},-\\frac{5}{2})",
            ),
            ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
            ("15\\frac{39}{40}", "\\frac{639}{40}"),
            ("\\dfrac{40}{243}", "40/243"),
            ("30^\\circ", "30"),
            ("1,000", "1000"),
            ("5.0", "5"),
            ("x = 7", "7"),
            ("\\$18.90", "18.9"),
            ("50\\%", "50"),
            ("664_{7}", "664_7"),
            ("(1.5,-2.5)", "\\left(\\frac{3}{2},-\\frac{5}{2}\\right)"),
            ("\\text{(C)}", "(C)"),
            ("[2,5)", "\\left[2, 5\\right)"),
            (".5", "\\frac{1}{2}"),
        ] {
            assert!(
                equivalent(a, b),
                "{a} vs {b}: {} | {}",
                normalize(a),
                normalize(b)
            );
        }
    }

    #[test]
    fn different_answers_do_not_match() {
        for (a, b) in [
            ("\\frac{2}{3}", "\\frac{3}{2}"),
            ("(1,2)", "(2,1)"),
            ("[2,5)", "(2,5)"),
            ("10\\sqrt{2}", "10\\sqrt{3}"),
            ("x+11", "x+12"),
            ("1,2", "12"),
            ("", ""),
            ("\\rightarrow", "\\right"),
        ] {
            assert!(!equivalent(a, b), "{a} vs {b}");
        }
    }
}
