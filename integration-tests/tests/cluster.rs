//! The network on a 3-node JetStream cluster (real nats-server processes on loopback) with
//! every stream, KV bucket and the object store in 3 copies: roles on different nodes, a
//! node killed under them (twice, one at a time), and one node cut off from the others.
//!
//! Structural (model-free) compute and 2.5 s windows (6 s in the kill test); every wait is
//! an `eventually` with a generous timeout, so a loaded machine only makes the tests slower.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actors::bus::{now_ms, Bus};
use actors::compute::structural::StructuralVerifier;
use grail_integration_tests::cluster::{stream_leader, TestCluster};
use grail_integration_tests::observe::*;
use grail_integration_tests::*;
use grail_runtime::streams::{ensure, TopologyConfig, TopologyError, STREAMS};
use messages::subjects as subj;
use messages::{
    Envelope, GroupVerdict, MinerWindowVerdict, RejectCode, RolloutGroup, Weights, WindowOpen,
};

const PER_WINDOW: u32 = 2;

/// Miners on `miner_bus`, one verifier on each of `verifier_buses`, the scorer on
/// `scorer_bus`. Returns the miners' addresses.
fn start_network(miner_bus: &Bus, verifier_buses: &[&Bus], scorer_bus: &Bus) -> Vec<String> {
    let miners = (0..2)
        .map(|i| {
            start_miner(
                role_ctx(miner_bus, "miner", &format!("miner-{i}")),
                PER_WINDOW,
                1,
                |_| structural(),
            )
        })
        .collect();
    for (i, bus) in verifier_buses.iter().enumerate() {
        let ctx = role_ctx(bus, "verifier", &format!("verifier-{i}"));
        start_verifier(ctx, 2, Duration::from_secs(4), |_| {
            Box::new(StructuralVerifier)
        });
    }
    start_scorer(scorer_bus);
    miners
}

async fn weights_reach(bus: &Bus, target: u64, timeout: Duration) -> bool {
    eventually_async(timeout, || async {
        stream_messages::<Weights>(bus, subj::STREAM_WEIGHTS, "grail.weights.")
            .await
            .iter()
            .any(|x| x.window >= target)
    })
    .await
}

/// What the verdicts of the groups of windows `..=upto` must show.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// One verdict per group, and it accepts.
    AllAccepted,
    /// One verdict per group; a rejection only as `late_submission` of a group the server
    /// stored after its window's deadline (a miner's publish retried through a failover).
    EachDecided,
    /// No group decided twice or against another verdict; some may still lack one.
    NoConflict,
}

/// Groups of windows `..=upto`: stored, accepted, rejected as provably late, without verdict.
#[derive(Debug, Default)]
struct Tally {
    stored: usize,
    accepted: usize,
    late: usize,
    undecided: usize,
    /// Accepting verdicts stored after the scorer had closed their window (not in its count).
    late_for_scoring: usize,
}

/// `(payload, stored at, ms)` of the verdict-stream messages under `prefix`, by the server's
/// timestamps.
async fn stored_at(bus: &Bus, prefix: &str) -> Vec<(bytes::Bytes, u64)> {
    let mut s = bus
        .js
        .get_stream(subj::STREAM_VERDICTS)
        .await
        .expect("verdict stream");
    let state = s.info().await.expect("verdict stream info").state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence.max(1)..=state.last_sequence {
        let m = s.get_raw_message(seq).await.expect("a stored verdict");
        if m.subject.starts_with(prefix) {
            let ms = m.time.unix_timestamp_nanos() / 1_000_000;
            out.push((m.payload, ms as u64));
        }
    }
    out
}

