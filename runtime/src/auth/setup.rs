//! Operator credentials and the nats-server authorization config.
//!
//! A credentials directory (`run_dir/auth/` for `grail up`, or what `grail nats-config`
//! writes) holds one nkey seed per operator identity, `<name>.nk` (admin, gatekeeper, clock,
//! verifier, scorer, trainer, publisher), plus `issuer.nk`, the account seed the gatekeeper
//! signs miners' user JWTs with. Every file is 0600, the directory 0700. Seeds are made once
//! and reused, so a restarted `grail up` and roles on other machines keep working.
//!
//! The server config puts every identity in one JetStream-enabled account, `GRAIL`: operator
//! identities as static nkey users with their [`BusIdentity::permissions`], listed in the
//! auth-callout `auth_users` so they never reach the callout; everyone else (outside miners)
//! is sent to the gatekeeper, which places them in `GRAIL` with a miner's permissions.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use messages::bus_permissions::{BusIdentity, Permissions, OPERATORS};
use nkeys::KeyPair;

/// The account every grail identity lives in.
pub const ACCOUNT: &str = "GRAIL";

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("cannot write NATS credentials under {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold a valid {what} nkey seed: {source} (delete it to make a new one, then restart every role and the server)")]
    BadSeed {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: nkeys::error::Error,
    },
    #[error(transparent)]
    Credentials(#[from] actors::bus_auth::CredentialsError),
}

/// A credentials directory.
#[derive(Clone, Debug)]
pub struct AuthFiles {
    pub dir: PathBuf,
}

impl AuthFiles {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The seed file of an operator identity.
    pub fn seed_path(&self, id: &BusIdentity) -> PathBuf {
        self.dir.join(format!("{}.nk", id.name()))
    }

    /// The gatekeeper's signing account seed.
    pub fn issuer_path(&self) -> PathBuf {
        self.dir.join("issuer.nk")
    }

    /// Create the directory and every missing seed (existing ones are kept).
    pub fn ensure(dir: impl Into<PathBuf>) -> Result<Self, AuthSetupError> {
        let files = Self::at(dir);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AuthSetupError::Io { path, source }
        };
        std::fs::create_dir_all(&files.dir).map_err(io(&files.dir))?;
        std::fs::set_permissions(&files.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&files.dir))?;
        for id in OPERATORS {
            let path = files.seed_path(&id);
            if !path.exists() {
                write_secret(
                    &path,
                    &KeyPair::new_user(),
                    &format!("{} (NATS user)", id.name()),
                )?;
            }
        }
        let issuer = files.issuer_path();
        if !issuer.exists() {
            write_secret(
                &issuer,
                &KeyPair::new_account(),
                "gatekeeper issuer (NATS account)",
            )?;
        }
        Ok(files)
    }

    /// The key pair of an operator identity.
    pub fn user(&self, id: &BusIdentity) -> Result<KeyPair, AuthSetupError> {
        let path = self.seed_path(id);
        let seed = actors::bus_auth::read_seed(&path)?;
        KeyPair::from_seed(&seed).map_err(|source| AuthSetupError::BadSeed {
            path,
            what: "user",
            source,
        })
    }

    /// The gatekeeper's issuer account key pair.
    pub fn issuer(&self) -> Result<KeyPair, AuthSetupError> {
        let path = self.issuer_path();
        let text = std::fs::read_to_string(&path).map_err(|source| AuthSetupError::Io {
            path: path.clone(),
            source,
        })?;
        let seed = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("SA"))
            .unwrap_or_default();
        KeyPair::from_seed(seed).map_err(|source| AuthSetupError::BadSeed {
            path,
            what: "account",
            source,
        })
    }

    /// The `accounts` and `authorization` blocks of the server config.
    pub fn server_block(&self) -> Result<String, AuthSetupError> {
        let mut users = String::new();
        let mut auth_users = Vec::new();
        for id in OPERATORS {
            let public = self.user(&id)?.public_key();
            users.push_str(&format!(
                "      # {}\n      {{ nkey: {}, permissions: {} }}\n",
                id.name(),
                quote(&public),
                render_permissions(&id.permissions())
            ));
            auth_users.push(quote(&public));
        }
        let issuer = self.issuer()?.public_key();
        Ok(format!(
            "# grail: every identity lives in account {ACCOUNT}. Operator roles are static nkey users\n\
             # (messages/src/bus_permissions.rs); everyone else is an outside miner, admitted by the\n\
             # gatekeeper through auth callout with permissions for its own hotkey only.\n\
             accounts {{\n  {ACCOUNT} {{\n    jetstream: enabled\n    users: [\n{users}    ]\n  }}\n}}\n\
             authorization {{\n  auth_callout {{\n    issuer: {}\n    account: {ACCOUNT}\n    auth_users: [ {} ]\n  }}\n}}\n",
            quote(&issuer),
            auth_users.join(", ")
        ))
    }
}

