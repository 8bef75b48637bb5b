//! The network manifest: one document, signed by the operator's owner key, that says what the
//! network is (model, environment, sampling, schedule, limits) and **who may sign what**.
//!
//! Every role and every outside miner pins the owner address (config or flag), reads the
//! newest manifest that owner signed from `grail.manifest` (stream `GRAIL_MANIFEST`), and
//! from then on acts on a message only when its signer holds the role that may send that
//! kind ([`SignedMessage::AUTHORITY`](crate::SignedMessage::AUTHORITY)). Key rotation is a
//! new manifest with a higher `seq`, signed by the same owner.

use serde::{Deserialize, Serialize};

use crate::identity::Ss58Address;
use crate::packed::Hash32;
use crate::types::SamplingSpec;

/// Who may sign a message kind. A closed vocabulary: adding a role is a code change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Authority {
    /// The owner key named in the manifest (the manifest itself).
    Owner,
    Clock,
    Verifier,
    Scorer,
    Trainer,
    Publisher,
    /// Scores checkpoints on held-out problems (its reports inform people, not training).
    Evaluator,
    /// Anyone: miners are anonymous by design (the payload binds the signer to its own
    /// subject, and quotas bound what one key can cost).
    Anyone,
}

impl Authority {
    /// The operator role a role name (as in cluster.toml) acts as; None for miners and
    /// names that sign nothing operator-only.
    pub fn of_role(role: &str) -> Option<Authority> {
        match role {
            "clock" => Some(Authority::Clock),
            "verifier" => Some(Authority::Verifier),
            "scorer" => Some(Authority::Scorer),
            "trainer" => Some(Authority::Trainer),
            "publisher" => Some(Authority::Publisher),
            "evaluator" => Some(Authority::Evaluator),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Authority::Owner => "owner",
            Authority::Clock => "clock",
            Authority::Verifier => "verifier",
            Authority::Scorer => "scorer",
            Authority::Trainer => "trainer",
            Authority::Publisher => "publisher",
            Authority::Evaluator => "evaluator",
            Authority::Anyone => "anyone",
        }
    }
}

/// The SS58 addresses allowed to act as each operator role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleKeys {
    pub clock: Vec<String>,
    pub verifier: Vec<String>,
    pub scorer: Vec<String>,
    pub trainer: Vec<String>,
    pub publisher: Vec<String>,
    /// Optional role: manifests signed before it existed have none.
    #[serde(default)]
    pub evaluator: Vec<String>,
}

impl RoleKeys {
    /// Add `address` to the keys of `authority` (no-op for owner/anyone or when present).
    pub fn grant(&mut self, authority: Authority, address: &str) {
        let keys = match authority {
            Authority::Clock => &mut self.clock,
            Authority::Verifier => &mut self.verifier,
            Authority::Scorer => &mut self.scorer,
            Authority::Trainer => &mut self.trainer,
            Authority::Publisher => &mut self.publisher,
            Authority::Evaluator => &mut self.evaluator,
            Authority::Owner | Authority::Anyone => return,
        };
        if !keys.iter().any(|k| k == address) {
            keys.push(address.to_string());
        }
    }

    pub fn holders(&self, authority: Authority) -> &[String] {
        match authority {
            Authority::Clock => &self.clock,
            Authority::Verifier => &self.verifier,
            Authority::Scorer => &self.scorer,
            Authority::Trainer => &self.trainer,
            Authority::Publisher => &self.publisher,
            Authority::Evaluator => &self.evaluator,
            Authority::Owner | Authority::Anyone => &[],
        }
    }

    fn all(&self) -> impl Iterator<Item = (Authority, &String)> {
        [
            Authority::Clock,
            Authority::Verifier,
            Authority::Scorer,
            Authority::Trainer,
            Authority::Publisher,
            Authority::Evaluator,
        ]
        .into_iter()
        .flat_map(move |a| self.holders(a).iter().map(move |k| (a, k)))
    }
}

/// The clock's committed schedule: every window's open, deadline and close time follows from
/// it, so a clock message whose timestamps disagree is refused even when correctly signed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub genesis_ms: u64,
    pub length_ms: u64,
    pub submit_ms: u64,
    /// The hash-chain commitment every window's randomness must verify against.
    pub chain_anchor: Hash32,
    pub chain_len: u64,
}

