//! Failure modes against a real nats-server, with the roles running as in production
//! (supervised actors, compute on worker threads, model-free structural compute):
//! the server crashing mid-run, a verifier dying while it holds groups, compute workers
//! panicking mid-group, and miners forging groups.
//!
//! Windows are short (2.5 s) and every wait is an `eventually` with a generous timeout, so
//! a loaded CI machine only makes the tests slower, never wrong.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use actors::bus::{now_ms, Bus};
use actors::compute::structural::{StructuralMiner, StructuralVerifier};
use actors::roles::miner::{MineJob, MinerCompute};
use actors::roles::verifier::{VerifierCompute, VerifyJob, VerifyOutcome};
use actors::windows::{follow_clock, WindowBook};
use grail_integration_tests::*;
use messages::subjects as subj;
use messages::{GroupVerdict, Hash32, MinerWindowVerdict, RolloutGroup, Weights};

const WINDOW_MS: u64 = 2500;

/// (window, miner, group index): what identifies a group everywhere.
type GroupKey = (u64, String, u32);

fn structural() -> Box<dyn MinerCompute> {
    Box::new(StructuralMiner {
        checkpoint: Hash32::default(),
    })
}

fn follow_windows(bus: &Bus) -> WindowBook {
    let book = WindowBook::default();
    actix_rt::spawn(follow_clock(bus.clone(), "test", book.clone()));
    book
}

/// Groups the rollouts stream holds (what the server acknowledged), by key.
async fn stored_groups(bus: &Bus) -> BTreeSet<GroupKey> {
    stream_messages::<RolloutGroup>(bus, subj::STREAM_ROLLOUTS, "grail.rollout.")
        .await
        .into_iter()
        .map(|g| (g.window, g.miner, g.group_index))
        .collect()
}

/// Every group verdict message the verdict stream holds, by group.
async fn stored_verdicts(bus: &Bus) -> BTreeMap<GroupKey, Vec<GroupVerdict>> {
    let mut out: BTreeMap<GroupKey, Vec<GroupVerdict>> = BTreeMap::new();
    for v in
        stream_messages::<GroupVerdict>(bus, subj::STREAM_VERDICTS, "grail.verdict.group.").await
    {
        out.entry((v.window, v.miner.clone(), v.group_index))
            .or_default()
            .push(v);
    }
    out
}

/// True once every stored group of windows `..=upto` has a verdict.
async fn all_verified_upto(bus: &Bus, upto: u64) -> bool {
    let verdicts = stored_verdicts(bus).await;
    stored_groups(bus)
        .await
        .iter()
        .filter(|k| k.0 <= upto)
        .all(|k| verdicts.contains_key(k))
}

/// The groups of windows `..=upto` each have exactly one verdict message, and it accepts.
fn assert_one_accepting_verdict_each(
    groups: &BTreeSet<GroupKey>,
    verdicts: &BTreeMap<GroupKey, Vec<GroupVerdict>>,
    upto: u64,
) {
    for key in groups.iter().filter(|k| k.0 <= upto) {
        let v = verdicts
            .get(key)
            .unwrap_or_else(|| panic!("group {key:?} was acked but never got a verdict"));
        assert_eq!(v.len(), 1, "group {key:?} has {} verdict messages", v.len());
        assert!(
            v[0].accepted,
            "honest group {key:?} rejected: {:?}",
            v[0].reason
        );
    }
}

/// Per window: opened/closed, groups stored, verdicts, weights (for failure messages).
async fn summary(bus: &Bus) -> String {
    let clock = stream_raw(bus, subj::STREAM_CLOCK, "grail.clock.").await;
    let groups = stored_groups(bus).await;
    let verdicts = stored_verdicts(bus).await;
    let weights = stream_messages::<Weights>(bus, subj::STREAM_WEIGHTS, "grail.weights.").await;
    let last = groups
        .iter()
        .map(|k| k.0)
        .chain(weights.iter().map(|w| w.window))
        .max()
        .unwrap_or(0)
        + 2;
    let mut out = String::new();
    for w in 1..=last {
        let has = |phase: &str| {
            clock
                .iter()
                .any(|(s, _)| s == &format!("grail.clock.{w}.{phase}"))
        };
        out += &format!(
            "\n  window {w}: open {} close {} groups {} verdicts {} weights {}",
            has("open"),
            has("close"),
            groups.iter().filter(|k| k.0 == w).count(),
            verdicts.keys().filter(|k| k.0 == w).count(),
            weights.iter().any(|x| x.window == w)
        );
    }
    let m = &bus.metrics;
    for role in ["clock", "miner", "verifier", "scorer"] {
        out += &format!(
            "\n  {role} actor restarts {}",
            m.actor_restarts.with_label_values(&[role]).get()
        );
    }
    out
}

