//! Bounds-checked GGUF v2/v3 parser (header, metadata, tensor infos); never panics.

use std::collections::BTreeMap;

use super::types::GgmlType;
use super::GgufError;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Nested arrays deeper than this are refused (no real file nests at all).
const MAX_ARRAY_DEPTH: usize = 4;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer value that fits in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric value as `f64`; f32 goes through its shortest decimal form so that
    /// `1e-5f32` becomes `1e-5`, not `9.99999974e-6`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => v.to_string().parse().ok(),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor's data lies and how it is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (row length); reverse for row-major.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub data_start: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

/// A parsed GGUF file header; tensor data stays in the caller's buffer.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

impl GgufFile {
    /// Parses the header of a GGUF file held in `bytes` and validates every tensor's extent.
    pub fn parse(bytes: &[u8]) -> Result<Self, GgufError> {
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4, "magic")? != MAGIC {
            return Err(GgufError::NotGguf);
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(GgufError::UnsupportedVersion {
                    version: v,
                    hint: "big-endian GGUF files are not supported",
                })
            }
            v => {
                return Err(GgufError::UnsupportedVersion {
                    version: v,
                    hint: "only GGUF v2 and v3 are supported",
                })
            }
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;
        // Each KV needs at least 12 bytes and each tensor info at least 24: refuse counts the
        // file cannot possibly hold before allocating anything.
        r.check_count(kv_count, 12, "metadata count")?;
        r.check_count(tensor_count, 24, "tensor count")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string("metadata key")?;
            let type_id = r.u32("metadata value type")?;
            let value = r.value(type_id, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::Malformed(format!(
                    "metadata key `{key}` appears twice"
                )));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::BadMetadata {
                        key: "general.alignment".into(),
                        reason: format!("{v:?} is not a power of two"),
                    })
                }
            },
        };

        let mut raw_infos = Vec::new();
        for _ in 0..tensor_count {
            let name = r.string("tensor name")?;
            let n_dims = r.u32("tensor rank")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::BadTensor {
                    tensor: name,
                    reason: format!("rank {n_dims} (expected 1..={MAX_DIMS})"),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("tensor dimension")?);
            }
            let type_id = r.u32("tensor type")?;
            let offset = r.u64("tensor offset")?;
            raw_infos.push((name, dims, type_id, offset));
        }
        let data_offset = r.pos.next_multiple_of(alignment as usize) as u64;
        let mut tensors = Vec::with_capacity(raw_infos.len());
        for (name, dims, type_id, offset) in raw_infos {
            tensors.push(tensor_info(
                name,
                dims,
                type_id,
                offset,
                alignment,
                data_offset,
                bytes.len(),
            )?);
        }
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(GgufError::BadTensor {
                tensor: pair[0].to_string(),
                reason: "name appears twice".into(),
            });
        }
        Ok(Self {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    /// The raw bytes of one tensor (validated by [`GgufFile::parse`] against the same buffer).
    pub fn tensor_data<'a>(
        &self,
        bytes: &'a [u8],
        info: &GgufTensorInfo,
    ) -> Result<&'a [u8], GgufError> {
        let start = usize::try_from(info.data_start).ok();
        let end = start.and_then(|s| s.checked_add(usize::try_from(info.n_bytes).ok()?));
        match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() => Ok(&bytes[s..e]),
            _ => Err(GgufError::BadTensor {
                tensor: info.name.clone(),
                reason: "data lies outside the file".into(),
            }),
        }
    }
}

fn tensor_info(
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
    alignment: u64,
    data_offset: u64,
    file_len: usize,
) -> Result<GgufTensorInfo, GgufError> {
    let bad = |reason: String| GgufError::BadTensor {
        tensor: name.clone(),
        reason,
    };
    let ggml_type =
        GgmlType::from_id(type_id).ok_or_else(|| bad(format!("unknown ggml type id {type_id}")))?;
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let (block_elements, block_bytes) = ggml_type.block_geometry();
    if !dims[0].is_multiple_of(block_elements) {
        return Err(bad(format!(
            "row length {} is not a multiple of the {ggml_type:?} block size {block_elements}",
            dims[0]
        )));
    }
    let n_bytes = (n_elements / block_elements)
        .checked_mul(block_bytes)
        .ok_or_else(|| bad("byte size overflows".into()))?;
    if !offset.is_multiple_of(alignment) {
        return Err(bad(format!(
            "offset {offset} is not aligned to {alignment}"
        )));
    }
    let data_start = data_offset
        .checked_add(offset)
        .ok_or_else(|| bad("offset overflows".into()))?;
    match data_start.checked_add(n_bytes) {
        Some(end) if end <= file_len as u64 => {}
        _ => {
            return Err(bad(format!(
                "data [{data_start}, +{n_bytes}) extends past the end of the file ({file_len} bytes); the file is truncated"
            )))
        }
    }
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type,
        data_start,
        n_elements,
        n_bytes,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                what,
                offset: self.pos as u64,
            });
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Refuses `count` items of at least `min_size` bytes each that cannot fit in the rest.
    fn check_count(&self, count: u64, min_size: u64, what: &'static str) -> Result<(), GgufError> {
        match count.checked_mul(min_size) {
            Some(n) if n <= self.remaining() as u64 => Ok(()),
            _ => Err(GgufError::Malformed(format!(
                "{what} {count} cannot fit in the {} bytes left at offset {}",
                self.remaining(),
                self.pos
            ))),
        }
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        self.check_count(len, 1, what)?;
        let offset = self.pos as u64;
        let raw = self.take(len as usize, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| {
            GgufError::Malformed(format!("{what} at offset {offset} is not valid UTF-8"))
        })
    }

    fn value(&mut self, type_id: u32, key: &str, depth: usize) -> Result<GgufValue, GgufError> {
        Ok(match type_id {
            0 => GgufValue::U8(self.array::<1>("u8 value")?[0]),
            1 => GgufValue::I8(self.array::<1>("i8 value")?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array("u16 value")?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array("i16 value")?)),
            4 => GgufValue::U32(self.u32("u32 value")?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array("i32 value")?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array("f32 value")?)),
            7 => match self.array::<1>("bool value")?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(GgufError::BadMetadata {
                        key: key.into(),
                        reason: format!("bool byte {b} is neither 0 nor 1"),
                    })
                }
            },
            8 => GgufValue::String(self.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::BadMetadata {
                        key: key.into(),
                        reason: format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
                    });
                }
                let element_type = self.u32("array element type")?;
                let len = self.u64("array length")?;
                let min_size = match element_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => {
                        return Err(GgufError::BadMetadata {
                            key: key.into(),
                            reason: format!("unknown array element type {other}"),
                        })
                    }
                };
                self.check_count(len, min_size, "array length")?;
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(element_type, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64("u64 value")?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array("i64 value")?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array("f64 value")?)),
            other => {
                return Err(GgufError::BadMetadata {
                    key: key.into(),
                    reason: format!("unknown value type {other}"),
                })
            }
        })
    }
}
