//! Signed envelopes.
//!
//! `digest = BLAKE2b-256("grail-rs/envelope/v1" ‖ u32le(len(kind)) ‖ kind ‖ msgpack_named(payload))`
//! and `signature = sr25519_sign(context "substrate", digest)`. The payload is nested as a map
//! (not an opaque blob) so `nats sub` and any msgpack tool show field names; the verifier
//! re-encodes it canonically, which is exact because wire types contain no maps or floats
//! that could re-encode differently.

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode, DecodeError};
use crate::identity::{Identity, IdentityError, Ss58Address};
use crate::manifest::{Authority, NetworkManifest};
use crate::packed::{Hash32, Signature64};
use crate::types::*;
use crate::WIRE_VERSION;

const DIGEST_DOMAIN: &[u8] = b"grail-rs/envelope/v1";

/// A wire type that travels signed. `KIND` names it in headers and digests; `AUTHORITY`
/// is the manifest role whose keys may sign it (checked by every consumer, see
/// [`NetworkManifest::authorizes`]).
pub trait SignedMessage: Serialize + DeserializeOwned + crate::validate::CheckFields {
    const KIND: &'static str;
    const AUTHORITY: Authority;
    /// The address that must have signed this payload, when the payload names one.
    fn required_signer(&self) -> Option<&str> {
        None
    }
    fn payload_version(&self) -> u16;
}

macro_rules! signed {
    ($t:ty, $kind:literal, by = $auth:ident) => {
        impl SignedMessage for $t {
            const KIND: &'static str = $kind;
            const AUTHORITY: Authority = Authority::$auth;
            fn payload_version(&self) -> u16 {
                self.version
            }
        }
    };
    ($t:ty, $kind:literal, by = $auth:ident, signer = $field:ident) => {
        impl SignedMessage for $t {
            const KIND: &'static str = $kind;
            const AUTHORITY: Authority = Authority::$auth;
            fn required_signer(&self) -> Option<&str> {
                Some(&self.$field)
            }
            fn payload_version(&self) -> u16 {
                self.version
            }
        }
    };
}

signed!(WindowOpen, "window_open", by = Clock);
signed!(WindowClose, "window_close", by = Clock);
signed!(RolloutGroup, "rollout_group", by = Anyone, signer = miner);
signed!(
    GroupVerdict,
    "group_verdict",
    by = Verifier,
    signer = verifier
);
// The scorer signs miner verdicts; the field keeps its wire name.
signed!(
    MinerWindowVerdict,
    "miner_verdict",
    by = Scorer,
    signer = verifier
);
signed!(CheckpointAnnounce, "checkpoint", by = Publisher);
signed!(
    CheckpointCandidate,
    "checkpoint_candidate",
    by = Trainer,
    signer = trainer
);
signed!(Weights, "weights", by = Scorer);
signed!(Heartbeat, "heartbeat", by = Anyone);
signed!(
    EvalReport,
    "eval_report",
    by = Evaluator,
    signer = evaluator
);
signed!(
    NetworkManifest,
    "network_manifest",
    by = Owner,
    signer = owner
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub version: u16,
    pub kind: String,
    pub signer: String,
    pub signature: Signature64,
    pub payload: T,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(
        "envelope kind is {found:?}, expected {expected:?}: message published on the wrong subject"
    )]
    WrongKind {
        expected: &'static str,
        found: String,
    },
    #[error("signer {signer} is not a valid SS58 address: {detail}")]
    BadSigner { signer: String, detail: String },
    #[error("signature by {signer} does not verify over the payload digest (forged or tampered)")]
    BadSignature { signer: String },
    #[error("payload names {claimed} but the envelope is signed by {signer}")]
    SignerMismatch { claimed: String, signer: String },
}

impl EnvelopeError {
    /// Stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::Decode(e) => e.reason(),
            EnvelopeError::WrongKind { .. } => "wrong_kind",
            EnvelopeError::BadSigner { .. } => "bad_signer",
            EnvelopeError::BadSignature { .. } => "bad_signature",
            EnvelopeError::SignerMismatch { .. } => "signer_mismatch",
        }
    }
}

/// The digest a signer signs for `payload`.
pub fn payload_digest<T: SignedMessage>(payload: &T) -> Hash32 {
    let body = encode(payload);
    let mut h = Blake2b::<U32>::new();
    h.update(DIGEST_DOMAIN);
    h.update((T::KIND.len() as u32).to_le_bytes());
    h.update(T::KIND.as_bytes());
    h.update(&body);
    Hash32::from(<[u8; 32]>::from(h.finalize()))
}