fn published(bus: &Bus, miner: &str) -> u64 {
    bus.metrics
        .groups_published
        .with_label_values(&[miner])
        .get()
}

#[test]
fn a_nats_server_crash_mid_window_loses_no_acked_group_and_windows_continue() {
    let nats = TestNats::start();
    actix::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, WINDOW_MS);
        let per_window = 3u32;
        let miners: Vec<String> = (0..2)
            .map(|i| {
                start_miner(
                    role_ctx(&bus, "miner", &format!("miner-{i}")),
                    per_window,
                    1,
                    |_| structural(),
                )
            })
            .collect();
        for i in 0..2 {
            let ctx = role_ctx(&bus, "verifier", &format!("verifier-{i}"));
            start_verifier(ctx, 2, Duration::from_secs(4), |_| {
                Box::new(StructuralVerifier)
            });
        }
        start_scorer(&bus);
        let book = follow_windows(&bus);

        // Crash while a window's groups are acked but its close is still to come: they sit
        // in the durable consumer (some delivered to verifiers waiting for the close).
        let mut crashed_in = None;
        for _ in 0..8 {
            let Some(open) = book.latest_open() else {
                book.changed(Duration::from_millis(500)).await;
                continue;
            };
            let w = open.window;
            let all_acked = eventually_async(Duration::from_millis(WINDOW_MS), || async {
                stored_groups(&bus)
                    .await
                    .iter()
                    .filter(|k| k.0 == w)
                    .count()
                    == 2 * per_window as usize
            })
            .await;
            if w >= 2
                && all_acked
                && book.get(w).close.is_none()
                && now_ms() + 300 < open.deadline_ms
            {
                nats.crash_and_restart(Duration::from_millis(800)).await;
                crashed_in = Some(w);
                break;
            }
            while book.latest_open().is_some_and(|o| o.window == w) {
                book.changed(Duration::from_millis(500)).await;
            }
        }
        let w = crashed_in.expect("never caught a window between its groups' acks and its close");

        // Windows keep opening and closing, and the scorer keeps finalising them.
        let target = w + 2;
        assert!(
            eventually_async(Duration::from_secs(60), || async {
                stream_messages::<Weights>(&bus, subj::STREAM_WEIGHTS, "grail.weights.")
                    .await
                    .iter()
                    .any(|x| x.window >= target)
            })
            .await,
            "no weights for window {target} after the crash in window {w}:{}",
            summary(&bus).await
        );
        assert!(
            eventually_async(Duration::from_secs(20), || all_verified_upto(&bus, target)).await
        );

        let groups = stored_groups(&bus).await;
        let verdicts = stored_verdicts(&bus).await;
        assert_one_accepting_verdict_each(&groups, &verdicts, target);
        let in_flight = groups.iter().filter(|k| k.0 == w).count();
        assert_eq!(
            in_flight,
            2 * per_window as usize,
            "window {w} groups in flight at the crash"
        );
        for m in &miners {
            let acked = published(&bus, m);
            let stored = groups.iter().filter(|k| &k.1 == m).count() as u64;
            assert!(
                acked <= stored,
                "{m}: {acked} PubAcks but only {stored} groups stored"
            );
            let after: BTreeSet<u64> = groups
                .iter()
                .filter(|k| &k.1 == m && k.0 > w)
                .map(|k| k.0)
                .collect();
            assert!(
                after.len() >= 2,
                "{m} mined windows {after:?} after the crash in {w}"
            );
        }
        let weights =
            stream_messages::<Weights>(&bus, subj::STREAM_WEIGHTS, "grail.weights.").await;
        let of_w = weights
            .iter()
            .find(|x| x.window == w)
            .expect("weights of the crash window");
        for m in &miners {
            let e = of_w
                .entries
                .iter()
                .find(|e| &e.miner == m)
                .expect("miner scored");
            assert!(e.weight > 0.0, "{m} lost its weight for window {w}");
        }
        let events = |e: &str| bus.metrics.nats_events.with_label_values(&[e]).get();
        assert!(
            events("disconnected") >= 1,
            "the client never saw the crash"
        );
    });
}

