//! Foundation behaviour against a real nats-server: wire round trips through JetStream,
//! work sharing between verifiers, supervised worker restarts, hostile input.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actors::bus::{Bus, MsgMeta};
use actors::compute::structural::{StructuralMiner, StructuralVerifier};
use actors::compute::ComputeError;
use actors::role::RoleCtx;
use actors::roles::clock::{Clock, ClockConfig};
use actors::roles::miner::{MineJob, Miner, MinerCompute, MinerConfig, MinerWorker};
use actors::roles::verifier::{verifier_consumer, Verifier, VerifierConfig, VerifierWorker};
use actors::worker_pool::{PoolConfig, WorkerPool};
use async_nats::jetstream::consumer::pull;
use futures::StreamExt;
use grail_integration_tests::{eventually, TestNats};
use messages::subjects as subj;
use messages::*;

fn ctx(bus: &Bus, role: &'static str, i: usize) -> RoleCtx {
    RoleCtx {
        bus: bus.clone(),
        identity: grail_integration_tests::role_identity(role),
        role,
        instance: format!("{role}-{i}"),
    }
}

fn start_clock(bus: &Bus, length_ms: u64) {
    let c = Clock::new(
        ctx(bus, "clock", 0),
        ClockConfig {
            length_ms,
            submit_ms: length_ms * 6 / 10,
            chain_len: 1000,
            seed: [7; 32],
            lease_ttl_ms: 1000,
            tick_ms: 50,
            genesis_ms: None,
        },
    );
    actors::supervisor::start(ctx(bus, "clock", 0), Arc::new(c));
}

/// One verifier role with model-free compute, supervised like in production.
fn start_structural_verifier(bus: &Bus) {
    let pool = WorkerPool::start(
        PoolConfig::new("verifier", 1),
        Arc::new(|_| Ok(VerifierWorker(Box::new(StructuralVerifier)))),
        bus.metrics.clone(),
    );
    let vctx = ctx(bus, "verifier", 0);
    let cfg = VerifierConfig {
        concurrency: 2,
        ack_wait: Duration::from_secs(10),
    };
    actors::supervisor::start(
        vctx.clone(),
        Arc::new(Verifier::new(vctx, cfg, Arc::new(pool))),
    );
}

fn sample_group(id: &Identity, window: u64, group_index: u32) -> RolloutGroup {
    RolloutGroup {
        version: WIRE_VERSION,
        window,
        miner: id.address().to_string(),
        group_index,
        nonce: group_index as u64,
        checkpoint: Hash32::from([1; 32]),
        env: "test".into(),
        problem_seed: 3,
        problem_id: "test/3".into(),
        rollouts: vec![Rollout {
            tokens: PackedU32(vec![1, 2, 3]),
            prompt_len: 1,
            sketches: PackedU32(vec![5, 6]),
            logprobs: PackedF32(vec![-0.1, -0.2]),
            reward: 1.0,
            advantage: 0.0,
            success: true,
        }],
    }
}

