//! Numeric arrays as little-endian byte strings.
//!
//! A `Vec<u32>` through rmp-serde becomes an array of msgpack integers (1–5 bytes each, and
//! decoding is two orders of magnitude slower than a byte string). Rollouts carry tens of
//! thousands of token ids, sketches and log-probs, so they travel as msgpack `bin` with a fixed
//! 4-byte little-endian layout that any language can read.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! packed_array {
    ($name:ident, $elem:ty, $what:literal) => {
        #[doc = concat!("A `Vec<", stringify!($elem), ">` that travels as little-endian `bin` (", $what, ").")]
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name(pub Vec<$elem>);

        impl $name {
            pub fn len(&self) -> usize {
                self.0.len()
            }
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
            /// The exact bytes this array occupies on the wire.
            pub fn to_le_bytes(&self) -> Vec<u8> {
                let mut out = Vec::with_capacity(self.0.len() * 4);
                for v in &self.0 {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out
            }
            pub fn from_le_bytes(bytes: &[u8]) -> Result<Self, String> {
                if bytes.len() % 4 != 0 {
                    return Err(format!(
                        "packed {} array has {} bytes, not a multiple of 4",
                        $what,
                        bytes.len()
                    ));
                }
                Ok(Self(
                    bytes
                        .chunks_exact(4)
                        .map(|c| <$elem>::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ))
            }
        }

        impl From<Vec<$elem>> for $name {
            fn from(v: Vec<$elem>) -> Self {
                Self(v)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    // JSON (e.g. `grail tail`) shows plain numbers.
                    self.0.serialize(s)
                } else {
                    serde_bytes::Bytes::new(&self.to_le_bytes()).serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    return Vec::<$elem>::deserialize(d).map(Self);
                }
                let bytes = serde_bytes::ByteBuf::deserialize(d)?;
                Self::from_le_bytes(&bytes).map_err(D::Error::custom)
            }
        }
    };
}

packed_array!(PackedU32, u32, "u32");
packed_array!(PackedF32, f32, "f32");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_is_four_bytes_per_element_plus_bin_header() {
        let v = PackedU32((0..1000).collect());
        let bytes = rmp_serde::to_vec_named(&v).unwrap();
        // bin16 header = 3 bytes.
        assert_eq!(bytes.len(), 4000 + 3);
        let back: PackedU32 = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn f32_bits_survive_including_nan_and_negative_zero() {
        let v = PackedF32(vec![-0.0, f32::NAN, f32::INFINITY, 1.5e-38, -3.25]);
        let back: PackedF32 = rmp_serde::from_slice(&rmp_serde::to_vec_named(&v).unwrap()).unwrap();
        let bits = |p: &PackedF32| p.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&v));
    }

    #[test]
    fn ragged_byte_length_is_an_error_not_a_panic() {
        let bytes = rmp_serde::to_vec(&serde_bytes::Bytes::new(&[1, 2, 3, 4, 5])).unwrap();
        let err = rmp_serde::from_slice::<PackedU32>(&bytes).unwrap_err();
        assert!(err.to_string().contains("not a multiple of 4"), "{err}");
    }

    #[test]
    fn json_shows_plain_numbers() {
        let v = PackedU32(vec![1, 2, 3]);
        assert_eq!(serde_json::to_string(&v).unwrap(), "[1,2,3]");
    }
}

/// A fixed-size byte string (digests, keys, signatures): msgpack `bin`, hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FixedBytes<const N: usize>(pub [u8; N]);

/// A 32-byte digest or randomness value.
pub type Hash32 = FixedBytes<32>;
/// A 64-byte sr25519 signature.
pub type Signature64 = FixedBytes<64>;

impl<const N: usize> Default for FixedBytes<N> {
    fn default() -> Self {
        Self([0; N])
    }
}

impl<const N: usize> std::fmt::Debug for FixedBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl<const N: usize> std::fmt::Display for FixedBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl<const N: usize> FixedBytes<N> {
    /// The first 8 bytes in hex: enough to tell values apart in logs and subjects.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..N.min(8)])
    }
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let raw = hex::decode(s.trim_start_matches("0x")).map_err(|e| format!("bad hex: {e}"))?;
        let arr: [u8; N] = raw
            .try_into()
            .map_err(|v: Vec<u8>| format!("expected {N} bytes, got {}", v.len()))?;
        Ok(Self(arr))
    }
}

impl<const N: usize> From<[u8; N]> for FixedBytes<N> {
    fn from(v: [u8; N]) -> Self {
        Self(v)
    }
}

impl<const N: usize> Serialize for FixedBytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            hex::encode(self.0).serialize(s)
        } else {
            serde_bytes::Bytes::new(&self.0).serialize(s)
        }
    }
}

impl<'de, const N: usize> Deserialize<'de> for FixedBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            return Self::from_hex(&s).map_err(D::Error::custom);
        }
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        let arr: [u8; N] = bytes.into_vec().try_into().map_err(|v: Vec<u8>| {
            D::Error::custom(format!("expected {N} bytes, got {}", v.len()))
        })?;
        Ok(Self(arr))
    }
}