/// A verifier compute that never finishes (until the test ends): it holds its groups.
struct Stuck {
    held: Arc<Mutex<Vec<GroupKey>>>,
    gate: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl VerifierCompute for Stuck {
    fn verify(&mut self, job: &VerifyJob) -> anyhow::Result<VerifyOutcome> {
        let g = &job.group;
        self.held
            .lock()
            .unwrap()
            .push((g.window, g.miner.clone(), g.group_index));
        let _ = self.gate.lock().unwrap().recv(); // returns when the test drops the sender
        anyhow::bail!("released at the end of the test")
    }
}

#[test]
fn a_verifier_killed_while_holding_groups_loses_none_of_them() {
    let nats = TestNats::start();
    let (release, gate) = mpsc::channel::<()>();
    actix::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, WINDOW_MS);
        let miner = start_miner(role_ctx(&bus, "miner", "miner-0"), 4, 1, |_| structural());
        let ack_wait = Duration::from_secs(3);

        // Verifier A, in its own "process", takes groups and never finishes them.
        let held: Arc<Mutex<Vec<GroupKey>>> = Default::default();
        let gate = Arc::new(Mutex::new(gate));
        let (h, g) = (held.clone(), gate.clone());
        let a = Process::spawn(nats.url(), move |bus| {
            let ctx = role_ctx(bus, "verifier", "verifier-a");
            start_verifier(ctx, 2, ack_wait, move |_| {
                Box::new(Stuck {
                    held: h.clone(),
                    gate: g.clone(),
                })
            });
        });
        assert!(
            eventually(Duration::from_secs(30), || held.lock().unwrap().len() >= 2).await,
            "verifier A never took two groups"
        );
        // Verifier B joins the shared consumer, then A dies holding its groups unacked.
        let b = start_verifier(
            role_ctx(&bus, "verifier", "verifier-b"),
            2,
            ack_wait,
            |_| Box::new(StructuralVerifier),
        );
        let a_metrics = a.bus.metrics.clone();
        a.kill();
        let held: Vec<GroupKey> = held.lock().unwrap().clone();
        let upto = held.iter().map(|k| k.0).max().unwrap() + 1;
        assert!(
            eventually_async(Duration::from_secs(40), || all_verified_upto(&bus, upto)).await,
            "groups up to window {upto} not all verified after verifier A died"
        );

        let groups = stored_groups(&bus).await;
        let verdicts = stored_verdicts(&bus).await;
        assert_one_accepting_verdict_each(&groups, &verdicts, upto);
        for key in &held {
            assert!(
                groups.contains(key),
                "held group {key:?} is not in the stream"
            );
            assert_eq!(
                verdicts[key][0].verifier, b,
                "group {key:?} verified by someone other than B"
            );
        }
        assert!(published(&bus, &miner) >= 4);
        // A finished nothing: every verdict is B's.
        assert!(verdicts.values().flatten().all(|v| v.verifier == b));
        assert_eq!(
            a_metrics
                .groups_verified
                .with_label_values(&["accepted", "none"])
                .get(),
            0
        );
    });
    drop(release);
}

/// Mines the real group, then panics before handing it over on the first attempt of every
/// even group, like a GPU worker faulting at the end of a group; group `poisoned` faults on
/// every attempt.
struct FaultyWorker {
    faulted: Arc<Mutex<HashSet<(u64, u32)>>>,
    poisoned: u32,
}

impl MinerCompute for FaultyWorker {
    fn mine(&mut self, job: &MineJob) -> anyhow::Result<RolloutGroup> {
        let group = StructuralMiner {
            checkpoint: Hash32::default(),
        }
        .mine(job)?;
        let first = self
            .faulted
            .lock()
            .unwrap()
            .insert((job.window, job.group_index));
        if job.group_index == self.poisoned || (first && job.group_index % 2 == 0) {
            panic!("simulated device fault in group {}", job.group_index);
        }
        Ok(group)
    }
    fn checkpoint(&self) -> Hash32 {
        Hash32::default()
    }
}

