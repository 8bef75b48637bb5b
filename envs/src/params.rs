//! Typed access to an environment's `params` table with errors that name the key.

use crate::EnvError;
use serde_json::{Map, Value};

pub(crate) struct Params<'a> {
    env: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Params<'a> {
    /// Wraps `map` and rejects keys outside `allowed` (typos must not silently fall back to
    /// defaults: miner and verifier would then score differently).
    pub(crate) fn new(
        env: &'a str,
        map: &'a Map<String, Value>,
        allowed: &[&str],
    ) -> Result<Params<'a>, EnvError> {
        if let Some(key) = map.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(EnvError::UnknownParam {
                env: env.to_string(),
                key: key.clone(),
                allowed: if allowed.is_empty() {
                    "(none)".to_string()
                } else {
                    allowed.join(", ")
                },
            });
        }
        Ok(Params { env, map })
    }

    pub(crate) fn bad(&self, key: &str, message: String) -> EnvError {
        EnvError::BadParam {
            env: self.env.to_string(),
            key: key.to_string(),
            message,
        }
    }

    /// An integer parameter in `min..=max`, `default` when absent.
    pub(crate) fn u64_in(
        &self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, EnvError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(value) => {
                let number = value.as_u64().ok_or_else(|| {
                    self.bad(key, format!("must be a non-negative integer, got {value}"))
                })?;
                if (min..=max).contains(&number) {
                    Ok(number)
                } else {
                    Err(self.bad(key, format!("must be in {min}..={max}, got {number}")))
                }
            }
        }
    }

    /// A float parameter in `min..=max`, `default` when absent.
    pub(crate) fn f64_in(
        &self,
        key: &str,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, EnvError> {
        match self.map.get(key) {
            None => Ok(default),
            Some(value) => {
                let number = value
                    .as_f64()
                    .ok_or_else(|| self.bad(key, format!("must be a number, got {value}")))?;
                if number >= min && number <= max {
                    Ok(number)
                } else {
                    Err(self.bad(key, format!("must be in {min}..={max}, got {number}")))
                }
            }
        }
    }

    /// A string parameter that must be one of `choices`; `default` when absent.
    pub(crate) fn choice(
        &self,
        key: &str,
        default: &str,
        choices: &[&str],
    ) -> Result<String, EnvError> {
        match self.map.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(text)) if choices.contains(&text.as_str()) => Ok(text.clone()),
            Some(value) => Err(self.bad(
                key,
                format!("must be one of {}, got {value}", choices.join(", ")),
            )),
        }
    }

    /// A string parameter of at most `max_chars` characters; `default` when absent.
    pub(crate) fn string(
        &self,
        key: &str,
        default: &str,
        max_chars: usize,
    ) -> Result<String, EnvError> {
        match self.map.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(text)) if text.chars().count() <= max_chars => Ok(text.clone()),
            Some(Value::String(text)) => Err(self.bad(
                key,
                format!(
                    "must be at most {max_chars} characters, got {}",
                    text.chars().count()
                ),
            )),
            Some(value) => Err(self.bad(key, format!("must be a string, got {value}"))),
        }
    }
}
