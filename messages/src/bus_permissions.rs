//! Who may do what on the bus: the pure identity → NATS permissions table (publish and
//! subscribe allow/deny lists, JetStream API subjects included). `grail nats-config` and
//! `grail up` render it into the nats-server config for the operator roles; the gatekeeper
//! puts [`BusIdentity::Miner`]'s into the user JWT it issues to each outside miner.
//!
//! Every grail subject here is built from [`crate::subjects`]; the `$JS.API`, `$JS.ACK`,
//! `$KV` and `$O` prefixes are the NATS/JetStream protocol's own.
//!
//! Rules:
//! * Only [`BusIdentity::Admin`] creates, updates, deletes or purges streams, durable
//!   consumers, KV buckets and object stores (`grail streams`, `grail up`'s topology step).
//! * Every other identity binds to the durable consumers it is assigned (info, fetch, ack)
//!   and creates only ephemeral readers. Creating a consumer whose name is a durable one is
//!   denied to all of them, and the legacy ephemeral-create subject (whose body may name any
//!   consumer, durables included) is granted only on streams that have no durable consumer.
//! * A role publishes only its own subjects and writes only its own KV keys; a miner only
//!   `grail.rollout.<window>.<its own SS58>`.
//! * Replies come back on a per-identity inbox prefix ([`BusIdentity::inbox_prefix`]), so
//!   nobody can read another identity's JetStream replies.

use crate::subjects as subj;

/// A NATS identity of the network.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BusIdentity {
    /// Topology owner (`grail streams`, `grail up`): everything.
    Admin,
    /// The auth-callout service: answers `$SYS.REQ.USER.AUTH` and nothing else.
    Gatekeeper,
    Clock,
    Verifier,
    Scorer,
    Trainer,
    Publisher,
    Evaluator,
    /// An outside miner, authenticated by its sr25519 hotkey (its SS58 address).
    Miner(String),
}

/// The operator identities that get static nkey credentials, in file order.
pub const OPERATORS: [BusIdentity; 8] = [
    BusIdentity::Admin,
    BusIdentity::Gatekeeper,
    BusIdentity::Clock,
    BusIdentity::Verifier,
    BusIdentity::Scorer,
    BusIdentity::Trainer,
    BusIdentity::Publisher,
    BusIdentity::Evaluator,
];

/// Durable consumers (created by the admin only; roles bind to them).
pub const DURABLE_CONSUMERS: [&str; 4] = [
    subj::CONSUMER_VERIFIERS,
    subj::CONSUMER_PUBLISHER,
    subj::CONSUMER_TRAINER,
    subj::CONSUMER_SCORER,
];

/// `grail_state` key of the scorer's last finalised window.
pub const KV_SCORER_LAST_WINDOW: &str = "scorer.last_window";

/// The subject the auth-callout requests arrive on.
pub const AUTH_CALLOUT_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// Domain tag of a miner's NATS login signature.
pub const LOGIN_DOMAIN: &[u8] = b"grail-nats-login/v1";

/// What an outside miner signs (sr25519, its hotkey) to log in: the domain tag, the network
/// id and the nonce the server sent in its INFO for this very connection, NUL-separated.
/// The gatekeeper rebuilds it from the nonce the server reports in the auth-callout
/// request, so a signature is good for one connection only (no replay window).
pub fn login_challenge(network_id: &str, nonce: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(LOGIN_DOMAIN.len() + network_id.len() + nonce.len() + 2);
    m.extend_from_slice(LOGIN_DOMAIN);
    m.push(0);
    m.extend_from_slice(network_id.as_bytes());
    m.push(0);
    m.extend_from_slice(nonce);
    m
}

/// Publish / subscribe allow and deny lists (deny wins), as nats-server applies them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub subscribe_deny: Vec<String>,
    /// May answer requests it received (publish once to their reply subject).
    pub allow_responses: bool,
}

impl BusIdentity {
    /// The role name (`cluster.toml`'s section, the credential file's stem).
    pub fn name(&self) -> &str {
        match self {
            BusIdentity::Admin => "admin",
            BusIdentity::Gatekeeper => "gatekeeper",
            BusIdentity::Clock => "clock",
            BusIdentity::Verifier => "verifier",
            BusIdentity::Scorer => "scorer",
            BusIdentity::Trainer => "trainer",
            BusIdentity::Publisher => "publisher",
            BusIdentity::Evaluator => "evaluator",
            BusIdentity::Miner(_) => "miner",
        }
    }