/// Every group stored once and decided as `expect` says, and no miner credited more PubAcks
/// (counted on `miner_bus`, where the miners run) than groups stored, nor more groups per
/// window than it may store.
async fn assert_groups_counted_once(
    bus: &Bus,
    miner_bus: &Bus,
    miners: &[String],
    upto: u64,
    expect: Expect,
) -> Tally {
    let raw = stream_messages::<RolloutGroup>(bus, subj::STREAM_ROLLOUTS, "grail.rollout.").await;
    let mut seen = BTreeSet::new();
    for g in &raw {
        assert!(
            seen.insert((g.window, g.miner.clone(), g.group_index)),
            "group ({}, {}, {}) stored twice",
            g.window,
            g.miner,
            g.group_index
        );
    }
    let mut deadlines = BTreeMap::new();
    for (subject, payload) in stream_raw(bus, subj::STREAM_CLOCK, "grail.clock.").await {
        if subject.ends_with(".open") {
            let (env, _) = Envelope::<WindowOpen>::open(&payload, bus.max_message_bytes)
                .unwrap_or_else(|e| panic!("{subject}: {e}"));
            deadlines.insert(env.payload.window, env.payload.deadline_ms);
        }
    }
    let groups = stored_groups(bus).await;
    let verdicts = stored_verdicts(bus).await;
    let mut tally = Tally::default();
    for key in groups.iter().filter(|k| k.0 <= upto) {
        tally.stored += 1;
        let Some(v) = verdicts.get(key) else {
            assert_eq!(
                expect,
                Expect::NoConflict,
                "group {key:?} acked, never decided"
            );
            tally.undecided += 1;
            continue;
        };
        assert_eq!(v.len(), 1, "group {key:?}: verdicts {v:?}");
        let late = v[0].reason == Some(RejectCode::LateSubmission)
            && deadlines
                .get(&key.0)
                .is_some_and(|d| v[0].server_ts_ms > *d);
        match (v[0].accepted, late, expect) {
            (true, ..) => tally.accepted += 1,
            (false, true, Expect::EachDecided) => tally.late += 1,
            _ => panic!("honest group {key:?} rejected: {:?}", v[0]),
        }
    }
    // The scorer's count per miner and window is the accepting verdicts, each once: none
    // counted twice, and none lost between verifier and scorer unless it was stored too late
    // for the scorer's one window of grace (at most 2 s before the scorer's own verdict on
    // that window, which it publishes when the next window has closed).
    let verdict_at: BTreeMap<GroupKey, u64> = stored_at(bus, "grail.verdict.group.")
        .await
        .into_iter()
        .map(|(p, t)| {
            let v = Envelope::<GroupVerdict>::open(&p, bus.max_message_bytes).expect("verdict");
            let v = v.0.payload;
            ((v.window, v.miner, v.group_index), t)
        })
        .collect();
    let mut counted: BTreeMap<(u64, String), u32> = BTreeMap::new();
    let mut miscounted = Vec::new();
    for (p, scored_at) in stored_at(bus, "grail.verdict.miner.").await {
        let mv = Envelope::<MinerWindowVerdict>::open(&p, bus.max_message_bytes)
            .expect("miner verdict")
            .0
            .payload;
        if mv.window > upto {
            continue;
        }
        let accepting: Vec<u64> = verdicts
            .iter()
            .filter(|(k, v)| k.0 == mv.window && k.1 == mv.miner && v.iter().any(|v| v.accepted))
            .map(|(k, _)| verdict_at.get(k).copied().unwrap_or(u64::MAX))
            .collect();
        let total = accepting.len() as u32;
        let too_late = accepting.iter().filter(|t| **t + 2000 > scored_at).count() as u32;
        let missing = total.saturating_sub(mv.groups_accepted);
        if mv.groups_accepted > total || missing > too_late {
            miscounted.push((mv.window, mv.miner.clone(), mv.groups_accepted, total));
        }
        tally.late_for_scoring += missing as usize;
        let key = (mv.window, mv.miner.clone());
        if let Some(before) = counted.insert(key, mv.groups_accepted) {
            assert_eq!(
                before, mv.groups_accepted,
                "window {}: {} scored twice, differently",
                mv.window, mv.miner
            );
        }
    }
    eprintln!("groups of windows ..={upto}: {tally:?}");
    assert!(
        expect == Expect::NoConflict || miscounted.is_empty(),
        "(window, miner, accepted groups the scorer counted, accepting verdicts): {miscounted:?}"
    );
    for m in miners {
        let stored = groups.iter().filter(|k| &k.1 == m).count() as u64;
        let acked = published(miner_bus, m);
        assert!(acked > 0, "{m}: no PubAck counted on the miners' bus");
        assert!(
            acked <= stored,
            "{m}: {acked} PubAcks but only {stored} groups stored"
        );
    }
    for w in stream_messages::<Weights>(bus, subj::STREAM_WEIGHTS, "grail.weights.").await {
        for m in miners {
            let n = groups
                .iter()
                .filter(|k| k.0 == w.window && &k.1 == m)
                .count();
            assert!(
                n <= PER_WINDOW as usize,
                "window {}: {m} has {n} groups",
                w.window
            );
        }
    }
    tally
}

