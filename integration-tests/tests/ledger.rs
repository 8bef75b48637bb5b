//! The verifiers' shared window ledger against a real nats-server: two verifier instances
//! (two connections, two `BusLedger`s, like two `grail run --role verifier` processes)
//! receive the two halves of a replay, a copy, a flood; each conflict is refused exactly
//! once, whichever instance sees which half, and a redelivery to the other instance gets
//! the same answer.

use std::time::Duration;

use actors::bus::MsgMeta;
use actors::compute::structural::{StructuralMiner, StructuralVerifier};
use actors::ledger::BusLedger;
use actors::roles::miner::{MineJob, MinerCompute};
use grail_integration_tests::observe::follow_windows;
use grail_integration_tests::{
    connect, eventually, eventually_async, role_ctx, start_clock, start_verifier, stream_messages,
    stream_raw, Process, TestNats,
};
use messages::subjects as subj;
use messages::{GroupVerdict, Hash32, Identity, RejectCode, RolloutGroup, Ss58Address};
use protocol::checks::{
    Admission, CopyRules, GroupClaims, LateCopy, LedgerReject, Limits, WindowLedger,
};

const ALICE: &str = "5Alice";
const MALLORY: &str = "5Mallory";

fn limits(max_groups: u32) -> Limits {
    Limits {
        max_groups_per_window: max_groups,
        ..Limits::default()
    }
}

fn digests(range: std::ops::Range<u8>) -> Vec<[u8; 32]> {
    range.map(|i| [i; 32]).collect()
}

fn group<'a>(
    miner: &'a str,
    nonce: u64,
    index: u32,
    envelope: u8,
    ts: u64,
    completions: &'a [[u8; 32]],
) -> GroupClaims<'a> {
    GroupClaims {
        miner,
        nonce,
        group_index: index,
        envelope: [envelope; 32],
        server_ts_ms: ts,
        completions,
    }
}

/// Window 1's `groups` judged at once, the even ones by `even`, the odd ones by `odd`; the
/// answers in that order (evens, then odds).
async fn judge_split(
    even: &BusLedger,
    odd: &BusLedger,
    groups: &[GroupClaims<'_>],
    l: &Limits,
) -> Vec<Result<Admission, LedgerReject>> {
    let evens = groups.iter().step_by(2).map(|g| even.admit(1, g, l));
    let odds = groups.iter().skip(1).step_by(2).map(|g| odd.admit(1, g, l));
    let (a, b) = futures::join!(
        futures::future::join_all(evens),
        futures::future::join_all(odds)
    );
    a.into_iter().chain(b).map(|r| r.expect("bus")).collect()
}

/// Two verifier instances on their own connections to one server (topology created).
async fn two_instances(nats: &TestNats) -> (BusLedger, BusLedger) {
    let _admin = nats.bus().await;
    let (a, b) = (connect(nats.url()).await, connect(nats.url()).await);
    let rules = CopyRules::default();
    (
        BusLedger::open(&a.js, rules)
            .await
            .expect("ledger on instance a"),
        BusLedger::open(&b.js, rules)
            .await
            .expect("ledger on instance b"),
    )
}

#[test]
fn a_replayed_nonce_or_group_index_split_over_two_instances_is_refused_exactly_once() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let (one, two) = two_instances(&nats).await;
        let none = Vec::new();
        let l = limits(16);
        // Window 1: same nonce, different content, judged at the same time on both.
        let first = group(MALLORY, 7, 0, 1, 100, &none);
        let replay = group(MALLORY, 7, 1, 2, 101, &none);
        let (a, b) = futures::join!(one.admit(1, &first, &l), two.admit(1, &replay, &l));
        let answers = [a.expect("bus"), b.expect("bus")];
        let refused: Vec<_> = answers.iter().filter(|x| x.is_err()).collect();
        assert_eq!(refused.len(), 1, "exactly one refused: {answers:?}");
        assert_eq!(refused[0], &Err(LedgerReject::DuplicateNonce { nonce: 7 }));
        // Redelivered to the *other* instance: the same answers.
        let (a2, b2) = futures::join!(two.admit(1, &first, &l), one.admit(1, &replay, &l));
        assert_eq!(a2.unwrap().is_ok(), answers[0].is_ok());
        assert_eq!(b2.unwrap().is_ok(), answers[1].is_ok());

        // Window 2: same group index, different nonce and content.
        let first = group(MALLORY, 1, 5, 3, 100, &none);
        let again = group(MALLORY, 2, 5, 4, 101, &none);
        assert_eq!(one.admit(2, &first, &l).await.unwrap(), Ok(Admission::New));
        for ledger in [&two, &one, &two] {
            assert_eq!(
                ledger.admit(2, &again, &l).await.unwrap(),
                Err(LedgerReject::DuplicateGroupIndex { group: 5 })
            );
        }
        // The original, redelivered to the other instance, is a repeat, not a duplicate.
        assert_eq!(
            two.admit(2, &first, &l).await.unwrap(),
            Ok(Admission::Repeat)
        );
        // Another miner's same nonce and index, and another window, are independent.
        let honest = group(ALICE, 1, 5, 5, 100, &none);
        assert_eq!(two.admit(2, &honest, &l).await.unwrap(), Ok(Admission::New));
        assert_eq!(two.admit(3, &again, &l).await.unwrap(), Ok(Admission::New));
    });
}

