//! The bus-level trust boundary against a real nats-server with the generated authorization
//! config and a real gatekeeper: who can log in, who can publish where, and that only the
//! admin changes the topology, the clock's and the state's KV keys, or checkpoint objects.
//! Real nkeys, real sr25519 signatures; no mocks. Missing nats-server fails the tests.

use std::sync::Arc;
use std::time::Duration;

use actors::bus_auth::{hotkey_auth, Credentials};
use actors::metrics::Metrics;
use async_nats::jetstream;
use bytes::Bytes;
use grail_runtime::auth::gatekeeper::{self, GatekeeperConfig};
use grail_runtime::auth::AuthFiles;
use grail_runtime::nats_server::{find_binary, EmbeddedNats, EmbeddedOptions};
use grail_runtime::streams::{ensure, ensure_consumers, TopologyConfig};
use messages::bus_permissions::{login_challenge, BusIdentity, KV_SCORER_LAST_WINDOW};
use messages::subjects as subj;
use messages::Identity;
use serde_json::{json, Value};

const NETWORK: &str = "auth-test";
const SHORT: Duration = Duration::from_millis(1500);

struct AuthNats {
    server: EmbeddedNats,
    files: AuthFiles,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

impl AuthNats {
    /// Server with the generated auth config, the gatekeeper, and the topology (as admin).
    async fn start(max_new_miners_per_minute: u32) -> Self {
        find_binary().expect("nats-server is required: run scripts/install-nats.sh");
        let dir = tempfile::tempdir().unwrap();
        let files = AuthFiles::ensure(dir.path().join("auth")).unwrap();
        let server = EmbeddedNats::start_with(
            EmbeddedOptions {
                dir: dir.path().join("nats"),
                max_payload: messages::DEFAULT_MAX_MESSAGE_BYTES,
                port: 0,
            },
            &files.server_block().unwrap(),
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        gatekeeper::spawn(
            server.url(),
            files.seed_path(&BusIdentity::Gatekeeper),
            files.issuer().unwrap(),
            GatekeeperConfig {
                network_id: NETWORK.into(),
                max_new_miners_per_minute,
                max_message_bytes: messages::DEFAULT_MAX_MESSAGE_BYTES,
            },
            metrics.clone(),
        )
        .await
        .unwrap();
        let me = Self {
            server,
            files,
            metrics,
            _dir: dir,
        };
        let admin = me.connect(&me.operator(BusIdentity::Admin)).await.unwrap();
        let js = jetstream::new(admin.clone());
        ensure(&admin, &js, &TopologyConfig::default())
            .await
            .expect("admin creates the topology");
        ensure_consumers(&js)
            .await
            .expect("admin creates the durables");
        me
    }

    fn operator(&self, id: BusIdentity) -> Credentials {
        Credentials::Nkey {
            seed_file: self.files.seed_path(&id),
            identity: id,
        }
    }

    async fn connect(&self, creds: &Credentials) -> Result<async_nats::Client, String> {
        creds
            .connect_options()
            .map_err(|e| e.to_string())?
            .connection_timeout(Duration::from_secs(5))
            .connect(self.server.url())
            .await
            .map_err(|e| e.to_string())
    }

    async fn connect_with(
        &self,
        opts: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, String> {
        opts.connection_timeout(Duration::from_secs(5))
            .connect(self.server.url())
            .await
            .map_err(|e| e.to_string())
    }

    async fn js(&self, creds: &Credentials) -> jetstream::Context {
        let client = self.connect(creds).await.expect("login");
        let mut js = jetstream::new(client);
        js.set_timeout(SHORT);
        js
    }

    fn refusals(&self, reason: &str) -> u64 {
        self.metrics
            .auth_refusals
            .with_label_values(&[reason])
            .get()
    }
}

fn hotkey(id: &Identity) -> Credentials {
    Credentials::Hotkey {
        identity: Arc::new(id.clone()),
        network_id: NETWORK.into(),
    }
}

/// Publish to JetStream and wait for the stream's ack (bounded).
async fn stored(js: &jetstream::Context, subject: String, body: &'static [u8]) -> bool {
    let attempt = async {
        let ack = js.publish(subject, Bytes::from_static(body)).await.ok()?;
        ack.await.ok()
    };
    matches!(tokio::time::timeout(SHORT * 2, attempt).await, Ok(Some(_)))
}

/// A JetStream API request that the server answered without error.
async fn api_ok(js: &jetstream::Context, subject: &str, body: Value) -> bool {
    let answer = tokio::time::timeout(
        SHORT * 2,
        js.request::<String, Value, Value>(subject.to_string(), &body),
    )
    .await;
    matches!(answer, Ok(Ok(v)) if v.get("error").is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_proven_hotkeys_and_operator_keys_log_in() {
    let nats = AuthNats::start(100).await;
    let miner = Identity::generate();

    // Anonymous, and an nkey the server does not know.
    assert!(nats
        .connect_with(async_nats::ConnectOptions::new())
        .await
        .is_err());
    let stranger = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stranger.path(), nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    assert!(nats
        .connect(&Credentials::Nkey {
            identity: BusIdentity::Clock,
            seed_file: stranger.path().to_path_buf(),
        })
        .await
        .is_err());

    // The real hotkey and every operator key log in.
    nats.connect(&hotkey(&miner)).await.expect("miner login");
    for id in messages::bus_permissions::OPERATORS {
        let name = id.name().to_string();
        nats.connect(&nats.operator(id))
            .await
            .unwrap_or_else(|e| panic!("{name} login: {e}"));
    }

    // Someone else's key claiming the miner's address.
    let thief = Identity::generate();
    let address = miner.address().to_string();
    let forged = async_nats::ConnectOptions::with_auth_callback(move |nonce| {
        let mut auth = hotkey_auth(&thief, NETWORK, &nonce);
        auth.username = Some(address.clone());
        async move { Ok(auth) }
    });
    assert!(nats.connect_with(forged).await.is_err());
    // A signature over another nonce (a replayed or stale login): no timestamp window exists,
    // each signature covers the one nonce the server issued to its connection.
    let replayer = miner.clone();
    let replayed = async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
        let auth = hotkey_auth(&replayer, NETWORK, b"an-earlier-connection-nonce");
        async move { Ok(auth) }
    });
    assert!(nats.connect_with(replayed).await.is_err());
    // Another network's login.
    assert!(nats
        .connect(&Credentials::Hotkey {
            identity: Arc::new(miner.clone()),
            network_id: "other-net".into(),
        })
        .await
        .is_err());
    assert_eq!(nats.refusals("bad_signature"), 3);
    // A username that is no address, and a password that is no signature.
    let garbage = async_nats::ConnectOptions::with_auth_callback(|nonce| {
        let id = Identity::generate();
        let mut auth = async_nats::Auth::new();
        auth.username = Some("root".into());
        auth.password = Some(hex::encode(id.sign(&login_challenge(NETWORK, &nonce))));
        auth.signature = Some(vec![1; 64]);
        async move { Ok(auth) }
    });
    assert!(nats.connect_with(garbage).await.is_err());
    assert_eq!(nats.refusals("bad_address"), 1);
    // No nonce signature: the server does not pass the nonce on.
    let plain = async_nats::ConnectOptions::with_user_and_password(
        miner.address().to_string(),
        "00".repeat(64),
    );
    assert!(nats.connect_with(plain).await.is_err());
    assert_eq!(nats.refusals("no_nonce"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_hotkeys_are_admitted_at_a_bounded_rate() {
    let nats = AuthNats::start(2).await;
    let first = Identity::generate();
    nats.connect(&hotkey(&first)).await.unwrap();
    nats.connect(&hotkey(&Identity::generate())).await.unwrap();
    assert!(nats.connect(&hotkey(&Identity::generate())).await.is_err());
    assert_eq!(nats.refusals("rate_limited"), 1);
    // A miner already admitted reconnects regardless.
    nats.connect(&hotkey(&first)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_publishes_only_its_own_rollouts() {
    let nats = AuthNats::start(100).await;
    let miner = Identity::generate();
    let other = Identity::generate();
    let js = nats.js(&hotkey(&miner)).await;
    assert!(stored(&js, subj::rollout(5, miner.address()), b"group").await);
    let foreign = [
        subj::rollout(5, other.address()),
        subj::window_open(5),
        subj::window_close(5),
        subj::group_verdict(5, miner.address()),
        subj::miner_verdict(5, miner.address()),
        subj::weights(5),
        subj::checkpoint(1),
        subj::checkpoint_candidate(1),
        subj::MANIFEST.to_string(),
    ];
    for subject in foreign {
        assert!(
            !stored(&js, subject.clone(), b"forged").await,
            "miner stored {subject}"
        );
    }
    // Nothing but the own group reached any stream.
    let admin = nats.js(&nats.operator(BusIdentity::Admin)).await;
    for (stream, expected) in [
        (subj::STREAM_ROLLOUTS, 1),
        (subj::STREAM_CLOCK, 0),
        (subj::STREAM_VERDICTS, 0),
        (subj::STREAM_WEIGHTS, 0),
        (subj::STREAM_CHECKPOINTS, 0),
    ] {
        let mut s = admin.get_stream(stream).await.unwrap();
        assert_eq!(s.info().await.unwrap().state.messages, expected, "{stream}");
    }
    // It can read what mining needs: clock, announcements, manifest, checkpoint objects.
    for stream in [
        subj::STREAM_CLOCK,
        subj::STREAM_CHECKPOINTS,
        subj::STREAM_MANIFEST,
    ] {
        js.get_stream(stream)
            .await
            .unwrap_or_else(|e| panic!("miner reads {stream}: {e}"));
    }
    js.get_object_store(subj::OBJECTS_CHECKPOINTS)
        .await
        .unwrap();
    // But not the rollouts of others, nor the verifiers' queue.
    assert!(js.get_stream(subj::STREAM_ROLLOUTS).await.is_err());
}

/// Every destructive operation, by identity; `true` when it went through.
async fn attempt_all(js: &jetstream::Context) -> Vec<(&'static str, bool)> {
    let delete_object = async {
        let attempt = async {
            let store = js.get_object_store(subj::OBJECTS_CHECKPOINTS).await.ok()?;
            store.delete("ckpt-00000001-test").await.ok()
        };
        matches!(tokio::time::timeout(SHORT * 3, attempt).await, Ok(Some(())))
    };
    let (
        delete_stream,
        purge,
        delete_verifiers,
        rewrite_verifiers,
        rewrite_publisher,
        create_stream,
        durable,
        leader,
        chain,
        scorer_state,
        trainer_state,
        object,
    ) = tokio::join!(
        api_ok(js, "STREAM.DELETE.GRAIL_WEIGHTS", json!({})),
        api_ok(js, "STREAM.PURGE.GRAIL_ROLLOUTS", json!({})),
        api_ok(js, "CONSUMER.DELETE.GRAIL_ROLLOUTS.verifiers", json!({})),
        api_ok(
            js,
            "CONSUMER.CREATE.GRAIL_ROLLOUTS",
            json!({"stream_name": "GRAIL_ROLLOUTS", "config": {"name": "verifiers",
                "deliver_policy": "all", "ack_policy": "explicit", "ack_wait": 1_000_000_000u64,
                "max_deliver": 20, "max_ack_pending": 10000, "filter_subject": "grail.rollout.0.*"}})
        ),
        api_ok(
            js,
            "CONSUMER.CREATE.GRAIL_CHECKPOINTS.publisher.grail.checkpoint.*",
            json!({"stream_name": "GRAIL_CHECKPOINTS", "config": {"durable_name": "publisher",
                "deliver_policy": "all", "ack_policy": "explicit", "filter_subject": "grail.checkpoint.*"}})
        ),
        api_ok(
            js,
            "STREAM.CREATE.EVIL",
            json!({"name": "EVIL", "subjects": ["evil.>"]})
        ),
        api_ok(
            js,
            "CONSUMER.DURABLE.CREATE.GRAIL_CLOCK.evil",
            json!({"stream_name": "GRAIL_CLOCK", "config": {"durable_name": "evil", "ack_policy": "explicit"}})
        ),
        stored(js, format!("$KV.{}.leader", subj::KV_CLOCK), b"evil"),
        stored(js, format!("$KV.{}.chain", subj::KV_CLOCK), b"evil"),
        stored(
            js,
            format!("$KV.{}.{}", subj::KV_STATE, KV_SCORER_LAST_WINDOW),
            b"999"
        ),
        stored(
            js,
            format!("$KV.{}.{}", subj::KV_STATE, subj::KV_TRAINER_LAST_WINDOW),
            b"999"
        ),
        delete_object,
    );
    vec![
        ("delete stream", delete_stream),
        ("purge stream", purge),
        ("delete consumer verifiers", delete_verifiers),
        ("rewrite consumer verifiers", rewrite_verifiers),
        ("rewrite consumer publisher", rewrite_publisher),
        ("create stream", create_stream),
        ("create durable consumer", durable),
        ("kv grail_clock/leader", leader),
        ("kv grail_clock/chain", chain),
        ("kv grail_state/scorer.last_window", scorer_state),
        ("kv grail_state/trainer.last_window", trainer_state),
        ("delete checkpoint object", object),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_changes_topology_and_only_owners_write_their_keys() {
    let nats = AuthNats::start(100).await;
    let admin = nats.js(&nats.operator(BusIdentity::Admin)).await;
    // A checkpoint object and KV values to protect.
    let objects = admin
        .get_object_store(subj::OBJECTS_CHECKPOINTS)
        .await
        .unwrap();
    objects
        .put("ckpt-00000001-test", &mut &b"weights"[..])
        .await
        .unwrap();
    let clock_kv = admin.get_key_value(subj::KV_CLOCK).await.unwrap();
    clock_kv.put("leader", "clock-0".into()).await.unwrap();
    clock_kv.put("chain", "anchor".into()).await.unwrap();

    let miner = Identity::generate();
    let mut identities: Vec<(String, Credentials)> = vec![("miner".into(), hotkey(&miner))];
    for id in [
        BusIdentity::Gatekeeper,
        BusIdentity::Clock,
        BusIdentity::Verifier,
        BusIdentity::Scorer,
        BusIdentity::Trainer,
        BusIdentity::Publisher,
    ] {
        identities.push((id.name().to_string(), nats.operator(id)));
    }
    // What each may legitimately do (object-level rights inside the bucket are not
    // expressible in subject permissions: the trainer's staging writes imply deletes).
    let owns = |who: &str, op: &str| {
        matches!(
            (who, op),
            ("clock", "kv grail_clock/leader")
                | ("clock", "kv grail_clock/chain")
                | ("scorer", "kv grail_state/scorer.last_window")
                | ("trainer", "kv grail_state/trainer.last_window")
                | ("publisher", "delete checkpoint object")
                | ("trainer", "delete checkpoint object")
        )
    };
    for (who, creds) in &identities {
        let js = nats.js(creds).await;
        for (op, done) in attempt_all(&js).await {
            if owns(who, op) {
                assert!(done, "{who} could not {op}");
                if op == "delete checkpoint object" {
                    objects
                        .put("ckpt-00000001-test", &mut &b"weights"[..])
                        .await
                        .unwrap();
                }
            } else {
                assert!(!done, "{who} could {op}");
            }
        }
    }
    // Nothing the non-admins tried stuck.
    let rollouts = admin.get_stream(subj::STREAM_ROLLOUTS).await.unwrap();
    let verifiers = rollouts
        .consumer_info(subj::CONSUMER_VERIFIERS)
        .await
        .expect("verifiers consumer still there");
    assert!(verifiers.config.filter_subject.is_empty());
    assert_eq!(verifiers.config.ack_wait, Duration::from_secs(30));
    let checkpoints = admin.get_stream(subj::STREAM_CHECKPOINTS).await.unwrap();
    let publisher = checkpoints
        .consumer_info(subj::CONSUMER_PUBLISHER)
        .await
        .unwrap();
    assert_eq!(
        publisher.config.filter_subject,
        subj::CHECKPOINT_CANDIDATE_ALL
    );
    assert!(admin.get_stream("EVIL").await.is_err());
    admin.get_stream(subj::STREAM_WEIGHTS).await.unwrap();

    // The admin may do all of it (the ephemeral-shaped rewrite of the durable `verifiers` is
    // an attack shape the server may refuse on its own, and it races the delete here).
    let done = attempt_all(&admin).await;
    for (op, ok) in done {
        assert!(
            ok || op == "rewrite consumer verifiers",
            "admin could not {op}"
        );
    }
}

/// `grail up` with the default (authenticated) embedded server: every role on its own
/// credentials finishes windows, and the server logged no permission violation.
#[test]
fn grail_up_with_auth_finishes_windows_without_violations() {
    use std::os::unix::fs::PermissionsExt;
    find_binary().expect("nats-server is required: run scripts/install-nats.sh");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        "[window]\nlength_secs = 1.5\nsubmit_fraction = 0.6\nchain_length = 1000\n\
         [metrics]\nlisten = \"\"\n[compute]\nkind = \"structural\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grail"))
        .args(["up", "--windows", "3", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("window ")).count(),
        3,
        "{text}"
    );
    let log = std::fs::read_to_string(dir.path().join("run/nats/nats-server.log")).unwrap();
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(violations.is_empty(), "{violations:#?}");
    let conf = std::fs::read_to_string(dir.path().join("run/nats/nats.conf")).unwrap();
    assert!(conf.contains("auth_callout"), "{conf}");
    for entry in std::fs::read_dir(dir.path().join("run/auth")).unwrap() {
        let path = entry.unwrap().path();
        let mode = path.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

/// A role started alone (`grail run --role R`) on an authenticated bus checks only what its
/// identity may read: the check passes for every operator role, although asking about the
/// other streams (what the old all-streams check did) is refused for the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_started_alone_checks_only_what_its_identity_may_read() {
    use grail_runtime::streams::{check, check_readable};
    let nats = AuthNats::start(100).await;
    for role in [
        BusIdentity::Clock,
        BusIdentity::Verifier,
        BusIdentity::Scorer,
        BusIdentity::Trainer,
        BusIdentity::Publisher,
    ] {
        let js = nats.js(&nats.operator(role.clone())).await;
        check_readable(&js, &role)
            .await
            .unwrap_or_else(|e| panic!("{} started alone: {e}", role.name()));
    }
    let clock = nats.js(&nats.operator(BusIdentity::Clock)).await;
    assert!(
        check(&clock).await.is_err(),
        "the clock may not ask about the rollout stream"
    );
}

/// Only verifiers use the shared window ledger: a verifier claims keys in it, a scorer can
/// neither claim nor read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verifiers_claim_and_read_the_window_ledger() {
    use actors::ledger::BusLedger;
    use protocol::checks::{Admission, CopyRules, GroupClaims, Limits};
    let nats = AuthNats::start(100).await;
    let claims = GroupClaims {
        miner: "5Miner",
        nonce: 1,
        group_index: 0,
        envelope: [1; 32],
        server_ts_ms: 10,
        completions: &[[2; 32]],
    };
    let verifier = nats.js(&nats.operator(BusIdentity::Verifier)).await;
    let ledger = BusLedger::open(&verifier, CopyRules::default())
        .await
        .expect("the verifier binds to the ledger");
    let answer = ledger.admit(1, &claims, &Limits::default()).await;
    assert_eq!(answer.expect("verifier may claim"), Ok(Admission::New));
    ledger
        .record(1, "5Miner", 10, &[[2; 32]])
        .await
        .expect("verifier may record completions");
    let scorer = nats.js(&nats.operator(BusIdentity::Scorer)).await;
    let nonce_key = format!(
        "$KV.{}.{}",
        subj::KV_LEDGER,
        subj::ledger_nonce(1, "5Miner", 9)
    );
    assert!(
        !stored(&scorer, nonce_key, b"00").await,
        "scorer wrote a ledger key"
    );
    assert!(
        BusLedger::open(&scorer, CopyRules::default())
            .await
            .is_err(),
        "scorer read the ledger bucket"
    );
}