impl<T: SignedMessage> Envelope<T> {
    pub fn seal(payload: T, identity: &Identity) -> Self {
        let digest = payload_digest(&payload);
        Self {
            version: WIRE_VERSION,
            kind: T::KIND.to_string(),
            signer: identity.address().to_string(),
            signature: identity.sign(&digest.0).into(),
            payload,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decode, check version and kind, verify the signature, and check the payload's own
    /// signer claim. Returns the envelope and its payload digest.
    pub fn open(bytes: &[u8], limit: usize) -> Result<(Self, Hash32), EnvelopeError> {
        // Check the kind first so a message on the wrong subject gets a precise reason.
        let peek: Peek = decode(bytes, limit, T::KIND)?;
        if peek.kind != T::KIND {
            return Err(EnvelopeError::WrongKind {
                expected: T::KIND,
                found: peek.kind.chars().take(64).collect(),
            });
        }
        let env: Self = decode(bytes, limit, T::KIND)?;
        for found in [env.version, env.payload.payload_version()] {
            if found != WIRE_VERSION {
                return Err(DecodeError::Version {
                    what: T::KIND,
                    found,
                    supported: WIRE_VERSION,
                }
                .into());
            }
        }
        let signer = Ss58Address::parse(&env.signer).map_err(|e| EnvelopeError::BadSigner {
            signer: env.signer.chars().take(64).collect(),
            detail: e.to_string(),
        })?;
        let digest = payload_digest(&env.payload);
        signer
            .verify(&digest.0, &env.signature.0)
            .map_err(|e| match e {
                IdentityError::BadSignature { signer } => EnvelopeError::BadSignature { signer },
                other => EnvelopeError::BadSigner {
                    signer: env.signer.clone(),
                    detail: other.to_string(),
                },
            })?;
        if let Some(claimed) = env.payload.required_signer() {
            if claimed != env.signer {
                return Err(EnvelopeError::SignerMismatch {
                    claimed: claimed.chars().take(64).collect(),
                    signer: env.signer.clone(),
                });
            }
        }
        Ok((env, digest))
    }
}

#[derive(Deserialize)]
struct Peek {
    kind: String,
}

/// Decode any grail envelope into JSON without knowing its type (for `grail tail`).
/// The signature is verified when the kind is known.
pub fn to_json(bytes: &[u8], limit: usize) -> Result<serde_json::Value, EnvelopeError> {
    let peek: Peek = decode(bytes, limit, "envelope")?;
    fn typed<T: SignedMessage>(b: &[u8], l: usize) -> Result<serde_json::Value, EnvelopeError> {
        let (env, digest) = Envelope::<T>::open(b, l)?;
        let mut v = serde_json::to_value(&env).expect("wire types convert to JSON");
        v["digest"] = serde_json::Value::String(digest.to_string());
        v["verified"] = serde_json::Value::Bool(true);
        Ok(v)
    }
    match peek.kind.as_str() {
        WindowOpen::KIND => typed::<WindowOpen>(bytes, limit),
        WindowClose::KIND => typed::<WindowClose>(bytes, limit),
        RolloutGroup::KIND => typed::<RolloutGroup>(bytes, limit),
        GroupVerdict::KIND => typed::<GroupVerdict>(bytes, limit),
        MinerWindowVerdict::KIND => typed::<MinerWindowVerdict>(bytes, limit),
        CheckpointAnnounce::KIND => typed::<CheckpointAnnounce>(bytes, limit),
        CheckpointCandidate::KIND => typed::<CheckpointCandidate>(bytes, limit),
        Weights::KIND => typed::<Weights>(bytes, limit),
        Heartbeat::KIND => typed::<Heartbeat>(bytes, limit),
        NetworkManifest::KIND => typed::<NetworkManifest>(bytes, limit),
        EvalReport::KIND => typed::<EvalReport>(bytes, limit),
        other => Err(EnvelopeError::WrongKind {
            expected: "a grail message kind",
            found: other.chars().take(64).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packed::{PackedF32, PackedU32};

    fn group(miner: &Identity) -> RolloutGroup {
        RolloutGroup {
            version: WIRE_VERSION,
            window: 7,
            miner: miner.address().to_string(),
            group_index: 3,
            nonce: 99,
            checkpoint: Hash32::from([5; 32]),
            env: "arith".into(),
            problem_seed: 42,
            problem_id: "arith/42".into(),
            rollouts: vec![Rollout {
                tokens: PackedU32(vec![1, 2, 3, 4]),
                prompt_len: 2,
                sketches: PackedU32(vec![9, 8, 7, 6]),
                logprobs: PackedF32(vec![-0.5, -1.25]),
                reward: 1.0,
                advantage: 0.0,
                success: true,
            }],
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let id = Identity::generate();
        let env = Envelope::seal(group(&id), &id);
        let bytes = env.to_bytes();
        let (back, digest) = Envelope::<RolloutGroup>::open(&bytes, 1 << 20).unwrap();
        assert_eq!(back, env);
        assert_eq!(digest, payload_digest(&env.payload));
    }

    #[test]
    fn tampering_any_bound_field_breaks_the_signature() {
        let id = Identity::generate();
        let env = Envelope::seal(group(&id), &id);
        type Mutation = Box<dyn Fn(&mut RolloutGroup)>;
        let mutations: Vec<Mutation> = vec![
            Box::new(|g| g.window += 1),
            Box::new(|g| g.group_index += 1),
            Box::new(|g| g.checkpoint = Hash32::from([6; 32])),
            Box::new(|g| g.rollouts[0].tokens.0[3] += 1),
            Box::new(|g| g.rollouts[0].sketches.0[0] ^= 1),
            Box::new(|g| g.rollouts[0].logprobs.0[0] = -0.4),
            Box::new(|g| g.rollouts[0].reward = 0.5),
            Box::new(|g| g.rollouts[0].advantage = 1.0),
        ];
        for m in mutations {
            let mut bad = env.clone();
            m(&mut bad.payload);
            let err = Envelope::<RolloutGroup>::open(&bad.to_bytes(), 1 << 20).unwrap_err();
            assert_eq!(err.reason(), "bad_signature");
        }
    }

    #[test]
    fn resigned_copy_of_another_miners_group_is_a_signer_mismatch() {
        let honest = Identity::generate();
        let thief = Identity::generate();
        let stolen = group(&honest);
        let env = Envelope::seal(stolen, &thief);
        let err = Envelope::<RolloutGroup>::open(&env.to_bytes(), 1 << 20).unwrap_err();
        assert_eq!(err.reason(), "signer_mismatch");
    }

    #[test]
    fn wrong_kind_and_json_view() {
        let id = Identity::generate();
        let beat = Heartbeat {
            version: WIRE_VERSION,
            role: "clock".into(),
            instance: "c0".into(),
            ts_ms: 1,
            status: "ok".into(),
            in_flight: 0,
        };
        let bytes = Envelope::seal(beat, &id).to_bytes();
        assert_eq!(
            Envelope::<RolloutGroup>::open(&bytes, 1 << 20)
                .unwrap_err()
                .reason(),
            "wrong_kind"
        );
        let json = to_json(&bytes, 1 << 20).unwrap();
        assert_eq!(json["payload"]["role"], "clock");
        assert_eq!(json["verified"], true);
        let g = Envelope::seal(group(&id), &id).to_bytes();
        let json = to_json(&g, 1 << 20).unwrap();
        assert_eq!(
            json["payload"]["rollouts"][0]["tokens"],
            serde_json::json!([1, 2, 3, 4])
        );
    }

    fn candidate(trainer: &Identity) -> CheckpointCandidate {
        CheckpointCandidate {
            version: WIRE_VERSION,
            trainer: trainer.address().to_string(),
            checkpoint: Hash32::from([1; 32]),
            trained_from: Hash32::from([2; 32]),
            object: "staging-0101".into(),
            bytes: 1234,
            object_digest: Hash32::from([3; 32]),
            last_window: 9,
            steps: 4,
            created_at_ms: 77,
        }
    }

    #[test]
    fn checkpoint_candidates_are_bound_to_their_trainer_and_show_in_json() {
        let trainer = Identity::generate();
        let bytes = Envelope::seal(candidate(&trainer), &trainer).to_bytes();
        let (env, _) = Envelope::<CheckpointCandidate>::open(&bytes, 1 << 20).unwrap();
        assert_eq!(env.payload, candidate(&trainer));
        let json = to_json(&bytes, 1 << 20).unwrap();
        assert_eq!(json["kind"], "checkpoint_candidate");
        assert_eq!(json["payload"]["last_window"], 9);
        // Someone else re-signing a trainer's candidate is refused.
        let other = Identity::generate();
        let forged = Envelope::seal(candidate(&trainer), &other).to_bytes();
        assert_eq!(
            Envelope::<CheckpointCandidate>::open(&forged, 1 << 20)
                .unwrap_err()
                .reason(),
            "signer_mismatch"
        );
    }

    #[test]
    fn reencoding_is_canonical_for_every_kind() {
        // The verifier re-encodes the decoded payload; that must give the signed bytes back.
        let id = Identity::generate();
        let env = Envelope::seal(group(&id), &id);
        let bytes = env.to_bytes();
        let decoded: Envelope<RolloutGroup> = decode(&bytes, 1 << 20, "t").unwrap();
        assert_eq!(encode(&decoded), bytes);
    }
}
