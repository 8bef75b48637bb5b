//! The compute a cluster's roles share in one process: the base model (loaded once, one per
//! device), the environment, the checkpoint store and the hotkeys whose checkpoints are
//! trusted. Built from cluster.toml; every failure names the key to fix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actors::bus::Bus;
use actors::checkpoints::{CheckpointStore, LocalDirStore, NatsObjectStore, S3Config, S3Store};
use actors::compute::model::ModelBase;
use anyhow::Context;
use envs::Environment;
use policy::DeviceSpec;

use crate::config::{CheckpointStoreKind, ClusterConfig, ComputeKind, Role, RoleSection};
use crate::keys;

/// Lazily built, process-wide resources for the model-backed roles.
pub struct SharedCompute {
    cfg: ClusterConfig,
    bases: Mutex<HashMap<DeviceSpec, Arc<ModelBase>>>,
    env: Mutex<Option<Arc<dyn Environment>>>,
    store: tokio::sync::OnceCell<Arc<dyn CheckpointStore>>,
}

/// The key file of instance `i` of `role` (configured, or generated under run_dir/keys).
pub fn key_path(
    cfg: &ClusterConfig,
    role: Role,
    section: Option<&RoleSection>,
    i: usize,
) -> std::path::PathBuf {
    section
        .and_then(|s| s.key_files.get(i))
        .map(|p| cfg.resolve(p))
        .unwrap_or_else(|| cfg.run_dir().join("keys").join(format!("{role}-{i}.json")))
}

impl SharedCompute {
    pub fn new(cfg: &ClusterConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            bases: Mutex::new(HashMap::new()),
            env: Mutex::new(None),
            store: tokio::sync::OnceCell::new(),
        }
    }

    pub fn uses_model(&self) -> bool {
        self.cfg.compute.kind == ComputeKind::Model
    }

    /// Writes the deterministic tiny model when `[model] tiny_arch` asks for one and the
    /// directory does not exist yet.
    pub fn ensure_model_files(&self) -> anyhow::Result<()> {
        let path = self.cfg.resolve(&self.cfg.model.path);
        let Some(arch) = self.cfg.model.tiny_arch else {
            return Ok(());
        };
        if path.join("config.json").exists() {
            return Ok(());
        }
        policy::write_tiny_model(&path, arch, self.cfg.model.tiny_seed).with_context(|| {
            format!(
                "[model] tiny_arch: writing the tiny model to {}",
                path.display()
            )
        })?;
        tracing::info!(path = %path.display(), "wrote the tiny model");
        Ok(())
    }

    /// The base model on `device` (loaded once per device and shared by every worker there).
    pub fn base(&self, device: DeviceSpec) -> anyhow::Result<Arc<ModelBase>> {
        let mut bases = self.bases.lock().expect("model base lock");
        if let Some(b) = bases.get(&device) {
            return Ok(b.clone());
        }
        self.ensure_model_files()?;
        let opts = device.load_options()?;
        let path = self.cfg.resolve(&self.cfg.model.path);
        let base = ModelBase::load(&path, &opts).with_context(|| {
            format!(
                "[model] path = {:?} in {}: fix the path or run `grail model tiny --out {}`",
                self.cfg.model.path,
                self.cfg.source.display(),
                path.display()
            )
        })?;
        let dtype = (self.cfg.checkpoints.dtype).resolve(self.cfg.model.tiny_arch.is_some());
        let base = Arc::new(base.with_checkpoint_dtype(dtype)?);
        bases.insert(device, base.clone());
        Ok(base)
    }

    /// The `[env]` environment (built once).
    pub fn env(&self) -> anyhow::Result<Arc<dyn Environment>> {
        let mut env = self.env.lock().expect("env lock");
        if let Some(e) = env.as_ref() {
            return Ok(e.clone());
        }
        let section = &self.cfg.env;
        let params = serde_json::to_value(&section.params)?
            .as_object()
            .cloned()
            .unwrap_or_default();
        let spec = envs::EnvSpec {
            id: section.id.clone(),
            data_dir: Some(crate::datasets::data_dir(None, Some(&self.cfg))),
            params,
        };
        let built = envs::build(&spec)
            .with_context(|| format!("[env] in {}", self.cfg.source.display()))?;
        *env = Some(built.clone());
        Ok(built)
    }

    /// The checkpoint store named by `[checkpoints] store`.
    pub async fn store(&self, bus: &Bus) -> anyhow::Result<Arc<dyn CheckpointStore>> {
        let dir = match &self.cfg.checkpoints.store {
            CheckpointStoreKind::Dir(dir) => dir,
            CheckpointStoreKind::Nats => {
                // Not shared: each role reaches the object store on its own connection, with
                // its own bus permissions (only the trainer and publisher may write).
                let s = NatsObjectStore::open(&bus.js).await.with_context(|| {
                    "[checkpoints] store = \"nats\": the object store is missing (run `grail streams`)"
                })?;
                return Ok(Arc::new(s));
            }
            CheckpointStoreKind::S3(url) => {
                let cfg = S3Config::from_url(url)
                    .map_err(|e| anyhow::anyhow!("[checkpoints] store: {e}"))?;
                let s = S3Store::open(cfg).context("[checkpoints] store")?;
                return Ok(Arc::new(s));
            }
        };
        self.store
            .get_or_try_init(|| async {
                let path = self.cfg.resolve(dir);
                let s: Arc<dyn CheckpointStore> =
                    Arc::new(LocalDirStore::open(&path).with_context(|| {
                        format!(
                            "[checkpoints] store = {:?}: cannot use {}",
                            dir.display().to_string(),
                            path.display()
                        )
                    })?);
                anyhow::Ok(s)
            })
            .await
            .cloned()
    }

    /// The hotkey address trusted for `role` (the publisher or the trainer): the configured
    /// one, else this cluster's own instance-0 key.
    pub fn trusted(&self, role: Role) -> anyhow::Result<String> {
        let configured = match role {
            Role::Publisher => &self.cfg.checkpoints.publisher,
            _ => &self.cfg.checkpoints.trainer,
        };
        if !configured.is_empty() {
            return Ok(configured.clone());
        }
        let path = key_path(&self.cfg, role, self.cfg.roles.get(role), 0);
        let id = keys::load_or_create(&path).with_context(|| {
            format!("[checkpoints] {role} is empty, so this cluster's {role} key {} is trusted, but it cannot be read; set [checkpoints] {role} = \"<ss58>\"", path.display())
        })?;
        Ok(id.address().to_string())
    }
}
