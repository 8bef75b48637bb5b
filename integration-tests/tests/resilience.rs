//! Failure modes against a real nats-server, with the roles running as in production
//! (supervised actors, compute on worker threads, model-free structural compute):
//! the server crashing mid-run and a verifier dying while it holds groups.
//!
//! Windows are short (2.5 s) and every wait is an `eventually` with a generous timeout, so
//! a loaded CI machine only makes the tests slower, never wrong.

use std::collections::BTreeSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use actors::bus::now_ms;
use actors::compute::structural::StructuralVerifier;
use actors::compute::ComputeError;
use actors::roles::verifier::{VerifierCompute, VerifyJob, VerifyOutcome};
use grail_integration_tests::observe::*;
use grail_integration_tests::*;
use messages::subjects as subj;
use messages::Weights;

#[test]
fn a_nats_server_crash_mid_window_loses_no_acked_group_and_windows_continue() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
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
    fn verify(&mut self, job: &VerifyJob) -> Result<VerifyOutcome, ComputeError> {
        let g = &job.group;
        self.held
            .lock()
            .unwrap()
            .push((g.window, g.miner.clone(), g.group_index));
        let _ = self.gate.lock().unwrap().recv(); // returns when the test drops the sender
        Err(ComputeError::fault("released at the end of the test"))
    }
}

#[test]
fn a_verifier_killed_while_holding_groups_loses_none_of_them() {
    let nats = TestNats::start();
    let (release, gate) = mpsc::channel::<()>();
    actix_rt::System::new().block_on(async {
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

#[test]
fn an_ordered_reader_resumes_after_a_server_crash_without_gaps_or_repeats() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let id = role_identity("scorer");
        let publish = |window: u64| {
            let (bus, id) = (bus.clone(), id.clone());
            async move {
                let w = messages::Weights {
                    version: messages::WIRE_VERSION,
                    window,
                    entries: vec![],
                };
                bus.publish_durable(
                    "test",
                    subj::weights(window),
                    w,
                    &id,
                    Default::default(),
                    Duration::from_secs(20),
                )
                .await
                .unwrap();
            }
        };
        for w in 1..=3 {
            publish(w).await;
        }
        let mut reader = bus
            .replay(
                subj::STREAM_WEIGHTS,
                subj::WEIGHTS_ALL,
                async_nats::jetstream::consumer::DeliverPolicy::All,
            )
            .await
            .unwrap();
        for w in 1..=3 {
            assert_eq!(next_window(&bus, &mut reader).await, w);
        }
        nats.crash_and_restart(Duration::from_millis(500)).await;
        for w in 4..=6 {
            publish(w).await;
        }
        for w in 4..=6 {
            assert_eq!(
                next_window(&bus, &mut reader).await,
                w,
                "resumes after the last message read"
            );
        }
    });
}

/// The window of the next `Weights` message `reader` returns.
async fn next_window(bus: &actors::bus::Bus, reader: &mut actors::bus::OrderedMessages) -> u64 {
    let msg = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(reader))
        .await
        .expect("a message within 10 s (the client alone notices a lost consumer after 30 s)")
        .expect("reader open")
        .expect("no reader error");
    bus.open::<Weights>("test", &msg.payload)
        .unwrap()
        .0
        .payload
        .window
}

/// Fails its first two runs, then runs until the test ends.
struct FailsTwice(Arc<std::sync::atomic::AtomicUsize>);

impl actors::role::RoleLoop for FailsTwice {
    fn run(&self, _: actors::shutdown::ShutdownSignal) -> actors::role::RoleFuture {
        let runs = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Box::pin(async move {
            anyhow::ensure!(runs > 2, "simulated failure {runs}");
            futures::future::pending::<()>().await;
            Ok(())
        })
    }
}

#[test]
fn a_failing_role_is_restarted_even_when_nobody_keeps_its_address() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ctx = role_ctx(&bus, "scorer", "flaky");
        drop(actors::supervisor::start(
            ctx,
            Arc::new(FailsTwice(runs.clone())),
        ));
        let restarts = || {
            bus.metrics
                .actor_restarts
                .with_label_values(&["scorer"])
                .get()
        };
        assert!(
            eventually(Duration::from_secs(10), || runs
                .load(std::sync::atomic::Ordering::SeqCst)
                == 3)
            .await,
            "runs {} restarts {}",
            runs.load(std::sync::atomic::Ordering::SeqCst),
            restarts()
        );
        assert_eq!(restarts(), 2);
    });
}

/// Structural mining, but group 1 finishes only 400 ms before the window's deadline.
struct FinishesLate;

impl actors::roles::miner::MinerCompute for FinishesLate {
    fn mine(
        &mut self,
        job: &actors::roles::miner::MineJob,
    ) -> Result<messages::RolloutGroup, ComputeError> {
        if job.group_index == 1 {
            let until = job.deadline_ms.saturating_sub(400);
            std::thread::sleep(Duration::from_millis(until.saturating_sub(now_ms())));
        }
        structural().mine(job)
    }
    fn checkpoint(&self) -> messages::Hash32 {
        Default::default()
    }
}

