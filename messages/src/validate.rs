//! Bounds on wire fields. A signature says who sent a message, not that its fields are safe:
//! every string that becomes a subject token, KV key or log field, every index and every
//! token id is checked here before any role acts on it (after the envelope opened and the
//! signer's authority was checked). Nothing here allocates in proportion to hostile input.

use crate::identity::Ss58Address;
use crate::manifest::NetworkManifest;
use crate::reject::RejectCode;
use crate::types::*;

/// Limits the field checks need, taken from the network manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldLimits {
    /// Token ids must be below this (None: the model is not pinned; ids are not checked).
    pub vocab_size: Option<u32>,
    pub max_tokens_per_rollout: u32,
    /// Most rollouts in a group (the GRPO group size; a different count is a protocol
    /// rejection the verifier names, more than this is refused as malformed).
    pub max_rollouts: u32,
}

impl Default for FieldLimits {
    fn default() -> Self {
        Self::from(&crate::manifest::NetworkLimits::default())
    }
}

impl From<&crate::manifest::NetworkLimits> for FieldLimits {
    fn from(l: &crate::manifest::NetworkLimits) -> Self {
        Self {
            vocab_size: None,
            max_tokens_per_rollout: l.max_tokens_per_rollout,
            max_rollouts: l.group_size.saturating_mul(4),
        }
    }
}

impl From<&NetworkManifest> for FieldLimits {
    fn from(m: &NetworkManifest) -> Self {
        Self {
            vocab_size: m.model.as_ref().map(|m| m.vocab_size),
            ..Self::from(&m.limits)
        }
    }
}

/// A field that is out of bounds. `field` is a static path (`rollouts[].tokens`), so the
/// error never echoes more than a bounded prefix of hostile input.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("field `{field}` is out of bounds: {detail}")]
pub struct FieldError {
    pub field: &'static str,
    pub detail: String,
}

impl FieldError {
    pub fn reason(&self) -> &'static str {
        "bad_field"
    }
}

fn err(field: &'static str, detail: impl Into<String>) -> FieldError {
    FieldError {
        field,
        detail: detail.into(),
    }
}

/// A prefix of hostile text that is safe to print.
pub fn shown(s: &str) -> String {
    s.chars().take(48).flat_map(char::escape_default).collect()
}

/// A valid SS58 address (bounded length, checksum, prefix 42).
pub fn address(field: &'static str, s: &str) -> Result<(), FieldError> {
    if s.len() > 64 {
        return Err(err(field, format!("{} bytes is not an address", s.len())));
    }
    Ss58Address::parse(s)
        .map(|_| ())
        .map_err(|e| err(field, e.to_string()))
}

/// A short label of `[a-z0-9_]` (reasons, kinds, environment ids).
pub fn label(field: &'static str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.is_empty() || s.len() > max {
        return Err(err(field, format!("length {} not in 1..={max}", s.len())));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(err(field, format!("{:?} is not [a-z0-9_-]", shown(s))));
    }
    Ok(())
}

/// Printable text of bounded length (ids, object names).
pub fn text(field: &'static str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.len() > max {
        return Err(err(field, format!("{} bytes exceeds {max}", s.len())));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(err(field, format!("{:?} has control characters", shown(s))));
    }
    Ok(())
}

/// A subject- and key-safe token: no NATS wildcards, separators or whitespace.
pub fn token(field: &'static str, s: &str, max: usize) -> Result<(), FieldError> {
    text(field, s, max)?;
    if s.is_empty() || s.chars().any(|c| matches!(c, '.' | '*' | '>' | ' ' | '\t')) {
        return Err(err(
            field,
            format!("{:?} is not a single subject token", shown(s)),
        ));
    }
    Ok(())
}

fn finite(field: &'static str, v: f32) -> Result<(), FieldError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(err(field, format!("{v} is not finite")))
    }
}

/// A verdict names a reject code exactly when it is negative.
fn reason(field: &'static str, negative: bool, r: &Option<RejectCode>) -> Result<(), FieldError> {
    match (negative, r) {
        (true, Some(_)) | (false, None) => Ok(()),
        (true, None) => Err(err(field, "a rejection without a reject code")),
        (false, Some(code)) => Err(err(field, format!("{code} on a positive verdict"))),
    }
}

/// Field checks per wire type (a supertrait of [`crate::SignedMessage`]).
pub trait CheckFields {
    fn check_fields(&self, limits: &FieldLimits) -> Result<(), FieldError>;
}