#[test]
fn miner_workers_panicking_mid_group_are_restarted_and_the_groups_still_get_published() {
    let nats = TestNats::start();
    actix::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, WINDOW_MS);
        let faulted: Arc<Mutex<HashSet<(u64, u32)>>> = Default::default();
        let starts = Arc::new(AtomicUsize::new(0));
        let (f, s) = (faulted.clone(), starts.clone());
        let per_window = 5u32;
        let poisoned = 3;
        let miner = start_miner(
            role_ctx(&bus, "miner", "miner-0"),
            per_window,
            2,
            move |_| {
                s.fetch_add(1, Ordering::SeqCst);
                Box::new(FaultyWorker {
                    faulted: f.clone(),
                    poisoned,
                })
            },
        );
        start_verifier(
            role_ctx(&bus, "verifier", "verifier-0"),
            2,
            Duration::from_secs(10),
            |_| Box::new(StructuralVerifier),
        );
        // Two windows in which every healthy group was verified.
        let full = |verdicts: &BTreeMap<GroupKey, Vec<GroupVerdict>>| -> Vec<u64> {
            let mut per: BTreeMap<u64, usize> = BTreeMap::new();
            for k in verdicts.keys() {
                *per.entry(k.0).or_default() += 1;
            }
            per.into_iter()
                .filter(|(_, n)| *n == per_window as usize - 1)
                .map(|(w, _)| w)
                .collect()
        };
        assert!(
            eventually_async(Duration::from_secs(40), || async {
                full(&stored_verdicts(&bus).await).len() >= 2
            })
            .await,
            "no two windows fully verified"
        );
        let groups = stored_groups(&bus).await;
        let verdicts = stored_verdicts(&bus).await;
        let upto = *full(&verdicts).last().unwrap();
        assert_one_accepting_verdict_each(&groups, &verdicts, upto);
        for w in full(&verdicts) {
            let indices: Vec<u32> = groups.iter().filter(|k| k.0 == w).map(|k| k.2).collect();
            assert_eq!(
                indices,
                vec![0, 1, 2, 4],
                "window {w}: the poisoned group 3 must not be published, the rest exactly once"
            );
            assert!(groups.iter().all(|k| k.1 == miner));
        }
        let restarts: u64 = (0..2)
            .map(|slot| {
                bus.metrics
                    .worker_restarts
                    .with_label_values(&["miner", &slot.to_string()])
                    .get()
            })
            .sum();
        // Per full window: groups 0, 2, 4 fault once, the poisoned one three times.
        assert!(restarts >= 2 * 6, "worker restarts {restarts}");
        assert!(starts.load(Ordering::SeqCst) as u64 >= restarts);
        assert_eq!(
            bus.metrics
                .actor_restarts
                .with_label_values(&["miner"])
                .get(),
            0,
            "worker faults must not restart the miner actor"
        );
    });
}

/// Honest compute, then a tampered reward: fails the verifier's re-scoring.
struct TamperedReward;
impl MinerCompute for TamperedReward {
    fn mine(&mut self, job: &MineJob) -> anyhow::Result<RolloutGroup> {
        let mut g = structural().mine(job)?;
        g.rollouts[0].reward += 0.5;
        Ok(g)
    }
    fn checkpoint(&self) -> Hash32 {
        Hash32::default()
    }
}

/// Problems derived from guessed randomness (precomputed before the window opened).
struct GuessedRandomness;
impl MinerCompute for GuessedRandomness {
    fn mine(&mut self, job: &MineJob) -> anyhow::Result<RolloutGroup> {
        let mut guessed = job.clone();
        guessed.open_randomness = [0; 32];
        structural().mine(&guessed)
    }
    fn checkpoint(&self) -> Hash32 {
        Hash32::default()
    }
}

/// Valid groups in another miner's name, signed with its own key.
struct Impostor {
    victim: String,
    victim_pubkey: [u8; 32],
}
impl MinerCompute for Impostor {
    fn mine(&mut self, job: &MineJob) -> anyhow::Result<RolloutGroup> {
        let mut stolen = job.clone();
        stolen.miner = self.victim.clone();
        stolen.miner_pubkey = self.victim_pubkey;
        structural().mine(&stolen)
    }
    fn checkpoint(&self) -> Hash32 {
        Hash32::default()
    }
}

