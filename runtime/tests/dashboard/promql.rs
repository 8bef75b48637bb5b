//! A small PromQL reader for the dashboard check: it finds the metric selectors, their label
//! matchers and the grouping labels of one expression. It understands what dashboards use
//! (selectors, matchers, functions, aggregations with `by`/`without`, vector matching, ranges,
//! Grafana `$variables`) and refuses what it does not know (an unknown function, a selector
//! without a metric name), so a typo cannot slip through as "not a metric".

/// PromQL words, space-separated (rustfmt would put each on its own line in an array).
const AGGREGATORS: &str = "sum min max avg group stddev stdvar count count_values bottomk topk
    quantile limitk limit_ratio";
const FUNCTIONS: &str = "abs absent absent_over_time ceil changes clamp clamp_max clamp_min
    day_of_month day_of_week day_of_year days_in_month delta deriv exp floor histogram_quantile
    histogram_count histogram_sum histogram_fraction hour idelta increase irate label_join
    label_replace ln log2 log10 minute month predict_linear rate resets round scalar sgn sort
    sort_desc sqrt time timestamp vector year avg_over_time min_over_time max_over_time
    sum_over_time count_over_time quantile_over_time stddev_over_time stdvar_over_time
    last_over_time present_over_time";
/// Keywords followed by a parenthesised label list.
const GROUPING: &str = "by without on ignoring group_left group_right";
const OPERATOR_WORDS: &str = "and or unless bool offset atan2";

pub fn is_one_of(words: &str, word: &str) -> bool {
    words.split_whitespace().any(|w| w == word)
}

/// Functions whose argument must be a counter (or a histogram's counter series).
pub const COUNTER_FUNCTIONS: &str = "rate irate increase resets";

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: String,
    /// (label, value) of each matcher; values keep Grafana variables as written.
    pub matchers: Vec<(String, String)>,
    /// Innermost function call around the selector, if any.
    pub inside: Option<String>,
}

#[derive(Debug, Default, PartialEq)]
pub struct Refs {
    pub selectors: Vec<Selector>,
    /// Labels named in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`, ...
    pub grouping: Vec<String>,
}

struct Lexer<'a> {
    text: &'a [u8],
    at: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn next_significant(&mut self) -> Option<u8> {
        self.skip_space();
        self.peek()
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
        {
            self.at += 1;
        }
        (self.at > start && !self.text[start].is_ascii_digit())
            .then(|| String::from_utf8_lossy(&self.text[start..self.at]).into_owned())
    }

    /// A quoted string (PromQL allows "…", '…' and `…`); returns its raw contents.
    fn string(&mut self) -> Result<String, String> {
        let quote = self.peek().ok_or("expected a string, found the end")?;
        if !matches!(quote, b'"' | b'\'' | b'`') {
            return Err(format!("expected a quoted string at byte {}", self.at));
        }
        self.at += 1;
        let start = self.at;
        while let Some(c) = self.peek() {
            if c == b'\\' && quote != b'`' {
                self.at += 2;
                continue;
            }
            if c == quote {
                let s = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                self.at += 1;
                return Ok(s);
            }
            self.at += 1;
        }
        Err("unterminated string".into())
    }

    /// Skip to just past the next `close` byte (range `[5m]`, Grafana `${var}`).
    fn skip_past(&mut self, close: u8) -> Result<(), String> {
        match self.text[self.at..].iter().position(|&c| c == close) {
            Some(n) => {
                self.at += n + 1;
                Ok(())
            }
            None => Err(format!("missing `{}`", close as char)),
        }
    }

    /// `{label op "value", ...}` after the opening brace.
    fn matchers(&mut self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        loop {
            match self.next_significant() {
                Some(b'}') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b',') => self.at += 1,
                Some(_) => {
                    let label = self
                        .ident()
                        .ok_or_else(|| format!("expected a label name at byte {}", self.at))?;
                    self.skip_space();
                    let op = &self.text[self.at..];
                    let len = if op.starts_with(b"=~")
                        || op.starts_with(b"!~")
                        || op.starts_with(b"!=")
                    {
                        2
                    } else if op.starts_with(b"=") {
                        1
                    } else {
                        return Err(format!("expected =, !=, =~ or !~ after label {label}"));
                    };
                    self.at += len;
                    self.skip_space();
                    out.push((label, self.string()?));
                }
                None => return Err("unterminated label matchers".into()),
            }
        }
    }

    /// `(a, b)` after a grouping keyword.
    fn label_list(&mut self) -> Result<Vec<String>, String> {
        self.at += 1; // '('
        let mut out = Vec::new();
        loop {
            match self.next_significant() {
                Some(b')') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b',') => self.at += 1,
                Some(_) => out.push(self.ident().ok_or_else(|| {
                    format!("expected a label in a grouping list at byte {}", self.at)
                })?),
                None => return Err("unterminated grouping list".into()),
            }
        }
    }
}