impl CheckFields for WindowOpen {
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        if self.deadline_ms <= self.opened_at_ms {
            return Err(err("deadline_ms", "not after opened_at_ms"));
        }
        Ok(())
    }
}

impl CheckFields for WindowClose {
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        Ok(())
    }
}

impl CheckFields for RolloutGroup {
    fn check_fields(&self, l: &FieldLimits) -> Result<(), FieldError> {
        address("miner", &self.miner)?;
        label("env", &self.env, 64)?;
        text("problem_id", &self.problem_id, 256)?;
        if self.rollouts.is_empty() || self.rollouts.len() > l.max_rollouts as usize {
            return Err(err(
                "rollouts",
                format!(
                    "{} rollouts, expected 1..={}",
                    self.rollouts.len(),
                    l.max_rollouts
                ),
            ));
        }
        for r in &self.rollouts {
            let (len, prompt) = (r.tokens.len(), r.prompt_len as usize);
            if len > l.max_tokens_per_rollout as usize {
                return Err(err(
                    "rollouts[].tokens",
                    format!("{len} tokens exceeds {}", l.max_tokens_per_rollout),
                ));
            }
            if prompt > len {
                return Err(err(
                    "rollouts[].prompt_len",
                    format!("{prompt} > {len} tokens"),
                ));
            }
            let completion = len - prompt;
            if r.sketches.len() != completion || r.logprobs.len() != completion {
                return Err(err(
                    "rollouts[].sketches",
                    format!(
                        "{} sketches and {} log-probs for {completion} completion tokens",
                        r.sketches.len(),
                        r.logprobs.len()
                    ),
                ));
            }
            if let Some(vocab) = l.vocab_size {
                if let Some(t) = r.tokens.0.iter().find(|t| **t >= vocab) {
                    return Err(err(
                        "rollouts[].tokens",
                        format!("token id {t} is not below the vocabulary size {vocab}"),
                    ));
                }
            }
            finite("rollouts[].reward", r.reward)?;
            finite("rollouts[].advantage", r.advantage)?;
            if let Some(lp) = r
                .logprobs
                .0
                .iter()
                .find(|v| !v.is_finite() && **v != f32::NEG_INFINITY)
            {
                return Err(err(
                    "rollouts[].logprobs",
                    format!("{lp} is not a log-probability"),
                ));
            }
        }
        Ok(())
    }
}

impl CheckFields for GroupVerdict {
    fn check_fields(&self, limits: &FieldLimits) -> Result<(), FieldError> {
        address("miner", &self.miner)?;
        address("verifier", &self.verifier)?;
        reason("reason", !self.accepted, &self.reason)?;
        if self.success_rollouts > limits.max_rollouts {
            return Err(err(
                "success_rollouts",
                format!(
                    "{} exceeds the group bound {}",
                    self.success_rollouts, limits.max_rollouts
                ),
            ));
        }
        finite("mean_reward", self.mean_reward)
    }
}

impl CheckFields for MinerWindowVerdict {
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        address("miner", &self.miner)?;
        address("verifier", &self.verifier)?;
        reason("reason", !self.passed, &self.reason)
    }
}

/// An object name that must be exactly `want` (`what` names it in the error): the publisher
/// and retention delete the objects messages name.
fn pinned(field: &'static str, got: &str, want: &str, what: &str) -> Result<(), FieldError> {
    if got == want {
        return Ok(());
    }
    Err(err(
        field,
        format!("{:?} is not {want}, {what}", shown(got)),
    ))
}

impl CheckFields for CheckpointAnnounce {
    /// Object names are pinned to the checkpoint they carry: retention deletes the objects an
    /// announcement names, so a free name could point it at another checkpoint's bytes.
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        let hex = self.checkpoint.to_string();
        pinned(
            "object",
            &self.object,
            &crate::subjects::checkpoint_object(self.seq, &hex),
            &format!("the object of checkpoint #{}", self.seq),
        )?;
        if let Some(c) = &self.catch_up {
            if matches!(self.kind, CheckpointKind::Full) {
                return Err(err(
                    "catch_up",
                    "a full checkpoint has no catch-up delta (it is its own anchor)",
                ));
            }
            pinned(
                "catch_up.object",
                &c.object,
                &crate::subjects::catch_up_object(self.seq, &hex),
                &format!("the catch-up object of checkpoint #{}", self.seq),
            )?;
        }
        Ok(())
    }
}

impl CheckFields for CheckpointCandidate {
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        address("trainer", &self.trainer)?;
        // The publisher deletes a candidate's object when it is done with it: it must be the
        // staging object of these weights, never a published checkpoint's.
        pinned(
            "object",
            &self.object,
            &crate::subjects::staging_object(&self.checkpoint.to_string()),
            "the staging object of its checkpoint",
        )
    }
}

