//! The one place that spells NATS subjects, JetStream streams, KV and object-store buckets,
//! and header names. Nothing else in the project writes a subject string.
//!
//! | subject | carries | stream |
//! |---|---|---|
//! | `grail.clock.<window>.open` / `.close` | [`WindowOpen`](crate::WindowOpen) / [`WindowClose`](crate::WindowClose) | `GRAIL_CLOCK` |
//! | `grail.rollout.<window>.<miner>` | [`RolloutGroup`](crate::RolloutGroup) | `GRAIL_ROLLOUTS` |
//! | `grail.verdict.group.<window>.<miner>` | [`GroupVerdict`](crate::GroupVerdict) | `GRAIL_VERDICTS` |
//! | `grail.verdict.miner.<window>.<miner>` | [`MinerWindowVerdict`](crate::MinerWindowVerdict) | `GRAIL_VERDICTS` |
//! | `grail.checkpoint.<seq>` | [`CheckpointAnnounce`](crate::CheckpointAnnounce) | `GRAIL_CHECKPOINTS` |
//! | `grail.checkpoint.candidate.<window>` | [`CheckpointCandidate`](crate::CheckpointCandidate) | `GRAIL_CHECKPOINTS` |
//! | `grail.weights.<window>` | [`Weights`](crate::Weights) | `GRAIL_WEIGHTS` |
//! | `grail.heartbeat.<role>.<instance>` | [`Heartbeat`](crate::Heartbeat) | core NATS |
//! | `$KV.grail_ledger.<window>.…` | verifiers' shared window ledger ([`KV_LEDGER`]) | `KV_grail_ledger` |
//! | `grail.manifest` | [`NetworkManifest`](crate::NetworkManifest) (signed by the owner) | `GRAIL_MANIFEST` |

use crate::identity::Ss58Address;
use crate::packed::Hash32;

pub const ROOT: &str = "grail";
/// Everything grail publishes: `grail tail 'grail.>'`.
pub const ALL: &str = "grail.>";

/// JetStream streams: (name, subject filter, what for).
pub const STREAM_CLOCK: &str = "GRAIL_CLOCK";
pub const STREAM_ROLLOUTS: &str = "GRAIL_ROLLOUTS";
pub const STREAM_VERDICTS: &str = "GRAIL_VERDICTS";
pub const STREAM_CHECKPOINTS: &str = "GRAIL_CHECKPOINTS";
pub const STREAM_WEIGHTS: &str = "GRAIL_WEIGHTS";
/// The owner-signed network manifest (every version kept forever).
pub const STREAM_MANIFEST: &str = "GRAIL_MANIFEST";
/// Evaluator reports (kept like the manifest: a checkpoint's held-out score is its history).
pub const STREAM_EVAL: &str = "GRAIL_EVAL";
/// The one manifest subject; versions follow each other on it.
pub const MANIFEST: &str = "grail.manifest";

pub const CLOCK_ALL: &str = "grail.clock.>";
/// Window openings only (`grail.clock.<w>.open`).
pub const CLOCK_OPEN_ALL: &str = "grail.clock.*.open";
pub const ROLLOUT_ALL: &str = "grail.rollout.>";
pub const VERDICT_ALL: &str = "grail.verdict.>";
pub const VERDICT_GROUP_ALL: &str = "grail.verdict.group.>";
pub const VERDICT_MINER_ALL: &str = "grail.verdict.miner.>";
pub const CHECKPOINT_ALL: &str = "grail.checkpoint.>";
/// Announcements only (`grail.checkpoint.<seq>`: one token after the prefix).
pub const CHECKPOINT_ANNOUNCE_ALL: &str = "grail.checkpoint.*";
/// Trainer candidates only; they share the checkpoint stream, so no extra stream is needed.
pub const CHECKPOINT_CANDIDATE_ALL: &str = "grail.checkpoint.candidate.>";
pub const WEIGHTS_ALL: &str = "grail.weights.>";
pub const HEARTBEAT_ALL: &str = "grail.heartbeat.>";
pub const EVAL_ALL: &str = "grail.eval.>";

