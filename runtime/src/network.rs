//! The network manifest on the operator's side and every role's.
//!
//! `grail up` holds the owner key (`[network] owner_key_file`, created on first start) and
//! signs the manifest from cluster.toml: network id, model (base weight digest and
//! vocabulary), environment, sampling, the clock's schedule and chain anchor, limits, and the
//! keys of every operator role. It publishes a new version (higher `seq`) only when the
//! content changed. Every role process, and every outside miner, pins the owner address and
//! installs the newest manifest that owner signed on `grail.manifest`; a follower keeps
//! installing newer ones (key rotation) for as long as the process runs.

use std::sync::Arc;
use std::time::Duration;

use actors::bus::{now_ms, Bus, MsgMeta};
use anyhow::Context;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use messages::manifest::{EnvironmentSpec, ModelSpec, NetworkLimits, RoleKeys, Schedule};
use messages::subjects as subj;
use messages::{Authority, Envelope, Hash32, Identity, NetworkManifest, WIRE_VERSION};
use protocol::randomness::HashChain;

use crate::compute::{key_path, SharedCompute};
use crate::config::{ClusterConfig, Role};
use crate::keys;

pub use crate::keys::pinned_owner;

/// The schedule the clock will follow: genesis from an existing deployment (the previous
/// manifest, else the clock's KV record), else now.
async fn schedule(
    cfg: &ClusterConfig,
    bus: &Bus,
    previous: Option<&NetworkManifest>,
) -> anyhow::Result<Schedule> {
    let seed = keys::load_or_create_secret(&cfg.run_dir().join("keys").join("clock-chain.seed"))?;
    let chain_len = cfg.window.chain_length;
    let anchor = Hash32::from(HashChain::new(seed, chain_len).anchor());
    let length_ms = (cfg.window.length_secs * 1000.0) as u64;
    let submit_ms = (length_ms as f64 * cfg.window.submit_fraction) as u64;
    let recorded = async {
        let store = bus.js.get_key_value(subj::KV_CLOCK).await.ok()?;
        let raw = store.get("chain").await.ok()??;
        serde_json::from_slice::<actors::windows::ChainInfo>(&raw).ok()
    };
    let genesis_ms = match previous.and_then(|p| p.schedule.as_ref()) {
        Some(s) if s.chain_anchor == anchor => s.genesis_ms,
        _ => match recorded.await {
            Some(info) if info.anchor == anchor => info.genesis_ms,
            _ => now_ms(),
        },
    };
    Ok(Schedule {
        genesis_ms,
        length_ms,
        submit_ms,
        chain_anchor: anchor,
        chain_len,
    })
}

/// The operator keys of this cluster's `[roles]` plus `[network.keys]`. `create_missing`:
/// `grail up` runs every role here and creates their keys; `grail manifest` on a farm lists
/// only the key files it finds (roles on other boxes are named in `[network.keys]`).
fn role_keys(cfg: &ClusterConfig, create_missing: bool) -> anyhow::Result<RoleKeys> {
    let mut keys = RoleKeys::default();
    for role in Role::ALL {
        let (Some(authority), Some(section)) = (role.authority(), cfg.roles.get(role)) else {
            continue;
        };
        for i in 0..section.instances {
            let path = key_path(cfg, role, Some(section), i);
            if !create_missing && !path.exists() {
                tracing::info!(role = role.as_str(), path = %path.display(), "no local key file; the role's key must be in [network.keys]");
                continue;
            }
            let id = keys::load_or_create(&path)?;
            keys.grant(authority, id.address());
        }
    }
    let extra = &cfg.network.keys;
    for (authority, list) in [
        (Authority::Clock, &extra.clock),
        (Authority::Verifier, &extra.verifier),
        (Authority::Scorer, &extra.scorer),
        (Authority::Trainer, &extra.trainer),
        (Authority::Publisher, &extra.publisher),
        (Authority::Evaluator, &extra.evaluator),
    ] {
        for address in list {
            keys.grant(authority, address);
        }
    }
    // `[checkpoints] publisher/trainer` name trusted keys too.
    for (authority, address) in [
        (Authority::Publisher, &cfg.checkpoints.publisher),
        (Authority::Trainer, &cfg.checkpoints.trainer),
    ] {
        if !address.is_empty() {
            keys.grant(authority, address);
        }
    }
    Ok(keys)
}

/// The model the network trains, by the digest of its base weights.
fn model_spec(cfg: &ClusterConfig, shared: &SharedCompute) -> anyhow::Result<Option<ModelSpec>> {
    if !shared.uses_model() {
        return Ok(None);
    }
    let base = shared.base(policy::DeviceSpec::Cpu)?;
    let digest = policy::checkpoint::digest(base.base_weights())?;
    let source = match &cfg.model.tiny_arch {
        Some(arch) => format!("tiny:{}:{}", arch.hf_model_type(), cfg.model.tiny_seed),
        None => cfg.model.path.display().to_string(),
    };
    Ok(Some(ModelSpec {
        source,
        base_checkpoint: Hash32::from(digest),
        vocab_size: u32::try_from(base.config.vocab_size).context("vocabulary size")?,
    }))
}

