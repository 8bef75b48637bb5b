//! Misbehaving parts, end to end through the roles: compute workers that panic mid-group
//! (restarted, the group still published), and miners that forge groups (zero weight for
//! them, honest miners unaffected).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::compute::structural::{StructuralMiner, StructuralVerifier};
use actors::compute::ComputeError;
use actors::roles::miner::{MineJob, MinerCompute};
use grail_integration_tests::observe::*;
use grail_integration_tests::*;
use messages::subjects as subj;
use messages::{GroupVerdict, Hash32, MinerWindowVerdict, RejectCode, RolloutGroup, Weights};

/// Mines the real group, then panics before handing it over on the first attempt of every
/// even group, like a GPU worker faulting at the end of a group; group `poisoned` faults on
/// every attempt.
struct FaultyWorker {
    faulted: Arc<Mutex<HashSet<(u64, u32)>>>,
    poisoned: u32,
}

impl MinerCompute for FaultyWorker {
    fn mine(&mut self, job: &MineJob) -> Result<RolloutGroup, ComputeError> {
        let group = StructuralMiner {
            checkpoint: Hash32::default(),
        }
        .mine(job)?;
        let first = self
            .faulted
            .lock()
            .unwrap()
            .insert((job.window, job.group_index));
        if job.group_index == self.poisoned || (first && job.group_index.is_multiple_of(2)) {
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
    actix_rt::System::new().block_on(async {
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
    fn mine(&mut self, job: &MineJob) -> Result<RolloutGroup, ComputeError> {
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
    fn mine(&mut self, job: &MineJob) -> Result<RolloutGroup, ComputeError> {
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
    fn mine(&mut self, job: &MineJob) -> Result<RolloutGroup, ComputeError> {
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
    actix_rt::System::new().block_on(async {
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

        // Wait for a second finalised window that scored the four miners who get verdicts.
        let scored = |w: &Weights| {
            let has = |m: &String| w.entries.iter().any(|e| &e.miner == m);
            honest.iter().all(has) && has(&tamperer) && has(&guesser)
        };
        assert!(
            eventually_async(Duration::from_secs(45), || async {
                stream_messages::<Weights>(&bus, subj::STREAM_WEIGHTS, "grail.weights.")
                    .await
                    .iter()
                    .any(|w| w.window >= 2 && scored(w))
            })
            .await,
            "no second window scored every miner"
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
        let reasons = |m: &str| -> BTreeSet<Option<RejectCode>> {
            window_verdicts
                .iter()
                .filter(|v| v.miner == m)
                .map(|v| v.reason)
                .collect()
        };
        assert_eq!(
            reasons(&tamperer),
            BTreeSet::from([Some(RejectCode::RewardMismatch)])
        );
        assert_eq!(
            reasons(&guesser),
            BTreeSet::from([Some(RejectCode::ProblemSeedMismatch)])
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
