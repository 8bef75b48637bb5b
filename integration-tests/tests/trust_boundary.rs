//! The trust boundary attacked as an outsider would: a fresh sr25519 key and the NATS URL
//! (and, where it says so, a stolen operator key). Each attack is a message or a handful,
//! sent while an honest network runs; honest miners keep their weights, training continues,
//! and every refusal is counted by its reason.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::bus::{Bus, MsgMeta};
use actors::compute::structural::StructuralVerifier;
use actors::compute::ComputeError;
use actors::roles::trainer::{TrainJob, TrainReport, Trainer, TrainerCompute, TrainerWorker};
use actors::worker_pool::{PoolConfig, WorkerPool};
use async_nats::HeaderMap;
use grail_integration_tests::observe::*;
use grail_integration_tests::*;
use messages::envelope::payload_digest;
use messages::subjects as subj;
use messages::*;

fn rejected(bus: &Bus, role: &str, reason: &str) -> u64 {
    bus.metrics
        .messages_rejected
        .with_label_values(&[role, reason])
        .get()
}

/// Print what each role refused, by reason (`--nocapture` shows the attack's refusal counts).
fn report(bus: &Bus, attack: &str) {
    let text = bus.metrics.render();
    let counts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("grail_messages_rejected_total"))
        .collect();
    eprintln!("attack-report: {attack}: {}", counts.join(" "));
}