async fn assert_replicas(bus: &Bus, replicas: usize) {
    let mut names: Vec<String> = STREAMS.iter().map(|s| s.0.to_string()).collect();
    names.extend([
        format!("KV_{}", subj::KV_CLOCK),
        format!("KV_{}", subj::KV_STATE),
        format!("KV_{}", subj::KV_LEDGER),
        format!("OBJ_{}", subj::OBJECTS_CHECKPOINTS),
    ]);
    for name in names {
        let mut s = bus.js.get_stream(&name).await.expect("stream exists");
        let n = s.info().await.expect("stream info").config.num_replicas;
        assert_eq!(n, replicas, "stream {name} has {n} replicas");
    }
}

/// All replicas of `stream` are current (a restarted node has caught up).
async fn caught_up(bus: &Bus, stream: &str, nodes: usize) -> bool {
    let Ok(mut s) = bus.js.get_stream(stream).await else {
        return false;
    };
    let Ok(info) = s.info().await else {
        return false;
    };
    let Some(cluster) = info.cluster.as_ref() else {
        return false;
    };
    cluster.leader.is_some()
        && cluster.replicas.len() + 1 == nodes
        && cluster
            .replicas
            .iter()
            .all(|r| r.current && r.lag.unwrap_or(0) == 0)
}

#[test]
fn replicas_the_server_cannot_hold_are_refused_naming_the_key() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = connect(nats.url()).await;
        let cfg = TopologyConfig {
            replicas: 3,
            ..TopologyConfig::default()
        };
        let err = ensure(&bus.client, &bus.js, &cfg)
            .await
            .expect_err("R3 on one server");
        assert!(matches!(err, TopologyError::Replicas { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("nats.replicas = 3"), "{text}");
        assert!(text.contains("replicas = 1"), "{text}");
    });
}

#[test]
fn a_full_loop_runs_on_three_nodes_with_r3_streams_and_roles_on_different_nodes() {
    let cluster = TestCluster::start(3);
    actix_rt::System::new().block_on(async {
        // Created in one copy first, then migrated to three, as `grail streams` does.
        let admin = cluster.bus(0, 1).await;
        assert_replicas(&admin, 1).await;
        let admin = cluster.bus(0, 3).await;
        assert_replicas(&admin, 3).await;
        let err = ensure(
            &admin.client,
            &admin.js,
            &TopologyConfig {
                replicas: 5,
                ..TopologyConfig::default()
            },
        )
        .await
        .expect_err("R5 on three nodes");
        assert!(matches!(err, TopologyError::Replicas { .. }), "{err}");

        let b1 = connect(cluster.url(1)).await;
        let b2 = connect(cluster.url(2)).await;
        start_clock(&admin, WINDOW_MS);
        let miners = start_network(&b1, &[&b1, &b2], &b2);
        let target = 4;
        assert!(
            weights_reach(&admin, target, Duration::from_secs(90)).await,
            "no weights for window {target}:{}",
            summary(&admin).await
        );
        assert!(
            eventually_async(Duration::from_secs(20), || all_verified_upto(
                &admin, target
            ))
            .await
        );
        assert_clock_record_complete(&admin, target).await;
        assert_groups_counted_once(&admin, &b1, &miners, target, Expect::AllAccepted).await;
        let groups = stored_groups(&admin).await;
        for m in &miners {
            for w in 2..=target {
                let n = groups.iter().filter(|k| k.0 == w && &k.1 == m).count();
                assert_eq!(n, PER_WINDOW as usize, "window {w}: {m} stored {n} groups");
            }
        }
        assert_replicas(&b2, 3).await;
    });
}

/// Windows of the kill test: the default cluster.toml's. The scorer gives verification one
/// window of grace after a close; a NATS failover (election, reconnects, consumers rebuilt)
/// takes seconds, which 2.5 s windows do not cover (and a 360 s farm window easily does).
const KILL_WINDOW_MS: u64 = 6000;

