//! The trust boundary every role's input crosses: after an envelope opens (well-formed, signed,
//! the payload's own signer claim holds), [`Trust::admit`] checks that the signer holds the
//! manifest role that may send the kind, and that every field is within bounds. A refusal is
//! typed, counted by reason and logged once per (signer, reason) with the signer; nothing a
//! refused message says reaches state, KV, subjects or filters.
//!
//! Fail closed: until a manifest is installed, only kinds anyone may sign are admitted.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use messages::manifest::{Authority, ManifestError, Schedule};
use messages::validate::{FieldError, FieldLimits};
use messages::{Envelope, EnvelopeError, NetworkManifest, SignedMessage};

/// Why an incoming message was not acted on.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("{kind} from {signer} refused: no network manifest is installed yet")]
    NoManifest { kind: &'static str, signer: String },
    #[error("{kind} signed by {signer}, which the manifest does not list as a {authority} key")]
    Unauthorized {
        kind: &'static str,
        signer: String,
        authority: &'static str,
    },
    #[error("{kind} from {signer} is for window {window}, more than {max_ahead} ahead of the clock's {current}")]
    FarFuture {
        kind: &'static str,
        signer: String,
        window: u64,
        current: u64,
        max_ahead: u64,
    },
    #[error("{kind} from {signer} is for window {window}, which can no longer close (the clock is at {current})")]
    FarPast {
        kind: &'static str,
        signer: String,
        window: u64,
        current: u64,
    },
    #[error("{kind} from {signer}: {source}")]
    Field {
        kind: &'static str,
        signer: String,
        source: FieldError,
    },
}

impl Refusal {
    /// Stable label for `grail_messages_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Envelope(e) => e.reason(),
            Refusal::NoManifest { .. } => "no_manifest",
            Refusal::Unauthorized { .. } => "unauthorized_signer",
            Refusal::FarFuture { .. } => "far_future_window",
            Refusal::FarPast { .. } => "far_past_window",
            Refusal::Field { source, .. } => source.reason(),
        }
    }

    /// The signer named in the refusal, when the envelope got far enough to name one.
    pub fn signer(&self) -> Option<&str> {
        match self {
            Refusal::Envelope(_) => None,
            Refusal::NoManifest { signer, .. }
            | Refusal::Unauthorized { signer, .. }
            | Refusal::FarFuture { signer, .. }
            | Refusal::FarPast { signer, .. }
            | Refusal::Field { signer, .. } => Some(signer),
        }
    }
}

/// Windows behind the clock a group may still be for: the clock closes at most
/// `roles::clock::MAX_CATCH_UP` (16) windows back, so an older window without a close never
/// gets one.
pub const MAX_PAST_WINDOWS: u64 = 32;

/// Distinct (signer, reason) pairs logged before logging goes quiet (memory stays bounded
/// under a flood of fresh keys; the counters keep counting).
const MAX_LOGGED: usize = 10_000;

/// The installed manifest and what follows from it. Shared by every role on a bus.
#[derive(Default)]
pub struct Trust {
    manifest: RwLock<Option<Arc<NetworkManifest>>>,
    logged: Mutex<HashSet<(String, &'static str)>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seq = self.manifest().map(|m| m.seq);
        f.debug_struct("Trust").field("manifest_seq", &seq).finish()
    }
}

impl Trust {
    /// Install `m` (already checked against the pinned owner) unless a newer one is installed.
    /// Returns whether it was installed.
    pub fn install(&self, m: NetworkManifest) -> Result<bool, ManifestError> {
        m.validate()?;
        let mut current = self.manifest.write().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = current.as_ref() {
            if c.network_id != m.network_id || c.owner != m.owner {
                return Err(ManifestError::WrongNetwork {
                    expected: c.network_id.clone(),
                    found: m.network_id.chars().take(64).collect(),
                });
            }
            if c.seq >= m.seq {
                return Ok(false);
            }
        }
        tracing::info!(network = %m.network_id, seq = m.seq, owner = %m.owner, "network manifest installed");
        *current = Some(Arc::new(m));
        Ok(true)
    }

