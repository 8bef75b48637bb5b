//! The verifiers' shared window ledger against a real nats-server: two verifier instances
//! (two connections, two `BusLedger`s, like two `grail run --role verifier` processes)
//! receive the two halves of a replay, a copy, a flood; each conflict is refused exactly
//! once, whichever instance sees which half, and a redelivery to the other instance gets
//! the same answer.

use actors::ledger::BusLedger;
use grail_integration_tests::{connect, TestNats};
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
        let (a, b) = futures::join!(
            futures::future::join_all(groups.iter().step_by(2).map(|g| one.admit(1, g, &l))),
            futures::future::join_all(
                groups
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .map(|g| two.admit(1, g, &l))
            )
        );
        let answers: Vec<_> = a.into_iter().chain(b).map(|r| r.expect("bus")).collect();
        let admitted = answers.iter().filter(|x| x.is_ok()).count();
        assert_eq!(admitted, 5, "{answers:?}");
        assert!(answers.iter().all(|x| matches!(
            x,
            Ok(Admission::New) | Err(LedgerReject::TooManyGroups { max: 5, .. })
        )));
        // Redelivery of every group to the other instance: the same split.
        let (a, b) = futures::join!(
            futures::future::join_all(groups.iter().step_by(2).map(|g| two.admit(1, g, &l))),
            futures::future::join_all(
                groups
                    .iter()
                    .skip(1)
                    .step_by(2)
                    .map(|g| one.admit(1, g, &l))
            )
        );
        let again: Vec<_> = a.into_iter().chain(b).map(|r| r.expect("bus")).collect();
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