#[test]
fn forging_miners_get_zero_weight_while_honest_miners_are_unaffected() {
    let nats = TestNats::start();
    actix::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, WINDOW_MS);
        let per_window = 2;
        let honest_ctx = role_ctx(&bus, "miner", "honest-0");
        let victim = honest_ctx.identity.address().to_string();
        let victim_pubkey = honest_ctx.identity.public();
        let honest = [
            start_miner(honest_ctx, per_window, 1, |_| structural()),
            start_miner(role_ctx(&bus, "miner", "honest-1"), per_window, 1, |_| {
                structural()
            }),
        ];
        let tamperer = start_miner(role_ctx(&bus, "miner", "tamperer"), per_window, 1, |_| {
            Box::new(TamperedReward)
        });
        let guesser = start_miner(role_ctx(&bus, "miner", "guesser"), per_window, 1, |_| {
            Box::new(GuessedRandomness)
        });
        let impostor = start_miner(
            role_ctx(&bus, "miner", "impostor"),
            per_window,
            1,
            move |_| {
                Box::new(Impostor {
                    victim: victim.clone(),
                    victim_pubkey,
                })
            },
        );
        start_verifier(
            role_ctx(&bus, "verifier", "verifier-0"),
            4,
            Duration::from_secs(10),
            |_| Box::new(StructuralVerifier),
        );
        start_scorer(&bus);

        // Wait for a finalised window that scored all four miners who were verified.
        let scored = |w: &Weights| {
            let has = |m: &String| w.entries.iter().any(|e| &e.miner == m);
            honest.iter().all(has) && has(&tamperer) && has(&guesser)
        };
        assert!(
            eventually_async(Duration::from_secs(45), || async {
                stream_messages::<Weights>(&bus, subj::STREAM_WEIGHTS, "grail.weights.")
                    .await
                    .iter()
                    .any(scored)
            })
            .await,
            "no window scored every miner"
        );

        let weights =
            stream_messages::<Weights>(&bus, subj::STREAM_WEIGHTS, "grail.weights.").await;
        let weight =
            |w: &Weights, m: &str| w.entries.iter().find(|e| e.miner == m).map(|e| e.weight);
        for w in &weights {
            for cheat in [&tamperer, &guesser] {
                assert_eq!(
                    weight(w, cheat).unwrap_or(0.0),
                    0.0,
                    "window {}: cheat has weight",
                    w.window
                );
            }
            assert_eq!(
                weight(w, &impostor),
                None,
                "window {}: the impostor was scored",
                w.window
            );
            let honest_sum: f32 = honest.iter().filter_map(|m| weight(w, m)).sum();
            assert!(
                (honest_sum - 1.0).abs() < 1e-3,
                "window {}: honest miners hold {honest_sum}",
                w.window
            );
        }
        assert!(weights
            .iter()
            .any(|w| honest.iter().all(|m| weight(w, m).unwrap_or(0.0) > 0.0)));

        let window_verdicts = stream_messages::<MinerWindowVerdict>(
            &bus,
            subj::STREAM_VERDICTS,
            "grail.verdict.miner.",
        )
        .await;
        let reasons = |m: &str| -> BTreeSet<Option<String>> {
            window_verdicts
                .iter()
                .filter(|v| v.miner == m)
                .map(|v| v.reason.clone())
                .collect()
        };
        assert_eq!(
            reasons(&tamperer),
            BTreeSet::from([Some("reward_mismatch".to_string())])
        );
        assert_eq!(
            reasons(&guesser),
            BTreeSet::from([Some("problem_seed_mismatch".to_string())])
        );
        assert!(reasons(&impostor).is_empty());
        for v in window_verdicts.iter().filter(|v| honest.contains(&v.miner)) {
            assert!(
                v.passed,
                "honest {} failed window {}: {:?}",
                v.miner, v.window, v.reason
            );
            // The impostor's groups in the victim's name were not counted as the victim's.
            assert_eq!(
                (v.groups_seen, v.groups_accepted),
                (per_window, per_window),
                "{v:?}"
            );
        }
        assert!(window_verdicts.iter().all(|v| v.miner != impostor));
        // The impostor's groups reached the stream (the server cannot check signatures) and
        // every one was refused at the verifier's bus.
        let refused = bus
            .metrics
            .messages_rejected
            .with_label_values(&["verifier", "signer_mismatch"])
            .get();
        assert!(published(&bus, &impostor) >= per_window as u64);
        assert!(
            eventually(Duration::from_secs(10), || bus
                .metrics
                .messages_rejected
                .with_label_values(&["verifier", "signer_mismatch"])
                .get()
                >= published(&bus, &impostor))
            .await,
            "signer mismatches {refused} < impostor groups {}",
            published(&bus, &impostor)
        );
    });
}
