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

/// A group ahead of this verifier's view is handed back with this delay while the view lags.
pub const RETRY_AFTER_VIEW_LAG: Duration = Duration::from_secs(2);

/// Where a group's window stands against this verifier's view of the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ahead {
    /// Within `max_ahead` of the clock's window: go on (and wait for its close).
    Within,
    /// Ahead of every window seen open, with no schedule to tell a lagging view from a
    /// far-future group: hand it back until the view catches up.
    ViewLags(Duration),
    /// Beyond the schedule's window now plus `max_ahead`: refuse it for good.
    BeyondSchedule,
}

/// `seen`: the newest window this verifier saw open; `scheduled`: the schedule's window now
/// (the manifest's, or the one its verified opens imply). Only the schedule may condemn a
/// group as far-future: a view can lag (a clock reader rebuilding after a NATS node died)
/// while the network moved on, and refusing then would lose honest, acked groups.
pub fn ahead_of_view(
    window: u64,
    seen: Option<u64>,
    scheduled: Option<u64>,
    max_ahead: u64,
) -> Ahead {
    let Some(current) = seen.max(scheduled) else {
        return Ahead::Within;
    };
    if window <= current.saturating_add(max_ahead) {
        Ahead::Within
    } else if scheduled.is_some() {
        Ahead::BeyondSchedule
    } else {
        Ahead::ViewLags(RETRY_AFTER_VIEW_LAG)
    }
}

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
    fn only_the_schedule_condemns_a_group_ahead_of_the_view() {
        use Ahead::*;
        // Nothing seen yet: the close wait decides.
        assert_eq!(ahead_of_view(9, None, None, 2), Within);
        assert_eq!(ahead_of_view(4, Some(2), None, 2), Within);
        // The view stopped at 2 while the network is at 7 (reader rebuilding after a node
        // died); no schedule to tell: hand it back, never refuse.
        assert_eq!(
            ahead_of_view(7, Some(2), None, 2),
            ViewLags(RETRY_AFTER_VIEW_LAG)
        );
        // The schedule says 7: the group is in reach although the view lags.
        assert_eq!(ahead_of_view(7, Some(2), Some(7), 2), Within);
        assert_eq!(ahead_of_view(9, Some(2), Some(7), 2), Within);
        // Beyond the schedule: a truly far-future group, refused at once.
        assert_eq!(ahead_of_view(10, Some(2), Some(7), 2), BeyondSchedule);
        assert_eq!(ahead_of_view(1007, Some(7), Some(7), 2), BeyondSchedule);
        assert_eq!(ahead_of_view(u64::MAX, None, Some(7), 2), BeyondSchedule);
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
