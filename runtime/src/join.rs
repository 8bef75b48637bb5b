//! `grail miner --network URL --hotkey FILE --owner SS58`: an outside miner joins a running
//! network with nothing but the URL, its hotkey and the owner's address.
//!
//! The newest manifest the owner signed says what to mine: the model (by base weight digest;
//! a `tiny:ARCH:SEED` model is regenerated locally, any other is read from `--model`), the
//! environment and its parameters, the sampling settings and the limits; checkpoints come from
//! the checkpoint stream, trusted only from the manifest's publisher keys. The miner refuses to
//! start when its base model's digest differs from the manifest's (checked in `up::run`, as
//! for every role started alone). Everything else is the same
//! code path as an operator's miner (`up::run` with one role).

use std::path::PathBuf;
use std::sync::Arc;

use actors::bus::Bus;
use actors::metrics::Metrics;
use anyhow::Context;
use messages::NetworkManifest;

use crate::config::ClusterConfig;
use crate::keys;
use crate::up;

/// What the operator of the miner decides; the rest comes from the manifest.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    pub url: String,
    pub hotkey: PathBuf,
    pub owner: String,
    /// Model directory or `.gguf` for networks whose model is not a generated tiny one.
    pub model: Option<PathBuf>,
    /// Data directory for environments that read files (GSM8K, MATH, ...).
    pub data_dir: Option<PathBuf>,
    pub run_dir: PathBuf,
    pub workers: usize,
    pub groups_per_window: usize,
    pub device: policy::DeviceSpec,
    /// `/metrics` address ("" = off).
    pub metrics_listen: String,
}

/// Read the newest manifest `owner` signed from the network at `url`.
pub async fn fetch_manifest(
    url: &str,
    owner: &str,
    hotkey: &messages::Identity,
) -> anyhow::Result<NetworkManifest> {
    let bus = connect(url, hotkey, owner).await?;
    crate::network::latest(&bus, owner, None)
        .await?
        .with_context(|| format!("{url} has no network manifest signed by {owner}: check --owner (the operator's owner address) and --network"))
}