/// KV bucket holding the clock leader lease and chain state.
pub const KV_CLOCK: &str = "grail_clock";
/// KV bucket holding the latest weights per window and trainer state.
pub const KV_STATE: &str = "grail_state";
/// KV bucket of the verifiers' shared window ledger (`protocol::checks::WindowLedger` on the
/// bus): first-writer-wins claims of nonces and group indices, each miner's group count, and
/// the earliest publisher of each completion digest. Written and read by verifiers only;
/// entries expire after [`KV_LEDGER_MAX_AGE_SECS`].
pub const KV_LEDGER: &str = "grail_ledger";
/// How long a ledger entry lives: far longer than a window's verification (groups are judged
/// after the window's close and redelivered for minutes at most), short enough that the
/// bucket holds a few hours of windows, not the whole history.
pub const KV_LEDGER_MAX_AGE_SECS: u64 = 6 * 3600;
/// Object store bucket with checkpoint bytes.
pub const OBJECTS_CHECKPOINTS: &str = "grail_checkpoints";

/// Durable consumer shared by all verifiers: each group is verified once.
pub const CONSUMER_VERIFIERS: &str = "verifiers";
/// Durable consumer of the trainer.
pub const CONSUMER_TRAINER: &str = "trainer";
/// Durable consumer of the scorer.
pub const CONSUMER_SCORER: &str = "scorer";
/// Durable consumer of the checkpoint publisher (trainer candidates).
pub const CONSUMER_PUBLISHER: &str = "publisher";

/// `grail_state` key: last window the trainer trained on (JSON u64, updated with CAS).
pub const KV_TRAINER_LAST_WINDOW: &str = "trainer.last_window";

/// Header names (readable metadata for people using the NATS CLI).
pub const HDR_KIND: &str = "Grail-Kind";
pub const HDR_WINDOW: &str = "Grail-Window";
pub const HDR_MINER: &str = "Grail-Miner";
pub const HDR_DIGEST: &str = "Grail-Digest";
/// JetStream de-duplication id.
pub const HDR_MSG_ID: &str = "Nats-Msg-Id";

pub fn window_open(window: u64) -> String {
    format!("grail.clock.{window}.open")
}
pub fn window_close(window: u64) -> String {
    format!("grail.clock.{window}.close")
}
pub fn rollout(window: u64, miner: &str) -> String {
    format!("grail.rollout.{window}.{miner}")
}
/// All rollouts of one window.
pub fn rollout_window(window: u64) -> String {
    format!("grail.rollout.{window}.*")
}
pub fn group_verdict(window: u64, miner: &str) -> String {
    format!("grail.verdict.group.{window}.{miner}")
}
pub fn miner_verdict(window: u64, miner: &str) -> String {
    format!("grail.verdict.miner.{window}.{miner}")
}
pub fn checkpoint(seq: u64) -> String {
    format!("grail.checkpoint.{seq}")
}
/// A trainer's candidate after training on the groups of `window`.
pub fn checkpoint_candidate(window: u64) -> String {
    format!("grail.checkpoint.candidate.{window}")
}
pub fn weights(window: u64) -> String {
    format!("grail.weights.{window}")
}
/// The held-out evaluation of checkpoint `seq` (0 = the base model).
pub fn eval_report(seq: u64) -> String {
    format!("grail.eval.{seq}")
}
pub fn heartbeat(role: &str, instance: &str) -> String {
    format!("grail.heartbeat.{}.{}", token(role), token(instance))
}

/// Ledger key of a miner's nonce in a window (value: the claiming envelope's digest).
pub fn ledger_nonce(window: u64, miner: &str, nonce: u64) -> String {
    format!("{window}.{}.nonce.{nonce}", token(miner))
}
/// Ledger key of a miner's group index (value: envelope digest, then `:<ordinal>`).
pub fn ledger_group(window: u64, miner: &str, group_index: u32) -> String {
    format!("{window}.{}.group.{group_index}", token(miner))
}
/// Ledger key counting a miner's distinct group indices in a window (CAS-incremented).
pub fn ledger_group_count(window: u64, miner: &str) -> String {
    format!("{window}.{}.groups", token(miner))
}
/// Ledger key of a completion digest (value: `<server ms>:<miner>`, the earliest publisher).
pub fn ledger_completion(window: u64, digest_hex: &str) -> String {
    format!("{window}.copy.{digest_hex}")
}

