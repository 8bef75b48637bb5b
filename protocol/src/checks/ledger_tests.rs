use super::*;
use crate::checks::RejectCode;

const ALICE: &str = "alice";
const MALLORY: &str = "mallory";

fn limits(max_groups: u32) -> Limits {
    Limits {
        max_groups_per_window: max_groups,
        ..Limits::default()
    }
}

fn digests(range: std::ops::Range<u8>) -> Vec<Digest> {
    range.map(|i| [i; 32]).collect()
}

fn group<'a>(
    miner: &'a str,
    nonce: u64,
    index: u32,
    envelope: u8,
    ts: u64,
    completions: &'a [Digest],
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

#[test]
fn a_redelivery_is_a_repeat_and_a_replay_with_other_content_is_refused() {
    let mut ledger = WindowLedger::default();
    let none: Vec<Digest> = Vec::new();
    let first = group(ALICE, 7, 0, 1, 100, &none);
    assert_eq!(ledger.admit(&first, &limits(8)), Ok(Admission::New));
    assert_eq!(ledger.admit(&first, &limits(8)), Ok(Admission::Repeat));
    // Same nonce, different content (another envelope, another group index).
    let replay = group(ALICE, 7, 1, 2, 101, &none);
    assert_eq!(
        ledger.admit(&replay, &limits(8)),
        Err(LedgerReject::DuplicateNonce { nonce: 7 })
    );
    // ...and refused again when redelivered; the original is still a repeat.
    assert_eq!(
        ledger.admit(&replay, &limits(8)),
        Err(LedgerReject::DuplicateNonce { nonce: 7 })
    );
    assert_eq!(ledger.admit(&first, &limits(8)), Ok(Admission::Repeat));
    assert_eq!(
        LedgerReject::DuplicateNonce { nonce: 7 }.reason().code(),
        RejectCode::DuplicateNonce
    );
    // Another miner may use the same nonce and index.
    let other = group(MALLORY, 7, 0, 3, 102, &none);
    assert_eq!(ledger.admit(&other, &limits(8)), Ok(Admission::New));
}

#[test]
fn a_second_envelope_for_a_group_index_is_refused_every_time() {
    let mut ledger = WindowLedger::default();
    let none: Vec<Digest> = Vec::new();
    assert!(ledger
        .admit(&group(ALICE, 1, 5, 1, 10, &none), &limits(8))
        .is_ok());
    let again = group(ALICE, 2, 5, 2, 11, &none);
    for _ in 0..2 {
        assert_eq!(
            ledger.admit(&again, &limits(8)),
            Err(LedgerReject::DuplicateGroupIndex { group: 5 })
        );
    }
}

#[test]
fn a_group_count_flood_admits_exactly_the_limit_and_answers_the_same_on_redelivery() {
    let mut ledger = WindowLedger::default();
    let none: Vec<Digest> = Vec::new();
    let mut admitted = 0;
    for i in 0..100u32 {
        let g = group(MALLORY, u64::from(i), i, i as u8, 10, &none);
        match ledger.admit(&g, &limits(3)) {
            Ok(_) => admitted += 1,
            Err(e) => assert_eq!(
                e,
                LedgerReject::TooManyGroups {
                    max: 3,
                    ordinal: i + 1
                }
            ),
        }
    }
    assert_eq!(admitted, 3);
    // A redelivered early group is still in; a redelivered late one still out.
    assert_eq!(
        ledger.admit(&group(MALLORY, 1, 1, 1, 10, &none), &limits(3)),
        Ok(Admission::Repeat)
    );
    assert!(ledger
        .admit(&group(MALLORY, 50, 50, 50, 10, &none), &limits(3))
        .is_err());
    // The flood does not touch another miner's allowance.
    assert!(ledger
        .admit(&group(ALICE, 1, 1, 200, 10, &none), &limits(3))
        .is_ok());
}