/// Publish raw bytes with a chosen de-duplication id, as any NATS client can.
async fn publish_raw(bus: &Bus, subject: String, bytes: Vec<u8>, msg_id: Option<&str>) {
    let mut headers = HeaderMap::new();
    if let Some(id) = msg_id {
        headers.insert(subj::HDR_MSG_ID, id);
    }
    bus.js
        .publish_with_headers(subject, headers, bytes.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

// ---------------------------------------------------------------- message builders

/// A one-rollout group of `miner` (1 prompt token, then `completion`).
fn group(miner: &str, window: u64, index: u32, completion: u32) -> RolloutGroup {
    RolloutGroup {
        version: WIRE_VERSION,
        window,
        miner: miner.to_string(),
        group_index: index,
        nonce: u64::from(index),
        checkpoint: Hash32::default(),
        env: "structural".into(),
        problem_seed: 1,
        problem_id: "p".into(),
        rollouts: vec![Rollout {
            tokens: PackedU32(vec![1, completion]),
            prompt_len: 1,
            sketches: PackedU32(vec![0]),
            logprobs: PackedF32(vec![-1.0]),
            reward: 0.0,
            advantage: 0.0,
            success: false,
        }],
    }
}

fn verdict(
    window: u64,
    miner: &str,
    index: u32,
    digest: Hash32,
    verifier: &str,
    accepted: bool,
) -> GroupVerdict {
    GroupVerdict {
        version: WIRE_VERSION,
        window,
        miner: miner.to_string(),
        group_index: index,
        group_digest: digest,
        verifier: verifier.to_string(),
        accepted,
        reason: (!accepted).then_some(messages::RejectCode::SketchMismatch),
        deep_checked: true,
        unique_rollouts: 16,
        learning_signal: true,
        mean_reward: 1.0,
        server_ts_ms: 0,
        success_rollouts: 0,
    }
}

fn miner_verdict(window: u64, miner: &str, scorer: &str, passed: bool) -> MinerWindowVerdict {
    MinerWindowVerdict {
        version: WIRE_VERSION,
        window,
        miner: miner.to_string(),
        verifier: scorer.to_string(),
        passed,
        reason: None,
        groups_seen: 4,
        groups_accepted: 4,
        unique_rollouts: 64,
        signal_groups: 4,
    }
}

/// Weights giving each of `miners` an equal share.
fn weights(window: u64, miners: &[&str]) -> Weights {
    let share = 1.0 / miners.len().max(1) as f32;
    Weights {
        version: WIRE_VERSION,
        window,
        entries: miners
            .iter()
            .map(|m| WeightEntry {
                miner: m.to_string(),
                score: 1.0,
                weight: share,
                weight_u16: (share * 65535.0) as u16,
            })
            .collect(),
    }
}

/// What the trainer was asked to train on: (window, miner, group index).
type Trained = Arc<Mutex<BTreeSet<(u64, String, u32)>>>;

struct RecordingTrainer(Trained);

impl TrainerCompute for RecordingTrainer {
    fn train(&mut self, job: &TrainJob) -> Result<TrainReport, ComputeError> {
        let mut seen = self.0.lock().unwrap();
        for g in &job.groups {
            seen.insert((g.window, g.miner.clone(), g.group_index));
        }
        Ok(TrainReport::default())
    }
}

fn start_trainer(bus: &Bus) -> Trained {
    let trained = Trained::default();
    let t = trained.clone();
    let pool = WorkerPool::start(
        PoolConfig::new("trainer", 1),
        Arc::new(move |_| Ok(TrainerWorker(Box::new(RecordingTrainer(t.clone()))))),
        bus.metrics.clone(),
    );
    let ctx = role_ctx(bus, "trainer", "trainer-0");
    actors::supervisor::start(ctx.clone(), Arc::new(Trainer::new(ctx, Arc::new(pool))));
    trained
}

/// Clock, two honest structural miners (2 groups a window), a verifier, the scorer and a
/// recording trainer. Returns the honest miners' addresses and the trainer's record.
fn honest_network(bus: &Bus) -> (Vec<String>, Trained) {
    start_clock(bus, WINDOW_MS);
    let miners = (0..2)
        .map(|i| {
            start_miner(role_ctx(bus, "miner", &format!("miner-{i}")), 2, 1, |_| {
                structural()
            })
        })
        .collect();
    start_verifier(
        role_ctx(bus, "verifier", "verifier-0"),
        4,
        Duration::from_secs(10),
        |_| Box::new(StructuralVerifier),
    );
    start_scorer(bus);
    (miners, start_trainer(bus))
}

/// Trusted weights (signed by a scorer key of the manifest) per window.
async fn trusted_weights(bus: &Bus) -> Vec<Weights> {
    stream_messages::<Weights>(bus, subj::STREAM_WEIGHTS, "grail.weights.").await
}

fn weight_of(w: &Weights, miner: &str) -> f32 {
    w.entries
        .iter()
        .find(|e| e.miner == miner)
        .map_or(0.0, |e| e.weight)
}

/// Wait for trusted weights of two windows in which both honest miners were scored.
async fn two_scored_windows(bus: &Bus, miners: &[String]) -> Vec<Weights> {
    let both = |w: &Weights| miners.iter().all(|m| weight_of(w, m) > 0.0);
    assert!(
        eventually_async(Duration::from_secs(60), || async {
            trusted_weights(bus)
                .await
                .iter()
                .filter(|w| both(w))
                .count()
                >= 2
        })
        .await,
        "honest miners were not scored in two windows: {}",
        summary(bus).await
    );
    trusted_weights(bus).await
}

#[test]
fn forged_verdicts_weights_and_miner_verdicts_from_an_unknown_key_change_nothing() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let (miners, trained) = honest_network(&bus);
        let attacker = Identity::generate();
        let me = attacker.address().to_string();
        let attacked: Arc<Mutex<BTreeSet<GroupKey>>> = Default::default();
        let (a_bus, a_seen, a_id) = (bus.clone(), attacked.clone(), attacker.clone());
        // The attacker watches the rollout stream and, for every honest group, races the
        // verifier: a forged rejection under the verifier's own de-duplication id (the group
        // digest anyone can compute), forged acceptances and a passing miner verdict for
        // itself, and weights that give it everything.
        actix_rt::spawn(async move {
            loop {
                for (_, payload) in
                    stream_raw(&a_bus, subj::STREAM_ROLLOUTS, "grail.rollout.").await
                {
                    let Ok((env, digest)) = Envelope::<RolloutGroup>::open(&payload, 1 << 23)
                    else {
                        continue;
                    };
                    let g = env.payload;
                    if !a_seen
                        .lock()
                        .unwrap()
                        .insert((g.window, g.miner.clone(), g.group_index))
                    {
                        continue;
                    }
                    let me = a_id.address();
                    let reject = verdict(g.window, &g.miner, g.group_index, digest, me, false);
                    publish_raw(
                        &a_bus,
                        subj::group_verdict(g.window, &g.miner),
                        Envelope::seal(reject, &a_id).to_bytes(),
                        Some(&subj::verdict_msg_id(&digest)),
                    )
                    .await;
                    let mine = verdict(g.window, me, g.group_index, digest, me, true);
                    publish_raw(
                        &a_bus,
                        subj::group_verdict(g.window, me),
                        Envelope::seal(mine, &a_id).to_bytes(),
                        None,
                    )
                    .await;
                    publish_raw(
                        &a_bus,
                        subj::miner_verdict(g.window, me),
                        Envelope::seal(miner_verdict(g.window, me, me, true), &a_id).to_bytes(),
                        None,
                    )
                    .await;
                    let all_mine = Envelope::seal(weights(g.window, &[me]), &a_id);
                    publish_raw(&a_bus, subj::weights(g.window), all_mine.to_bytes(), None).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let weights = two_scored_windows(&bus, &miners).await;
        for w in &weights {
            assert_eq!(
                weight_of(w, &me),
                0.0,
                "window {}: the attacker got weight",
                w.window
            );
        }
        let scored: Vec<&Weights> = weights
            .iter()
            .filter(|w| miners.iter().all(|m| weight_of(w, m) > 0.0))
            .collect();
        for w in &scored {
            let sum: f32 = miners.iter().map(|m| weight_of(w, m)).sum();
            assert!(
                (sum - 1.0).abs() < 1e-3,
                "window {}: honest weights sum to {sum}",
                w.window
            );
        }
        // Every honest group the attacker raced still has a trusted, accepting verdict.
        let verdicts = stored_verdicts(&bus).await;
        let upto = scored.last().unwrap().window;
        let raced: Vec<GroupKey> = attacked
            .lock()
            .unwrap()
            .iter()
            .filter(|k| k.0 <= upto)
            .cloned()
            .collect();
        assert!(!raced.is_empty());
        for key in &raced {
            let v = verdicts
                .get(key)
                .unwrap_or_else(|| panic!("{key:?} has no trusted verdict"));
            assert!(
                v.iter().all(|v| v.accepted && v.verifier != me),
                "{key:?}: {v:?}"
            );
        }
        assert!(rejected(&bus, "scorer", "unauthorized_signer") >= 1);
        assert!(rejected(&bus, "trainer", "unauthorized_signer") >= 1);
        assert!(
            rejected(&bus, "verifier", "dedup_squatted") >= 1,
            "the verifier never noticed its id was taken"
        );
        // The trainer trained honest groups only.
        assert!(
            eventually(Duration::from_secs(20), || !trained
                .lock()
                .unwrap()
                .is_empty())
            .await,
            "nothing trained"
        );
        let trained = trained.lock().unwrap().clone();
        assert!(
            trained.iter().all(|(_, m, _)| miners.contains(m)),
            "{trained:?}"
        );
        report(
            &bus,
            "forged_verdicts_weights_and_miner_verdicts_from_an_unknown_key_change_nothing",
        );
    });
}

/// Someone takes a message's de-duplication id first (on the same subject, or on their own
/// subject of the same stream): the real publisher notices and stores its message anyway.
#[test]
fn squatted_deduplication_ids_are_detected_on_every_publishing_subject() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let attacker = Identity::generate();
        let squat = |subject: String, id: String| {
            let (bus, attacker) = (bus.clone(), attacker.clone());
            async move {
                let junk = Envelope::seal(
                    Heartbeat {
                        version: WIRE_VERSION,
                        role: "miner".into(),
                        instance: "x".into(),
                        ts_ms: 0,
                        status: "ok".into(),
                        in_flight: 0,
                    },
                    &attacker,
                );
                publish_raw(&bus, subject, junk.to_bytes(), Some(&id)).await;
            }
        };
        async fn publish_and_check<T: SignedMessage + Clone>(
            bus: &Bus,
            role: &str,
            subject: String,
            payload: T,
            signer: &Identity,
            id: String,
            stream: &str,
        ) {
            let before = rejected(bus, role, "dedup_squatted");
            let meta = MsgMeta {
                msg_id: Some(id.clone()),
                ..Default::default()
            };
            bus.publish_durable(
                role,
                subject.clone(),
                payload,
                signer,
                meta,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
            assert_eq!(
                rejected(bus, role, "dedup_squatted"),
                before + 1,
                "{subject} ({id})"
            );
            let stored = stream_raw(bus, stream, &subject).await;
            let ours = stored
                .iter()
                .filter(|(s, p)| {
                    s == &subject
                        && Envelope::<T>::open(p, 1 << 23)
                            .is_ok_and(|(e, _)| e.signer == signer.address())
                })
                .count();
            assert_eq!(ours, 1, "{subject}: the real message is not stored");
        }
        let w = 3u64;
        let clock = role_identity("clock");
        let open = WindowOpen {
            version: WIRE_VERSION,
            window: w,
            randomness: Hash32::from([1; 32]),
            chain_anchor: Hash32::from([2; 32]),
            chain_position: w,
            chain_value: Hash32::from([3; 32]),
            opened_at_ms: 1,
            deadline_ms: 2,
        };
        let id = subj::clock_msg_id(w, "open", &open.chain_value);
        squat(subj::window_open(w), id.clone()).await;
        publish_and_check(
            &bus,
            "clock",
            subj::window_open(w),
            open,
            &clock,
            id,
            subj::STREAM_CLOCK,
        )
        .await;

        // A miner's group: the attacker squats from its own rollout subject.
        let miner = Identity::generate();
        let group = group(miner.address(), w, 0, 2);
        let id = subj::rollout_msg_id(&payload_digest(&group));
        squat(subj::rollout(w, attacker.address()), id.clone()).await;
        publish_and_check(
            &bus,
            "miner",
            subj::rollout(w, miner.address()),
            group,
            &miner,
            id,
            subj::STREAM_ROLLOUTS,
        )
        .await;

        let verifier = role_identity("verifier");
        let verdict = verdict(
            w,
            miner.address(),
            0,
            Hash32::from([9; 32]),
            verifier.address(),
            true,
        );
        let id = subj::verdict_msg_id(&verdict.group_digest);
        squat(subj::group_verdict(w, miner.address()), id.clone()).await;
        publish_and_check(
            &bus,
            "verifier",
            subj::group_verdict(w, miner.address()),
            verdict,
            &verifier,
            id,
            subj::STREAM_VERDICTS,
        )
        .await;

        let scorer = role_identity("scorer");
        let ws = weights(w, &[]);
        let id = subj::content_msg_id(Weights::KIND, &payload_digest(&ws));
        squat(subj::weights(w), id.clone()).await;
        publish_and_check(
            &bus,
            "scorer",
            subj::weights(w),
            ws,
            &scorer,
            id,
            subj::STREAM_WEIGHTS,
        )
        .await;

        let mv = miner_verdict(w, miner.address(), scorer.address(), true);
        let id = subj::content_msg_id(MinerWindowVerdict::KIND, &payload_digest(&mv));
        squat(subj::miner_verdict(w, miner.address()), id.clone()).await;
        publish_and_check(
            &bus,
            "scorer",
            subj::miner_verdict(w, miner.address()),
            mv,
            &scorer,
            id,
            subj::STREAM_VERDICTS,
        )
        .await;

        let publisher = role_identity("publisher");
        let announce = CheckpointAnnounce {
            version: WIRE_VERSION,
            checkpoint: Hash32::from([4; 32]),
            seq: 1,
            valid_from_window: 2,
            kind: CheckpointKind::Full,
            object: subj::checkpoint_object(1, &Hash32::from([4; 32]).to_string()),
            bytes: 1,
            object_digest: Hash32::from([5; 32]),
            catch_up: None,
            sampling: SamplingSpec::default(),
            created_at_ms: 0,
        };
        let id = subj::checkpoint_msg_id(&announce.checkpoint.to_string());
        squat(subj::checkpoint(1), id.clone()).await;
        publish_and_check(
            &bus,
            "publisher",
            subj::checkpoint(1),
            announce,
            &publisher,
            id,
            subj::STREAM_CHECKPOINTS,
        )
        .await;

        let trainer = role_identity("trainer");
        let candidate = CheckpointCandidate {
            version: WIRE_VERSION,
            trainer: trainer.address().to_string(),
            checkpoint: Hash32::from([6; 32]),
            trained_from: Hash32::from([4; 32]),
            object: subj::staging_object(&Hash32::from([6; 32]).to_string()),
            bytes: 1,
            object_digest: Hash32::from([7; 32]),
            last_window: w,
            steps: 1,
            created_at_ms: 0,
        };
        let id = subj::candidate_msg_id(&candidate.checkpoint.to_string());
        squat(subj::checkpoint_candidate(w), id.clone()).await;
        publish_and_check(
            &bus,
            "trainer",
            subj::checkpoint_candidate(w),
            candidate,
            &trainer,
            id,
            subj::STREAM_CHECKPOINTS,
        )
        .await;

        // An honest duplicate (a retry of our own message) is not a squat.
        let retry = weights(w + 1, &[]);
        let id = subj::content_msg_id(Weights::KIND, &payload_digest(&retry));
        let before = rejected(&bus, "scorer", "dedup_squatted");
        for _ in 0..2 {
            let meta = MsgMeta {
                msg_id: Some(id.clone()),
                ..Default::default()
            };
            bus.publish_durable(
                "scorer",
                subj::weights(w + 1),
                retry.clone(),
                &scorer,
                meta,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        }
        assert_eq!(rejected(&bus, "scorer", "dedup_squatted"), before);
        assert_eq!(
            stream_raw(&bus, subj::STREAM_WEIGHTS, &subj::weights(w + 1))
                .await
                .len(),
            1
        );
        report(
            &bus,
            "squatted_deduplication_ids_are_detected_on_every_publishing_subject",
        );
    });
}

#[test]
fn clock_messages_re_signed_by_another_key_are_refused_and_the_real_deadlines_stand() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, WINDOW_MS);
        let attacker = Identity::generate();
        let (a_bus, a_id) = (bus.clone(), attacker.clone());
        // Re-sign every real open with a 1 ms deadline and again with +1 h, and publish them.
        actix_rt::spawn(async move {
            let mut done = BTreeSet::new();
            loop {
                for (subject, payload) in
                    stream_raw(&a_bus, subj::STREAM_CLOCK, "grail.clock.").await
                {
                    let Ok((env, _)) = Envelope::<WindowOpen>::open(&payload, 1 << 20) else {
                        continue;
                    };
                    if env.signer == a_id.address() || !done.insert(env.payload.window) {
                        continue;
                    }
                    for deadline in [
                        env.payload.opened_at_ms + 1,
                        env.payload.deadline_ms + 3_600_000,
                    ] {
                        let forged = WindowOpen {
                            deadline_ms: deadline,
                            ..env.payload.clone()
                        };
                        publish_raw(
                            &a_bus,
                            subject.clone(),
                            Envelope::seal(forged, &a_id).to_bytes(),
                            None,
                        )
                        .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(WINDOW_MS * 2)).await;
        // A role joining now replays the stream with both real and forged opens in it.
        let book = follow_windows(&bus);
        assert!(
            eventually(Duration::from_secs(20), || book
                .latest_closed()
                .unwrap_or(0)
                >= 3)
            .await,
            "clock stopped"
        );
        for w in 1..=3 {
            let open = book.get(w).open.expect("opened");
            assert_eq!(
                open.deadline_ms - open.opened_at_ms,
                WINDOW_MS * 6 / 10,
                "window {w}: a forged deadline was taken"
            );
        }
        assert!(rejected(&bus, "test", "unauthorized_signer") >= 2);
        report(
            &bus,
            "clock_messages_re_signed_by_another_key_are_refused_and_the_real_deadlines_stand",
        );
    });
}

#[test]
fn hostile_fields_even_from_trusted_keys_are_refused_and_the_roles_keep_going() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let (miners, trained) = honest_network(&bus);
        // Stolen operator keys: still no string slicing, subject building or far-future state.
        let verifier = role_identity("verifier");
        let scorer = role_identity("scorer");
        let victim = &miners[0];
        let hostile_names = ["x".repeat(6000), "5".to_string(), "a.b.>".to_string()];
        for name in &hostile_names {
            let v = verdict(1, name, 0, Hash32::default(), verifier.address(), true);
            publish_raw(
                &bus,
                subj::group_verdict(1, victim),
                Envelope::seal(v, &verifier).to_bytes(),
                None,
            )
            .await;
            let w = weights(1, &[name]);
            publish_raw(
                &bus,
                subj::weights(1),
                Envelope::seal(w, &scorer).to_bytes(),
                None,
            )
            .await;
        }
        // A passing verdict for window 10^12: the trainer must not record it as trained.
        let far = miner_verdict(1_000_000_000_000, victim, scorer.address(), true);
        // Sent once the trainer follows the clock, so it knows where the clock is.
        tokio::time::sleep(Duration::from_millis(WINDOW_MS)).await;
        publish_raw(
            &bus,
            subj::miner_verdict(far.window, victim),
            Envelope::seal(far, &scorer).to_bytes(),
            None,
        )
        .await;
        // A group whose token id is far above the vocabulary, signed by its own (fresh) miner.
        let poisoner = Identity::generate();
        let book = follow_windows(&bus);
        assert!(eventually(Duration::from_secs(20), || book.latest_open().is_some()).await);
        let current = book.latest_open().unwrap().window;
        let poison = group(poisoner.address(), current, 0, 0xFFFF_FFF0);
        publish_raw(
            &bus,
            subj::rollout(current, poisoner.address()),
            Envelope::seal(poison, &poisoner).to_bytes(),
            None,
        )
        .await;

        let weights = two_scored_windows(&bus, &miners).await;
        assert!(weights
            .iter()
            .all(|w| w.entries.iter().all(|e| miners.contains(&e.miner))));
        assert!(
            rejected(&bus, "scorer", "bad_field") >= 3,
            "hostile verdict names"
        );
        assert!(rejected(&bus, "trainer", "far_future_window") >= 1);
        assert!(
            rejected(&bus, "verifier", "bad_field") >= 1,
            "poison token id"
        );
        assert!(
            eventually(Duration::from_secs(30), || trained
                .lock()
                .unwrap()
                .iter()
                .any(|k| k.0 > current))
            .await,
            "training stopped after the far-future verdict"
        );
        assert_eq!(
            bus.metrics
                .actor_restarts
                .with_label_values(&["trainer"])
                .get(),
            0
        );
        assert_eq!(
            bus.metrics
                .actor_restarts
                .with_label_values(&["scorer"])
                .get(),
            0
        );
        report(
            &bus,
            "hostile_fields_even_from_trusted_keys_are_refused_and_the_roles_keep_going",
        );
    });
}