/// The manifest cluster.toml describes (seq and timestamp left to [`establish`]).
pub async fn build(
    cfg: &ClusterConfig,
    bus: &Bus,
    shared: &SharedCompute,
    owner: &Identity,
    previous: Option<&NetworkManifest>,
    create_keys: bool,
) -> anyhow::Result<NetworkManifest> {
    let env = EnvironmentSpec {
        id: cfg.env.id.clone(),
        params_json: serde_json::to_string(&cfg.env.params)?,
        data_digest: None,
    };
    let manifest = NetworkManifest {
        version: WIRE_VERSION,
        network_id: cfg.network_id(),
        seq: previous.map_or(1, |p| p.seq + 1),
        owner: owner.address().to_string(),
        created_at_ms: now_ms(),
        roles: role_keys(cfg, create_keys)?,
        model: model_spec(cfg, shared)?,
        env: Some(env),
        sampling: cfg.sampling.spec(),
        schedule: Some(schedule(cfg, bus, previous).await?),
        limits: NetworkLimits {
            max_groups_per_window: cfg.network.max_groups_per_window,
            max_message_bytes: cfg.nats.max_message_bytes as u64,
            max_future_windows: cfg.network.max_future_windows,
            ..NetworkLimits::default()
        },
    };
    manifest
        .validate()
        .with_context(|| format!("the manifest built from {}", cfg.source.display()))?;
    Ok(manifest)
}

/// Equal but for the fields every new version changes.
fn same_content(a: &NetworkManifest, b: &NetworkManifest) -> bool {
    let strip = |m: &NetworkManifest| NetworkManifest {
        seq: 0,
        created_at_ms: 0,
        ..m.clone()
    };
    strip(a) == strip(b)
}

/// The newest manifest on the stream signed by `owner` (for `network_id`, when given).
/// Manifests signed by anyone else are counted and skipped.
pub async fn latest(
    bus: &Bus,
    owner: &str,
    network_id: Option<&str>,
) -> anyhow::Result<Option<NetworkManifest>> {
    let mut messages = bus
        .replay(subj::STREAM_MANIFEST, subj::MANIFEST, DeliverPolicy::All)
        .await?;
    let mut newest: Option<NetworkManifest> = None;
    loop {
        let msg = match tokio::time::timeout(Duration::from_millis(500), messages.next()).await {
            Ok(Some(Ok(msg))) => msg,
            Ok(Some(Err(e))) => return Err(e.context("reading the manifest stream")),
            Ok(None) | Err(_) => break,
        };
        if let Some(m) = pinned(bus, owner, network_id, &msg.payload) {
            if newest.as_ref().is_none_or(|n| m.seq > n.seq) {
                newest = Some(m);
            }
        }
        if msg.info().map(|i| i.pending == 0).unwrap_or(false) {
            break;
        }
    }
    Ok(newest)
}

/// Open a manifest message and check it against the pinned owner and network.
fn pinned(
    bus: &Bus,
    owner: &str,
    network_id: Option<&str>,
    payload: &[u8],
) -> Option<NetworkManifest> {
    let opened = Envelope::<NetworkManifest>::open(payload, bus.max_message_bytes)
        .map_err(|e| e.to_string())
        .and_then(|(env, _)| {
            env.payload
                .check_pinned(&env.signer, owner, network_id)
                .map(|()| env.payload)
                .map_err(|e| e.to_string())
        });
    match opened {
        Ok(m) => Some(m),
        Err(e) => {
            bus.metrics.reject("network", "bad_manifest");
            tracing::warn!(error = %e, "manifest refused");
            None
        }
    }
}

/// Sign and publish `manifest` with the owner key.
pub async fn publish(bus: &Bus, owner: &Identity, manifest: NetworkManifest) -> anyhow::Result<()> {
    let digest = messages::envelope::payload_digest(&manifest);
    let meta = MsgMeta {
        msg_id: Some(subj::content_msg_id("network_manifest", &digest)),
        ..Default::default()
    };
    bus.publish_durable(
        "owner",
        subj::MANIFEST.to_string(),
        manifest,
        owner,
        meta,
        Duration::from_secs(30),
    )
    .await?;
    Ok(())
}

/// Make the bus trust the network: as the owner (`sign`), build the manifest from
/// cluster.toml and publish it when its content changed; then install the newest manifest
/// the pinned owner signed, and keep following newer ones.
pub async fn establish(
    cfg: &ClusterConfig,
    bus: &Bus,
    shared: &SharedCompute,
    sign: bool,
) -> anyhow::Result<Arc<NetworkManifest>> {
    if sign {
        sign_and_publish(cfg, bus, shared, true).await?;
    }
    let owner = pinned_owner(cfg)?;
    install_latest(bus, &owner, Some(&cfg.network_id())).await
}