impl CheckFields for Weights {
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        if self.entries.len() > 1 << 16 {
            return Err(err("entries", format!("{} entries", self.entries.len())));
        }
        for e in &self.entries {
            address("entries[].miner", &e.miner)?;
            finite("entries[].weight", e.weight)?;
            if !e.score.is_finite() {
                return Err(err("entries[].score", "not finite"));
            }
        }
        Ok(())
    }
}

impl CheckFields for Heartbeat {
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        label("role", &self.role, 32)?;
        text("instance", &self.instance, 64)?;
        text("status", &self.status, 256)
    }
}

impl CheckFields for EvalReport {
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        address("evaluator", &self.evaluator)?;
        label("env", &self.env, 64)?;
        if self.problems == 0 || self.problems > 100_000 {
            return Err(err(
                "problems",
                format!("{} not in 1..=100000", self.problems),
            ));
        }
        if self.samples > 1024 || self.max_new_tokens > 1 << 20 {
            return Err(err("samples", "more than 1024 samples or 2^20 new tokens"));
        }
        finite("temperature", self.temperature)?;
        let scores = |field: &'static str, s: &EvalScores, per_problem: u32| {
            if s.successes > s.completions || s.completions != self.problems * per_problem {
                return Err(err(
                    field,
                    format!(
                        "{} successes of {} completions for {} problems × {per_problem}",
                        s.successes, s.completions, self.problems
                    ),
                ));
            }
            finite(field, s.mean_reward)?;
            finite(field, s.mean_completion_tokens)
        };
        scores("greedy", &self.greedy, 1)?;
        match (&self.sampled, self.samples) {
            (None, 0) => {}
            (Some(s), n) if n > 0 => scores("sampled", s, n)?,
            _ => return Err(err("sampled", "present exactly when samples > 0")),
        }
        if self.pass_at_k.len() > 32 {
            return Err(err(
                "pass_at_k",
                format!("{} entries", self.pass_at_k.len()),
            ));
        }
        for (k, v) in &self.pass_at_k {
            if *k == 0 || *k > self.samples || !(0.0..=1.0).contains(v) {
                return Err(err("pass_at_k", format!("pass@{k} = {v}")));
            }
        }
        Ok(())
    }
}