#[test]
fn a_copy_is_refused_whichever_instance_judged_its_original_and_reported_when_judged_first() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let (one, two) = two_instances(&nats).await;
        let l = limits(16);
        let completions = digests(0..16);
        // Copy judged after its original, on the other instance.
        let original = group(ALICE, 1, 0, 1, 1_000, &completions);
        assert_eq!(
            one.admit(1, &original, &l).await.unwrap(),
            Ok(Admission::New)
        );
        assert!(one
            .record(1, ALICE, 1_000, &completions)
            .await
            .unwrap()
            .is_empty());
        let copy = group(MALLORY, 9, 0, 2, 2_000, &completions);
        let refused = two.admit(1, &copy, &l).await.unwrap();
        let copied = Err(LedgerReject::Copied {
            original: ALICE.into(),
            shared: 16,
            ratio: 1.0,
        });
        assert_eq!(refused, copied);
        // Redelivered to the first instance: the same verdict.
        assert_eq!(one.admit(1, &copy, &l).await.unwrap(), copied);

        // Window 2: the copy reaches an instance first and passes; its original, judged on
        // the other instance, is admitted (the victim is never gated) and reveals the copy.
        let copy = group(MALLORY, 9, 0, 2, 2_000, &completions);
        assert_eq!(one.admit(2, &copy, &l).await.unwrap(), Ok(Admission::New));
        assert!(one
            .record(2, MALLORY, 2_000, &completions)
            .await
            .unwrap()
            .is_empty());
        let original = group(ALICE, 1, 0, 1, 1_000, &completions);
        assert_eq!(
            two.admit(2, &original, &l).await.unwrap(),
            Ok(Admission::New)
        );
        assert_eq!(
            two.record(2, ALICE, 1_000, &completions).await.unwrap(),
            vec![LateCopy {
                copier: MALLORY.into(),
                original: ALICE.into(),
                shared: 16
            }]
        );
        // The copier's next group with those completions is refused on either instance.
        let next = group(MALLORY, 10, 1, 3, 2_500, &completions);
        assert!(matches!(
            one.admit(2, &next, &l).await.unwrap(),
            Err(LedgerReject::Copied { .. })
        ));
    });
}

