//! Authenticated, least-privilege NATS: operator credentials and the server's authorization
//! config ([`setup`]), NATS JWTs ([`jwt`]), the auth-callout service that admits outside
//! miners by their hotkey ([`gatekeeper`]), and the per-role connections of a process.
//!
//! The permission table itself is pure and lives in `messages::bus_permissions`.

pub mod gatekeeper;
pub mod jwt;
pub mod setup;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use actors::bus::Bus;
use actors::bus_auth::Credentials;
use actors::metrics::Metrics;
use actors::trust::Trust;
use messages::bus_permissions::BusIdentity;
use messages::Identity;

use crate::config::{ClusterConfig, Role};
pub use setup::AuthFiles;

/// The credentials directory this config's processes use, if the bus is authenticated:
/// `[nats] credentials_dir` when set, else `run_dir/auth` for `grail up`'s embedded server
/// (unless `[nats] auth = false`); an external server without `credentials_dir` is
/// connected to anonymously.
pub fn credentials_dir(cfg: &ClusterConfig) -> Option<PathBuf> {
    match (&cfg.nats.credentials_dir, &cfg.nats.url) {
        (Some(dir), _) => Some(cfg.base_dir.join(dir)),
        (None, None) if cfg.nats.auth => Some(cfg.run_dir().join("auth")),
        (None, _) => None,
    }
}

/// The credentials of an operator identity, or anonymous when the bus has no auth.
pub fn operator_credentials(cfg: &ClusterConfig, id: BusIdentity) -> Credentials {
    match credentials_dir(cfg) {
        Some(dir) => Credentials::Nkey {
            seed_file: AuthFiles::at(dir).seed_path(&id),
            identity: id,
        },
        None => Credentials::None,
    }
}

/// The credentials a role instance with `identity` (its hotkey) connects with.
pub fn role_credentials(cfg: &ClusterConfig, role: Role, identity: &Identity) -> Credentials {
    if credentials_dir(cfg).is_none() && !cfg.nats.hotkey_login {
        return Credentials::None;
    }
    match role.operator() {
        Some(id) => operator_credentials(cfg, id),
        None => Credentials::Hotkey {
            identity: Arc::new(identity.clone()),
            network_id: login_domain(cfg),
        },
    }
}

/// What a miner's login signature is bound to besides the server's nonce: the network's
/// pinned owner address, which an outside miner knows before it can read anything (the
/// network id is in the manifest, readable only after login). Falls back to the network id
/// when no owner is pinned here (such a process cannot install a manifest anyway and says so).
pub fn login_domain(cfg: &ClusterConfig) -> String {
    crate::keys::pinned_owner(cfg).unwrap_or_else(|_| cfg.network_id())
}

/// The gatekeeper settings of a config.
pub fn gatekeeper_config(cfg: &ClusterConfig) -> gatekeeper::GatekeeperConfig {
    gatekeeper::GatekeeperConfig {
        network_id: login_domain(cfg),
        max_new_miners_per_minute: cfg.nats.max_new_miners_per_minute,
        max_message_bytes: cfg.nats.max_message_bytes,
    }
}

/// The connections of one process: one per operator role (all roles share one when the bus
/// has no auth), one per miner hotkey. Every bus shares the process's metrics and [`Trust`].
pub struct RoleBuses {
    cfg: ClusterConfig,
    url: String,
    metrics: Arc<Metrics>,
    pub trust: Arc<Trust>,
    buses: tokio::sync::Mutex<HashMap<String, Bus>>,
}

impl RoleBuses {
    pub fn new(cfg: &ClusterConfig, url: &str, metrics: Arc<Metrics>, trust: Arc<Trust>) -> Self {
        Self {
            cfg: cfg.clone(),
            url: url.to_string(),
            metrics,
            trust,
            buses: Default::default(),
        }
    }

    pub fn authenticated(&self) -> bool {
        credentials_dir(&self.cfg).is_some() || self.cfg.nats.hotkey_login
    }