impl CheckFields for NetworkManifest {
    fn check_fields(&self, _: &FieldLimits) -> Result<(), FieldError> {
        self.validate().map_err(|e| err("manifest", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::packed::{Hash32, PackedF32, PackedU32};

    fn group() -> RolloutGroup {
        RolloutGroup {
            version: crate::WIRE_VERSION,
            window: 1,
            miner: Identity::generate().address().to_string(),
            group_index: 0,
            nonce: 1,
            checkpoint: Hash32::default(),
            env: "arith".into(),
            problem_seed: 1,
            problem_id: "arith/1".into(),
            rollouts: vec![Rollout {
                tokens: PackedU32(vec![1, 2, 3]),
                prompt_len: 1,
                sketches: PackedU32(vec![0, 0]),
                logprobs: PackedF32(vec![-1.0, -2.0]),
                reward: 0.5,
                advantage: 0.0,
                success: false,
            }],
        }
    }

    #[test]
    fn hostile_group_fields_are_refused_by_name() {
        let l = FieldLimits {
            vocab_size: Some(100),
            ..Default::default()
        };
        group().check_fields(&l).unwrap();
        type Mutation = (&'static str, fn(&mut RolloutGroup));
        let cases: [Mutation; 8] = [
            ("miner", |g| g.miner = "x".repeat(6000)),
            ("miner", |g| g.miner = "5".into()),
            ("env", |g| g.env = "a.b.>".into()),
            ("rollouts[].tokens", |g| {
                g.rollouts[0].tokens.0[2] = 0xFFFF_FFF0
            }),
            ("rollouts[].prompt_len", |g| g.rollouts[0].prompt_len = 9),
            ("rollouts[].sketches", |g| g.rollouts[0].sketches.0.push(1)),
            ("rollouts[].reward", |g| g.rollouts[0].reward = f32::NAN),
            ("rollouts", |g| g.rollouts.clear()),
        ];
        for (field, mutate) in cases {
            let mut g = group();
            mutate(&mut g);
            let e = g.check_fields(&l).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().len() < 300, "bounded: {e}");
        }
    }

    #[test]
    fn verdict_and_weights_names_must_be_addresses() {
        let who = Identity::generate().address().to_string();
        let mut w = Weights {
            version: 1,
            window: 1,
            entries: vec![WeightEntry {
                miner: who.clone(),
                score: 1.0,
                weight: 1.0,
                weight_u16: 65535,
            }],
        };
        w.check_fields(&FieldLimits::default()).unwrap();
        w.entries[0].miner = "a".into();
        assert_eq!(
            w.check_fields(&FieldLimits::default()).unwrap_err().field,
            "entries[].miner"
        );
        let v = GroupVerdict {
            version: 1,
            window: 1,
            miner: who.clone(),
            group_index: 0,
            group_digest: Hash32::default(),
            verifier: who,
            accepted: false,
            // A rejection must say why (an unknown code does not even decode).
            reason: None,
            deep_checked: false,
            unique_rollouts: 0,
            learning_signal: false,
            mean_reward: 0.0,
            server_ts_ms: 0,
            success_rollouts: 0,
        };
        assert_eq!(
            v.check_fields(&FieldLimits::default()).unwrap_err().field,
            "reason"
        );
        let v = GroupVerdict {
            reason: Some(RejectCode::SketchMismatch),
            success_rollouts: 1_000_000,
            ..v
        };
        assert_eq!(
            v.check_fields(&FieldLimits::default()).unwrap_err().field,
            "success_rollouts"
        );
    }

    /// A stolen trainer key naming a live anchor as its candidate's object must not make
    /// the publisher delete that anchor.
    #[test]
    fn a_candidate_names_only_its_own_staging_object() {
        let checkpoint = Hash32::from([7; 32]);
        let mut c = CheckpointCandidate {
            version: 1,
            trainer: Identity::generate().address().to_string(),
            checkpoint,
            trained_from: Hash32::default(),
            object: crate::subjects::staging_object(&checkpoint.to_string()),
            bytes: 1,
            object_digest: Hash32::default(),
            last_window: 1,
            steps: 1,
            created_at_ms: 0,
        };
        c.check_fields(&FieldLimits::default()).unwrap();
        c.object = crate::subjects::checkpoint_object(10, &checkpoint.to_string());
        assert_eq!(
            c.check_fields(&FieldLimits::default()).unwrap_err().field,
            "object"
        );
    }

    #[test]
    fn a_catch_up_delta_belongs_to_a_delta_and_has_its_own_object() {
        let digest = Hash32::from([4; 32]).to_string();
        let catch_up = CatchUpDelta {
            object: crate::subjects::catch_up_object(4, &digest),
            bytes: 1,
            object_digest: Hash32::default(),
        };
        let mut a = CheckpointAnnounce {
            version: crate::WIRE_VERSION,
            checkpoint: Hash32::from([4; 32]),
            seq: 4,
            valid_from_window: 4,
            kind: CheckpointKind::Delta {
                base: Hash32::from([3; 32]),
                anchor: Hash32::from([1; 32]),
            },
            object: crate::subjects::checkpoint_object(4, &digest),
            bytes: 1,
            object_digest: Hash32::default(),
            catch_up: Some(catch_up.clone()),
            sampling: SamplingSpec::default(),
            created_at_ms: 0,
        };
        a.check_fields(&FieldLimits::default()).unwrap();
        let field =
            |a: &CheckpointAnnounce| a.check_fields(&FieldLimits::default()).unwrap_err().field;
        a.catch_up = Some(CatchUpDelta {
            object: a.object.clone(),
            ..catch_up.clone()
        });
        assert_eq!(field(&a), "catch_up.object");
        a.catch_up = Some(CatchUpDelta {
            object: "a.>".into(),
            ..catch_up.clone()
        });
        assert_eq!(field(&a), "catch_up.object");
        // Another checkpoint's objects (retention would delete them with this one).
        a.catch_up = Some(CatchUpDelta {
            object: crate::subjects::catch_up_object(3, &digest),
            ..catch_up.clone()
        });
        assert_eq!(field(&a), "catch_up.object");
        a.catch_up = Some(catch_up);
        let own = a.object.clone();
        a.object = crate::subjects::checkpoint_object(3, &digest);
        assert_eq!(field(&a), "object");
        a.object = own;
        a.kind = CheckpointKind::Full;
        assert_eq!(field(&a), "catch_up");
    }

    #[test]
    fn tokens_reject_wildcards_and_separators() {
        for bad in ["", "a.b", "a*", ">", "a b", "a\nb"] {
            assert!(token("t", bad, 64).is_err(), "{bad:?}");
        }
        token("t", "ckpt-00000001-abcdef", 64).unwrap();
    }
}
