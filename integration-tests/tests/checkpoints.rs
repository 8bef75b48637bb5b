//! Checkpoint hand-over against a real nats-server: stores, the publisher's full → delta →
//! anchor sequence with retention, the book's bit-exact reconstruction and its fallback past a
//! missing delta, refusal of forged announcements and corrupted objects, a live hand-over to
//! miners and verifiers, and a trainer that restarts without publishing twice.
//!
//! `cargo test -p grail-integration-tests --test checkpoints -- --nocapture` prints the byte
//! and hand-over tables.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::bus::{Bus, MsgMeta};
use actors::checkpoints::{
    get_bytes, object_digest, put_bytes, BookConfig, CheckpointBook, CheckpointStatus,
    CheckpointStore, LocalDirStore, NatsObjectStore,
};
use actors::compute::structural::{StructuralMiner, StructuralVerifier};
use actors::compute::{ComputeError, SharedWeights};
use actors::role::RoleCtx;
use actors::roles::miner::{MineJob, Miner, MinerCompute, MinerConfig, MinerWorker};
use actors::roles::publisher::{Publisher, PublisherConfig, PublisherSetup};
use actors::roles::trainer::{
    TrainJob, TrainReport, Trainer, TrainerCompute, TrainerConfig, TrainerWorker,
};
use actors::roles::verifier::{Verifier, VerifierConfig, VerifierWorker};
use actors::worker_pool::{PoolConfig, WorkerPool};
use candle_core::{DType, Device, Tensor};
use grail_integration_tests::s3::TestS3;
use grail_integration_tests::{
    eventually, eventually_async, start_clock, stream_messages, Process, TestNats,
};
use messages::subjects as subj;
use messages::*;
use policy::checkpoint::{digest, to_safetensors_bytes, WeightSet};

// ---------------------------------------------------------------- synthetic weights

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A small model-shaped weight set: bf16 matrices plus f32 norms (~3 MB).
fn base_weights(seed: u64) -> WeightSet {
    let mut rng = seed | 1;
    let mut w = WeightSet::new();
    for layer in 0..4 {
        for (name, rows, cols, dtype) in [
            ("mlp.up.weight", 256, 512, DType::BF16),
            ("attn.qkv.weight", 256, 384, DType::BF16),
            ("norm.weight", 1, 256, DType::F32),
        ] {
            let values: Vec<f32> = (0..rows * cols)
                .map(|_| (xorshift(&mut rng) % 20_000) as f32 / 100_000.0 - 0.1)
                .collect();
            let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            w.insert(format!("model.layers.{layer}.{name}"), t);
        }
    }
    w
}