impl Schedule {
    /// The window running at `now_ms` (windows are numbered from 1).
    pub fn window_at(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.genesis_ms) / self.length_ms.max(1) + 1
    }
    pub fn start_ms(&self, window: u64) -> u64 {
        self.genesis_ms
            .saturating_add(window.saturating_sub(1).saturating_mul(self.length_ms))
    }
    pub fn deadline_ms(&self, window: u64) -> u64 {
        self.start_ms(window).saturating_add(self.submit_ms)
    }
}

/// What the network trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Human-readable source (a directory name, `tiny:qwen2:7`, a hub id).
    pub source: String,
    /// Canonical digest of the base weights (policy::checkpoint::digest).
    pub base_checkpoint: Hash32,
    /// Token ids at or above this are refused wherever they arrive from the wire.
    pub vocab_size: u32,
}

/// The environment miners draw problems from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub id: String,
    /// The environment's parameters as canonical JSON text (a string, not a map: wire types
    /// hold no maps so the signed encoding is canonical).
    pub params_json: String,
    /// Digest of the data files the environment reads, when it reads any.
    pub data_digest: Option<Hash32>,
}

/// Bounds every role enforces on what one key may cost the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkLimits {
    /// Groups one miner may publish per window (also the stream's per-subject cap).
    pub max_groups_per_window: u32,
    /// Rollouts in one group (GRPO group size).
    pub group_size: u32,
    /// Tokens in one rollout (prompt + completion).
    pub max_tokens_per_rollout: u32,
    /// Largest message any role accepts.
    pub max_message_bytes: u64,
    /// Groups for windows further ahead of the clock than this are refused at once.
    pub max_future_windows: u64,
}

impl Default for NetworkLimits {
    fn default() -> Self {
        Self {
            max_groups_per_window: 64,
            group_size: 16,
            max_tokens_per_rollout: 16_384,
            max_message_bytes: crate::DEFAULT_MAX_MESSAGE_BYTES as u64,
            max_future_windows: 2,
        }
    }
}

/// The owner-signed description of a network (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkManifest {
    pub version: u16,
    /// Names the network; bound into miner logins so a proof for one network is useless on another.
    pub network_id: String,
    /// Increases with every new manifest of this network (key rotation, new limits).
    pub seq: u64,
    /// SS58 address of the owner key; must equal the envelope signer.
    pub owner: String,
    pub created_at_ms: u64,
    pub roles: RoleKeys,
    pub model: Option<ModelSpec>,
    pub env: Option<EnvironmentSpec>,
    pub sampling: SamplingSpec,
    pub schedule: Option<Schedule>,
    pub limits: NetworkLimits,
}

/// Why a manifest or a signer is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("manifest {field} is invalid: {detail}")]
    Invalid { field: String, detail: String },
    #[error("manifest is signed by {signer}, but this role pins owner {pinned} (set [network] owner / --owner to the operator's owner address)")]
    WrongOwner { signer: String, pinned: String },
    #[error("manifest is for network {found:?}, this role joins {expected:?}")]
    WrongNetwork { expected: String, found: String },
}

/// Longest network id: it is a subject-safe token and part of every login challenge.
pub const MAX_NETWORK_ID_LEN: usize = 64;

impl NetworkManifest {
    /// A manifest of `network_id` by `owner` granting `roles`, with no model, environment
    /// or schedule pinned and default limits (seq 1): what tools and tests start from.
    pub fn with_roles(network_id: &str, owner: &str, roles: RoleKeys) -> Self {
        Self {
            version: crate::WIRE_VERSION,
            network_id: network_id.to_string(),
            seq: 1,
            owner: owner.to_string(),
            created_at_ms: 0,
            roles,
            model: None,
            env: None,
            sampling: SamplingSpec::default(),
            schedule: None,
            limits: NetworkLimits::default(),
        }
    }