#[test]
fn every_message_type_round_trips_through_jetstream() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let id = Identity::generate();
        let me = id.address().to_string();
        let m = MsgMeta::default;
        let d = Duration::from_secs(5);
        let open = WindowOpen {
            version: WIRE_VERSION,
            window: 1,
            randomness: Hash32::from([2; 32]),
            chain_anchor: Hash32::from([3; 32]),
            chain_position: 1,
            chain_value: Hash32::from([4; 32]),
            opened_at_ms: 10,
            deadline_ms: 20,
        };
        let close = WindowClose {
            version: WIRE_VERSION,
            window: 1,
            randomness: Hash32::from([5; 32]),
            chain_anchor: Hash32::from([3; 32]),
            chain_position: 2,
            chain_value: Hash32::from([6; 32]),
            closed_at_ms: 30,
        };
        let group = sample_group(&id, 1, 0);
        let verdict = GroupVerdict {
            version: WIRE_VERSION,
            window: 1,
            miner: me.clone(),
            group_index: 0,
            group_digest: Hash32::from([8; 32]),
            verifier: me.clone(),
            accepted: false,
            reason: Some(messages::RejectCode::SketchMismatch),
            deep_checked: true,
            unique_rollouts: 16,
            learning_signal: true,
            mean_reward: 0.25,
            server_ts_ms: 99,
            success_rollouts: 0,
        };
        let mverdict = MinerWindowVerdict {
            version: WIRE_VERSION,
            window: 1,
            miner: me.clone(),
            verifier: me.clone(),
            passed: true,
            reason: None,
            groups_seen: 2,
            groups_accepted: 2,
            unique_rollouts: 32,
            signal_groups: 1,
        };
        let ckpt = CheckpointAnnounce {
            version: WIRE_VERSION,
            checkpoint: Hash32::from([9; 32]),
            seq: 4,
            valid_from_window: 7,
            kind: CheckpointKind::Delta {
                base: Hash32::from([10; 32]),
                anchor: Hash32::from([11; 32]),
            },
            object: subj::checkpoint_object(4, &Hash32::from([9; 32]).to_string()),
            bytes: 1234,
            object_digest: Hash32::from([12; 32]),
            catch_up: None,
            sampling: SamplingSpec::default(),
            created_at_ms: 5,
        };
        let weights = Weights {
            version: WIRE_VERSION,
            window: 1,
            entries: vec![WeightEntry {
                miner: me.clone(),
                score: 2.0,
                weight: 1.0,
                weight_u16: 65535,
            }],
        };
        bus.publish_durable("t", subj::window_open(1), open.clone(), &id, m(), d)
            .await
            .unwrap();
        bus.publish_durable("t", subj::window_close(1), close.clone(), &id, m(), d)
            .await
            .unwrap();
        bus.publish_durable("t", subj::rollout(1, &me), group.clone(), &id, m(), d)
            .await
            .unwrap();
        bus.publish_durable(
            "t",
            subj::group_verdict(1, &me),
            verdict.clone(),
            &id,
            m(),
            d,
        )
        .await
        .unwrap();
        bus.publish_durable(
            "t",
            subj::miner_verdict(1, &me),
            mverdict.clone(),
            &id,
            m(),
            d,
        )
        .await
        .unwrap();
        bus.publish_durable("t", subj::checkpoint(4), ckpt.clone(), &id, m(), d)
            .await
            .unwrap();
        bus.publish_durable("t", subj::weights(1), weights.clone(), &id, m(), d)
            .await
            .unwrap();

        async fn last<T: SignedMessage>(bus: &Bus, stream: &str, subject: &str) -> T {
            let s = bus.js.get_stream(stream).await.unwrap();
            let raw = s.get_last_raw_message_by_subject(subject).await.unwrap();
            let (env, _) = Envelope::<T>::open(&raw.payload, 1 << 23).unwrap();
            env.payload
        }
        assert_eq!(
            last::<WindowOpen>(&bus, subj::STREAM_CLOCK, &subj::window_open(1)).await,
            open
        );
        assert_eq!(
            last::<WindowClose>(&bus, subj::STREAM_CLOCK, &subj::window_close(1)).await,
            close
        );
        assert_eq!(
            last::<RolloutGroup>(&bus, subj::STREAM_ROLLOUTS, &subj::rollout(1, &me)).await,
            group
        );
        assert_eq!(
            last::<GroupVerdict>(&bus, subj::STREAM_VERDICTS, &subj::group_verdict(1, &me)).await,
            verdict
        );
        assert_eq!(
            last::<MinerWindowVerdict>(&bus, subj::STREAM_VERDICTS, &subj::miner_verdict(1, &me))
                .await,
            mverdict
        );
        assert_eq!(
            last::<CheckpointAnnounce>(&bus, subj::STREAM_CHECKPOINTS, &subj::checkpoint(4)).await,
            ckpt
        );
        assert_eq!(
            last::<Weights>(&bus, subj::STREAM_WEIGHTS, &subj::weights(1)).await,
            weights
        );

        // Headers carry readable metadata; a retry with the same Nats-Msg-Id is de-duplicated.
        let meta = MsgMeta {
            window: Some(1),
            miner: Some(me.clone()),
            msg_id: Some("dup-1".into()),
        };
        for _ in 0..3 {
            bus.publish_durable(
                "t",
                subj::rollout(1, &me),
                sample_group(&id, 1, 5),
                &id,
                meta.clone(),
                d,
            )
            .await
            .unwrap();
        }
        let mut s = bus.js.get_stream(subj::STREAM_ROLLOUTS).await.unwrap();
        assert_eq!(
            s.info().await.unwrap().state.messages,
            2,
            "duplicates must collapse"
        );
        let raw = s
            .get_last_raw_message_by_subject(&subj::rollout(1, &me))
            .await
            .unwrap();
        let h = raw.headers;
        assert_eq!(h.get(subj::HDR_KIND).unwrap().as_str(), "rollout_group");
        assert_eq!(h.get(subj::HDR_WINDOW).unwrap().as_str(), "1");
        assert_eq!(h.get(subj::HDR_MINER).unwrap().as_str(), me);
    });
}

