//! Device selection from the config strings the cluster uses (`"cpu"`, `"cuda"`, `"cuda:N"`),
//! and the weight dtype that goes with each: f32 on CPU, bf16 on CUDA (norms, RoPE, attention
//! softmax, the LM head and log-softmax still run in f32, see `model`).

use candle_core::{DType, Device};

use crate::loader::LoadOptions;

/// A device string that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "device {spec:?} is not recognised: use \"cpu\", \"cuda\" (= \"cuda:0\") or \"cuda:N\""
    )]
    Unrecognised { spec: String },
    #[error(
        "device {spec:?}: this binary was built without the `cuda` feature; \
         rebuild with scripts/build-cuda.sh (or `--features cuda`)"
    )]
    NotCompiledWithCuda { spec: String },
    #[error("device {spec:?}: cannot open CUDA device {ordinal}: {message}")]
    Cuda {
        spec: String,
        ordinal: usize,
        message: String,
    },
}

/// Where a device string points, before any device is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = DeviceError;
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let unrecognised = || DeviceError::Unrecognised {
            spec: spec.to_string(),
        };
        match spec.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(unrecognised),
        }
    }
}

/// The canonical spelling: `cpu` or `cuda:N` (so `"cuda"` prints as `cuda:0`).
impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Config files parse device strings at load time, with the same rules as the command line.
impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spec = String::deserialize(d)?;
        spec.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl DeviceSpec {
    /// Opens the device (CUDA needs a `--features cuda` build).
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(_) if !CUDA_COMPILED => Err(DeviceError::NotCompiledWithCuda {
                spec: self.to_string(),
            }),
            DeviceSpec::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|e| DeviceError::Cuda {
                spec: self.to_string(),
                ordinal,
                message: e.to_string(),
            }),
        }
    }

    /// The weight dtype the engine uses there: f32 on CPU, bf16 on CUDA.
    pub fn dtype(self) -> DType {
        match self {
            DeviceSpec::Cpu => DType::F32,
            DeviceSpec::Cuda(_) => DType::BF16,
        }
    }

    /// Load options for this device with its default dtype.
    pub fn load_options(self) -> Result<LoadOptions, DeviceError> {
        Ok(LoadOptions {
            device: self.open()?,
            dtype: self.dtype(),
        })
    }
}

/// True when this build can open CUDA devices.
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

/// Opens the device named by `spec` (`"cpu"`, `"cuda"` = `"cuda:0"`, `"cuda:N"`).
pub fn parse_device(spec: &str) -> Result<Device, DeviceError> {
    spec.parse::<DeviceSpec>()?.open()
}

/// The weight dtype the engine uses on `device`: f32 on CPU, bf16 on CUDA.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

/// Parses a dtype name as used on the command line (`f32`, `bf16`, `f16`, `f64`).
pub fn parse_dtype(name: &str) -> Option<DType> {
    match name.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Some(DType::F32),
        "bf16" | "bfloat16" => Some(DType::BF16),
        "f16" | "float16" => Some(DType::F16),
        "f64" | "float64" => Some(DType::F64),
        _ => None,
    }
}

impl LoadOptions {
    /// Load options for a device string with that device's default dtype.
    pub fn for_device(spec: &str) -> Result<Self, DeviceError> {
        spec.parse::<DeviceSpec>()?.load_options()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse_like_the_cluster_config() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "tpu:0", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.to_string().contains("not recognised"), "{bad}: {e}");
        }
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap().to_string(), "cuda:0");
        for spec in ["cpu", "cuda:0", "cuda:7"] {
            let parsed: DeviceSpec = spec.parse().unwrap();
            assert_eq!(parsed.to_string(), spec);
            let json: DeviceSpec = serde_json::from_str(&format!("{spec:?}")).unwrap();
            assert_eq!(json, parsed);
        }
        let e = serde_json::from_str::<DeviceSpec>("\"tpu\"").unwrap_err();
        assert!(e.to_string().contains("\"cuda:N\""), "{e}");
    }

    #[test]
    fn cpu_loads_in_f32() {
        let opts = LoadOptions::for_device("cpu").unwrap();
        assert!(opts.device.is_cpu());
        assert_eq!(opts.dtype, DType::F32);
    }

    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        if CUDA_COMPILED {
            return; // covered on the GPU machine by `cuda_loads_in_bf16`
        }
        let e = parse_device("cuda:0").unwrap_err();
        assert!(e.to_string().contains("build-cuda.sh"), "{e}");
    }

    #[test]
    #[cfg(feature = "cuda")]
    fn cuda_loads_in_bf16() {
        let opts = LoadOptions::for_device("cuda").unwrap();
        assert!(opts.device.is_cuda());
        assert_eq!(opts.dtype, DType::BF16);
    }

    #[test]
    fn dtype_names() {
        assert_eq!(parse_dtype("BF16"), Some(DType::BF16));
        assert_eq!(parse_dtype("f32"), Some(DType::F32));
        assert_eq!(parse_dtype("int8"), None);
    }
}