#[test]
fn far_future_groups_and_a_flood_of_fresh_keys_do_not_starve_honest_miners() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let (miners, _) = honest_network(&bus);
        let book = follow_windows(&bus);
        assert!(eventually(Duration::from_secs(20), || book.latest_open().is_some()).await);
        let current = book.latest_open().unwrap().window;
        let limits = messages::manifest::NetworkLimits::default();
        // 40 fresh keys, each trying to store 80 junk groups in this window (above the
        // per-key quota), plus one group each for window current + 1000.
        let flooders: Vec<Identity> = (0..40).map(|_| Identity::generate()).collect();
        let junk = |id: &Identity, window: u64, index: u32| group(id.address(), window, index, 2);
        let mut refused_by_quota = 0;
        for id in &flooders {
            for i in 0..80u32 {
                let bytes = Envelope::seal(junk(id, current, i), id).to_bytes();
                let stored = bus
                    .js
                    .publish(subj::rollout(current, id.address()), bytes.into())
                    .await
                    .unwrap()
                    .await;
                if stored.is_err() {
                    refused_by_quota += 1;
                }
            }
            let far = Envelope::seal(junk(id, current + 1000, 0), id).to_bytes();
            publish_raw(&bus, subj::rollout(current + 1000, id.address()), far, None).await;
        }
        let per_key = 80 - limits.max_groups_per_window as usize;
        assert_eq!(
            refused_by_quota,
            flooders.len() * per_key,
            "the stream did not enforce the per-key quota"
        );
        let stored = actors::bus::subject_counts(
            &bus.js,
            subj::STREAM_ROLLOUTS,
            &subj::rollout_window(current),
        )
        .await
        .unwrap();
        assert!(
            stored
                .iter()
                .all(|(_, n)| *n <= limits.max_groups_per_window as usize),
            "{stored:?}"
        );
        // Far-future groups are refused at once, not parked until a window that never comes.
        assert!(
            eventually(Duration::from_secs(30), || rejected(
                &bus,
                "verifier",
                "far_future_window"
            ) >= flooders.len() as u64)
            .await,
            "far-future groups: {} refused",
            rejected(&bus, "verifier", "far_future_window")
        );
        // Honest miners are still verified and weighted in the windows after the flood.
        let weights = two_scored_windows(&bus, &miners).await;
        let after: Vec<&Weights> = weights
            .iter()
            .filter(|w| w.window > current && miners.iter().all(|m| weight_of(w, m) > 0.0))
            .collect();
        assert!(
            eventually_async(Duration::from_secs(60), || async {
                trusted_weights(&bus)
                    .await
                    .iter()
                    .any(|w| w.window > current && miners.iter().all(|m| weight_of(w, m) > 0.0))
            })
            .await,
            "honest miners lost their weight after the flood ({} windows scored): {}",
            after.len(),
            summary(&bus).await
        );
        report(
            &bus,
            "far_future_groups_and_a_flood_of_fresh_keys_do_not_starve_honest_miners",
        );
    });
}