#[test]
fn a_group_of_16_long_rollouts_fits_the_configured_payload() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let id = Identity::generate();
        let mut g = sample_group(&id, 1, 0);
        let r = &g.rollouts[0];
        let long = Rollout {
            tokens: PackedU32((0..8192).collect()),
            prompt_len: 192,
            sketches: PackedU32(vec![1; 8000]),
            logprobs: PackedF32(vec![-0.5; 8000]),
            ..r.clone()
        };
        g.rollouts = vec![long; 16];
        let bytes = Envelope::seal(g.clone(), &id).to_bytes().len();
        assert!(
            bytes > 1 << 20,
            "the test must exceed NATS' 1 MiB default ({bytes})"
        );
        bus.publish_durable(
            "t",
            subj::rollout(1, id.address()),
            g,
            &id,
            MsgMeta::default(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    });
}

#[test]
fn two_verifiers_share_the_durable_consumer_without_double_handling() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let id = Identity::generate();
        let n = 120u32;
        for g in 0..n {
            // At most `max_groups_per_window` groups per (window, miner) are stored.
            let window = 1 + u64::from(g) / 60;
            bus.publish_durable(
                "t",
                subj::rollout(window, id.address()),
                sample_group(&id, window, g),
                &id,
                MsgMeta::default(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        }
        let consumer = verifier_consumer(&bus.js, Duration::from_secs(30))
            .await
            .unwrap();
        let seen: Arc<std::sync::Mutex<Vec<(usize, u32)>>> = Default::default();
        let mut tasks = Vec::new();
        for worker in 0..2 {
            let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> =
                consumer.clone();
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                let mut msgs = consumer
                    .stream()
                    .max_messages_per_batch(5)
                    .messages()
                    .await
                    .unwrap();
                while let Ok(Some(Ok(msg))) =
                    tokio::time::timeout(Duration::from_secs(2), msgs.next()).await
                {
                    let (env, _) = Envelope::<RolloutGroup>::open(&msg.payload, 1 << 23).unwrap();
                    seen.lock().unwrap().push((worker, env.payload.group_index));
                    msg.double_ack().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let seen = seen.lock().unwrap();
        let unique: HashSet<u32> = seen.iter().map(|(_, g)| *g).collect();
        assert_eq!(seen.len(), n as usize, "no group handled twice");
        assert_eq!(unique.len(), n as usize, "every group handled");
        assert!(
            seen.iter().any(|(w, _)| *w == 0) && seen.iter().any(|(w, _)| *w == 1),
            "both verifiers got work"
        );
    });
}

/// Panics on its first call for every group, like a GPU worker hitting a driver fault.
struct CrashOnce {
    inner: StructuralMiner,
    crashed: Arc<std::sync::Mutex<HashSet<u32>>>,
}

impl MinerCompute for CrashOnce {
    fn mine(&mut self, job: &MineJob) -> Result<RolloutGroup, ComputeError> {
        if self.crashed.lock().unwrap().insert(job.group_index) {
            panic!("simulated worker crash on group {}", job.group_index);
        }
        self.inner.mine(job)
    }
    fn checkpoint(&self) -> Hash32 {
        Hash32::default()
    }
}

#[test]
fn a_panicking_miner_worker_is_restarted_and_its_groups_still_get_published_and_verified() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, 1500);
        let crashed: Arc<std::sync::Mutex<HashSet<u32>>> = Default::default();
        let starts = Arc::new(AtomicUsize::new(0));
        let (c, s) = (crashed.clone(), starts.clone());
        let mut pc = PoolConfig::new("miner", 1);
        pc.initial_backoff = Duration::from_millis(5);
        let pool = WorkerPool::start(
            pc,
            Arc::new(move |_| {
                s.fetch_add(1, Ordering::SeqCst);
                Ok(MinerWorker(Box::new(CrashOnce {
                    inner: StructuralMiner {
                        checkpoint: Hash32::default(),
                    },
                    crashed: c.clone(),
                })))
            }),
            bus.metrics.clone(),
        );
        let mctx = ctx(&bus, "miner", 0);
        let miner_addr = mctx.identity.address().to_string();
        actors::supervisor::start(
            mctx.clone(),
            Arc::new(Miner::new(mctx, MinerConfig::groups(2), Arc::new(pool))),
        );
        start_structural_verifier(&bus);

        let mut verdicts = bus.client.subscribe(subj::VERDICT_GROUP_ALL).await.unwrap();
        let mut accepted = HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while accepted.len() < 2 {
            let msg = tokio::time::timeout_at(deadline, verdicts.next())
                .await
                .expect("verdicts in time")
                .unwrap();
            let (env, _) = Envelope::<GroupVerdict>::open(&msg.payload, 1 << 23).unwrap();
            let v = env.payload;
            assert_eq!(v.miner, miner_addr);
            assert!(v.accepted, "structural group rejected: {:?}", v.reason);
            if v.window == 1 {
                accepted.insert(v.group_index);
            }
        }
        let restarts: u64 = bus
            .metrics
            .worker_restarts
            .with_label_values(&["miner", "0"])
            .get();
        assert!(
            restarts >= 2,
            "each crashed group restarts the worker (got {restarts})"
        );
        assert!(starts.load(Ordering::SeqCst) >= 3);
    });
}

