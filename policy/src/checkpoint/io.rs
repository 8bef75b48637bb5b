//! safetensors serialisation of a [`WeightSet`].

use std::borrow::Cow;
use std::path::Path;

use candle_core::DType;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, View};

use super::{tensor_from_le_bytes, tensor_to_le_bytes, CheckpointError, WeightSet};

/// A tensor already converted to bytes, so serialisation cannot fail half-way.
struct RawTensor {
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &RawTensor {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn st_dtype(name: &str, dtype: DType) -> Result<StDtype, CheckpointError> {
    Ok(match dtype {
        DType::F32 => StDtype::F32,
        DType::BF16 => StDtype::BF16,
        DType::F16 => StDtype::F16,
        DType::F64 => StDtype::F64,
        DType::U8 => StDtype::U8,
        DType::U32 => StDtype::U32,
        DType::I16 => StDtype::I16,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        dtype => {
            return Err(CheckpointError::UnsupportedDtype {
                tensor: name.to_string(),
                dtype,
            })
        }
    })
}

fn candle_dtype(origin: &str, name: &str, dtype: StDtype) -> Result<DType, CheckpointError> {
    Ok(match dtype {
        StDtype::F32 => DType::F32,
        StDtype::BF16 => DType::BF16,
        StDtype::F16 => DType::F16,
        StDtype::F64 => DType::F64,
        StDtype::U8 => DType::U8,
        StDtype::U32 => DType::U32,
        StDtype::I16 => DType::I16,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        other => {
            return Err(CheckpointError::UnsupportedFileDtype {
                origin: origin.to_string(),
                tensor: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    })
}

/// Serialises `weights` to safetensors bytes (header entries sorted by name).
pub fn to_safetensors_bytes(weights: &WeightSet) -> Result<Vec<u8>, CheckpointError> {
    let mut raw = Vec::with_capacity(weights.len());
    for (name, tensor) in weights {
        raw.push((
            name.clone(),
            RawTensor {
                dtype: st_dtype(name, tensor.dtype())?,
                shape: tensor.dims().to_vec(),
                bytes: tensor_to_le_bytes(name, tensor)?,
            },
        ));
    }
    safetensors::serialize(raw.iter().map(|(n, t)| (n.as_str(), t)), None).map_err(|source| {
        CheckpointError::Safetensors {
            origin: "being serialised".to_string(),
            source,
        }
    })
}

/// Parses safetensors bytes into a CPU [`WeightSet`]; `origin` names the source in errors.
pub fn from_safetensors_bytes(bytes: &[u8], origin: &str) -> Result<WeightSet, CheckpointError> {
    let parsed =
        SafeTensors::deserialize(bytes).map_err(|source| CheckpointError::Safetensors {
            origin: origin.to_string(),
            source,
        })?;
    let mut weights = WeightSet::new();
    for (name, view) in parsed.tensors() {
        let dtype = candle_dtype(origin, &name, view.dtype())?;
        let tensor = tensor_from_le_bytes(&name, view.data(), dtype, view.shape())?;
        weights.insert(name, tensor);
    }
    Ok(weights)
}

/// Writes `weights` to `path` atomically (temporary sibling file, then rename).
pub fn save_safetensors(weights: &WeightSet, path: &Path) -> Result<(), CheckpointError> {
    let bytes = to_safetensors_bytes(weights)?;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, &bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Loads a safetensors file into a CPU [`WeightSet`].
pub fn load_safetensors(path: &Path) -> Result<WeightSet, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_safetensors_bytes(&bytes, &path.display().to_string())
}