#[test]
fn a_group_count_flood_over_two_instances_admits_exactly_the_limit_like_the_pure_ledger() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let (one, two) = two_instances(&nats).await;
        let none = Vec::new();
        let l = limits(5);
        let groups: Vec<GroupClaims> = (0..24u32)
            .map(|i| group(MALLORY, u64::from(i), i, i as u8, 10, &none))
            .collect();
        // Both instances judge the flood at the same time.
        let answers = judge_split(&one, &two, &groups, &l).await;
        let admitted = answers.iter().filter(|x| x.is_ok()).count();
        assert_eq!(admitted, 5, "{answers:?}");
        assert!(answers.iter().all(|x| matches!(
            x,
            Ok(Admission::New) | Err(LedgerReject::TooManyGroups { max: 5, .. })
        )));
        // Redelivery of every group to the other instance: the same split.
        let again = judge_split(&two, &one, &groups, &l).await;
        for (first, second) in answers.iter().zip(&again) {
            assert_eq!(first.is_ok(), second.is_ok());
        }
        // Sequentially, the bus ledger and the pure one agree group by group.
        let mut pure = WindowLedger::default();
        for g in &groups {
            let bus = one.admit(2, g, &l).await.unwrap();
            assert_eq!(bus, pure.admit(g, &l), "group {}", g.group_index);
        }
    });
}

/// One verifier process (its own System, connection and metrics), model-free compute.
fn verifier_process(url: &str, name: &'static str) -> Process {
    Process::spawn(url, move |bus| {
        start_verifier(
            role_ctx(bus, "verifier", name),
            2,
            Duration::from_secs(10),
            |_| Box::new(StructuralVerifier),
        );
    })
}

async fn verdicts_of(bus: &actors::bus::Bus, miner: &str) -> Vec<GroupVerdict> {
    stream_messages::<GroupVerdict>(bus, subj::STREAM_VERDICTS, "grail.verdict.group.")
        .await
        .into_iter()
        .filter(|v| v.miner == miner)
        .collect()
}