    /// The operator identity of a role name (`None` for miners and unknown names).
    pub fn operator(role: &str) -> Option<BusIdentity> {
        OPERATORS.into_iter().find(|o| o.name() == role)
    }

    /// Inbox prefix this identity's client must use (`ConnectOptions::custom_inbox_prefix`):
    /// replies to its requests (JetStream API answers, publish acks, fetched messages) come
    /// back under it, and it may subscribe to nothing else under `_INBOX`.
    pub fn inbox_prefix(&self) -> String {
        match self {
            BusIdentity::Miner(address) => format!("_INBOX.{address}"),
            other => format!("_INBOX.{}", other.name()),
        }
    }

    /// This identity's permissions.
    pub fn permissions(&self) -> Permissions {
        let mut p = Permissions::default();
        if *self == BusIdentity::Admin {
            p.publish_allow.push(">".into());
            p.subscribe_allow.push(">".into());
            return p;
        }
        if *self == BusIdentity::Gatekeeper {
            p.subscribe_allow.push(AUTH_CALLOUT_SUBJECT.into());
            p.allow_responses = true;
            return p;
        }
        p.subscribe_allow.push(format!("{}.>", self.inbox_prefix()));
        // Nobody but the admin may create, replace or delete a durable consumer.
        for durable in DURABLE_CONSUMERS {
            p.publish_deny
                .push(format!("{JS_API}.CONSUMER.CREATE.*.{durable}"));
            p.publish_deny
                .push(format!("{JS_API}.CONSUMER.CREATE.*.{durable}.>"));
            p.publish_deny
                .push(format!("{JS_API}.CONSUMER.DELETE.*.{durable}"));
        }
        p.publish_deny.push(format!("{JS_API}.CONSUMER.DURABLE.>"));
        let own_heartbeat = format!("{}{}.*", prefix(subj::HEARTBEAT_ALL), self.name());
        p.publish_allow.push(own_heartbeat);
        // Everyone follows the owner-signed manifest and the clock.
        read(&mut p, subj::STREAM_MANIFEST);
        read(&mut p, subj::STREAM_CLOCK);
        // Held-out scores are public: anyone may read how each checkpoint did.
        read(&mut p, subj::STREAM_EVAL);
        match self {
            BusIdentity::Admin | BusIdentity::Gatekeeper => unreachable!("handled above"),
            BusIdentity::Miner(address) => {
                p.publish_allow
                    .push(format!("{}*.{address}", prefix(subj::ROLLOUT_ALL)));
                read(&mut p, subj::STREAM_CHECKPOINTS);
                read_objects(&mut p);
            }
            BusIdentity::Clock => {
                p.publish_allow.push(subj::CLOCK_ALL.into());
                read_kv(&mut p, subj::KV_CLOCK);
                write_kv(&mut p, subj::KV_CLOCK, "leader");
                write_kv(&mut p, subj::KV_CLOCK, "chain");
            }
            BusIdentity::Verifier => {
                p.publish_allow.push(subj::VERDICT_GROUP_ALL.into());
                bind(&mut p, subj::STREAM_ROLLOUTS, subj::CONSUMER_VERIFIERS);
                read(&mut p, subj::STREAM_VERDICTS);
                read(&mut p, subj::STREAM_CHECKPOINTS);
                read_objects(&mut p);
                // The shared window ledger: every key, nobody else's.
                read_kv(&mut p, subj::KV_LEDGER);
                write_kv(&mut p, subj::KV_LEDGER, ">");
            }
            BusIdentity::Scorer => {
                p.publish_allow.push(subj::VERDICT_MINER_ALL.into());
                p.publish_allow.push(subj::WEIGHTS_ALL.into());
                read(&mut p, subj::STREAM_VERDICTS);
                read(&mut p, subj::STREAM_WEIGHTS);
                read_kv(&mut p, subj::KV_STATE);
                write_kv(&mut p, subj::KV_STATE, KV_SCORER_LAST_WINDOW);
            }
            BusIdentity::Trainer => {
                p.publish_allow.push(subj::CHECKPOINT_CANDIDATE_ALL.into());
                read(&mut p, subj::STREAM_ROLLOUTS);
                read(&mut p, subj::STREAM_VERDICTS);
                read(&mut p, subj::STREAM_CHECKPOINTS);
                read_kv(&mut p, subj::KV_STATE);
                write_kv(&mut p, subj::KV_STATE, subj::KV_TRAINER_LAST_WINDOW);
                read_objects(&mut p);
                write_objects(&mut p);
            }
            BusIdentity::Publisher => {
                p.publish_allow.push(subj::CHECKPOINT_ANNOUNCE_ALL.into());
                bind(&mut p, subj::STREAM_CHECKPOINTS, subj::CONSUMER_PUBLISHER);
                read(&mut p, subj::STREAM_CHECKPOINTS);
                read_objects(&mut p);
                write_objects(&mut p);
            }
            BusIdentity::Evaluator => {
                p.publish_allow.push(subj::EVAL_ALL.into());
                read(&mut p, subj::STREAM_CHECKPOINTS);
                read_objects(&mut p);
            }
        }
        p
    }
}

