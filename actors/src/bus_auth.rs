//! How a process authenticates to NATS: nothing (a server without auth), an operator role's
//! nkey (static user in the server config), or an outside miner's sr25519 hotkey (checked by
//! the gatekeeper through NATS auth callout).
//!
//! Hotkey login: the server's INFO carries a fresh nonce per connection; the client signs
//! [`messages::bus_permissions::login_challenge`]`(network, nonce)` with its hotkey and sends
//! user = its SS58 address, password = the hex signature (and the same signature as the
//! CONNECT `sig`, which makes the server pass the nonce on to the gatekeeper). Reconnects
//! sign the new nonce.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use messages::bus_permissions::{login_challenge, BusIdentity};
use messages::Identity;

#[derive(Clone, Default)]
pub enum Credentials {
    /// Anonymous (a server without authorization).
    #[default]
    None,
    /// An operator identity's nkey seed (`SU...`), read from a 0600 file.
    Nkey {
        identity: BusIdentity,
        seed_file: PathBuf,
    },
    /// An outside miner: log in with its hotkey.
    Hotkey {
        identity: Arc<Identity>,
        network_id: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => write!(f, "no credentials"),
            Credentials::Nkey {
                identity,
                seed_file,
            } => write!(f, "{} nkey {}", identity.name(), seed_file.display()),
            Credentials::Hotkey {
                identity,
                network_id,
            } => write!(f, "hotkey {} on {network_id}", identity.address()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read NATS credentials {path}: {source} (run `grail nats-config --config FILE --out DIR` and point [nats] credentials_dir at DIR)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("NATS credentials {path} are readable by group or others (mode {mode:o}); fix: chmod 600 {path}")]
    Mode { path: PathBuf, mode: u32 },
    #[error("NATS credentials {path} hold no nkey user seed (a line starting with SU)")]
    NoSeed { path: PathBuf },
}

/// Read the user seed from a credentials file (refusing files others can read).
pub fn read_seed(path: &Path) -> Result<String, CredentialsError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CredentialsError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU"))
        .map(str::to_string)
        .ok_or_else(|| CredentialsError::NoSeed {
            path: path.to_path_buf(),
        })
}

impl Credentials {
    /// The bus identity these credentials log in as (`None`: anonymous).
    pub fn identity(&self) -> Option<BusIdentity> {
        match self {
            Credentials::None => None,
            Credentials::Nkey { identity, .. } => Some(identity.clone()),
            Credentials::Hotkey { identity, .. } => {
                Some(BusIdentity::Miner(identity.address().to_string()))
            }
        }
    }

    /// Connect options carrying these credentials and the identity's inbox prefix; the
    /// caller adds its own settings on top.
    pub fn connect_options(&self) -> Result<async_nats::ConnectOptions, CredentialsError> {
        let opts = match self {
            Credentials::None => return Ok(async_nats::ConnectOptions::new()),
            Credentials::Nkey { seed_file, .. } => {
                async_nats::ConnectOptions::new().nkey(read_seed(seed_file)?)
            }
            Credentials::Hotkey {
                identity,
                network_id,
            } => {
                let (identity, network_id) = (identity.clone(), network_id.clone());
                async_nats::ConnectOptions::with_auth_callback(move |nonce| {
                    let (identity, network_id) = (identity.clone(), network_id.clone());
                    async move { Ok(hotkey_auth(&identity, &network_id, &nonce)) }
                })
            }
        };
        let id = self
            .identity()
            .expect("credentials other than None name an identity");
        Ok(opts.custom_inbox_prefix(id.inbox_prefix()))
    }
}

/// The CONNECT fields of a hotkey login for one server nonce.
pub fn hotkey_auth(identity: &Identity, network_id: &str, nonce: &[u8]) -> async_nats::Auth {
    let signature = identity.sign(&login_challenge(network_id, nonce));
    let mut auth = async_nats::Auth::new();
    auth.username = Some(identity.address().to_string());
    auth.password = Some(hex::encode(signature));
    auth.signature = Some(signature.to_vec());
    auth
}
