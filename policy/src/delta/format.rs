//! Low-level pieces of the delta wire format: header, varints, byte planes, bounded reader.

use super::DeltaError;
use crate::checkpoint::WeightDigest;

pub const MAGIC: &[u8; 8] = b"GRLDELTA";
pub const VERSION: u32 = 1;
/// magic + version + base digest + target digest + body length.
pub const HEADER_LEN: usize = 8 + 4 + 32 + 32 + 8;

pub const ENCODING_SPARSE: u8 = 0;
pub const ENCODING_DENSE: u8 = 1;

/// The uncompressed, fixed-size prefix of every delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaHeader {
    /// Digest of the weight set the delta applies to.
    pub base_digest: WeightDigest,
    /// Digest of the weight set the delta produces.
    pub target_digest: WeightDigest,
    /// Exact length of the decompressed body.
    pub body_len: u64,
}

impl DeltaHeader {
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.base_digest);
        out.extend_from_slice(&self.target_digest);
        out.extend_from_slice(&self.body_len.to_le_bytes());
    }

    /// Parses the header without decompressing or applying anything, e.g. to check that a
    /// chain of deltas links up (`next.base_digest == previous.target_digest`).
    pub fn parse(bytes: &[u8]) -> Result<Self, DeltaError> {
        if bytes.len() < HEADER_LEN {
            return Err(DeltaError::Truncated {
                what: "header",
                needed: HEADER_LEN,
                available: bytes.len(),
            });
        }
        if &bytes[..8] != MAGIC {
            return Err(DeltaError::NotADelta);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(DeltaError::UnsupportedVersion { found: version });
        }
        let mut base_digest = [0u8; 32];
        base_digest.copy_from_slice(&bytes[12..44]);
        let mut target_digest = [0u8; 32];
        target_digest.copy_from_slice(&bytes[44..76]);
        let body_len = u64::from_le_bytes(bytes[76..84].try_into().expect("8 bytes"));
        Ok(Self {
            base_digest,
            target_digest,
            body_len,
        })
    }
}

/// Appends `value` as unsigned LEB128.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encoded length of `value` as unsigned LEB128.
pub fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Bounds-checked cursor over the decompressed body; every read fails softly.
pub struct BodyReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BodyReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    pub fn is_at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DeltaError> {
        let available = self.bytes.len() - self.pos;
        if len > available {
            return Err(DeltaError::Truncated {
                what,
                needed: len,
                available,
            });
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DeltaError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn varint(&mut self, what: &'static str) -> Result<u64, DeltaError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(what)?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DeltaError::Corrupt {
            tensor: None,
            reason: format!("{what}: varint overflows 64 bits"),
        })
    }
}
