//! msgpack codec: named maps on the way out, size-limited typed errors on the way in.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest message a role accepts unless configured otherwise: a group of 16 rollouts of 8k
/// tokens is ~1.6 MB with 12 bytes per token, so 8 MiB leaves room for long prompts.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("message of {len} bytes exceeds the {limit}-byte limit (raise `max_message_bytes` in cluster.toml if this is legitimate)")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error(
        "{what} has wire version {found}, this build speaks {supported}: upgrade the older side"
    )]
    Version {
        what: &'static str,
        found: u16,
        supported: u16,
    },
}

impl DecodeError {
    /// Stable label for metrics (`reason` label values).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "oversized",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::Version { .. } => "bad_version",
        }
    }
}

/// Encode as a msgpack map with field names, so any decoder shows what it is reading.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain structs into a Vec cannot fail.
    rmp_serde::to_vec_named(value).expect("msgpack encoding of a wire type")
}

/// Decode `bytes` as `T`, refusing anything larger than `limit` before parsing.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
    what: &'static str,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed {
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Heartbeat;

    fn beat() -> Heartbeat {
        Heartbeat {
            version: 1,
            role: "miner".into(),
            instance: "m0".into(),
            ts_ms: 5,
            status: "ok".into(),
            in_flight: 2,
        }
    }

    #[test]
    fn encoding_is_a_named_map() {
        let bytes = encode(&beat());
        // fixmap with 6 entries, then the first key "version".
        assert_eq!(bytes[0], 0x86);
        assert_eq!(&bytes[1..9], b"\xa7version");
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let bytes = encode(&beat());
        let err = decode::<Heartbeat>(&bytes, bytes.len() - 1, "heartbeat").unwrap_err();
        assert_eq!(err.reason(), "oversized");
    }

    #[test]
    fn hostile_bytes_give_typed_errors_never_panics() {
        let good = encode(&beat());
        // Every truncation and a sweep of single-byte corruptions.
        for cut in 0..good.len() {
            let _ = decode::<Heartbeat>(&good[..cut], 1 << 20, "heartbeat");
        }
        let mut state = 0x9e3779b97f4a7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut b = good.clone();
            let i = (state as usize) % b.len();
            b[i] = (state >> 32) as u8;
            let _ = decode::<Heartbeat>(&b, 1 << 20, "heartbeat");
        }
        // A declared 4-billion-element array must not allocate it.
        let bomb = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u64>>(&bomb, 1 << 20, "bomb").is_err());
        let err = decode::<Heartbeat>(b"\xc1", 1 << 20, "heartbeat").unwrap_err();
        assert_eq!(err.reason(), "malformed");
    }
}