pub fn extract(expr: &str) -> Result<Refs, String> {
    let mut lx = Lexer {
        text: expr.as_bytes(),
        at: 0,
    };
    let mut refs = Refs::default();
    // One entry per open parenthesis: the function it calls, if any.
    let mut calls: Vec<Option<String>> = Vec::new();
    let mut pending_call: Option<String> = None;
    let mut grouping_keyword = false;
    while let Some(c) = lx.next_significant() {
        if grouping_keyword && c != b'(' {
            // `group_left` / `group_right` may stand without a label list.
            grouping_keyword = false;
        }
        match c {
            b'"' | b'\'' | b'`' => {
                lx.string()?;
            }
            b'[' => lx.skip_past(b']')?,
            b'{' => return Err(format!("selector without a metric name at byte {}", lx.at)),
            b'(' if grouping_keyword => {
                refs.grouping.extend(lx.label_list()?);
                grouping_keyword = false;
            }
            b'(' => {
                lx.at += 1;
                calls.push(pending_call.take());
            }
            b')' => {
                lx.at += 1;
                calls.pop().ok_or("unbalanced `)`")?;
            }
            b'$' => {
                lx.at += 1;
                if lx.peek() == Some(b'{') {
                    lx.skip_past(b'}')?;
                } else {
                    lx.ident();
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while lx
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.')
                {
                    lx.at += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let word = lx.ident().expect("starts like an identifier");
                if is_one_of(GROUPING, &word) {
                    grouping_keyword = true;
                } else if is_one_of(OPERATOR_WORDS, &word) {
                } else if is_one_of(AGGREGATORS, &word) || is_one_of(FUNCTIONS, &word) {
                    pending_call = Some(word);
                } else if lx.next_significant() == Some(b'(') {
                    return Err(format!("unknown PromQL function {word}()"));
                } else {
                    let matchers = if lx.peek() == Some(b'{') {
                        lx.at += 1;
                        lx.matchers()?
                    } else {
                        Vec::new()
                    };
                    refs.selectors.push(Selector {
                        metric: word,
                        matchers,
                        inside: calls.iter().rev().flatten().next().cloned(),
                    });
                }
            }
            _ => lx.at += 1, // arithmetic and comparison operators, commas
        }
    }
    if !calls.is_empty() {
        return Err("unbalanced `(`".into());
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_sees_selectors_not_strings_ranges_or_variables() {
        let refs = extract(
            r#"sum by (le, role) (rate(grail_handle_seconds_bucket{role="grail_fake_total", kind=~"a|b"}[${__range}])) > bool 0.5e1"#,
        )
        .unwrap();
        assert_eq!(
            refs.selectors,
            [Selector {
                metric: "grail_handle_seconds_bucket".into(),
                matchers: vec![
                    ("role".into(), "grail_fake_total".into()),
                    ("kind".into(), "a|b".into())
                ],
                inside: Some("rate".into()),
            }]
        );
        assert_eq!(refs.grouping, ["le", "role"]);
        let refs = extract("a_total - ignoring(x) group_left b_total / on() c").unwrap();
        let names: Vec<_> = refs.selectors.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(names, ["a_total", "b_total", "c"]);
        assert_eq!(refs.grouping, ["x"]);
    }
}