/// Log in with the hotkey, the challenge bound to the owner's address (`auth::login_domain`).
async fn connect(url: &str, hotkey: &messages::Identity, owner: &str) -> anyhow::Result<Bus> {
    let credentials = actors::bus_auth::Credentials::Hotkey {
        identity: Arc::new(hotkey.clone()),
        network_id: owner.to_string(),
    };
    let bus = Bus::connect_with(
        url,
        "grail-miner",
        Arc::new(Metrics::new()),
        messages::DEFAULT_MAX_MESSAGE_BYTES,
        &credentials,
    )
    .await?;
    // The client retries a refused login for ever; a joining miner says why it cannot join.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while bus.client.connection_state() != async_nats::connection::State::Connected {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{url} did not accept the login of {} within 15 s: the login is bound to the owner address, so check --owner {owner} (the operator's `grail keys show run/keys/owner.json`); or the server is unreachable, or the network admits few new miners per minute (try again)",
            hotkey.address()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(bus)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The one-role cluster.toml an outside miner runs, built from the manifest.
pub fn miner_config(m: &NetworkManifest, o: &JoinOptions) -> anyhow::Result<ClusterConfig> {
    let run_dir = o.run_dir.display().to_string();
    let model = match (&m.model, &o.model) {
        (None, _) => String::new(),
        (Some(spec), local) => {
            let tiny = spec
                .source
                .strip_prefix("tiny:")
                .and_then(|rest| rest.split_once(':'));
            match (tiny, local) {
                (_, Some(path)) => format!("path = {}\n", toml_string(&path.display().to_string())),
                (Some((arch, seed)), None) => format!(
                    "path = {}\ntiny_arch = {}\ntiny_seed = {}\n",
                    toml_string(&format!("{run_dir}/model-{}", spec.base_checkpoint.short())),
                    toml_string(arch),
                    seed.parse::<u64>()
                        .with_context(|| format!("manifest model source {:?}", spec.source))?
                ),
                (None, None) => anyhow::bail!(
                    "the network trains {} (base digest {}): pass --model DIR with that model",
                    spec.source,
                    spec.base_checkpoint
                ),
            }
        }
    };
    let env = m
        .env
        .as_ref()
        .context("the manifest names no environment")?;
    let params: serde_json::Value = serde_json::from_str(&env.params_json)
        .with_context(|| format!("manifest env params {:?}", env.params_json))?;
    let params = toml::Value::try_from(params).context("manifest env params as TOML")?;
    let data_dir = o
        .data_dir
        .as_ref()
        // Absolute: the generated file lives in run_dir, and relative paths resolve against it.
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
        .map(|d| format!("data_dir = {}\n", toml_string(&d.display().to_string())))
        .unwrap_or_default();
    let publisher = m.roles.publisher.first().cloned().unwrap_or_default();
    let s = &m.sampling;
    let text = format!(
        r#"[cluster]
name = {name}
run_dir = {run_dir}

[nats]
url = {url}
max_message_bytes = {max_bytes}
hotkey_login = true

[network]
id = {name}
owner = {owner}

{model_section}
[env]
id = {env_id}
{data_dir}params = {params}

[compute]
kind = "{kind}"

[sampling]
temperature = {temperature:?}
top_k = {top_k}
top_p = {top_p:?}
repetition_penalty = {repetition_penalty:?}
max_new_tokens = {max_new_tokens}

[checkpoints]
publisher = {publisher}

[metrics]
listen = {metrics}

[roles.miner]
instances = 1
workers = {workers}
devices = [{device}]
key_files = [{hotkey}]
groups_per_window = {groups}
"#,
        name = toml_string(&m.network_id),
        run_dir = toml_string(&run_dir),
        url = toml_string(&o.url),
        max_bytes = m.limits.max_message_bytes,
        owner = toml_string(&o.owner),
        model_section = if model.is_empty() {
            String::new()
        } else {
            format!(
                "[model]\n{model}device = {}\n",
                toml_string(&o.device.to_string())
            )
        },
        env_id = toml_string(&env.id),
        kind = if m.model.is_some() {
            "model"
        } else {
            "structural"
        },
        temperature = s.temperature,
        top_k = s.top_k,
        top_p = s.top_p,
        repetition_penalty = s.repetition_penalty,
        max_new_tokens = s.max_new_tokens,
        publisher = toml_string(&publisher),
        metrics = toml_string(&o.metrics_listen),
        workers = o.workers,
        device = toml_string(&o.device.to_string()),
        hotkey = toml_string(&o.hotkey.display().to_string()),
        groups = o
            .groups_per_window
            .min(m.limits.max_groups_per_window as usize),
    );
    let path = o.run_dir.join("miner.toml");
    std::fs::create_dir_all(&o.run_dir)
        .with_context(|| format!("creating {}", o.run_dir.display()))?;
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok(ClusterConfig::parse(&text, &path)?)
}

/// Join the network and mine until Ctrl-C.
pub fn run(o: JoinOptions) -> anyhow::Result<()> {
    let hotkey = keys::read_key(&o.hotkey)?;
    messages::Ss58Address::parse(&o.owner).context("--owner")?;
    let manifest =
        tokio::runtime::Runtime::new()?.block_on(fetch_manifest(&o.url, &o.owner, &hotkey))?;
    tracing::info!(network = %manifest.network_id, seq = manifest.seq, miner = %hotkey.address(), "joining");
    // The base model is checked against the manifest's digest as every role alone does
    // (`network::check_base_model`, in `up::run`).
    let cfg = miner_config(&manifest, &o)?;
    up::run(
        cfg,
        up::UpOptions {
            only_role: Some(crate::config::Role::Miner),
            windows: None,
        },
    )
}