/// Red-team finding (fixed): groups for a window that will never close — window 0, which no
/// clock opens, or one older than any catch-up — used to hold verifier slots while "waiting
/// for the close" and be redelivered ahead of newer groups, stalling all verification.
#[test]
fn groups_for_windows_that_never_close_are_refused_at_once_and_honest_groups_get_verified() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let (miners, _) = honest_network(&bus);
        let book = follow_windows(&bus);
        assert!(
            eventually(Duration::from_secs(30), || book
                .latest_open()
                .is_some_and(|o| o.window > 3))
            .await
        );
        let flood_at = book.latest_open().unwrap().window;
        let attacker = Identity::generate();
        let quota = messages::manifest::NetworkLimits::default().max_groups_per_window;
        for window in [0, 1] {
            for i in 0..quota {
                let bytes =
                    Envelope::seal(group(attacker.address(), window, i, 2), &attacker).to_bytes();
                publish_raw(&bus, subj::rollout(window, attacker.address()), bytes, None).await;
            }
        }
        // Window 0 is refused at once; window 1 closed long ago and its groups are simply late.
        assert!(
            eventually(Duration::from_secs(30), || rejected(
                &bus,
                "verifier",
                "far_past_window"
            ) >= u64::from(quota))
            .await,
            "window-0 groups: {} refused",
            rejected(&bus, "verifier", "far_past_window")
        );
        // Honest groups mined after the flood are verified within a few windows.
        assert!(
            eventually_async(Duration::from_secs(40), || async {
                let verdicts = stored_verdicts(&bus).await;
                verdicts
                    .keys()
                    .filter(|k| k.0 > flood_at && miners.contains(&k.1))
                    .count()
                    >= 4
            })
            .await,
            "verification stalled after the flood: {}",
            summary(&bus).await
        );
        report(&bus, "groups_for_windows_that_never_close_are_refused_at_once_and_honest_groups_get_verified");
    });
}
