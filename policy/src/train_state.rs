//! The trainer's private state: f32 master weights, AdamW moments and step count, and the
//! digest of the checkpoint they were last published as.
//!
//! Checkpoints are published in the network's compute dtype (bf16 for real models), which
//! drops the low bits of every weight; a trainer that restarted from the published weights
//! would lose them and its optimizer moments. It saves this file after each job instead and,
//! when it restarts from a checkpoint whose digest matches `head`, resumes from it exactly.
//!
//! One safetensors file (atomic write): `master/<name>`, `adam_m/<name>`, `adam_v/<name>`
//! (f32), `adam_step` (i64, one element) and `head` (u8, 32 bytes).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{load_safetensors, save_safetensors, WeightSet};
use crate::config::ModelConfig;
use crate::error::{PolicyError, PolicyResult};
use crate::grpo::{GrpoConfig, GrpoTrainer};

fn invalid(path: &Path, what: impl std::fmt::Display) -> PolicyError {
    PolicyError::InvalidInput(format!(
        "trainer state {}: {what} (delete the file to restart from the published checkpoint)",
        path.display()
    ))
}

/// Writes `trainer`'s master weights and optimizer state, tagged with `head`, the digest of
/// the checkpoint they were published as.
pub fn save_train_state(trainer: &GrpoTrainer, head: &[u8; 32], path: &Path) -> PolicyResult<()> {
    let cpu = Device::Cpu;
    let mut set = WeightSet::new();
    for (name, t) in trainer.weights() {
        let master = t.to_device(&cpu)?.to_dtype(DType::F32)?.copy()?;
        set.insert(format!("master/{name}"), master);
    }
    let (step, moments) = trainer.optimizer().state()?;
    for (name, m, v) in moments {
        set.insert(format!("adam_m/{name}"), m);
        set.insert(format!("adam_v/{name}"), v);
    }
    set.insert(
        "adam_step".into(),
        Tensor::from_vec(vec![step as i64], 1, &cpu)?,
    );
    set.insert("head".into(), Tensor::from_slice(head, 32, &cpu)?);
    save_safetensors(&set, path).map_err(|e| invalid(path, e))
}

/// The `head` digest a saved state is tagged with (None: no state file).
pub fn train_state_head(path: &Path) -> PolicyResult<Option<[u8; 32]>> {
    if !path.exists() {
        return Ok(None);
    }
    let set = load_safetensors(path).map_err(|e| invalid(path, e))?;
    head_of(&set, path).map(Some)
}

fn head_of(set: &WeightSet, path: &Path) -> PolicyResult<[u8; 32]> {
    let head = set.get("head").ok_or_else(|| invalid(path, "no `head`"))?;
    let bytes: Vec<u8> = head.to_vec1()?;
    bytes
        .try_into()
        .map_err(|_| invalid(path, "`head` is not 32 bytes"))
}

/// Rebuilds the trainer saved at `path` (weights in `dtype` on `device`) and the digest it is
/// tagged with. The reference model (kl_coef > 0) is rebuilt from the master weights, as a
/// restart from a checkpoint builds it from that checkpoint.
pub fn load_train_state(
    path: &Path,
    cfg: &ModelConfig,
    config: GrpoConfig,
    pad_id: u32,
    dtype: DType,
    device: &Device,
) -> PolicyResult<(GrpoTrainer, [u8; 32])> {
    let set = load_safetensors(path).map_err(|e| invalid(path, e))?;
    let head = head_of(&set, path)?;
    let master: HashMap<String, Tensor> = set
        .iter()
        .filter_map(|(k, t)| Some((k.strip_prefix("master/")?.to_string(), t.clone())))
        .collect();
    let step_tensor = set
        .get("adam_step")
        .ok_or_else(|| invalid(path, "no `adam_step`"))?;
    let step = step_tensor.to_vec1::<i64>()?.first().copied().unwrap_or(0) as u64;
    let mut trainer = GrpoTrainer::from_weights(cfg, &master, config, pad_id, dtype, device)?;
    let names: Vec<String> = trainer.weights().into_keys().collect();
    let mut moments = Vec::with_capacity(names.len());
    for name in names {
        let get = |prefix: &str| {
            set.get(&format!("{prefix}/{name}"))
                .cloned()
                .ok_or_else(|| invalid(path, format!("no `{prefix}/{name}`")))
        };
        moments.push((name.clone(), get("adam_m")?, get("adam_v")?));
    }
    trainer
        .optimizer_mut()
        .restore(step, &moments)
        .map_err(|e| invalid(path, e))?;
    Ok((trainer, head))
}