/// One "optimizer step": nudge `fraction` of the elements (by ~1 %) deterministically.
fn train_step(w: &WeightSet, seed: u64, fraction: f64) -> WeightSet {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    w.iter()
        .map(|(name, t)| {
            let dtype = t.dtype();
            let mut v: Vec<f32> = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for x in v.iter_mut() {
                if (xorshift(&mut rng) % 10_000) as f64 / 10_000.0 < fraction {
                    *x += *x * 0.01 + 1e-3;
                }
            }
            let t2 = Tensor::from_vec(v, t.dims(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            (name.clone(), t2)
        })
        .collect()
}

fn weight_digest(w: &WeightSet) -> Hash32 {
    Hash32::from(digest(w).unwrap())
}

// ---------------------------------------------------------------- role helpers

/// A role context for `identity`, granted the operator role in the harness manifest.
fn role(bus: &Bus, identity: &Identity, role: &'static str, instance: &str) -> RoleCtx {
    if let Some(authority) = messages::Authority::of_role(role) {
        grail_integration_tests::authorize(authority, identity.address());
    }
    RoleCtx {
        bus: bus.clone(),
        identity: identity.clone(),
        role,
        instance: instance.to_string(),
    }
}

async fn start_publisher(
    bus: &Bus,
    publisher: &Identity,
    trainer: &Identity,
    base: Arc<WeightSet>,
    anchor_every: u64,
) {
    let store = nats_store(bus).await;
    start_publisher_on(bus, store, publisher, trainer, base, anchor_every).await
}

async fn start_publisher_on(
    bus: &Bus,
    store: Arc<dyn CheckpointStore>,
    publisher: &Identity,
    trainer: &Identity,
    base: Arc<WeightSet>,
    anchor_every: u64,
) {
    let ctx = role(bus, publisher, "publisher", "publisher-0");
    grail_integration_tests::authorize(messages::Authority::Trainer, trainer.address());
    let cfg = PublisherConfig {
        anchor_every,
        keep_anchors: 2,
        lead_windows: 1,
        trusted_trainers: vec![trainer.address().to_string()],
        ack_wait: Duration::from_secs(30),
        ..Default::default()
    };
    let setup = PublisherSetup {
        cfg,
        store,
        base,
        sampling: SamplingSpec::default(),
    };
    actors::supervisor::start(
        ctx.clone(),
        Arc::new(Publisher::with_checkpoints(ctx, setup)),
    );
}

async fn nats_store(bus: &Bus) -> Arc<dyn CheckpointStore> {
    Arc::new(NatsObjectStore::open(&bus.js).await.unwrap())
}

/// A book trusting `publisher` (not following anything yet).
async fn new_book(bus: &Bus, publisher: &Identity, cache: usize) -> CheckpointBook {
    let mut cfg = BookConfig::trusting([publisher.address().to_string()]);
    cfg.cache = cache;
    CheckpointBook::new(cfg, nats_store(bus).await)
}

/// A book trusting `publisher`, following the stream for the rest of the test.
async fn book(bus: &Bus, publisher: &Identity, cache: usize, role: &'static str) -> CheckpointBook {
    let store = nats_store(bus).await;
    book_on(bus, store, publisher, cache, role)
}

fn book_on(
    bus: &Bus,
    store: Arc<dyn CheckpointStore>,
    publisher: &Identity,
    cache: usize,
    role: &'static str,
) -> CheckpointBook {
    let mut cfg = BookConfig::trusting([publisher.address().to_string()]);
    cfg.cache = cache;
    let book = CheckpointBook::new(cfg, store);
    std::mem::forget(book.spawn_follower(bus.clone(), role));
    book
}

/// Act as a trainer: stage `weights` and publish a signed candidate.
async fn offer_candidate(
    bus: &Bus,
    trainer: &Identity,
    weights: &WeightSet,
    from: Hash32,
    window: u64,
) {
    let store = nats_store(bus).await;
    offer_candidate_on(bus, store.as_ref(), trainer, weights, from, window).await
}

async fn offer_candidate_on(
    bus: &Bus,
    store: &dyn CheckpointStore,
    trainer: &Identity,
    weights: &WeightSet,
    from: Hash32,
    window: u64,
) {
    let d = weight_digest(weights);
    let object = subj::staging_object(&d.to_string());
    let stored = put_bytes(store, &object, to_safetensors_bytes(weights).unwrap())
        .await
        .unwrap();
    let candidate = CheckpointCandidate {
        version: WIRE_VERSION,
        trainer: trainer.address().to_string(),
        checkpoint: d,
        trained_from: from,
        object,
        bytes: stored.bytes,
        object_digest: stored.digest,
        last_window: window,
        steps: 1,
        created_at_ms: actors::bus::now_ms(),
    };
    let meta = MsgMeta {
        msg_id: Some(subj::candidate_msg_id(&d.to_string())),
        ..Default::default()
    };
    bus.publish_durable(
        "trainer",
        subj::checkpoint_candidate(window),
        candidate,
        trainer,
        meta,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
}

async fn announcements(bus: &Bus) -> Vec<CheckpointAnnounce> {
    stream_messages::<CheckpointAnnounce>(bus, subj::STREAM_CHECKPOINTS, "grail.checkpoint.")
        .await
        .into_iter()
        .collect()
}

fn rejected(bus: &Bus, role: &str, reason: &str) -> u64 {
    bus.metrics
        .messages_rejected
        .with_label_values(&[role, reason])
        .get()
}

// ---------------------------------------------------------------- tests

#[test]
fn all_stores_round_trip_stream_and_delete() {
    let nats = TestNats::start();
    let s3 = TestS3::start(&["grail"]);
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let dir = tempfile::tempdir().unwrap();
        let stores: Vec<Arc<dyn CheckpointStore>> = vec![
            nats_store(&bus).await,
            Arc::new(LocalDirStore::open(dir.path()).unwrap()),
            // 5 MiB parts: the body below is one part; s3_store.rs covers multipart.
            Arc::new(s3.store("grail", "checkpoints")),
        ];
        // Several NATS chunks (1 MiB each) and a ragged tail.
        let body: Vec<u8> = (0..3_500_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for store in stores {
            let what = store.describe();
            let stored = put_bytes(store.as_ref(), "ckpt-00000007-abcdef", body.clone())
                .await
                .unwrap();
            assert_eq!(
                (stored.bytes, stored.digest),
                (body.len() as u64, object_digest(&body)),
                "{what}"
            );
            put_bytes(store.as_ref(), "staging-1", vec![1, 2, 3])
                .await
                .unwrap();
            assert_eq!(
                store.list().await.unwrap(),
                vec!["ckpt-00000007-abcdef", "staging-1"],
                "{what}"
            );
            let (back, d) = get_bytes(store.as_ref(), "ckpt-00000007-abcdef", 1 << 30)
                .await
                .unwrap();
            assert!(
                back == body && d == stored.digest,
                "{what}: bytes differ after the round trip"
            );
            store.delete("ckpt-00000007-abcdef").await.unwrap();
            store.delete("ckpt-00000007-abcdef").await.unwrap();
            let missing = get_bytes(store.as_ref(), "ckpt-00000007-abcdef", 1 << 30)
                .await
                .unwrap_err();
            assert_eq!(missing.reason(), "object_missing", "{what}");
            assert_eq!(store.list().await.unwrap(), vec!["staging-1"], "{what}");
            assert_eq!(
                put_bytes(store.as_ref(), "../x", vec![1])
                    .await
                    .unwrap_err()
                    .reason(),
                "bad_object_name"
            );
        }
    });
}

#[test]
fn publisher_chains_deltas_between_anchors_and_books_rebuild_bit_exactly_with_fallback() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let store = nats_store(&bus).await;
        publisher_chain_case(&bus, store).await;
    });
}

