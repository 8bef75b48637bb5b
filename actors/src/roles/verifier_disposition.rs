//! The verifier's ack/nak policy, pure: what to do with a group at each point where it may
//! have to wait (its window's close randomness, the checkpoint its window runs on). The role
//! loop ([`super::verifier`]) asks these functions and acts on JetStream; the policy is
//! unit-tested here without NATS.

use std::time::Duration;

/// Deliveries of one group while its checkpoint stays unavailable before the verifier gives up
/// and publishes an explicit `checkpoint_unavailable` rejection (a discard, not the miner's
/// fault) instead of handing it back again.
pub const UNAVAILABLE_DELIVERIES: u64 = 3;

/// Handing a group back (nak) with this delay lets another verifier, or this one later, take
/// it without spinning.
pub const RETRY_AFTER_CLOSE_WAIT: Duration = Duration::from_secs(1);
pub const RETRY_AFTER_CHECKPOINT: Duration = Duration::from_secs(2);

/// What to do with a group whose window may not have closed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhileWaiting {
    /// The close randomness is known: go on.
    Proceed,
    /// Keep it (tell JetStream it is in progress) and look again soon.
    KeepWaiting,
    /// Nak it: it waited half its ack window, or the verifier is shutting down.
    HandBack(Duration),
}

pub fn while_waiting_for_close(
    close_known: bool,
    waited: Duration,
    ack_wait: Duration,
    shutting_down: bool,
) -> WhileWaiting {
    if close_known {
        WhileWaiting::Proceed
    } else if waited > ack_wait / 2 || shutting_down {
        WhileWaiting::HandBack(RETRY_AFTER_CLOSE_WAIT)
    } else {
        WhileWaiting::KeepWaiting
    }
}

/// The checkpoint governing the group's window, as the verifier's book sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointView {
    /// Model-free compute: no checkpoint involved.
    NotUsed,
    Ready,
    /// Still replaying announcements or loading the weights.
    Pending,
    /// Announced but not loadable (missing object, broken chain, evicted).
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Verify,
    HandBack(Duration),
    /// Publish the `checkpoint_unavailable` rejection (and ack).
    RejectUnavailable,
}

/// Once the close is known: verify, hand back, or give up on an unloadable checkpoint after
/// [`UNAVAILABLE_DELIVERIES`] deliveries.
pub fn with_checkpoint(view: CheckpointView, delivered: u64) -> Disposition {
    match view {
        CheckpointView::NotUsed | CheckpointView::Ready => Disposition::Verify,
        CheckpointView::Pending => Disposition::HandBack(RETRY_AFTER_CHECKPOINT),
        CheckpointView::Unavailable if delivered < UNAVAILABLE_DELIVERIES => {
            Disposition::HandBack(RETRY_AFTER_CHECKPOINT)
        }
        CheckpointView::Unavailable => Disposition::RejectUnavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK_WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn a_group_waits_for_its_close_but_not_forever_and_not_through_shutdown() {
        let s = Duration::from_secs;
        assert_eq!(
            while_waiting_for_close(true, s(100), ACK_WAIT, true),
            WhileWaiting::Proceed
        );
        assert_eq!(
            while_waiting_for_close(false, s(5), ACK_WAIT, false),
            WhileWaiting::KeepWaiting
        );
        assert_eq!(
            while_waiting_for_close(false, s(16), ACK_WAIT, false),
            WhileWaiting::HandBack(RETRY_AFTER_CLOSE_WAIT),
            "past half the ack window: another verifier may take it"
        );
        assert_eq!(
            while_waiting_for_close(false, s(1), ACK_WAIT, true),
            WhileWaiting::HandBack(RETRY_AFTER_CLOSE_WAIT),
            "shutting down: hand it back at once"
        );
    }

    #[test]
    fn an_unloadable_checkpoint_is_retried_then_rejected_explicitly() {
        use CheckpointView::*;
        assert_eq!(with_checkpoint(Ready, 1), Disposition::Verify);
        assert_eq!(with_checkpoint(NotUsed, 9), Disposition::Verify);
        assert_eq!(
            with_checkpoint(Pending, 99),
            Disposition::HandBack(RETRY_AFTER_CHECKPOINT)
        );
        assert_eq!(
            with_checkpoint(Unavailable, 1),
            Disposition::HandBack(RETRY_AFTER_CHECKPOINT)
        );
        assert_eq!(
            with_checkpoint(Unavailable, UNAVAILABLE_DELIVERIES),
            Disposition::RejectUnavailable
        );
    }
}