/// The verifier roles themselves: the originals are judged by one verifier process, which then
/// dies; the replays go to a second process that never saw the originals and are refused by the
/// shared ledger (the structural checks alone would accept them). An original envelope
/// delivered again to the second process is a ledger repeat, not a replay.
#[test]
fn replays_judged_by_a_second_verifier_process_are_refused_by_the_shared_ledger() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let bus = nats.bus().await;
        let _clock = start_clock(&bus, 3_000);
        let book = follow_windows(&bus);
        assert!(eventually(Duration::from_secs(30), || book.latest_open().is_some()).await);
        // A window that has just opened: its deadline is ~1.8 s away.
        let first = book.latest_open().unwrap().window;
        assert!(
            eventually(Duration::from_secs(30), || {
                book.latest_open().is_some_and(|o| o.window > first)
            })
            .await
        );
        let open = book.latest_open().unwrap();
        let miner = Identity::generate();
        let address = miner.address().to_string();
        let mut compute = StructuralMiner {
            checkpoint: Hash32::from([0; 32]),
        };
        let mut mine = |group_index| {
            compute
                .mine(&MineJob {
                    window: open.window,
                    open_randomness: open.randomness.0,
                    deadline_ms: open.deadline_ms,
                    group_index,
                    miner: address.clone(),
                    miner_pubkey: Ss58Address::parse(&address).unwrap().public,
                    checkpoint: None,
                })
                .expect("structural mining")
        };
        let (g0, g1, g2) = (mine(0), mine(1), mine(2));
        let publish = |g: RolloutGroup| {
            let (bus, miner, address) = (bus.clone(), &miner, address.clone());
            async move {
                let meta = MsgMeta {
                    window: Some(g.window),
                    miner: Some(address.clone()),
                    msg_id: None,
                };
                bus.publish_durable(
                    "miner",
                    subj::rollout(g.window, &address),
                    g,
                    miner,
                    meta,
                    Duration::from_secs(5),
                )
                .await
                .expect("group stored");
            }
        };
        let a = verifier_process(nats.url(), "verifier-a");
        publish(g0.clone()).await;
        publish(g1.clone()).await;
        assert!(
            eventually_async(Duration::from_secs(60), || async {
                verdicts_of(&bus, &address).await.len() == 2
            })
            .await,
            "the first verifier judged the originals"
        );
        assert!(verdicts_of(&bus, &address).await.iter().all(|v| v.accepted));
        a.kill();

        let b = verifier_process(nats.url(), "verifier-b");
        // Same nonce as group 0, other content (a valid group 2).
        let nonce_replay = RolloutGroup {
            nonce: g0.nonce,
            ..g2
        };
        // Group index 1 again under a fresh nonce.
        let index_replay = RolloutGroup {
            nonce: g1.nonce ^ 0xdead_beef,
            ..g1.clone()
        };
        publish(nonce_replay).await;
        publish(index_replay).await;
        assert!(
            eventually_async(Duration::from_secs(60), || async {
                verdicts_of(&bus, &address).await.len() == 4
            })
            .await,
            "the second verifier judged the replays"
        );
        let verdicts = verdicts_of(&bus, &address).await;
        let of = |index: u32| -> Vec<(bool, Option<RejectCode>)> {
            verdicts
                .iter()
                .filter(|v| v.group_index == index)
                .map(|v| (v.accepted, v.reason))
                .collect()
        };
        assert_eq!(of(0), vec![(true, None)]);
        assert_eq!(of(2), vec![(false, Some(RejectCode::DuplicateNonce))]);
        assert_eq!(
            of(1),
            vec![(true, None), (false, Some(RejectCode::DuplicateGroupIndex))]
        );

        // The exact envelope of group 0 stored again (under another de-duplication id) and
        // delivered to the second process: the ledger answers "repeat", not "replay of itself".
        // (Its new server timestamp is past the deadline, so the structural checks call it
        // late; its verdict id is group 0's, so no second verdict is stored.)
        let raw = stream_raw(
            &bus,
            subj::STREAM_ROLLOUTS,
            &subj::rollout(open.window, &address),
        )
        .await;
        let (subject, payload) = raw.first().cloned().expect("group 0 stored");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(subj::HDR_MSG_ID, "redelivery-of-group-0");
        bus.js
            .publish_with_headers(subject, headers, payload)
            .await
            .expect("publish")
            .await
            .expect("stored");
        let metrics = b.bus.metrics.clone();
        let event = |e: &str| metrics.ledger_events.with_label_values(&[e]).get();
        assert!(
            eventually(Duration::from_secs(30), || event("repeat") >= 1).await,
            "the same envelope on another instance is a ledger repeat"
        );
        assert_eq!(
            (event("duplicate_nonce"), event("duplicate_group_index")),
            (1, 1),
            "each replay refused exactly once, the repeat not at all"
        );
        assert_eq!(verdicts_of(&bus, &address).await.len(), 4);
        b.kill();
    });
}

/// A ledger the bus cannot answer never admits a replay: during a server outage the answer is
/// an error (the verifier hands the group back) or the refusal, never an admission; after it,
/// the refusal.
#[test]
fn a_replay_judged_during_a_server_outage_is_never_admitted() {
    let nats = TestNats::start();
    actix_rt::System::new().block_on(async {
        let (one, two) = two_instances(&nats).await;
        let none = Vec::new();
        let l = limits(16);
        let first = group(MALLORY, 7, 0, 1, 100, &none);
        let replay = group(MALLORY, 7, 1, 2, 101, &none);
        assert_eq!(one.admit(1, &first, &l).await.unwrap(), Ok(Admission::New));
        let refused = Err(LedgerReject::DuplicateNonce { nonce: 7 });
        let (_, during) = futures::join!(nats.crash_and_restart(Duration::from_secs(8)), async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            two.admit(1, &replay, &l).await
        });
        match during {
            Err(e) => assert!(e.to_string().contains("grail_ledger"), "{e}"),
            Ok(answer) => assert_eq!(answer, refused),
        }
        assert!(
            eventually_async(Duration::from_secs(30), || async {
                matches!(two.admit(1, &replay, &l).await, Ok(ref a) if *a == refused)
            })
            .await
        );
    });
}