/// The same hand-over with the checkpoint bytes in an S3 bucket: the publisher writes full and
/// delta objects and applies retention there, books reconstruct from there.
#[test]
fn publisher_and_books_hand_over_through_an_s3_store() {
    let nats = TestNats::start();
    let s3 = TestS3::start(&["grail"]);
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        publisher_chain_case(&bus, Arc::new(s3.store("grail", "run"))).await;
    });
}

async fn publisher_chain_case(bus: &Bus, store: Arc<dyn CheckpointStore>) {
    let bus = bus.clone();
    let (publisher, trainer) = (Identity::generate(), Identity::generate());
    let mut chain = vec![base_weights(1)];
    start_publisher_on(
        &bus,
        store.clone(),
        &publisher,
        &trainer,
        Arc::new(chain[0].clone()),
        3,
    )
    .await;
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            announcements(&bus).await.len() == 1
        })
        .await,
        "genesis announced"
    );
    // Seven trained checkpoints: seqs 1..=7, anchors at 0, 3, 6.
    for step in 1..=7u64 {
        let next = train_step(&chain[step as usize - 1], step, 0.05);
        offer_candidate_on(
            &bus,
            store.as_ref(),
            &trainer,
            &next,
            weight_digest(&chain[step as usize - 1]),
            step,
        )
        .await;
        chain.push(next);
        let want = step as usize + 1;
        assert!(
            eventually_async(Duration::from_secs(20), || async {
                announcements(&bus).await.len() == want
            })
            .await,
            "seq {step} announced"
        );
    }
    let announced = announcements(&bus).await;
    let kinds: Vec<bool> = announced
        .iter()
        .map(|a| a.kind == CheckpointKind::Full)
        .collect();
    assert_eq!(kinds, [true, false, false, true, false, false, true, false]);
    for (a, w) in announced.iter().zip(&chain) {
        assert_eq!(
            a.checkpoint,
            weight_digest(w),
            "seq {} names the trained weights",
            a.seq
        );
    }
    println!("\n| seq | kind  | bytes     | full bytes | ratio |");
    println!("|----:|-------|----------:|-----------:|------:|");
    let full_bytes = to_safetensors_bytes(&chain[0]).unwrap().len() as u64;
    for a in &announced {
        let kind = if a.kind == CheckpointKind::Full {
            "full"
        } else {
            "delta"
        };
        println!(
            "| {} | {kind:5} | {:>9} | {full_bytes:>10} | {:.3} |",
            a.seq,
            a.bytes,
            a.bytes as f64 / full_bytes as f64
        );
    }
    // For comparison: a dense update (every element nudged), as after many Adam steps.
    let dense = policy::delta::encode_delta(&chain[0], &train_step(&chain[0], 99, 1.0))
        .unwrap()
        .len();
    println!(
        "| -   | delta, 100 % changed | {dense:>9} | {full_bytes:>10} | {:.3} |",
        dense as f64 / full_bytes as f64
    );
    assert!(
        announced[1].bytes * 3 < announced[0].bytes,
        "a 5 % delta is much smaller than a full checkpoint"
    );
    // Catch-up deltas (anchor → checkpoint) from the second delta after an anchor on: seq 2
    // and 5, each smaller than the two-delta chain it replaces; none for a first delta.
    let with_catch_up: Vec<u64> = announced
        .iter()
        .filter(|a| a.catch_up.is_some())
        .map(|a| a.seq)
        .collect();
    assert_eq!(with_catch_up, [2, 5]);
    for a in announced.iter().filter(|a| a.catch_up.is_some()) {
        let c = a.catch_up.as_ref().unwrap();
        let chain = announced[a.seq as usize - 1].bytes + a.bytes;
        println!(
            "seq {}: catch-up {} bytes, chain {chain} bytes",
            a.seq, c.bytes
        );
        assert!(c.bytes < chain);
    }
    // Retention: anchors 3 and 6 are kept, so seqs 0..=2 are gone (their catch-up deltas too);
    // staging objects too (the publisher deletes a candidate's staging object after
    // announcing it: give it a moment).
    let mut expected: Vec<String> = announced[3..]
        .iter()
        .flat_map(|a| {
            std::iter::once(a.object.clone()).chain(a.catch_up.as_ref().map(|c| c.object.clone()))
        })
        .collect();
    expected.sort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let names = loop {
        let mut names = store.list().await.unwrap();
        names.sort();
        if names == expected || tokio::time::Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(names, expected);

    // A fresh book loads the newest four (seqs 4..=7: anchor 3 + deltas) bit-exactly.
    let fresh = book_on(&bus, store.clone(), &publisher, 4, "verifier");
    assert!(
        eventually(Duration::from_secs(20), || fresh
            .latest()
            .is_some_and(|c| c.seq == 7))
        .await
    );
    for seq in 4..=7u64 {
        let a = &announced[seq as usize];
        match fresh.status_of_seq(a.seq) {
            CheckpointStatus::Ready(c) => {
                assert_eq!(c.seq, seq);
                assert_eq!(
                    weight_digest(&c.weights.0),
                    weight_digest(&chain[seq as usize])
                );
            }
            other => panic!("seq {seq}: {other:?}"),
        }
    }
    // Delete the delta of seq 4: 4 becomes unavailable, 5 (built on it) loads from anchor 3
    // plus its catch-up delta; loading goes on at the next full anchor (6) and the delta after it.
    store.delete(&announced[4].object).await.unwrap();
    let broken = book_on(&bus, store.clone(), &publisher, 4, "miner");
    assert!(
        eventually(Duration::from_secs(20), || broken
            .latest()
            .is_some_and(|c| c.seq == 7))
        .await
    );
    match broken.status_of_seq(4) {
        CheckpointStatus::Unavailable { seq: s, reason: r } => {
            assert_eq!((s, r.as_str()), (4, "object_missing"))
        }
        other => panic!("seq 4: {other:?}"),
    }
    for seq in [5usize, 6, 7] {
        match broken.status_of_seq(seq as u64) {
            CheckpointStatus::Ready(c) => {
                assert_eq!(weight_digest(&c.weights.0), weight_digest(&chain[seq]))
            }
            other => panic!("seq {seq}: {other:?}"),
        }
    }
    assert!(rejected(&bus, "miner", "checkpoint_object_missing") >= 1);

    // Without seq 5's catch-up as well, 5 has no way left: unavailable, never a substitute.
    store
        .delete(&announced[5].catch_up.as_ref().unwrap().object)
        .await
        .unwrap();
    let stuck = book_on(&bus, store.clone(), &publisher, 4, "evaluator");
    assert!(
        eventually(Duration::from_secs(20), || stuck
            .latest()
            .is_some_and(|c| c.seq == 7))
        .await
    );
    match stuck.status_of_seq(5) {
        // The path tried first (the catch-up: the chain is known broken) names the failure.
        CheckpointStatus::Unavailable { seq: 5, reason } => assert_eq!(reason, "object_missing"),
        other => panic!("seq 5: {other:?}"),
    }
}