/// As the owner: build the manifest from cluster.toml and publish it when its content
/// changed. Returns the newest manifest (published now or before). `create_keys`: see
/// [`role_keys`].
pub async fn sign_and_publish(
    cfg: &ClusterConfig,
    bus: &Bus,
    shared: &SharedCompute,
    create_keys: bool,
) -> anyhow::Result<NetworkManifest> {
    let network_id = cfg.network_id();
    let owner = keys::load_or_create(&cfg.owner_key_path())?;
    anyhow::ensure!(
        cfg.network.owner.is_empty() || cfg.network.owner == owner.address(),
        "{}: [network] owner = {} but the owner key {} is {}: point owner_key_file at the owner's key or fix the address",
        cfg.source.display(),
        cfg.network.owner,
        cfg.owner_key_path().display(),
        owner.address()
    );
    let previous = latest(bus, owner.address(), Some(&network_id)).await?;
    let manifest = build(cfg, bus, shared, &owner, previous.as_ref(), create_keys).await?;
    match previous {
        Some(p) if same_content(&p, &manifest) => Ok(p),
        _ => {
            tracing::info!(seq = manifest.seq, network = %network_id, "publishing the network manifest");
            publish(bus, &owner, manifest.clone()).await?;
            Ok(manifest)
        }
    }
}

/// Refuse to run model roles on a base model other than the one the manifest names (its
/// canonical weight digest): proofs made on another model would all be rejected anyway.
pub fn check_base_model(
    cfg: &ClusterConfig,
    shared: &SharedCompute,
    m: &NetworkManifest,
) -> anyhow::Result<()> {
    let Some(spec) = m.model.as_ref().filter(|_| shared.uses_model()) else {
        return Ok(());
    };
    let base = shared.base(policy::DeviceSpec::Cpu)?;
    let ours = Hash32::from(policy::checkpoint::digest(base.base_weights())?);
    anyhow::ensure!(
        ours == spec.base_checkpoint,
        "the model at {} has base digest {ours}, but network {} trains {} with digest {}: use that model ([model] path, or --model)",
        cfg.model.path.display(),
        m.network_id,
        spec.source,
        spec.base_checkpoint
    );
    Ok(())
}

/// Install the newest manifest `owner` signed and follow the stream for newer ones.
pub async fn install_latest(
    bus: &Bus,
    owner: &str,
    network_id: Option<&str>,
) -> anyhow::Result<Arc<NetworkManifest>> {
    let manifest = latest(bus, owner, network_id).await?.with_context(|| {
        format!(
            "no network manifest signed by {owner} on {} (is the owner's `grail up` running, and is the owner address right?)",
            subj::MANIFEST
        )
    })?;
    bus.trust.install(manifest)?;
    let follower = bus.clone();
    let (owner, network_id) = (owner.to_string(), network_id.map(str::to_string));
    // Owned by the process: it ends with the actix System that runs the roles.
    actix_rt::spawn(async move {
        if let Err(e) = follow(&follower, &owner, network_id.as_deref()).await {
            tracing::error!(error = %format!("{e:#}"), "stopped following the manifest stream; key rotations are not picked up until restart");
        }
    });
    bus.trust.manifest().context("installed above")
}

/// Install every newer manifest the pinned owner publishes (key rotation, new limits).
async fn follow(bus: &Bus, owner: &str, network_id: Option<&str>) -> anyhow::Result<()> {
    let mut messages = bus
        .replay(subj::STREAM_MANIFEST, subj::MANIFEST, DeliverPolicy::New)
        .await?;
    while let Some(msg) = messages.next().await {
        let msg = msg?;
        if let Some(m) = pinned(bus, owner, network_id, &msg.payload) {
            if let Err(e) = bus.trust.install(m) {
                tracing::warn!(error = %e, "manifest not installed");
            }
        }
    }
    Ok(())
}

/// `grail manifest`: connect as the admin (publishing the manifest is an owner's act on the
/// admin's bus identity), sign and publish the manifest when it changed, return it.
pub async fn sign_as_owner(cfg: &ClusterConfig, url: &str) -> anyhow::Result<NetworkManifest> {
    let bus = Bus::connect_with(
        url,
        "grail-manifest",
        Arc::new(actors::metrics::Metrics::new()),
        cfg.nats.max_message_bytes,
        &crate::auth::operator_credentials(cfg, messages::bus_permissions::BusIdentity::Admin),
    )
    .await?;
    // The manifest stream is part of the topology the admin keeps (like `grail streams`).
    crate::streams::ensure(
        &bus.client,
        &bus.js,
        &crate::streams::TopologyConfig::of(cfg),
    )
    .await?;
    let manifest = sign_and_publish(cfg, &bus, &SharedCompute::new(cfg), false).await?;
    bus.client.flush().await?;
    Ok(manifest)
}
