//! `cluster.toml`: one typed file describes a whole farm. Unknown keys are errors (a typo
//! must not silently fall back to a default), and every validation error names the key at
//! fault and how to fix it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod evaluator;
pub mod judging;
pub mod learning;
pub mod network;
pub mod role;
pub mod vocab;
pub use learning::{CheckpointsSection, ComputeSection, SamplingSection, TrainerSection};
pub use network::{ExtraKeys, NetworkSection};
pub use policy::{Arch, DeviceSpec};
pub use role::Role;
pub use vocab::{CheckpointStoreKind, ComputeKind, NatsStorage};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source} (pass --config PATH, or run from the repository root where cluster.toml lives)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}: `{key}` {problem}; fix: {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
        fix: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default)]
    pub cluster: ClusterSection,
    #[serde(default)]
    pub nats: NatsSection,
    #[serde(default)]
    pub window: WindowSection,
    #[serde(default)]
    pub model: ModelSection,
    #[serde(default)]
    pub env: EnvSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub compute: ComputeSection,
    #[serde(default)]
    pub sampling: SamplingSection,
    #[serde(default)]
    pub trainer: TrainerSection,
    #[serde(default)]
    pub checkpoints: CheckpointsSection,
    #[serde(default)]
    pub evaluator: evaluator::EvaluatorSection,
    #[serde(default)]
    pub verifier: judging::VerifierSection,
    #[serde(default)]
    pub scoring: judging::ScoringSection,
    #[serde(default)]
    pub roles: RolesSection,
    #[serde(default)]
    pub network: NetworkSection,
    /// Directory of the config file; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    /// Run directory: embedded nats-server data, generated keys, models, checkpoints.
    pub run_dir: PathBuf,
    /// Stop after this many windows (0 = run until Ctrl-C). `grail up --windows N` overrides.
    pub windows: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            name: "local".into(),
            run_dir: "run".into(),
            windows: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSection {
    /// NATS URL, or comma-separated URLs of a cluster's nodes; when absent, `grail up` starts
    /// a private embedded nats-server.
    pub url: Option<String>,
    /// Largest message the embedded server and every role accept.
    pub max_message_bytes: usize,
    /// JetStream storage: "file" (survives restarts) or "memory".
    pub storage: NatsStorage,
    /// How long streams keep messages, in hours.
    pub retention_hours: u64,
    /// Authenticated, least-privilege bus for `grail up`'s embedded server (credentials in
    /// `run_dir/auth/`). An external server (`url`) uses `credentials_dir` instead.
    pub auth: bool,
    /// Directory written by `grail nats-config` (operator nkey seeds): roles connect with
    /// `<dir>/<role>.nk`, miners log in with their hotkey. Relative to this file.
    pub credentials_dir: Option<PathBuf>,
    /// Hotkeys never seen before that the gatekeeper admits per minute.
    pub max_new_miners_per_minute: u32,
    /// Miners log in with their hotkey even without a `credentials_dir` (an outside miner on
    /// someone else's authenticated network; `grail miner --network` sets it).
    pub hotkey_login: bool,
    /// Copies of every stream, KV bucket and the object store (1, or 3/5 on a NATS cluster
    /// of at least that many JetStream nodes); `grail streams` migrates existing ones.
    pub replicas: usize,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            url: None,
            max_message_bytes: messages::DEFAULT_MAX_MESSAGE_BYTES,
            storage: NatsStorage::File,
            retention_hours: 24,
            auth: true,
            credentials_dir: None,
            max_new_miners_per_minute: 60,
            hotkey_login: false,
            replicas: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WindowSection {
    /// Length of one window in seconds (mining until the deadline, then verification).
    pub length_secs: f64,
    /// Fraction of the window miners may submit in; the close randomness is revealed after.
    pub submit_fraction: f64,
    /// Length of the clock's hash chain (windows it can serve before a new commitment).
    pub chain_length: u64,
}

impl Default for WindowSection {
    fn default() -> Self {
        Self {
            length_secs: 6.0,
            submit_fraction: 0.7,
            chain_length: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// HF model directory or `.gguf` file. Relative to the config file.
    pub path: PathBuf,
    /// When set, a deterministic tiny model is generated at `path` if it does not exist.
    #[serde(default)]
    pub tiny_arch: Option<Arch>,
    #[serde(default = "default_tiny_seed")]
    pub tiny_seed: u64,
    /// `"cpu"`, `"cuda"` (= `"cuda:0"`) or `"cuda:N"`.
    #[serde(default)]
    pub device: DeviceSpec,
}

fn default_tiny_seed() -> u64 {
    7
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: "run/tiny-model".into(),
            tiny_arch: Some(Arch::Qwen2),
            tiny_seed: 7,
            device: DeviceSpec::Cpu,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    pub id: String,
    /// Datasets root, relative to this file; default `<run_dir>/datasets`
    /// ([`crate::datasets::data_dir`]), filled by `grail data fetch`.
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub params: toml::Table,
}

impl Default for EnvSection {
    fn default() -> Self {
        Self {
            id: "arith".into(),
            data_dir: None,
            params: toml::Table::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the Prometheus `/metrics` endpoint (default `127.0.0.1:9464`);
    /// `listen = ""` disables it (None).
    #[serde(deserialize_with = "listen_or_disabled")]
    pub listen: Option<String>,
}

/// An empty (or blank) `listen` means "no /metrics endpoint": TOML has no null, and leaving
/// the key out keeps the default address.
fn listen_or_disabled<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let listen = String::deserialize(d)?;
    Ok(Some(listen).filter(|l| !l.trim().is_empty()))
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: Some("127.0.0.1:9464".into()),
        }
    }
}

/// One role's deployment: how many instances, on which devices, with which keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSection {
    pub instances: usize,
    /// Compute worker threads per instance (one model replica each).
    #[serde(default = "one")]
    pub workers: usize,
    /// Devices for the workers: "cpu", "cuda:0", ... (one per worker, cycled).
    #[serde(default = "cpu_devices")]
    pub devices: Vec<DeviceSpec>,
    /// Hotkey files, one per instance; missing files are generated (0600) under run_dir/keys.
    #[serde(default)]
    pub key_files: Vec<PathBuf>,
    /// Miner: groups to mine per window per instance.
    #[serde(default = "one")]
    pub groups_per_window: usize,
    /// Miner: groups decoded in one batch on one worker (model compute: each weight read
    /// serves all their rows; 1 = one group per job).
    #[serde(default = "one")]
    pub batch_groups: usize,
    /// Run only this instance (`--instance N`: processes sharing one config).
    #[serde(skip)]
    pub only_instance: Option<usize>,
}

fn one() -> usize {
    1
}
fn cpu_devices() -> Vec<DeviceSpec> {
    vec![DeviceSpec::Cpu]
}

impl RoleSection {
    pub fn with_instances(n: usize) -> Self {
        Self {
            instances: n,
            workers: 1,
            devices: cpu_devices(),
            key_files: vec![],
            groups_per_window: 1,
            batch_groups: 1,
            only_instance: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesSection {
    pub clock: Option<RoleSection>,
    pub miner: Option<RoleSection>,
    pub verifier: Option<RoleSection>,
    pub trainer: Option<RoleSection>,
    pub publisher: Option<RoleSection>,
    pub scorer: Option<RoleSection>,
    /// Optional: scores checkpoints on held-out problems (`[evaluator]`).
    pub evaluator: Option<RoleSection>,
}

impl Default for RolesSection {
    fn default() -> Self {
        Self {
            clock: Some(RoleSection::with_instances(1)),
            miner: Some(RoleSection::with_instances(2)),
            verifier: Some(RoleSection::with_instances(2)),
            trainer: Some(RoleSection::with_instances(1)),
            publisher: Some(RoleSection::with_instances(1)),
            scorer: Some(RoleSection::with_instances(1)),
            evaluator: None,
        }
    }
}

impl RolesSection {
    pub fn get(&self, role: Role) -> Option<&RoleSection> {
        match role {
            Role::Clock => self.clock.as_ref(),
            Role::Miner => self.miner.as_ref(),
            Role::Verifier => self.verifier.as_ref(),
            Role::Trainer => self.trainer.as_ref(),
            Role::Publisher => self.publisher.as_ref(),
            Role::Scorer => self.scorer.as_ref(),
            Role::Evaluator => self.evaluator.as_ref(),
        }
    }
}

impl ClusterConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: ClusterConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: keyed_detail(text, &e),
        })?;
        cfg.source = path.to_path_buf();
        cfg.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.validate()?;
        Ok(cfg)
    }

    fn invalid(
        &self,
        key: &str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            key: key.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let w = &self.window;
        if !(w.length_secs.is_finite() && w.length_secs >= 0.5) {
            return Err(self.invalid(
                "window.length_secs",
                format!("is {}", w.length_secs),
                "use a window of at least 0.5 seconds",
            ));
        }
        if !(w.submit_fraction > 0.0 && w.submit_fraction < 1.0) {
            return Err(self.invalid(
                "window.submit_fraction",
                format!("is {}", w.submit_fraction),
                "use a fraction strictly between 0 and 1 (e.g. 0.7)",
            ));
        }
        if w.chain_length < 2 {
            return Err(self.invalid("window.chain_length", "is below 2", "use e.g. 100000"));
        }
        if self.nats.max_message_bytes < 64 * 1024 {
            return Err(self.invalid(
                "nats.max_message_bytes",
                format!("is {}", self.nats.max_message_bytes),
                "allow at least 65536 bytes; a 16×8k-token group needs ~1.6 MB (default 8 MiB)",
            ));
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return Err(self.invalid(
                "nats.replicas",
                format!("is {}", self.nats.replicas),
                "use 1 (one server), or 3 (or 5) on a NATS cluster of at least that many JetStream nodes",
            ));
        }
        if let Some(url) = &self.nats.url {
            if let Err(e) = actors::bus::server_addrs(url) {
                return Err(self.invalid(
                    "nats.url",
                    format!("{url:?} is not a NATS URL or comma-separated list of them ({e})"),
                    "use nats://HOST:PORT (several, comma-separated, for the nodes of a cluster), or remove the key to run an embedded server",
                ));
            }
        }
        if self.nats.max_new_miners_per_minute == 0 {
            return Err(self.invalid(
                "nats.max_new_miners_per_minute",
                "is 0 (no outside miner could ever log in)",
                "use e.g. 60",
            ));
        }
        if let Some(dir) = &self.nats.credentials_dir {
            if !self.base_dir.join(dir).is_dir() {
                return Err(self.invalid(
                    "nats.credentials_dir",
                    format!("{} is not a directory", self.base_dir.join(dir).display()),
                    "run `grail nats-config --config FILE --out DIR` and copy DIR here (each box needs only its roles' .nk files), or remove the key to connect without credentials",
                ));
            }
        }
        if let Some(listen) = &self.metrics.listen {
            if listen.parse::<SocketAddr>().is_err() {
                return Err(self.invalid(
                    "metrics.listen",
                    format!("{listen:?} is not HOST:PORT"),
                    "use e.g. \"127.0.0.1:9464\", or listen = \"\" to disable /metrics",
                ));
            }
        }
        let n = &self.network;
        let id = self.network_id();
        if id.is_empty()
            || id.len() > messages::manifest::MAX_NETWORK_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.invalid(
                "network.id",
                format!("{id:?} (from network.id or cluster.name) is not a network id"),
                "use 1-64 characters of A-Z a-z 0-9 _ -",
            ));
        }
        let keys = [
            ("clock", &n.keys.clock),
            ("verifier", &n.keys.verifier),
            ("scorer", &n.keys.scorer),
            ("trainer", &n.keys.trainer),
            ("publisher", &n.keys.publisher),
            ("evaluator", &n.keys.evaluator),
        ];
        let owner = (!n.owner.is_empty()).then_some(("owner", &n.owner));
        for (key, address) in keys
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |a| (*k, a)))
            .chain(owner)
        {
            if let Err(e) = messages::Ss58Address::parse(address) {
                return Err(self.invalid(
                    &format!(
                        "network.{}",
                        if key == "owner" {
                            "owner".to_string()
                        } else {
                            format!("keys.{key}")
                        }
                    ),
                    e.to_string(),
                    "use the SS58 address printed by `grail keys show FILE`",
                ));
            }
        }
        if n.max_groups_per_window == 0 {
            return Err(self.invalid(
                "network.max_groups_per_window",
                "is 0",
                "allow at least the miners' groups_per_window",
            ));
        }
        if let Some(t) = self.trains_on_eval() {
            return Err(self.invalid(&format!("env.{}", t.key), t.problem, t.fix));
        }
        learning::validate(
            &self.compute,
            &self.sampling,
            &self.trainer,
            &self.checkpoints,
        )
        .map_err(|(key, problem, fix)| self.invalid(key, problem, fix))?;
        judging::validate(&self.verifier, &self.scoring)
            .map_err(|(key, problem, fix)| self.invalid(key, problem, fix))?;
        if self.roles.evaluator.is_some() && self.evaluator.problems == 0 {
            return Err(self.invalid(
                "evaluator.problems",
                "is 0",
                "score at least 1 held-out problem, or delete [roles.evaluator]",
            ));
        }
        for role in Role::ALL {
            let Some(r) = self.roles.get(role) else {
                continue;
            };
            let key = |k: &str| format!("roles.{role}.{k}");
            if r.instances == 0 {
                return Err(self.invalid(
                    &key("instances"),
                    "is 0",
                    format!("use at least 1, or delete [roles.{role}] to run no {role}"),
                ));
            }
            if r.workers == 0 {
                return Err(self.invalid(&key("workers"), "is 0", "use at least 1"));
            }
            if r.devices.is_empty() {
                return Err(self.invalid(&key("devices"), "is empty", "list at least \"cpu\""));
            }
            if !r.key_files.is_empty() && r.key_files.len() != r.instances {
                return Err(self.invalid(
                    &key("key_files"),
                    format!(
                        "lists {} files for {} instances",
                        r.key_files.len(),
                        r.instances
                    ),
                    "give one key file per instance, or none to generate them",
                ));
            }
            if r.groups_per_window == 0 {
                return Err(self.invalid(&key("groups_per_window"), "is 0", "use at least 1"));
            }
            if r.batch_groups == 0 {
                return Err(self.invalid(
                    &key("batch_groups"),
                    "is 0",
                    "use 1 (one group per job) or more (groups decoded together)",
                ));
            }
        }
        Ok(())
    }

    /// Resolve a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Whether `[env]` selects held-out eval problems for training (refused by `validate`).
    fn trains_on_eval(&self) -> Option<envs::TrainsOnEval> {
        let params = serde_json::to_value(&self.env.params).ok()?;
        envs::trains_on_eval(&envs::EnvSpec {
            id: self.env.id.clone(),
            data_dir: None,
            params: params.as_object().cloned().unwrap_or_default(),
        })
    }

    pub fn run_dir(&self) -> PathBuf {
        self.resolve(&self.cluster.run_dir)
    }

    pub fn network_id(&self) -> String {
        self.network
            .id
            .clone()
            .unwrap_or_else(|| self.cluster.name.clone())
    }

    pub fn owner_key_path(&self) -> PathBuf {
        match &self.network.owner_key_file {
            Some(p) => self.resolve(p),
            None => self.run_dir().join("keys").join("owner.json"),
        }
    }
}