#[test]
fn forged_announcements_and_corrupted_objects_are_refused_and_counted() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let store = nats_store(&bus).await;
        let (publisher, forger) = (Identity::generate(), Identity::generate());
        grail_integration_tests::authorize(messages::Authority::Publisher, publisher.address());
        let w = base_weights(3);
        let bytes = to_safetensors_bytes(&w).unwrap();
        // Each announcement names its own canonical object (validation pins the name).
        let announce = |seq: u64, object_digest: Hash32, checkpoint: Hash32| CheckpointAnnounce {
            version: WIRE_VERSION,
            checkpoint,
            seq,
            valid_from_window: seq,
            kind: CheckpointKind::Full,
            object: subj::checkpoint_object(seq, &checkpoint.to_string()),
            bytes: bytes.len() as u64,
            object_digest,
            catch_up: None,
            sampling: SamplingSpec::default(),
            created_at_ms: 0,
        };
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let store_as = |seq: u64, checkpoint: Hash32, body: Vec<u8>| {
            let store = store.clone();
            async move {
                let name = subj::checkpoint_object(seq, &checkpoint.to_string());
                put_bytes(store.as_ref(), &name, body).await.unwrap().digest
            }
        };
        let publish = |a: CheckpointAnnounce, signer: Identity| {
            let bus = bus.clone();
            async move {
                bus.publish_durable(
                    "test",
                    subj::checkpoint(a.seq),
                    a,
                    &signer,
                    MsgMeta::default(),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            }
        };
        let d = weight_digest(&w);
        let good = store_as(0, d, bytes.clone()).await;
        publish(announce(0, good, d), publisher.clone()).await;
        // A forger announces seq 1 with its own (valid) object: not trusted.
        store_as(1, d, bytes.clone()).await;
        publish(announce(1, good, d), forger.clone()).await;
        // The trusted publisher's seq 2 names the original digest but the stored bytes differ.
        store_as(2, d, flipped.clone()).await;
        publish(announce(2, good, d), publisher.clone()).await;
        // Seq 3: the object is what was announced, but the weights are not the named ones.
        let other = weight_digest(&base_weights(4));
        store_as(3, other, flipped.clone()).await;
        publish(
            announce(3, object_digest(&flipped), other),
            publisher.clone(),
        )
        .await;
        store_as(4, other, bytes.clone()).await;
        publish(announce(4, good, other), publisher.clone()).await;

        let b = book(&bus, &publisher, 8, "verifier").await;
        assert!(
            eventually(Duration::from_secs(20), || {
                b.announcements().len() == 4
                    && (2..=4).all(|w| {
                        matches!(b.status_for_window(w), CheckpointStatus::Unavailable { .. })
                    })
            })
            .await,
            "{:?}",
            (0..=4).map(|w| b.status_for_window(w)).collect::<Vec<_>>()
        );
        // The forger is not a publisher in the manifest: refused at the trust boundary.
        assert_eq!(rejected(&bus, "verifier", "unauthorized_signer"), 1);
        assert_eq!(
            rejected(&bus, "verifier", "checkpoint_object_digest_mismatch"),
            1
        );
        assert!(
            rejected(&bus, "verifier", "checkpoint_object_corrupt")
                + rejected(&bus, "verifier", "checkpoint_weight_digest_mismatch")
                == 2
        );
        // Seq 0 loaded; window 1 is still governed by seq 0 (the forged seq 1 was dropped).
        assert_eq!(b.for_window(1).map(|c| c.seq), Some(0));
        assert_eq!(
            b.latest().map(|c| c.seq),
            Some(0),
            "latest() falls back to what loaded"
        );
        assert!(
            b.for_window(2).is_none(),
            "a window is never given an older substitute"
        );
    });
}