#[test]
fn hostile_rollouts_are_refused_and_counted_while_the_verifier_keeps_working() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, 1500);
        start_structural_verifier(&bus);

        let honest = Identity::generate();
        let thief = Identity::generate();
        let subject = subj::rollout(1, honest.address());
        let js = &bus.js;
        // Malformed msgpack.
        js.publish(
            subject.clone(),
            bytes::Bytes::from_static(b"\x93\xc1garbage"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        // Oversized for the verifier's limit but within the server's: a 2 MB group with a tiny verifier limit is
        // simulated by a payload of random bytes larger than 1 MiB that is still under max_payload.
        js.publish(subject.clone(), bytes::Bytes::from(vec![0x90u8; 3 << 20]))
            .await
            .unwrap()
            .await
            .unwrap();
        // Unsigned (zero signature) and wrongly signed (by another key) envelopes.
        let mut unsigned = Envelope::seal(sample_group(&honest, 1, 0), &honest);
        unsigned.signature = Signature64::default();
        js.publish(subject.clone(), unsigned.to_bytes().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let forged = Envelope::seal(sample_group(&honest, 1, 1), &thief);
        js.publish(subject.clone(), forged.to_bytes().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let mut tampered = Envelope::seal(sample_group(&honest, 1, 2), &honest);
        tampered.payload.rollouts[0].reward = 99.0;
        js.publish(subject.clone(), tampered.to_bytes().into())
            .await
            .unwrap()
            .await
            .unwrap();

        let m = bus.metrics.clone();
        let rejected = |reason: &str| {
            m.messages_rejected
                .with_label_values(&["verifier", reason])
                .get()
        };
        assert!(
            eventually(Duration::from_secs(10), || rejected("malformed") >= 2
                && rejected("bad_signature") >= 2
                && rejected("signer_mismatch") >= 1)
            .await,
            "malformed {} bad_signature {} signer_mismatch {}",
            rejected("malformed"),
            rejected("bad_signature"),
            rejected("signer_mismatch")
        );
        // The verifier is alive: a genuine group still gets a verdict.
        let mut verdicts = bus.client.subscribe(subj::VERDICT_GROUP_ALL).await.unwrap();
        let miner = StructuralMiner {
            checkpoint: Hash32::default(),
        };
        let book = actors::windows::WindowBook::default();
        actix_rt::spawn(actors::windows::follow_clock(
            bus.clone(),
            "test",
            book.clone(),
        ));
        let open = loop {
            if let Some(o) = book.latest_open() {
                if o.deadline_ms > actors::bus::now_ms() + 300 {
                    break o;
                }
            }
            book.changed(Duration::from_millis(200)).await;
        };
        let mut m2 = miner;
        let group = m2
            .mine(&MineJob {
                window: open.window,
                open_randomness: open.randomness.0,
                deadline_ms: open.deadline_ms,
                group_index: 0,
                miner: honest.address().to_string(),
                miner_pubkey: honest.public(),
                checkpoint: None,
            })
            .unwrap();
        bus.publish_durable(
            "t",
            subj::rollout(open.window, honest.address()),
            group,
            &honest,
            MsgMeta::default(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(15), verdicts.next())
            .await
            .expect("verdict")
            .unwrap();
        let (env, _) = Envelope::<GroupVerdict>::open(&msg.payload, 1 << 23).unwrap();
        assert!(env.payload.accepted, "{:?}", env.payload.reason);
        assert_eq!(
            bus.metrics
                .actor_restarts
                .with_label_values(&["verifier"])
                .get(),
            0,
            "no actor died"
        );
    });
}