#[test]
fn a_copy_judged_after_its_original_is_refused_naming_the_original() {
    let mut ledger = WindowLedger::default();
    let original = digests(0..16);
    assert!(ledger
        .admit(&group(ALICE, 1, 0, 1, 1_000, &original), &limits(8))
        .is_ok());
    assert!(ledger.record(ALICE, 1_000, &original).is_empty());
    let copy = group(MALLORY, 9, 0, 2, 2_000, &original);
    let refused = ledger.admit(&copy, &limits(8)).unwrap_err();
    assert_eq!(
        refused,
        LedgerReject::Copied {
            original: ALICE.into(),
            shared: 16,
            ratio: 1.0
        }
    );
    assert_eq!(refused.reason().code(), RejectCode::CopiedCompletions);
    // Redelivered: the same verdict.
    assert_eq!(ledger.admit(&copy, &limits(8)).unwrap_err(), refused);
}

#[test]
fn a_copy_judged_before_its_original_is_reported_late_and_never_gates_the_victim() {
    let mut ledger = WindowLedger::default();
    let completions = digests(0..16);
    // The copy (published later) reaches a verifier first: nothing to compare with yet.
    let copy = group(MALLORY, 9, 0, 2, 2_000, &completions);
    assert_eq!(ledger.admit(&copy, &limits(8)), Ok(Admission::New));
    assert!(ledger.record(MALLORY, 2_000, &completions).is_empty());
    // The original (published earlier) is admitted: the victim is never gated...
    let original = group(ALICE, 1, 0, 1, 1_000, &completions);
    assert_eq!(ledger.admit(&original, &limits(8)), Ok(Admission::New));
    // ...and recording it reveals the copy.
    assert_eq!(
        ledger.record(ALICE, 1_000, &completions),
        vec![LateCopy {
            copier: MALLORY.into(),
            original: ALICE.into(),
            shared: 16
        }]
    );
    // From now on the copier's groups with these completions are refused.
    let again = group(MALLORY, 10, 1, 3, 2_500, &completions);
    assert!(matches!(
        ledger.admit(&again, &limits(8)),
        Err(LedgerReject::Copied { .. })
    ));
}

#[test]
fn natural_overlap_ties_and_own_repeats_gate_nobody() {
    let mut ledger = WindowLedger::default();
    let a = digests(0..16);
    ledger.record(ALICE, 1_000, &a);
    // 3 shared of 16: below min_shared 4.
    let mut b = digests(100..113);
    b.extend(digests(0..3));
    assert!(ledger
        .admit(&group(MALLORY, 1, 0, 2, 2_000, &b), &limits(8))
        .is_ok());
    // Equal server time: nobody is later, nobody is gated (and no holder is displaced).
    assert!(ledger
        .admit(&group(MALLORY, 2, 1, 3, 1_000, &a), &limits(8))
        .is_ok());
    assert!(ledger.record(MALLORY, 1_000, &a).is_empty());
    // A miner repeating its own completions in a later group is not a copier.
    assert!(ledger
        .admit(&group(ALICE, 3, 1, 4, 5_000, &a), &limits(8))
        .is_ok());
}

#[test]
fn claim_and_judge_are_the_rules_the_bus_mirror_uses() {
    assert_eq!(claim(None, &[1; 32]), Claim::Won);
    assert_eq!(claim(Some(&[1; 32]), &[1; 32]), Claim::Ours);
    assert_eq!(claim(Some(&[2; 32]), &[1; 32]), Claim::Taken);
    assert!(earlier_holder((ALICE, 10), (MALLORY, 9)));
    assert!(!earlier_holder((ALICE, 10), (MALLORY, 10)));
    let earliest = vec![Some((ALICE, 1)); 5];
    assert!(judge_copies(MALLORY, 2, earliest.clone(), 5, &CopyRules::default()).is_err());
    assert!(judge_copies(MALLORY, 1, earliest, 5, &CopyRules::default()).is_ok());
    assert!(judge_copies(MALLORY, 2, Vec::new(), 0, &CopyRules::default()).is_ok());
}