    /// The bus role `role`'s instance with hotkey `identity` uses.
    pub async fn bus(&self, role: Role, identity: &Identity) -> anyhow::Result<Bus> {
        let creds = role_credentials(&self.cfg, role, identity);
        let key = match &creds {
            Credentials::None => "shared".to_string(),
            Credentials::Hotkey { identity, .. } => format!("miner:{}", identity.address()),
            Credentials::Nkey { identity, .. } => identity.name().to_string(),
        };
        self.connect(key, role.as_str(), &creds).await
    }

    /// The admin bus (topology, progress display); the shared bus when there is no auth.
    pub async fn admin(&self) -> anyhow::Result<Bus> {
        let creds = operator_credentials(&self.cfg, BusIdentity::Admin);
        let key = match creds {
            Credentials::None => "shared",
            _ => "admin",
        };
        self.connect(key.into(), "admin", &creds).await
    }

    /// The bus a process uses for its own steps (topology, manifest, progress): the admin's
    /// for `grail up`, the role's own for a role started alone (instance 0's hotkey for a
    /// miner), so a single role never needs admin rights.
    pub async fn control(&self, only_role: Option<Role>) -> anyhow::Result<Bus> {
        match only_role {
            None => self.admin().await,
            Some(role) => {
                let section = self.cfg.roles.get(role);
                let key = crate::compute::key_path(&self.cfg, role, section, 0);
                let identity = crate::keys::load_or_create(&key)?;
                self.bus(role, &identity).await
            }
        }
    }

    /// Can this process act as admin (its credentials directory holds the admin seed)?
    pub fn has_admin(&self) -> bool {
        match credentials_dir(&self.cfg) {
            None => true,
            Some(dir) => AuthFiles::at(dir).seed_path(&BusIdentity::Admin).exists(),
        }
    }

    async fn connect(&self, key: String, role: &str, creds: &Credentials) -> anyhow::Result<Bus> {
        let mut buses = self.buses.lock().await;
        if let Some(bus) = buses.get(&key) {
            return Ok(bus.clone());
        }
        let name = format!("grail-{}-{role}", self.cfg.cluster.name);
        let mut bus = Bus::connect_with(
            &self.url,
            &name,
            self.metrics.clone(),
            self.cfg.nats.max_message_bytes,
            creds,
        )
        .await?;
        bus.trust = self.trust.clone();
        buses.insert(key, bus.clone());
        Ok(bus)
    }

    /// Flush every connection (before shutdown).
    pub async fn flush(&self) {
        for bus in self.buses.lock().await.values() {
            let _ = bus.client.flush().await;
        }
    }
}

/// Start the gatekeeper in this process when the bus is authenticated and the credentials
/// directory holds its seed and the issuer seed (`grail up`; a farm runs
/// `grail gatekeeper --config F` on one operator box instead). Returns whether it started.
pub async fn start_gatekeeper(
    cfg: &ClusterConfig,
    url: &str,
    metrics: Arc<Metrics>,
) -> anyhow::Result<bool> {
    let Some(dir) = credentials_dir(cfg) else {
        return Ok(false);
    };
    let files = AuthFiles::at(dir);
    let seed = files.seed_path(&BusIdentity::Gatekeeper);
    if !seed.exists() || !files.issuer_path().exists() {
        tracing::info!(dir = %files.dir.display(), "no gatekeeper credentials here; outside miners need a `grail gatekeeper` elsewhere");
        return Ok(false);
    }
    let handle =
        gatekeeper::spawn(url, seed, files.issuer()?, gatekeeper_config(cfg), metrics).await?;
    tokio::spawn(async move {
        match handle.await {
            Ok(Ok(())) => tracing::warn!("gatekeeper stopped: its connection closed"),
            Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "gatekeeper failed"),
            Err(e) => tracing::error!(error = %e, "gatekeeper task panicked"),
        }
    });
    Ok(true)
}
