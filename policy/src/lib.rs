//! grail-policy: the candle model engine (model, loaders, generation, proof forward, GRPO,
//! checkpoints).

pub mod allocator;
pub mod bench;
pub mod bench_generation;
pub mod checkpoint;
pub mod config;
pub mod delta;
pub mod device;
pub mod error;
pub mod export;
pub mod generate;
pub mod generate_batch;
pub mod gguf;
pub mod grpo;
pub mod loader;
pub mod model;
pub mod optim;
pub mod proof;
pub mod tiny;
pub mod tokenizer;
pub mod train_state;

pub use config::{Arch, ModelConfig};
pub use device::{default_dtype, parse_device, DeviceError, DeviceSpec};
pub use error::{ConfigError, LoadError, PolicyError, PolicyResult};
pub use loader::{load_model, LoadOptions, LoadedModel};
pub use model::{KvCache, Model};
pub use tiny::write_tiny_model;
pub use tokenizer::{ChatMessage, PolicyTokenizer};