    pub fn manifest(&self) -> Option<Arc<NetworkManifest>> {
        self.manifest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Field bounds of the installed manifest (defaults before one is installed).
    pub fn limits(&self) -> FieldLimits {
        self.manifest()
            .map(|m| FieldLimits::from(m.as_ref()))
            .unwrap_or_default()
    }

    pub fn schedule(&self) -> Option<Schedule> {
        self.manifest().and_then(|m| m.schedule.clone())
    }

    /// Whether `signer` currently holds `authority`.
    pub fn holds(&self, authority: Authority, signer: &str) -> bool {
        match (authority, self.manifest()) {
            (Authority::Anyone, _) => true,
            (_, Some(m)) => m.authorizes(authority, signer),
            (_, None) => false,
        }
    }

    /// Admit an opened envelope: its signer may send this kind and its fields are in bounds.
    pub fn admit<T: SignedMessage>(&self, env: &Envelope<T>) -> Result<(), Refusal> {
        let manifest = self.manifest();
        let signer = || env.signer.clone();
        match (T::AUTHORITY, manifest.as_deref()) {
            (Authority::Anyone, _) => {}
            (_, None) => {
                return Err(Refusal::NoManifest {
                    kind: T::KIND,
                    signer: signer(),
                })
            }
            (authority, Some(m)) if !m.authorizes(authority, &env.signer) => {
                return Err(Refusal::Unauthorized {
                    kind: T::KIND,
                    signer: signer(),
                    authority: authority.as_str(),
                })
            }
            _ => {}
        }
        let limits = manifest
            .as_deref()
            .map(FieldLimits::from)
            .unwrap_or_default();
        env.payload
            .check_fields(&limits)
            .map_err(|source| Refusal::Field {
                kind: T::KIND,
                signer: signer(),
                source,
            })
    }

    /// How far ahead of the clock a window may be (the manifest's `max_future_windows`).
    pub fn limits_max_future(&self) -> u64 {
        self.manifest()
            .map(|m| m.limits.max_future_windows)
            .unwrap_or(messages::manifest::NetworkLimits::default().max_future_windows)
    }

    /// Groups one miner may have judged per window (the manifest's `max_groups_per_window`).
    pub fn limits_max_groups(&self) -> u32 {
        self.manifest()
            .map(|m| m.limits.max_groups_per_window)
            .unwrap_or(messages::manifest::NetworkLimits::default().max_groups_per_window)
    }

    /// The scheduled window now, when a progress record read back from KV (`recorded`) is
    /// further ahead of it than the manifest allows: such a record was not written by the
    /// role itself and would make it skip every real window until then.
    pub fn record_ahead_of_schedule(&self, recorded: u64) -> Option<u64> {
        let current = self.schedule()?.window_at(crate::time::now_ms());
        (recorded > current.saturating_add(self.limits_max_future())).then_some(current)
    }

    /// Refuse `window` when it is further ahead of `current` (the clock's window, when known)
    /// than the manifest allows: a far-future message would park a consumer or poison a
    /// progress record.
    pub fn check_window(
        &self,
        kind: &'static str,
        signer: &str,
        window: u64,
        current: Option<u64>,
    ) -> Result<(), Refusal> {
        let max_ahead = self.limits_max_future();
        match current {
            Some(current) if window > current.saturating_add(max_ahead) => {
                Err(Refusal::FarFuture {
                    kind,
                    signer: signer.chars().take(64).collect(),
                    window,
                    current,
                    max_ahead,
                })
            }
            _ => Ok(()),
        }
    }

    /// Refuse a group for a window that will never close: window 0 (no clock opens it) or
    /// one more than [`MAX_PAST_WINDOWS`] behind the clock (older than any catch-up), which
    /// would otherwise hold a verifier slot while "waiting for its close".
    pub fn check_not_stale(
        &self,
        kind: &'static str,
        signer: &str,
        window: u64,
        current: Option<u64>,
    ) -> Result<(), Refusal> {
        let stale =
            window == 0 || current.is_some_and(|c| window.saturating_add(MAX_PAST_WINDOWS) < c);
        if stale {
            return Err(Refusal::FarPast {
                kind,
                signer: signer.chars().take(64).collect(),
                window,
                current: current.unwrap_or(0),
            });
        }
        Ok(())
    }

    /// Whether this (signer, reason) pair is new: log the first refusal, count every one.
    pub fn first_refusal(&self, refusal: &Refusal) -> bool {
        let signer = refusal.signer().unwrap_or("-").to_string();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        logged.len() < MAX_LOGGED && logged.insert((signer, refusal.reason()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messages::manifest::RoleKeys;
    use messages::{Hash32, Identity, WindowOpen, WIRE_VERSION};

    fn manifest(owner: &Identity, clock: &Identity, seq: u64) -> NetworkManifest {
        let roles = RoleKeys {
            clock: vec![clock.address().into()],
            ..Default::default()
        };
        NetworkManifest {
            seq,
            ..NetworkManifest::with_roles("t", owner.address(), roles)
        }
    }

    fn open(window: u64) -> WindowOpen {
        WindowOpen {
            version: WIRE_VERSION,
            window,
            randomness: Hash32::default(),
            chain_anchor: Hash32::default(),
            chain_position: window,
            chain_value: Hash32::default(),
            opened_at_ms: 1,
            deadline_ms: 2,
        }
    }

    #[test]
    fn fail_closed_then_only_the_listed_role_and_rotation_by_seq() {
        let (owner, clock, forger, next_clock) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let trust = Trust::default();
        let real = Envelope::seal(open(1), &clock);
        assert_eq!(trust.admit(&real).unwrap_err().reason(), "no_manifest");
        assert!(trust.install(manifest(&owner, &clock, 1)).unwrap());
        trust.admit(&real).unwrap();
        // The attacker re-signs the real message (e.g. with another deadline).
        let forged = Envelope::seal(open(1), &forger);
        let refusal = trust.admit(&forged).unwrap_err();
        assert_eq!(refusal.reason(), "unauthorized_signer");
        assert_eq!(refusal.signer(), Some(forger.address()));
        assert!(trust.first_refusal(&refusal));
        assert!(
            !trust.first_refusal(&refusal),
            "logged once per signer and reason"
        );
        // Rotation: a newer manifest replaces the clock key; an older one never comes back.
        assert!(trust.install(manifest(&owner, &next_clock, 2)).unwrap());
        assert!(!trust.install(manifest(&owner, &clock, 1)).unwrap());
        assert_eq!(
            trust.admit(&real).unwrap_err().reason(),
            "unauthorized_signer"
        );
        trust.admit(&Envelope::seal(open(1), &next_clock)).unwrap();
        // A manifest of another owner cannot take over.
        assert!(trust.install(manifest(&forger, &forger, 9)).is_err());
    }

    #[test]
    fn bad_fields_are_refused_after_authority() {
        let (owner, clock) = (Identity::generate(), Identity::generate());
        let trust = Trust::default();
        trust.install(manifest(&owner, &clock, 1)).unwrap();
        let mut o = open(1);
        o.deadline_ms = 0;
        let refusal = trust.admit(&Envelope::seal(o, &clock)).unwrap_err();
        assert_eq!(refusal.reason(), "bad_field");
    }
}