const JS_API: &str = "$JS.API";

/// `grail.rollout.>` → `grail.rollout.`
fn prefix(all: &str) -> &str {
    all.trim_end_matches('>')
}

/// Streams with a durable consumer: their legacy ephemeral-create subject is never granted
/// (its request body may name an existing durable and rewrite its configuration).
fn has_durables(stream: &str) -> bool {
    stream == subj::STREAM_ROLLOUTS || stream == subj::STREAM_CHECKPOINTS
}

/// Read `stream` with ephemeral ordered consumers and direct/message gets.
fn read(p: &mut Permissions, stream: &str) {
    let allow = [
        format!("{JS_API}.STREAM.INFO.{stream}"),
        format!("{JS_API}.STREAM.MSG.GET.{stream}"),
        format!("{JS_API}.DIRECT.GET.{stream}"),
        format!("{JS_API}.DIRECT.GET.{stream}.>"),
        // Named ephemeral consumers (durable names are denied above).
        format!("{JS_API}.CONSUMER.CREATE.{stream}.*"),
        format!("{JS_API}.CONSUMER.CREATE.{stream}.*.>"),
        format!("{JS_API}.CONSUMER.INFO.{stream}.*"),
        format!("{JS_API}.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("{JS_API}.CONSUMER.DELETE.{stream}.*"),
        // Ordered push consumers answer the server's flow-control requests on this subject;
        // without it a read larger than the flow-control window (a real model's checkpoint
        // object) stalls for good.
        format!("$JS.FC.{stream}.>"),
    ];
    for a in allow {
        if !p.publish_allow.contains(&a) {
            p.publish_allow.push(a);
        }
    }
    if !has_durables(stream) {
        let legacy = format!("{JS_API}.CONSUMER.CREATE.{stream}");
        if !p.publish_allow.contains(&legacy) {
            p.publish_allow.push(legacy);
        }
    }
}

/// Bind to the durable `consumer` of `stream`: look it up, fetch, acknowledge.
fn bind(p: &mut Permissions, stream: &str, consumer: &str) {
    p.publish_allow.extend([
        format!("{JS_API}.STREAM.INFO.{stream}"),
        format!("{JS_API}.CONSUMER.INFO.{stream}.{consumer}"),
        format!("{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ]);
}

fn read_kv(p: &mut Permissions, bucket: &str) {
    read(p, &format!("KV_{bucket}"));
}

/// A KV put/create/update of `key` is a publish on `$KV.<bucket>.<key>`.
fn write_kv(p: &mut Permissions, bucket: &str, key: &str) {
    p.publish_allow.push(format!("$KV.{bucket}.{key}"));
}

fn read_objects(p: &mut Permissions) {
    read(p, &format!("OBJ_{}", subj::OBJECTS_CHECKPOINTS));
}

/// Put and delete objects: chunk and metadata publishes, and the purge of an object's old
/// chunks that replacing or deleting it does (a purge names its filter in the request body,
/// so the grant covers the whole object store stream: see docs/OPERATIONS.md).
fn write_objects(p: &mut Permissions) {
    let b = subj::OBJECTS_CHECKPOINTS;
    p.publish_allow.extend([
        format!("$O.{b}.C.>"),
        format!("$O.{b}.M.>"),
        format!("{JS_API}.STREAM.PURGE.OBJ_{b}"),
    ]);
}

/// Does the NATS subject pattern `pattern` match the literal `subject`?
pub fn matches(pattern: &str, subject: &str) -> bool {
    let s: Vec<&str> = subject.split('.').collect();
    for (i, tok) in pattern.split('.').enumerate() {
        match tok {
            ">" => return s.len() > i,
            "*" if i < s.len() => {}
            t if s.get(i) == Some(&t) => {}
            _ => return false,
        }
    }
    pattern.split('.').count() == s.len()
}

impl Permissions {
    /// May this identity publish `subject` (allowed by some pattern and denied by none)?
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish_allow.iter().any(|a| matches(a, subject))
            && !self.publish_deny.iter().any(|d| matches(d, subject))
    }
    pub fn may_subscribe(&self, subject: &str) -> bool {
        self.subscribe_allow.iter().any(|a| matches(a, subject))
            && !self.subscribe_deny.iter().any(|d| matches(d, subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn all_identities(miner: &str) -> Vec<BusIdentity> {
        let mut v = OPERATORS.to_vec();
        v.push(BusIdentity::Miner(miner.to_string()));
        v
    }

    #[test]
    fn each_subject_has_exactly_its_publisher() {
        let me = Identity::generate();
        let other = Identity::generate();
        let (m, o) = (me.address(), other.address());
        let cases: Vec<(String, Vec<&str>)> = vec![
            (subj::window_open(5), vec!["admin", "clock"]),
            (subj::window_close(5), vec!["admin", "clock"]),
            (subj::rollout(5, m), vec!["admin", "miner"]),
            (subj::rollout(5, o), vec!["admin"]),
            (subj::group_verdict(5, m), vec!["admin", "verifier"]),
            (subj::miner_verdict(5, m), vec!["admin", "scorer"]),
            (subj::weights(5), vec!["admin", "scorer"]),
            (subj::checkpoint(3), vec!["admin", "publisher"]),
            (subj::checkpoint_candidate(3), vec!["admin", "trainer"]),
            (subj::MANIFEST.to_string(), vec!["admin"]),
            (subj::eval_report(4), vec!["admin", "evaluator"]),
            (
                format!("$KV.{}.leader", subj::KV_CLOCK),
                vec!["admin", "clock"],
            ),
            (
                format!("$KV.{}.chain", subj::KV_CLOCK),
                vec!["admin", "clock"],
            ),
            (
                format!("$KV.{}.{}", subj::KV_STATE, KV_SCORER_LAST_WINDOW),
                vec!["admin", "scorer"],
            ),
            (
                format!("$KV.{}.{}", subj::KV_STATE, subj::KV_TRAINER_LAST_WINDOW),
                vec!["admin", "trainer"],
            ),
            (
                format!("$KV.{}.{}", subj::KV_LEDGER, subj::ledger_nonce(5, m, 7)),
                vec!["admin", "verifier"],
            ),
            (
                format!(
                    "$KV.{}.{}",
                    subj::KV_LEDGER,
                    subj::ledger_completion(5, "ab")
                ),
                vec!["admin", "verifier"],
            ),
            (
                format!(
                    "$JS.API.DIRECT.GET.KV_{}.$KV.{}.5.x",
                    subj::KV_LEDGER,
                    subj::KV_LEDGER
                ),
                vec!["admin", "verifier"],
            ),
            (
                format!("$O.{}.M.abc", subj::OBJECTS_CHECKPOINTS),
                vec!["admin", "trainer", "publisher"],
            ),
            (
                format!("$JS.API.STREAM.PURGE.OBJ_{}", subj::OBJECTS_CHECKPOINTS),
                vec!["admin", "trainer", "publisher"],
            ),
        ];
        for (subject, expected) in cases {
            let ids = all_identities(m);
            let who: Vec<&str> = ids
                .iter()
                .filter(|i| i.permissions().may_publish(&subject))
                .map(|i| i.name())
                .collect();
            assert_eq!(who, expected, "publishers of {subject}");
        }
    }

    #[test]
    fn topology_changes_are_admin_only() {
        let m = Identity::generate();
        let s = |x: &str| x.to_string();
        let admin_only = [
            s("$JS.API.STREAM.CREATE.GRAIL_ROLLOUTS"),
            s("$JS.API.STREAM.UPDATE.GRAIL_CLOCK"),
            s("$JS.API.STREAM.DELETE.GRAIL_CLOCK"),
            s("$JS.API.STREAM.PURGE.GRAIL_ROLLOUTS"),
            s("$JS.API.STREAM.PURGE.KV_grail_clock"),
            s("$JS.API.STREAM.DELETE.OBJ_grail_checkpoints"),
            s("$JS.API.STREAM.MSG.DELETE.GRAIL_CLOCK"),
            s("$JS.API.CONSUMER.DELETE.GRAIL_ROLLOUTS.verifiers"),
            s("$JS.API.CONSUMER.CREATE.GRAIL_ROLLOUTS.verifiers"),
            s("$JS.API.CONSUMER.CREATE.GRAIL_ROLLOUTS.verifiers.grail.rollout.>"),
            s("$JS.API.CONSUMER.CREATE.GRAIL_CHECKPOINTS.publisher.grail.checkpoint.>"),
            s("$JS.API.CONSUMER.DURABLE.CREATE.GRAIL_CLOCK.x"),
            // Legacy ephemeral create on a stream with durables: the body could name one.
            s("$JS.API.CONSUMER.CREATE.GRAIL_ROLLOUTS"),
            s("$JS.API.CONSUMER.CREATE.GRAIL_CHECKPOINTS"),
        ];
        for id in all_identities(m.address()) {
            let p = id.permissions();
            for subject in &admin_only {
                assert_eq!(
                    p.may_publish(subject),
                    id == BusIdentity::Admin,
                    "{} on {subject}",
                    id.name()
                );
            }
        }
    }

    #[test]
    fn roles_can_do_their_jobs() {
        let m = Identity::generate();
        let miner = BusIdentity::Miner(m.address().to_string()).permissions();
        assert!(miner.may_publish("$JS.API.CONSUMER.CREATE.GRAIL_CLOCK"));
        assert!(
            miner.may_publish("$JS.API.CONSUMER.CREATE.GRAIL_CHECKPOINTS.x1.grail.checkpoint.*")
        );
        assert!(miner.may_publish("$JS.API.CONSUMER.MSG.NEXT.GRAIL_CHECKPOINTS.x1"));
        assert!(miner.may_publish("$JS.API.STREAM.INFO.OBJ_grail_checkpoints"));
        assert!(miner.may_publish("$JS.FC.OBJ_grail_checkpoints.K065afEM.lESc"));
        assert!(!miner.may_publish("$JS.FC.GRAIL_ROLLOUTS.K065afEM.lESc"));
        assert!(miner.may_publish("$JS.API.STREAM.INFO.GRAIL_MANIFEST"));
        assert!(miner.may_publish("grail.heartbeat.miner.miner-0"));
        assert!(!miner.may_publish("grail.heartbeat.clock.clock-0"));
        assert!(miner.may_subscribe(&format!("_INBOX.{}.abc", m.address())));
        assert!(!miner.may_subscribe("_INBOX.verifier.abc"));
        assert!(!miner.may_subscribe("grail.>"));
        assert!(!miner.may_publish("$JS.API.CONSUMER.MSG.NEXT.GRAIL_ROLLOUTS.verifiers"));
        let v = BusIdentity::Verifier.permissions();
        assert!(v.may_publish("$JS.API.CONSUMER.MSG.NEXT.GRAIL_ROLLOUTS.verifiers"));
        assert!(v.may_publish("$JS.API.CONSUMER.INFO.GRAIL_ROLLOUTS.verifiers"));
        assert!(v.may_publish("$JS.ACK.GRAIL_ROLLOUTS.verifiers.1.2.3.4.5.6"));
        assert!(!v.may_publish("$JS.ACK.GRAIL_CHECKPOINTS.publisher.1.2.3.4.5.6"));
        let p = BusIdentity::Publisher.permissions();
        assert!(p.may_publish("$JS.API.CONSUMER.MSG.NEXT.GRAIL_CHECKPOINTS.publisher"));
        assert!(p.may_publish("$JS.ACK.GRAIL_CHECKPOINTS.publisher.1.2.3.4.5.6"));
        let g = BusIdentity::Gatekeeper.permissions();
        assert!(g.may_subscribe(AUTH_CALLOUT_SUBJECT) && g.allow_responses);
        assert!(!g.may_publish("grail.clock.1.open"));
    }

    /// The patterns are built from subjects.rs: instantiate their wildcards and parse back.
    #[test]
    fn grail_patterns_are_grail_subjects() {
        let m = Identity::generate();
        for id in all_identities(m.address()) {
            for pattern in id.permissions().publish_allow {
                if !pattern.starts_with(subj::ROOT) || pattern == ">" {
                    continue;
                }
                let concrete = pattern
                    .split('.')
                    .map(|t| match t {
                        "*" | ">" => "7",
                        t => t,
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                let constant = [
                    subj::CLOCK_ALL,
                    subj::VERDICT_GROUP_ALL,
                    subj::VERDICT_MINER_ALL,
                    subj::WEIGHTS_ALL,
                    subj::CHECKPOINT_CANDIDATE_ALL,
                ]
                .contains(&pattern.as_str());
                assert!(
                    constant || subj::parse(&concrete).is_ok(),
                    "{pattern} → {concrete}"
                );
            }
        }
        assert!(matches(
            &format!("{}*.{}", prefix(subj::ROLLOUT_ALL), m.address()),
            &subj::rollout(3, m.address())
        ));
    }
}