/// toml's document errors point at the line but not at the dotted key (a refused value shows
/// as `kind = "gpu"`, not which table's `kind`); the same text read through a `toml::Value`
/// carries the key path, so the message leads with it.
fn keyed_detail(text: &str, e: &toml::de::Error) -> String {
    let keyed = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| ClusterConfig::deserialize(toml::Value::Table(t)).err())
        .map(|k| k.to_string());
    let key = keyed.as_deref().and_then(|k| {
        k.lines()
            .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')))
    });
    match key {
        Some(key) => format!("`{key}`: {}\n{e}", e.message().trim_end()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Path::new("test/cluster.toml"))
    }

    #[test]
    fn empty_file_gives_the_local_defaults() {
        let c = parse("").unwrap();
        assert!(c.nats.url.is_none());
        assert_eq!(c.roles.miner.as_ref().unwrap().instances, 2);
        assert_eq!(c.run_dir(), PathBuf::from("test/run"));
    }

    #[test]
    fn repository_cluster_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.toml");
        ClusterConfig::load(&path).unwrap();
    }

    #[test]
    fn farm_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cluster.farm.toml");
        let c = ClusterConfig::load(&path).unwrap();
        assert_eq!(c.roles.miner.as_ref().unwrap().devices.len(), 8);
    }

    #[test]
    fn smollm2_gsm8k_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cluster.smollm2-gsm8k.toml");
        let c = ClusterConfig::load(&path).unwrap();
        assert_eq!(c.env.id, "gsm8k");
        assert_eq!(c.sampling.max_new_tokens, 256);
    }

    #[test]
    fn nats_url_takes_one_url_or_a_cluster_list() {
        let c =
            parse("[nats]\nurl = \"nats://10.0.0.1:4222, nats://10.0.0.2:4222,10.0.0.3:4222\"\n")
                .unwrap();
        let addrs = actors::bus::server_addrs(c.nats.url.as_deref().unwrap()).unwrap();
        assert_eq!(addrs.len(), 3);
        for bad in [" , ", "nats://a:4222,nats://b:notaport"] {
            let e = parse(&format!("[nats]\nurl = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("nats.url") && e.contains("fix:"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let e = parse("[roles.miner]\ninstances = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("roles.miner.instances") && e.contains("fix:"),
            "{e}"
        );
        let e = parse("[window]\nlength_secs = 5\nsubmit_fraction = 1.5\nchain_length = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("window.submit_fraction"), "{e}");
        let e = parse("[metrics]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.listen"), "{e}");
        let e = parse("[roles.verifier]\ninstances = 1\ndevices = [\"tpu\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("roles.verifier.devices"), "{e}");
        let e = parse("[scoring.soft]\nreward_mismatch = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scoring.soft.reward_mismatch"), "{e}");
        let e = parse("[verifier]\nchallenge_k = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("verifier.challenge_k"), "{e}");
        let e = parse("[roles.evaluator]\ninstances = 1\n[evaluator]\nproblems = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("evaluator.problems"), "{e}");
    }

    #[test]
    fn verifier_and_scoring_sections_reach_the_roles_settings() {
        let c = parse(
            "[verifier]\nlogprob_epsilon = 0.2\nsketch = { base = 500 }\nrollouts_checked = 4\n\
             [scoring]\nexponent = 2.0\nsoft = { reward_mismatch = 0.25 }\n",
        )
        .unwrap();
        assert_eq!(c.verifier.logprob_epsilon, 0.2);
        assert_eq!(c.verifier.rollouts_checked, 4);
        assert_eq!(c.verifier.sketch.base, 500);
        assert_eq!(c.verifier.challenge_k, 32, "defaults kept");
        assert_eq!(c.scoring.params().exponent, 2.0);
        assert_eq!(c.scoring.soft.reward_mismatch, 0.25);
        assert!(
            parse("[scoring]\nexponentt = 2.0\n").is_err(),
            "typos are refused"
        );
    }

    #[test]
    fn metrics_listen_defaults_on_and_an_empty_string_disables_it() {
        let default = Some("127.0.0.1:9464".to_string());
        assert_eq!(parse("").unwrap().metrics.listen, default);
        assert_eq!(parse("[metrics]\n").unwrap().metrics.listen, default);
        let c = parse("[metrics]\nlisten = \"0.0.0.0:9500\"\n").unwrap();
        assert_eq!(c.metrics.listen.as_deref(), Some("0.0.0.0:9500"));
        assert_eq!(
            parse("[metrics]\nlisten = \"\"\n").unwrap().metrics.listen,
            None
        );
        assert_eq!(
            parse("[metrics]\nlisten = \"  \"\n")
                .unwrap()
                .metrics
                .listen,
            None
        );
        let e = parse("[metrics]\nlisten = 9464\n").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn closed_vocabularies_are_refused_at_load_with_the_key_and_the_accepted_values() {
        for (text, key, accepted) in [
            (
                "[compute]\nkind = \"gpu\"\n",
                "`compute.kind`",
                "`model` or `structural`",
            ),
            (
                "[nats]\nstorage = \"disk\"\n",
                "`nats.storage`",
                "`file` or `memory`",
            ),
            (
                "[model]\npath = \"m\"\ntiny_arch = \"qwen3\"\n",
                "`model.tiny_arch`",
                "`qwen2` or `llama`",
            ),
            (
                "[model]\npath = \"m\"\ndevice = \"gpu\"\n",
                "`model.device`",
                "\"cpu\", \"cuda\" (= \"cuda:0\") or \"cuda:N\"",
            ),
            (
                "[roles.verifier]\ninstances = 1\ndevices = [\"cpu\", \"cuda:x\"]\n",
                "`roles.verifier.devices",
                "\"cuda:N\"",
            ),
            (
                "[checkpoints]\nstore = \"\"\n",
                "`checkpoints.store`",
                "\"nats\"",
            ),
        ] {
            let e = match parse(text) {
                Err(e @ ConfigError::Parse { .. }) => e.to_string(),
                other => panic!("{text}: expected a parse error, got {other:?}"),
            };
            assert!(e.contains(key), "{text}: no key {key} in {e}");
            assert!(e.contains(accepted), "{text}: no {accepted} in {e}");
            assert!(e.contains("line"), "{text}: the line is kept: {e}");
        }
    }

    #[test]
    fn vocabularies_parse_to_their_types() {
        let c = parse(
            "[compute]\nkind = \"structural\"\n[nats]\nstorage = \"memory\"\n\
             [checkpoints]\nstore = \"ckpts\"\n\
             [model]\npath = \"m\"\ntiny_arch = \"llama\"\ndevice = \"cuda\"\n\
             [roles.miner]\ninstances = 1\ndevices = [\"cuda\", \"cuda:0\", \"cuda:1\", \"cpu\"]\n",
        )
        .unwrap();
        assert_eq!(c.compute.kind, ComputeKind::Structural);
        assert_eq!(c.nats.storage, NatsStorage::Memory);
        assert_eq!(
            c.checkpoints.store,
            CheckpointStoreKind::Dir("ckpts".into())
        );
        assert_eq!(c.model.tiny_arch, Some(Arch::Llama));
        // "cuda" is "cuda:0", in one type for the config and the command line.
        assert_eq!(c.model.device, DeviceSpec::Cuda(0));
        assert_eq!(
            c.roles.miner.as_ref().unwrap().devices,
            [
                DeviceSpec::Cuda(0),
                DeviceSpec::Cuda(0),
                DeviceSpec::Cuda(1),
                DeviceSpec::Cpu
            ]
        );
        let d = parse("").unwrap();
        assert_eq!(d.checkpoints.store, CheckpointStoreKind::Nats);
        assert_eq!(d.compute.kind, ComputeKind::Model);
        assert_eq!(d.nats.storage, NatsStorage::File);
        assert_eq!(d.model.device, DeviceSpec::Cpu);
    }

    #[test]
    fn typos_are_rejected_with_the_key_name() {
        let e = parse("[window]\nlenght_secs = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lenght_secs"), "{e}");
        let e = parse("[roles.minr]\ninstances = 1\n")
            .unwrap_err()
            .to_string();
        // An unknown role is refused, naming the table and every role there is.
        assert!(e.contains("minr") && e.contains("`roles`"), "{e}");
        for role in Role::ALL {
            assert!(e.contains(&format!("`{role}`")), "{role} missing: {e}");
        }
    }
}