    /// Structural checks: every key a valid SS58 address, sane schedule and limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |field: &str, detail: String| ManifestError::Invalid {
            field: field.to_string(),
            detail,
        };
        if self.network_id.is_empty()
            || self.network_id.len() > MAX_NETWORK_ID_LEN
            || !self
                .network_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(
                "network_id",
                "must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        Ss58Address::parse(&self.owner).map_err(|e| bad("owner", e.to_string()))?;
        for (role, key) in self.roles.all() {
            Ss58Address::parse(key)
                .map_err(|e| bad(&format!("roles.{}", role.as_str()), e.to_string()))?;
        }
        if let Some(s) = &self.schedule {
            if s.length_ms == 0 || s.submit_ms == 0 || s.submit_ms >= s.length_ms {
                return Err(bad(
                    "schedule",
                    format!(
                        "needs 0 < submit_ms ({}) < length_ms ({})",
                        s.submit_ms, s.length_ms
                    ),
                ));
            }
        }
        let l = &self.limits;
        if l.max_groups_per_window == 0 || l.group_size == 0 || l.max_tokens_per_rollout == 0 {
            return Err(bad(
                "limits",
                "group and token limits must be positive".into(),
            ));
        }
        if let Some(m) = &self.model {
            if m.vocab_size == 0 {
                return Err(bad("model.vocab_size", "is 0".into()));
            }
        }
        Ok(())
    }

    /// Whether `signer` may sign messages that need `authority`.
    pub fn authorizes(&self, authority: Authority, signer: &str) -> bool {
        match authority {
            Authority::Anyone => true,
            Authority::Owner => signer == self.owner,
            role => self.roles.holders(role).iter().any(|k| k == signer),
        }
    }

    /// Accept `self` as the successor of `pinned_owner`'s network: signed by the pinned owner,
    /// same network as `network_id` (when one is pinned too), and structurally valid.
    pub fn check_pinned(
        &self,
        signer: &str,
        pinned_owner: &str,
        network_id: Option<&str>,
    ) -> Result<(), ManifestError> {
        if signer != pinned_owner || self.owner != pinned_owner {
            return Err(ManifestError::WrongOwner {
                signer: signer.chars().take(64).collect(),
                pinned: pinned_owner.to_string(),
            });
        }
        if let Some(id) = network_id {
            if self.network_id != id {
                return Err(ManifestError::WrongNetwork {
                    expected: id.to_string(),
                    found: self.network_id.chars().take(64).collect(),
                });
            }
        }
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    pub(crate) fn manifest(owner: &Identity, clock: &Identity) -> NetworkManifest {
        NetworkManifest {
            version: crate::WIRE_VERSION,
            network_id: "test-net".into(),
            seq: 1,
            owner: owner.address().to_string(),
            created_at_ms: 1,
            roles: RoleKeys {
                clock: vec![clock.address().to_string()],
                ..Default::default()
            },
            model: None,
            env: None,
            sampling: SamplingSpec::default(),
            schedule: Some(Schedule {
                genesis_ms: 1_000,
                length_ms: 6_000,
                submit_ms: 4_200,
                chain_anchor: Hash32::from([1; 32]),
                chain_len: 100,
            }),
            limits: NetworkLimits::default(),
        }
    }

    #[test]
    fn authority_follows_the_role_keys() {
        let (owner, clock, stranger) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let m = manifest(&owner, &clock);
        m.validate().unwrap();
        assert!(m.authorizes(Authority::Clock, clock.address()));
        assert!(!m.authorizes(Authority::Clock, stranger.address()));
        assert!(!m.authorizes(Authority::Verifier, clock.address()));
        assert!(m.authorizes(Authority::Owner, owner.address()));
        assert!(!m.authorizes(Authority::Owner, clock.address()));
        assert!(m.authorizes(Authority::Anyone, stranger.address()));
    }

    #[test]
    fn pinning_refuses_other_owners_networks_and_bad_keys() {
        let (owner, clock, other) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let m = manifest(&owner, &clock);
        m.check_pinned(owner.address(), owner.address(), Some("test-net"))
            .unwrap();
        assert!(matches!(
            m.check_pinned(other.address(), owner.address(), None),
            Err(ManifestError::WrongOwner { .. })
        ));
        assert!(matches!(
            m.check_pinned(owner.address(), owner.address(), Some("main")),
            Err(ManifestError::WrongNetwork { .. })
        ));
        let mut bad = m.clone();
        bad.roles.verifier.push("x".repeat(6000));
        assert!(matches!(
            bad.validate(),
            Err(ManifestError::Invalid { field, .. }) if field == "roles.verifier"
        ));
        let mut bad = m.clone();
        bad.network_id = "a.b".into();
        assert!(bad.validate().is_err());
        let mut bad = m;
        bad.schedule.as_mut().unwrap().submit_ms = 6_000;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn schedule_pins_every_timestamp() {
        let s = manifest(&Identity::generate(), &Identity::generate())
            .schedule
            .unwrap();
        assert_eq!(s.window_at(1_000), 1);
        assert_eq!(s.window_at(7_000), 2);
        assert_eq!(s.start_ms(2), 7_000);
        assert_eq!(s.deadline_ms(2), 11_200);
        assert_eq!(s.start_ms(u64::MAX), u64::MAX, "saturates, never panics");
    }
}
