//! The clock's decisions, pure: which window phases are due at a given time, given what the
//! stream already holds. The role loop ([`super::clock`]) holds the lease, reads the stream on
//! takeover, publishes what [`ClockState::due`] returns and records it with
//! [`ClockState::published`]; everything here is unit-tested without NATS.

use crate::windows::ChainInfo;

/// How many windows back a new leader publishes what its predecessor left out.
pub const MAX_CATCH_UP: u64 = 16;

/// A window phase to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Open(u64),
    Close(u64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("hash chain exhausted at window {window} (length {chain_len}): start a new deployment with a fresh seed")]
pub struct ChainExhausted {
    pub window: u64,
    pub chain_len: u64,
}

/// What this clock knows has been published (by itself or a predecessor).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockState {
    /// Highest window whose open / close is on the stream.
    pub published_open: u64,
    pub published_close: u64,
    pub leading: bool,
}

impl ClockState {
    /// This clock just gained the lease: resume from what the stream holds (another clock may
    /// have led since this one last published).
    pub fn take_over(&mut self, last_open: u64, last_close: u64) {
        self.published_open = last_open;
        self.published_close = last_close;
        self.leading = true;
    }

    pub fn step_down(&mut self) {
        self.leading = false;
    }

    /// The phases due at `now`, in publication order: every open up to the running window,
    /// then every close whose deadline passed, none older than [`MAX_CATCH_UP`] windows (so a
    /// takeover slower than a window skips no window number and leaves none unclosed).
    pub fn due(&self, now_ms: u64, info: &ChainInfo) -> Result<Vec<Phase>, ChainExhausted> {
        if !self.leading {
            return Ok(vec![]);
        }
        let window = info.window_at(now_ms);
        // The close of `window` reveals chain value `window + 1`.
        if window + 1 >= info.chain_len {
            return Err(ChainExhausted {
                window,
                chain_len: info.chain_len,
            });
        }
        let oldest = window.saturating_sub(MAX_CATCH_UP);
        let opens = (self.published_open.max(oldest) + 1..=window).map(Phase::Open);
        let closes = (self.published_close.max(oldest) + 1..=window)
            .take_while(|w| now_ms >= info.deadline_ms(*w))
            .map(Phase::Close);
        Ok(opens.chain(closes).collect())
    }

    /// `phase` is on the stream now.
    pub fn published(&mut self, phase: Phase) {
        match phase {
            Phase::Open(w) => self.published_open = self.published_open.max(w),
            Phase::Close(w) => self.published_close = self.published_close.max(w),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use messages::Hash32;

    fn info() -> ChainInfo {
        ChainInfo {
            anchor: Hash32::default(),
            chain_len: 1000,
            genesis_ms: 10_000,
            length_ms: 1_000,
            submit_ms: 600,
        }
    }

    fn run(state: &mut ClockState, now: u64) -> Vec<Phase> {
        let due = state.due(now, &info()).unwrap();
        for p in &due {
            state.published(*p);
        }
        due
    }

    #[test]
    fn a_follower_publishes_nothing() {
        assert!(ClockState::default()
            .due(99_000, &info())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_leader_opens_each_window_and_closes_it_after_its_deadline() {
        let mut s = ClockState::default();
        s.take_over(0, 0);
        assert_eq!(run(&mut s, 10_000), vec![Phase::Open(1)]);
        assert!(run(&mut s, 10_599).is_empty(), "before the deadline");
        assert_eq!(run(&mut s, 10_600), vec![Phase::Close(1)]);
        assert_eq!(run(&mut s, 11_000), vec![Phase::Open(2)]);
        assert!(run(&mut s, 11_100).is_empty(), "nothing twice");
    }

    #[test]
    fn a_takeover_fills_every_gap_the_old_leader_left() {
        let mut s = ClockState::default();
        // The old leader opened 1..=3 and closed 1..=2, then died; now window 7 runs, past
        // its deadline.
        s.take_over(3, 2);
        assert_eq!(
            run(&mut s, 16_700),
            vec![
                Phase::Open(4),
                Phase::Open(5),
                Phase::Open(6),
                Phase::Open(7),
                Phase::Close(3),
                Phase::Close(4),
                Phase::Close(5),
                Phase::Close(6),
                Phase::Close(7),
            ]
        );
    }

    #[test]
    fn catch_up_is_bounded_and_leadership_can_be_lost() {
        let mut s = ClockState::default();
        s.take_over(0, 0);
        let due = run(&mut s, 10_000 + 100 * 1_000); // window 101
        assert_eq!(due.first(), Some(&Phase::Open(101 - MAX_CATCH_UP + 1)));
        assert_eq!(
            due.iter().filter(|p| matches!(p, Phase::Open(_))).count() as u64,
            MAX_CATCH_UP
        );
        s.step_down();
        assert!(run(&mut s, 200_000).is_empty());
    }

    #[test]
    fn an_exhausted_chain_stops_the_clock() {
        let mut s = ClockState::default();
        s.take_over(0, 0);
        let end = info().start_ms(999);
        assert_eq!(
            s.due(end, &info()),
            Err(ChainExhausted {
                window: 999,
                chain_len: 1000
            })
        );
    }
}