#[test]
fn an_outage_across_the_deadline_costs_an_honest_miner_nothing() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, WINDOW_MS);
        let miner = start_miner(role_ctx(&bus, "miner", "miner-0"), 2, 2, |_| {
            Box::new(FinishesLate)
        });
        start_verifier(
            role_ctx(&bus, "verifier", "verifier-0"),
            2,
            Duration::from_secs(4),
            |_| Box::new(StructuralVerifier),
        );
        start_scorer(&bus);
        let book = follow_windows(&bus);
        // The server dies just before group 1 is published and comes back after the
        // deadline: the miner's publish lands late (or not at all).
        let mut late_window = None;
        for _ in 0..4 {
            let open = loop {
                match book.latest_open() {
                    Some(o) if o.window >= 2 && now_ms() + 800 < o.deadline_ms => break o,
                    _ => book.changed(Duration::from_millis(200)).await,
                }
            };
            tokio::time::sleep(Duration::from_millis(
                (open.deadline_ms - 700).saturating_sub(now_ms()),
            ))
            .await;
            nats.crash_and_restart(Duration::from_millis(1000)).await;
            let w = open.window;
            let late = eventually_async(Duration::from_secs(10), || async {
                stored_verdicts(&bus).await.iter().any(|(k, v)| {
                    k.0 == w && v[0].reason == Some(messages::RejectCode::LateSubmission)
                })
            })
            .await;
            if late {
                late_window = Some(w);
                break;
            }
        }
        let w = late_window.expect("never produced a late group (publish across the outage)");
        assert!(
            eventually_async(Duration::from_secs(30), || async {
                stream_messages::<Weights>(&bus, subj::STREAM_WEIGHTS, "grail.weights.")
                    .await
                    .iter()
                    .any(|x| x.window >= w)
            })
            .await,
            "window {w} never scored:{}",
            summary(&bus).await
        );
        let verdicts = stream_messages::<messages::MinerWindowVerdict>(
            &bus,
            subj::STREAM_VERDICTS,
            "grail.verdict.miner.",
        )
        .await;
        let of_w = verdicts
            .iter()
            .find(|v| v.window == w && v.miner == miner)
            .expect("the miner's verdict for the late window");
        assert!(of_w.passed, "a late group failed an honest miner: {of_w:?}");
        assert_eq!(of_w.groups_accepted, 1, "{of_w:?}");
        let weights =
            stream_messages::<Weights>(&bus, subj::STREAM_WEIGHTS, "grail.weights.").await;
        let weight = weights
            .iter()
            .find(|x| x.window == w)
            .and_then(|x| x.entries.iter().find(|e| e.miner == miner))
            .map(|e| e.weight);
        assert!(weight.is_some_and(|x| x > 0.0), "weight {weight:?}");
    });
}

#[test]
fn a_scorer_restarted_without_its_record_publishes_no_window_twice() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        start_clock(&bus, WINDOW_MS);
        let miner = start_miner(role_ctx(&bus, "miner", "miner-0"), 2, 1, |_| structural());
        start_verifier(
            role_ctx(&bus, "verifier", "verifier-0"),
            2,
            Duration::from_secs(4),
            |_| Box::new(StructuralVerifier),
        );
        let published = || async {
            stream_messages::<Weights>(&bus, subj::STREAM_WEIGHTS, "grail.weights.")
                .await
                .iter()
                .map(|w| w.window)
                .max()
                .unwrap_or(0)
        };
        let scorer = Process::spawn(nats.url(), start_scorer);
        assert!(
            eventually_async(Duration::from_secs(60), || async { published().await >= 3 }).await,
            "the scorer never published window 3"
        );
        scorer.kill();
        // The restart lost the scorer's `last_window` record (as when the KV write failed
        // during a failover) ...
        let kv = bus.js.get_key_value(subj::KV_STATE).await.unwrap();
        kv.delete(messages::bus_permissions::KV_SCORER_LAST_WINDOW)
            .await
            .unwrap();
        // ... and a verdict for an already published window was stored since, so the replay
        // now counts that window differently from what was published.
        let w = 2;
        let mut late = stored_verdicts(&bus)
            .await
            .into_iter()
            .find(|(k, v)| k.0 == w && k.1 == miner && v[0].accepted)
            .expect("an accepting verdict of window 2")
            .1
            .remove(0);
        late.group_index = 99;
        bus.publish_durable(
            "test",
            subj::group_verdict(w, &miner),
            late,
            &role_identity("verifier"),
            Default::default(),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        let before = published().await;
        let scorer = Process::spawn(nats.url(), start_scorer);
        assert!(
            eventually_async(Duration::from_secs(60), || async {
                published().await >= before + 2
            })
            .await,
            "the restarted scorer stopped publishing"
        );
        scorer.kill();
        for (stream, filter) in [
            (subj::STREAM_WEIGHTS, subj::WEIGHTS_ALL),
            (subj::STREAM_VERDICTS, subj::VERDICT_MINER_ALL),
        ] {
            let counts = actors::bus::subject_counts(&bus.js, stream, filter)
                .await
                .unwrap();
            assert!(counts.len() as u64 > before, "{counts:?}");
            let twice: Vec<_> = counts.iter().filter(|(_, n)| *n > 1).collect();
            assert!(twice.is_empty(), "published twice: {twice:?}");
        }
    });
}

#[test]
fn a_url_list_connects_while_its_first_node_is_down() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        // Port 1 on loopback refuses at once: the node listed first is down at start.
        let list = format!("nats://127.0.0.1:1, {}", nats.url());
        let bus = connect(&list).await;
        tokio::time::timeout(Duration::from_secs(30), bus.client.flush())
            .await
            .expect("connected to the live node within 30 s")
            .expect("flush");
        let info = bus.client.server_info();
        assert!(
            nats.url().ends_with(&format!(":{}", info.port)),
            "connected to {}:{}, not {}",
            info.host,
            info.port,
            nats.url()
        );
    });
}