/// Object name for a checkpoint's stored bytes.
pub fn checkpoint_object(seq: u64, digest_hex: &str) -> String {
    format!("ckpt-{seq:08}-{}", &digest_hex[..digest_hex.len().min(16)])
}

/// Object name of checkpoint `seq`'s catch-up delta (anchor → this checkpoint).
pub fn catch_up_object(seq: u64, digest_hex: &str) -> String {
    format!("{}-catchup", checkpoint_object(seq, digest_hex))
}

/// Object name for a trainer's staged weights (deleted once the publisher consumed them).
pub fn staging_object(digest_hex: &str) -> String {
    format!("staging-{}", &digest_hex[..digest_hex.len().min(16)])
}

/// De-duplication ids: retries of the same logical message collapse in JetStream.
///
/// JetStream de-duplicates by `Nats-Msg-Id` across a whole stream, and a publisher whose id
/// was taken first still gets an ack: an id someone else can predict lets them erase the
/// real message. So every id is bound to a value nobody else knows before the message is
/// published — the payload digest (which covers a miner's random nonce), the verified
/// group's digest, or the clock's not-yet-revealed chain value — and the publisher checks
/// that a "duplicate" it is told about really is its own (`Bus::publish_durable`).
pub fn rollout_msg_id(payload_digest: &Hash32) -> String {
    format!("rollout:{payload_digest}")
}
/// One verdict per group (whichever verifier stores first), bound to the group's digest.
pub fn verdict_msg_id(group_digest: &Hash32) -> String {
    format!("verdict:{group_digest}")
}
/// Clocks publishing the same phase collapse; the chain value is secret until this message.
pub fn clock_msg_id(window: u64, phase: &str, chain_value: &Hash32) -> String {
    format!("clock:{window}:{phase}:{chain_value}")
}
/// Scorer outputs are deterministic in the verdicts: a restarted scorer re-publishing the
/// same content collapses, different content does not.
pub fn content_msg_id(kind: &str, payload_digest: &Hash32) -> String {
    format!("{kind}:{payload_digest}")
}
/// One announcement per weight digest: a restarted publisher re-announcing collapses.
pub fn checkpoint_msg_id(digest_hex: &str) -> String {
    format!("checkpoint:{digest_hex}")
}
/// One candidate per weight digest.
pub fn candidate_msg_id(digest_hex: &str) -> String {
    format!("candidate:{digest_hex}")
}

/// Replace characters NATS treats specially so free-form names stay one token.
fn token(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' | '\t' => '_',
            c => c,
        })
        .collect()
}

/// A parsed grail subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    WindowOpen { window: u64 },
    WindowClose { window: u64 },
    Rollout { window: u64, miner: String },
    GroupVerdict { window: u64, miner: String },
    MinerVerdict { window: u64, miner: String },
    Checkpoint { seq: u64 },
    CheckpointCandidate { window: u64 },
    Weights { window: u64 },
    Heartbeat { role: String, instance: String },
    Manifest,
    EvalReport { seq: u64 },
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("subject {subject:?} is not a grail subject: {detail}")]
pub struct SubjectError {
    pub subject: String,
    pub detail: String,
}