fn write_secret(path: &Path, key: &KeyPair, what: &str) -> Result<(), AuthSetupError> {
    let io = |source| AuthSetupError::Io {
        path: path.to_path_buf(),
        source,
    };
    let seed = key.seed().map_err(|source| AuthSetupError::BadSeed {
        path: path.to_path_buf(),
        what: "new",
        source,
    })?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    writeln!(
        f,
        "# grail {what}: {}\n# secret: keep this file 0600\n{seed}",
        key.public_key()
    )
    .map_err(io)
}

/// A JSON string is a valid quoted nats-server config string (`$` stays literal in quotes).
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `{ publish: { allow: [...], deny: [...] }, subscribe: {...}, allow_responses: true }`
pub fn render_permissions(p: &Permissions) -> String {
    let side = |allow: &[String], deny: &[String]| {
        if deny.is_empty() {
            format!("{{ allow: {} }}", list(allow))
        } else {
            format!("{{ allow: {}, deny: {} }}", list(allow), list(deny))
        }
    };
    let mut out = format!(
        "{{ publish: {}, subscribe: {}",
        side(&p.publish_allow, &p.publish_deny),
        side(&p.subscribe_allow, &p.subscribe_deny)
    );
    if p.allow_responses {
        out.push_str(", allow_responses: true");
    }
    out.push_str(" }");
    out
}

/// A complete nats-server config for an external server: `listen`, JetStream in
/// `store_dir`, `max_payload`, and the authorization block of `files`.
pub fn server_config(
    files: &AuthFiles,
    listen: &str,
    store_dir: &Path,
    max_payload: usize,
) -> Result<String, AuthSetupError> {
    Ok(format!(
        "# nats-server config written by `grail nats-config`; start with: nats-server -c THIS_FILE\n\
         listen: {}\nmax_payload: {max_payload}\nmax_pending: {}\n\
         jetstream {{\n  store_dir: {}\n}}\n{}",
        quote(listen),
        (max_payload * 8).max(64 << 20),
        quote(&store_dir.display().to_string()),
        files.server_block()?
    ))
}

/// One node of a NATS cluster: its unique `server_name` (JetStream needs one per node), the
/// route listener, and every node's route address (`host:port`; its own entry is ignored by
/// the server, so all nodes can share one list).
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub cluster_name: String,
    pub server_name: String,
    pub listen: String,
    pub routes: Vec<String>,
}

impl ClusterNode {
    /// The `server_name` and `cluster` blocks of the node's config, and fast pings: a node
    /// whose link is cut (no TCP reset) is dropped by its peers after two unanswered 2 s
    /// pings instead of the default two minutes, until when requests the cluster routes to it
    /// (direct gets of a stream's replicas) time out (measured on a cut veth link: the clock
    /// stalled 72 s with the defaults, 10 s with these). They are top-level settings, so they
    /// apply to client connections as well as routes.
    pub fn block(&self) -> String {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|r| {
                if r.contains("://") {
                    r.clone()
                } else {
                    format!("nats-route://{r}")
                }
            })
            .collect();
        format!(
            "server_name: {}\ncluster {{\n  name: {}\n  listen: {}\n  routes: {}\n}}\nping_interval: \"2s\"\nping_max: 2\n",
            quote(&self.server_name),
            quote(&self.cluster_name),
            quote(&self.listen),
            list(&routes)
        )
    }
}

/// [`server_config`] for one node of a cluster: the same credentials and permissions on every
/// node, JetStream in this node's `store_dir`, and its [`ClusterNode::block`].
pub fn cluster_server_config(
    files: &AuthFiles,
    listen: &str,
    store_dir: &Path,
    max_payload: usize,
    node: &ClusterNode,
) -> Result<String, AuthSetupError> {
    Ok(server_config(files, listen, store_dir, max_payload)? + &node.block())
}