/// Failover, measured: each round kills (SIGKILL) the node leading the rollout stream in
/// the middle of a window (in round 1, another node if that leader was killed in round 0),
/// waits until windows are scored two past it, restarts the node and waits until it holds
/// the whole rollout record again. Every acked group must then be decided once and counted
/// once by the scorer.
#[test]
fn killing_the_rollout_leader_then_another_node_loses_no_group_and_windows_continue() {
    let cluster = TestCluster::start(3);
    actix_rt::System::new().block_on(async {
        let admin = cluster.bus(0, 3).await;
        let buses = [
            admin.clone(),
            connect(cluster.url(1)).await,
            connect(cluster.url(2)).await,
        ];
        start_clock(&buses[0], KILL_WINDOW_MS);
        let miners = start_network(&buses[1], &[&buses[1], &buses[2]], &buses[2]);
        let book = follow_windows(&buses[2]);
        let window_now = |book: &actors::windows::WindowBook| book.current(None).unwrap_or(0);
        let mut killed = Vec::new();
        for round in 0..2 {
            // Mid-window: the window is open and its deadline is still ahead.
            let mut w = 0;
            let looking = std::time::Instant::now();
            while looking.elapsed() < Duration::from_secs(30) {
                match book.latest_open() {
                    Some(o) if o.window >= 2 && now_ms() + 1500 < o.deadline_ms => {
                        w = o.window;
                        break;
                    }
                    _ => book.changed(Duration::from_millis(200)).await,
                }
            }
            assert!(
                w > 0,
                "round {round}: never caught a window mid-way:{}",
                summary(&buses[2]).await
            );
            let mut leader = None;
            for _ in 0..50 {
                let any = &buses[killed.len() % 3];
                if let Some(name) = stream_leader(any, subj::STREAM_ROLLOUTS).await {
                    leader = cluster.index_of(&name);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let leader = leader.expect("the rollout stream has a leader");
            let mut victim = leader;
            if killed.last() == Some(&victim) {
                victim = (victim + 1) % 3; // "then another node"
            }
            let killed_at = std::time::Instant::now();
            cluster.kill(victim);
            killed.push(victim);
            eprintln!(
                "round {round}: kill -9 of {} (rollout leader: {}) in window {w}",
                cluster.name(victim),
                cluster.name(leader)
            );
            let survivor = &buses[(victim + 1) % 3];
            assert!(
                weights_reach(survivor, w + 2, Duration::from_secs(90)).await,
                "windows stopped after {} was killed in window {w}:{}",
                cluster.name(victim),
                summary(survivor).await
            );
            let new_leader = stream_leader(survivor, subj::STREAM_ROLLOUTS).await;
            eprintln!(
                "round {round}: weights for window {} after {:.1} s (now window {}, rollout leader {new_leader:?})",
                w + 2,
                killed_at.elapsed().as_secs_f64(),
                window_now(&book)
            );
            cluster.restart(victim);
            let restarted_at = std::time::Instant::now();
            assert!(
                eventually_async(Duration::from_secs(60), || async {
                    caught_up(&buses[victim], subj::STREAM_ROLLOUTS, 3).await
                })
                .await,
                "{} never caught up on the rollout stream",
                cluster.name(victim)
            );
            eprintln!(
                "round {round}: {} restarted and caught up in {:.1} s (window {})",
                cluster.name(victim),
                restarted_at.elapsed().as_secs_f64(),
                window_now(&book)
            );
        }
        let last = book.latest_open().map(|o| o.window).unwrap_or(0);
        let target = last + 1;
        assert!(
            weights_reach(&admin, target, Duration::from_secs(90)).await,
            "no weights for window {target}:{}",
            summary(&admin).await
        );
        assert!(
            eventually_async(Duration::from_secs(30), || all_verified_upto(
                &admin, target
            ))
            .await,
            "{}",
            summary(&admin).await
        );
        assert_clock_record_complete(&admin, target).await;
        eprintln!("windows 1..={target}:{}", summary(&admin).await);
        let tally =
            assert_groups_counted_once(&admin, &buses[1], &miners, target, Expect::EachDecided)
                .await;
        assert!(
            tally.accepted > tally.late,
            "mostly late groups: {tally:?}"
        );
        // Every miner kept earning after each kill.
        let groups = stored_groups(&admin).await;
        for m in &miners {
            let windows: BTreeSet<u64> = groups.iter().filter(|k| &k.1 == m).map(|k| k.0).collect();
            assert!(
                windows.range(last - 1..).count() >= 1,
                "{m} stopped mining: {windows:?}"
            );
        }
        // The restarted nodes hold the same rollout record as the others.
        for (i, bus) in buses.iter().enumerate() {
            assert!(
                caught_up(bus, subj::STREAM_ROLLOUTS, 3).await,
                "{} lags",
                cluster.name(i)
            );
        }
    });
}

#[test]
fn an_isolated_node_does_not_split_the_network_decisions() {
    let cluster = TestCluster::start(3);
    actix_rt::System::new().block_on(async {
        let admin = cluster.bus(0, 3).await;
        let b1 = connect(cluster.url(1)).await;
        let b2 = connect(cluster.url(2)).await;
        // Two clocks: one on the node that will be cut off, one on the majority side.
        start_clock(&admin, WINDOW_MS);
        start_clock(&b1, WINDOW_MS);
        let miners = start_network(&b1, &[&b1, &b2], &b2);
        assert!(weights_reach(&b2, 2, Duration::from_secs(60)).await);

        cluster.isolate(0);
        let cut_at = follow_windows(&b2);
        cut_at.changed(Duration::from_secs(5)).await;
        let from = cut_at.latest_open().map(|o| o.window).unwrap_or(2);
        eprintln!("n0 isolated around window {from}");
        // The majority keeps deciding; the isolated node's clock cannot write anything.
        assert!(
            weights_reach(&b2, from + 3, Duration::from_secs(90)).await,
            "the majority stopped while n0 was isolated:{}",
            summary(&b2).await
        );
        cluster.restart(0);
        assert!(
            eventually_async(Duration::from_secs(60), || async {
                caught_up(&b2, subj::STREAM_CLOCK, 3).await
            })
            .await,
            "n0 never caught up after the partition healed"
        );
        let target = from + 5;
        assert!(
            weights_reach(&b2, target, Duration::from_secs(90)).await,
            "{}",
            summary(&b2).await
        );
        // One record of decisions: each window opened once with one randomness, read through
        // the healed node and through the majority alike.
        let upto = target - 1;
        let seen_majority = assert_clock_record_complete(&b2, upto).await;
        let seen_healed = assert_clock_record_complete(&admin, upto).await;
        assert!(seen_healed >= upto && seen_majority >= upto);
        let mut opens: BTreeMap<String, usize> = BTreeMap::new();
        for (subject, _) in stream_raw(&b2, subj::STREAM_CLOCK, "grail.clock.").await {
            *opens.entry(subject).or_default() += 1;
        }
        let twice: Vec<_> = opens.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "clock decisions stored twice: {twice:?}");
        let majority = stream_raw(&b2, subj::STREAM_CLOCK, "grail.clock.").await;
        let healed = stream_raw(&admin, subj::STREAM_CLOCK, "grail.clock.").await;
        let n = majority.len().min(healed.len());
        assert_eq!(
            majority[..n],
            healed[..n],
            "the nodes disagree on the clock"
        );
        // Every acked group decided once, none twice or differently.
        assert!(
            eventually_async(Duration::from_secs(30), || all_verified_upto(&b2, upto)).await,
            "{}",
            summary(&b2).await
        );
        assert_groups_counted_once(&b2, &b1, &miners, upto, Expect::EachDecided).await;
    });
}

/// A role started alone while its NATS cluster cannot answer for JetStream (two of three
/// nodes down: no meta leader) waits for it instead of exiting; a missing item fails at once.
#[test]
fn a_role_started_while_the_cluster_has_no_leader_waits_for_it() {
    use grail_runtime::streams::check_patiently;
    let cluster = TestCluster::start(3);
    actix_rt::System::new().block_on(async {
        let fresh = connect(cluster.url(0)).await;
        let missing = check_patiently(&fresh.js, None, Duration::from_secs(60))
            .await
            .expect_err("no topology yet");
        assert!(
            !missing.unavailable,
            "a missing stream is not waited for: {missing}"
        );

        let _admin = cluster.bus(0, 3).await;
        cluster.kill(1);
        cluster.kill(2);
        let bus = connect(cluster.url(0)).await;
        let waiting = actix_rt::spawn(async move {
            check_patiently(&bus.js, None, Duration::from_secs(120)).await
        });
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            !waiting.is_finished(),
            "gave up while the cluster had no JetStream leader: {:?}",
            waiting.await
        );
        cluster.restart(1);
        cluster.restart(2);
        waiting
            .await
            .expect("task")
            .expect("the topology is found once the cluster answers");
    });
}