fn structural_group(
    miner: &Identity,
    open: &WindowOpen,
    group_index: u32,
    names: Hash32,
) -> RolloutGroup {
    let job = MineJob {
        window: open.window,
        open_randomness: open.randomness.0,
        deadline_ms: open.deadline_ms,
        group_index,
        miner: miner.address().to_string(),
        miner_pubkey: miner.public(),
        checkpoint: None,
    };
    StructuralMiner { checkpoint: names }.mine(&job).unwrap()
}

#[test]
fn a_new_checkpoint_is_handed_over_to_miners_and_verifiers_from_its_window_on() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let (publisher, trainer, miner) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let w0 = base_weights(5);
        let (d0, w1) = (weight_digest(&w0), train_step(&w0, 1, 0.05));
        let d1 = weight_digest(&w1);
        start_clock(&bus, 1500);
        start_publisher(&bus, &publisher, &trainer, Arc::new(w0), 10).await;
        let mpool = WorkerPool::start(
            PoolConfig::new("miner", 1),
            Arc::new(|_| {
                Ok(MinerWorker(Box::new(StructuralMiner {
                    checkpoint: Hash32::default(),
                })))
            }),
            bus.metrics.clone(),
        );
        let mctx = role(&bus, &miner, "miner", "miner-0");
        let m = Miner::new(mctx.clone(), MinerConfig::groups(2), Arc::new(mpool))
            .with_checkpoints(new_book(&bus, &publisher, 3).await);
        actors::supervisor::start(mctx, Arc::new(m));
        let vpool = WorkerPool::start(
            PoolConfig::new("verifier", 2),
            Arc::new(|_| Ok(VerifierWorker(Box::new(StructuralVerifier)))),
            bus.metrics.clone(),
        );
        let vctx = role(&bus, &Identity::generate(), "verifier", "verifier-0");
        let cfg = VerifierConfig {
            concurrency: 2,
            ack_wait: Duration::from_secs(10),
        };
        let v = Verifier::new(vctx.clone(), cfg, Arc::new(vpool))
            .with_checkpoints(new_book(&bus, &publisher, 3).await);
        actors::supervisor::start(vctx, Arc::new(v));

        let groups =
            || stream_messages::<RolloutGroup>(&bus, subj::STREAM_ROLLOUTS, "grail.rollout.");
        assert!(
            eventually_async(Duration::from_secs(20), || async {
                !groups().await.is_empty()
            })
            .await,
            "mining on seq 0"
        );
        offer_candidate(&bus, &trainer, &w1, d0, 1).await;
        assert!(
            eventually_async(Duration::from_secs(20), || async {
                announcements(&bus).await.len() == 2
            })
            .await
        );
        let from = announcements(&bus).await[1].valid_from_window;
        assert!(
            eventually_async(Duration::from_secs(30), || async {
                groups().await.iter().any(|g| g.window > from)
            })
            .await,
            "mining went on after the hand-over"
        );

        // A cheater mining window >= from on the old weights.
        let cheater = Identity::generate();
        let open = loop {
            let opens =
                stream_messages::<WindowOpen>(&bus, subj::STREAM_CLOCK, "grail.clock.").await;
            let open = opens.last().unwrap().clone();
            if open.window >= from && actors::bus::now_ms() + 300 < open.deadline_ms {
                break open;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let stale = structural_group(&cheater, &open, 0, d0);
        bus.publish_durable(
            "miner",
            subj::rollout(open.window, cheater.address()),
            stale,
            &cheater,
            MsgMeta::default(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();

        let verdicts =
            || stream_messages::<GroupVerdict>(&bus, subj::STREAM_VERDICTS, "grail.verdict.group.");
        assert!(
            eventually_async(Duration::from_secs(30), || async {
                verdicts()
                    .await
                    .iter()
                    .any(|v| v.miner == cheater.address())
            })
            .await,
            "the cheater's group got a verdict"
        );
        let all = groups().await;
        let honest: Vec<_> = all.iter().filter(|g| g.miner == miner.address()).collect();
        for g in &honest {
            let want = if g.window >= from { d1 } else { d0 };
            assert_eq!(
                g.checkpoint, want,
                "window {} (checkpoint 1 valid from {from})",
                g.window
            );
        }
        assert!(honest.iter().any(|g| g.window < from) && honest.iter().any(|g| g.window >= from));
        for v in verdicts().await {
            if v.miner == cheater.address() {
                assert_eq!(
                    (v.accepted, v.reason),
                    (false, Some(messages::RejectCode::CheckpointMismatch))
                );
            } else {
                assert!(
                    v.accepted,
                    "honest group of window {} rejected: {:?}",
                    v.window, v.reason
                );
            }
        }
        let h = |role: &str| {
            let hist = bus
                .metrics
                .checkpoint_handover_seconds
                .with_label_values(&[role]);
            (hist.get_sample_count(), hist.get_sample_sum())
        };
        println!("\n| role     | hand-overs | mean announce→loaded (ms) |");
        println!("|----------|-----------:|--------------------------:|");
        for role in ["miner", "verifier"] {
            let (n, sum) = h(role);
            assert!(n >= 1, "{role} observed the live hand-over");
            println!("| {role:8} | {n:>10} | {:>25.1} |", sum * 1000.0 / n as f64);
        }
    });
}

/// (window, base seq, group count) of every training job.
type Jobs = Arc<Mutex<Vec<(u64, Option<u64>, usize)>>>;

/// Trains by nudging the checkpoint each job starts from; remembers every job's base.
struct NudgeTrainer {
    jobs: Jobs,
}

impl TrainerCompute for NudgeTrainer {
    fn train(&mut self, job: &TrainJob) -> Result<TrainReport, ComputeError> {
        self.jobs.lock().unwrap().push((
            job.window,
            job.base.as_ref().map(|b| b.seq),
            job.groups.len(),
        ));
        let base = job
            .base
            .as_ref()
            .expect("the trainer attaches the latest checkpoint");
        let next = train_step(&base.weights.0, job.window, 0.02);
        Ok(TrainReport {
            steps: 1,
            weights: Some(SharedWeights(Arc::new(next))),
            trained_from: Some(base.digest),
            ..Default::default()
        })
    }
}

fn trainer_process(url: &str, trainer: &Identity, publisher: &Identity, jobs: &Jobs) -> Process {
    let (trainer, publisher, jobs) = (trainer.clone(), publisher.clone(), jobs.clone());
    Process::spawn(url, move |bus| {
        let bus = bus.clone();
        actix_rt::spawn(async move {
            let pool = WorkerPool::start(
                PoolConfig::new("trainer", 1),
                Arc::new(move |_| Ok(TrainerWorker(Box::new(NudgeTrainer { jobs: jobs.clone() })))),
                bus.metrics.clone(),
            );
            let ctx = role(&bus, &trainer, "trainer", "trainer-0");
            let cfg = TrainerConfig {
                max_staleness_seqs: 0,
                batch_idle: Duration::from_millis(300),
            };
            let t = Trainer::new(ctx.clone(), Arc::new(pool))
                .with_checkpoints(new_book(&bus, &publisher, 3).await, cfg);
            actors::supervisor::start(ctx, Arc::new(t));
        });
    })
}

/// Groups of `miner` for `window` naming `names`, and a passing verdict for them.
async fn verified_window(bus: &Bus, miner: &Identity, window: u64, names: Hash32) {
    let open = WindowOpen {
        version: WIRE_VERSION,
        window,
        randomness: Hash32::from([window as u8; 32]),
        chain_anchor: Hash32::default(),
        chain_position: window,
        chain_value: Hash32::default(),
        opened_at_ms: 0,
        deadline_ms: u64::MAX,
    };
    // The trainer trains a group only when a trusted verifier accepted that exact envelope.
    let verifier = grail_integration_tests::role_identity("verifier");
    for g in 0..2 {
        let group = structural_group(miner, &open, g, names);
        let digest = bus
            .publish_durable(
                "miner",
                subj::rollout(window, miner.address()),
                group,
                miner,
                MsgMeta::default(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let accepted = GroupVerdict {
            version: WIRE_VERSION,
            window,
            miner: miner.address().to_string(),
            group_index: g,
            group_digest: digest,
            verifier: verifier.address().to_string(),
            accepted: true,
            reason: None,
            deep_checked: true,
            unique_rollouts: 16,
            learning_signal: true,
            mean_reward: 0.5,
            server_ts_ms: 0,
            success_rollouts: 0,
        };
        bus.publish_durable(
            "verifier",
            subj::group_verdict(window, miner.address()),
            accepted,
            &verifier,
            MsgMeta::default(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    let scorer = grail_integration_tests::role_identity("scorer");
    let verdict = MinerWindowVerdict {
        version: WIRE_VERSION,
        window,
        miner: miner.address().to_string(),
        verifier: scorer.address().to_string(),
        passed: true,
        reason: None,
        groups_seen: 2,
        groups_accepted: 2,
        unique_rollouts: 32,
        signal_groups: 2,
    };
    bus.publish_durable(
        "scorer",
        subj::miner_verdict(window, miner.address()),
        verdict,
        &scorer,
        MsgMeta::default(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

#[test]
fn a_restarted_trainer_neither_retrains_nor_publishes_twice_and_skips_stale_groups() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let (publisher, trainer) = (Identity::generate(), Identity::generate());
        let (miner, laggard) = (Identity::generate(), Identity::generate());
        let w0 = base_weights(9);
        let d0 = weight_digest(&w0);
        start_publisher(&bus, &publisher, &trainer, Arc::new(w0), 10).await;
        assert!(
            eventually_async(Duration::from_secs(20), || async {
                announcements(&bus).await.len() == 1
            })
            .await
        );
        let candidates = || {
            stream_messages::<CheckpointCandidate>(
                &bus,
                subj::STREAM_CHECKPOINTS,
                "grail.checkpoint.candidate.",
            )
        };
        let jobs: Jobs = Default::default();

        verified_window(&bus, &miner, 1, d0).await;
        let p = trainer_process(nats.url(), &trainer, &publisher, &jobs);
        assert!(
            eventually_async(Duration::from_secs(30), || async {
                announcements(&bus).await.len() == 2
            })
            .await,
            "window 1 trained and announced"
        );
        p.kill();
        // Restart with the KV record, then once more without it (a crash between publishing
        // the candidate and saving the window): neither retrains window 1.
        for drop_kv in [false, true] {
            if drop_kv {
                let kv = bus.js.get_key_value(subj::KV_STATE).await.unwrap();
                kv.purge(subj::KV_TRAINER_LAST_WINDOW).await.unwrap();
            }
            let p = trainer_process(nats.url(), &trainer, &publisher, &jobs);
            tokio::time::sleep(Duration::from_secs(3)).await;
            p.kill();
        }
        assert_eq!(
            candidates().await.len(),
            1,
            "no second candidate for window 1"
        );
        assert_eq!(announcements(&bus).await.len(), 2);
        assert_eq!(
            jobs.lock().unwrap().len(),
            1,
            "window 1 trained once: {:?}",
            jobs.lock().unwrap()
        );

        // Window 2: the laggard still mines on seq 0, which is now stale (max 0 seqs behind).
        let d1 = announcements(&bus).await[1].checkpoint;
        verified_window(&bus, &miner, 2, d1).await;
        verified_window(&bus, &laggard, 2, d0).await;
        let p = trainer_process(nats.url(), &trainer, &publisher, &jobs);
        assert!(
            eventually_async(Duration::from_secs(30), || async {
                announcements(&bus).await.len() == 3
            })
            .await,
            "window 2 trained and announced"
        );
        let stale = p
            .bus
            .metrics
            .messages_rejected
            .with_label_values(&["trainer", "stale_checkpoint"])
            .get();
        p.kill();
        assert_eq!(stale, 2, "the laggard's two groups were skipped");
        let jobs = jobs.lock().unwrap().clone();
        assert_eq!(
            jobs,
            vec![(1, Some(0), 2), (2, Some(1), 2)],
            "(window, base seq, groups)"
        );
        let announced = announcements(&bus).await;
        assert_eq!(
            announced[2].kind,
            CheckpointKind::Delta {
                base: d1,
                anchor: d0
            }
        );
        assert_eq!(candidates().await.len(), 2);
    });
}