pub fn parse(subject: &str) -> Result<Subject, SubjectError> {
    let err = |detail: &str| SubjectError {
        subject: subject.chars().take(200).collect(),
        detail: detail.to_string(),
    };
    let parts: Vec<&str> = subject.split('.').collect();
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| err("window/seq is not a number"))
    };
    let miner = |s: &str| {
        if s.len() > 64 {
            return Err(err("miner token is longer than any SS58 address"));
        }
        Ss58Address::parse(s)
            .map(|_| s.to_string())
            .map_err(|e| err(&e.to_string()))
    };
    match parts.as_slice() {
        ["grail", "clock", w, "open"] => Ok(Subject::WindowOpen { window: num(w)? }),
        ["grail", "clock", w, "close"] => Ok(Subject::WindowClose { window: num(w)? }),
        ["grail", "rollout", w, m] => Ok(Subject::Rollout {
            window: num(w)?,
            miner: miner(m)?,
        }),
        ["grail", "verdict", "group", w, m] => Ok(Subject::GroupVerdict {
            window: num(w)?,
            miner: miner(m)?,
        }),
        ["grail", "verdict", "miner", w, m] => Ok(Subject::MinerVerdict {
            window: num(w)?,
            miner: miner(m)?,
        }),
        ["grail", "checkpoint", s] => Ok(Subject::Checkpoint { seq: num(s)? }),
        ["grail", "checkpoint", "candidate", w] => {
            Ok(Subject::CheckpointCandidate { window: num(w)? })
        }
        ["grail", "weights", w] => Ok(Subject::Weights { window: num(w)? }),
        ["grail", "manifest"] => Ok(Subject::Manifest),
        ["grail", "eval", s] => Ok(Subject::EvalReport { seq: num(s)? }),
        ["grail", "heartbeat", r, i] => Ok(Subject::Heartbeat {
            role: r.to_string(),
            instance: i.to_string(),
        }),
        _ => Err(err("unknown layout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn every_builder_parses_back() {
        let id = Identity::generate();
        let m = id.address();
        assert_eq!(
            parse(&window_open(3)).unwrap(),
            Subject::WindowOpen { window: 3 }
        );
        assert_eq!(
            parse(&window_close(3)).unwrap(),
            Subject::WindowClose { window: 3 }
        );
        assert_eq!(
            parse(&rollout(9, m)).unwrap(),
            Subject::Rollout {
                window: 9,
                miner: m.into()
            }
        );
        assert_eq!(
            parse(&group_verdict(9, m)).unwrap(),
            Subject::GroupVerdict {
                window: 9,
                miner: m.into()
            }
        );
        assert_eq!(
            parse(&miner_verdict(9, m)).unwrap(),
            Subject::MinerVerdict {
                window: 9,
                miner: m.into()
            }
        );
        assert_eq!(
            parse(&checkpoint(4)).unwrap(),
            Subject::Checkpoint { seq: 4 }
        );
        assert_eq!(
            parse(&checkpoint_candidate(6)).unwrap(),
            Subject::CheckpointCandidate { window: 6 }
        );
        assert_eq!(parse(&weights(4)).unwrap(), Subject::Weights { window: 4 });
        assert_eq!(
            parse(&heartbeat("miner", "gpu.0")).unwrap(),
            Subject::Heartbeat {
                role: "miner".into(),
                instance: "gpu_0".into()
            }
        );
    }

    /// Announcements and candidates share the checkpoint stream; the filters must split them.
    #[test]
    fn announcement_and_candidate_filters_do_not_overlap() {
        fn matches(filter: &str, subject: &str) -> bool {
            let (f, s): (Vec<&str>, Vec<&str>) =
                (filter.split('.').collect(), subject.split('.').collect());
            for (i, tok) in f.iter().enumerate() {
                match *tok {
                    ">" => return s.len() > i,
                    "*" if i < s.len() => {}
                    t if s.get(i) == Some(&t) => {}
                    _ => return false,
                }
            }
            f.len() == s.len()
        }
        let (announce, candidate) = (checkpoint(7), checkpoint_candidate(7));
        assert!(matches(CHECKPOINT_ALL, &announce) && matches(CHECKPOINT_ALL, &candidate));
        assert!(matches(CHECKPOINT_ANNOUNCE_ALL, &announce));
        assert!(!matches(CHECKPOINT_ANNOUNCE_ALL, &candidate));
        assert!(matches(CHECKPOINT_CANDIDATE_ALL, &candidate));
        assert!(!matches(CHECKPOINT_CANDIDATE_ALL, &announce));
        assert!(parse("grail.checkpoint.candidate.x").is_err());
    }

    #[test]
    fn bad_subjects_are_typed_errors() {
        assert!(parse("grail.rollout.x.5Grw").is_err());
        assert!(parse("grail.rollout.3.not-an-address").is_err());
        assert!(parse("other.thing").is_err());
    }
}
