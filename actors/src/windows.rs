//! What every role knows about windows: the clock's open/close messages, each checked against
//! the clock's hash-chain anchor, so a forged window message is refused even though anyone
//! may publish on the subject.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::consumer::DeliverPolicy;
use futures::StreamExt;
use messages::manifest::Schedule;
use messages::subjects as subj;
use messages::{Hash32, WindowClose, WindowOpen};
use protocol::randomness::{close_randomness, open_randomness, verify_against_previous};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::bus::Bus;

/// Public description of the clock's schedule and chain, stored in KV (`grail_clock/chain`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainInfo {
    pub anchor: Hash32,
    pub chain_len: u64,
    pub genesis_ms: u64,
    pub length_ms: u64,
    pub submit_ms: u64,
}

impl ChainInfo {
    /// The window running at `now_ms` (windows are numbered from 1).
    pub fn window_at(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.genesis_ms) / self.length_ms + 1
    }
    pub fn start_ms(&self, window: u64) -> u64 {
        self.genesis_ms + (window - 1) * self.length_ms
    }
    pub fn deadline_ms(&self, window: u64) -> u64 {
        self.start_ms(window) + self.submit_ms
    }
}

#[derive(Default, Clone, Debug)]
pub struct WindowInfo {
    pub open: Option<WindowOpen>,
    pub close: Option<WindowClose>,
}

#[derive(Default)]
struct Book {
    windows: BTreeMap<u64, WindowInfo>,
    anchor: Option<Hash32>,
    /// Latest verified chain reveal (position, value): makes the next check one hash.
    verified: Option<(u64, [u8; 32])>,
    /// The manifest's committed schedule: when pinned, every timestamp and the anchor of a
    /// clock message must match it exactly (the signature alone says only who sent it).
    schedule: Option<Schedule>,
}

/// Shared, verified view of the clock.
#[derive(Default, Clone)]
pub struct WindowBook {
    inner: Arc<Mutex<Book>>,
    changed: Arc<Notify>,
}

impl WindowBook {
    fn verify_chain(book: &mut Book, anchor: &Hash32, position: u64, value: &Hash32) -> bool {
        match book.anchor {
            Some(a) if a != *anchor => return false,
            None => book.anchor = Some(*anchor),
            _ => {}
        }
        let (from, from_value) = match book.verified {
            Some((p, v)) if p < position => (p, v),
            Some((p, v)) if p == position => return v == value.0,
            _ => (0, anchor.0),
        };
        let ok = verify_against_previous(from, &from_value, position, &value.0);
        if ok {
            book.verified = Some((position, value.0));
        }
        ok
    }

    /// Pin the manifest's schedule (see [`Book::schedule`]); `None` leaves the book unpinned.
    pub fn pin_schedule(&self, schedule: Option<Schedule>) {
        if let Some(s) = schedule {
            let mut book = self.inner.lock().expect("window book lock");
            book.anchor.get_or_insert(s.chain_anchor);
            book.schedule = Some(s);
        }
    }

    /// Record an open message; false if it does not verify against the chain (or the
    /// pinned schedule).
    pub fn record_open(&self, open: WindowOpen) -> bool {
        let mut book = self.inner.lock().expect("window book lock");
        let derived = open_randomness(open.window, &open.chain_value.0);
        let off_schedule = book.schedule.as_ref().is_some_and(|s| {
            open.chain_anchor != s.chain_anchor
                || open.opened_at_ms != s.start_ms(open.window)
                || open.deadline_ms != s.deadline_ms(open.window)
        });
        if off_schedule
            || open.chain_position != open.window
            || derived != open.randomness.0
            || !Self::verify_chain(
                &mut book,
                &open.chain_anchor,
                open.chain_position,
                &open.chain_value,
            )
        {
            return false;
        }
        let window = open.window;
        book.windows.entry(window).or_default().open = Some(open);
        drop(book);
        self.changed.notify_waiters();
        true
    }

    pub fn record_close(&self, close: WindowClose) -> bool {
        let mut book = self.inner.lock().expect("window book lock");
        let derived = close_randomness(close.window, &close.chain_value.0);
        // A close before the deadline would reveal the challenge while miners still mine.
        let off_schedule = book.schedule.as_ref().is_some_and(|s| {
            close.chain_anchor != s.chain_anchor || close.closed_at_ms < s.deadline_ms(close.window)
        });
        if off_schedule
            || close.chain_position != close.window.saturating_add(1)
            || derived != close.randomness.0
            || !Self::verify_chain(
                &mut book,
                &close.chain_anchor,
                close.chain_position,
                &close.chain_value,
            )
        {
            return false;
        }
        let window = close.window;
        book.windows.entry(window).or_default().close = Some(close);
        // Keep memory bounded on long runs.
        while book.windows.len() > 4096 {
            let first = *book.windows.keys().next().expect("non-empty");
            book.windows.remove(&first);
        }
        drop(book);
        self.changed.notify_waiters();
        true
    }

    pub fn get(&self, window: u64) -> WindowInfo {
        self.inner
            .lock()
            .expect("window book lock")
            .windows
            .get(&window)
            .cloned()
            .unwrap_or_default()
    }

    pub fn latest_open(&self) -> Option<WindowOpen> {
        let book = self.inner.lock().expect("window book lock");
        book.windows.values().rev().find_map(|w| w.open.clone())
    }

    /// The clock's current window: the newest verified open, or the schedule's window now
    /// when it is further (a book still replaying the clock stream, or one whose reader is
    /// rebuilding after a NATS node died, lags behind the clock).
    pub fn current(&self, schedule: Option<&Schedule>) -> Option<u64> {
        let seen = self.latest_open().map(|o| o.window);
        seen.max(self.scheduled(schedule, crate::bus::now_ms()))
    }

    /// The window the clock's schedule runs at `now_ms`: `schedule`'s (the manifest's), else
    /// the pinned one, else the one the verified opens imply: the clock stamps each open
    /// with its scheduled start, so two opens give the window length. None before that.
    pub fn scheduled(&self, schedule: Option<&Schedule>, now_ms: u64) -> Option<u64> {
        let book = self.inner.lock().expect("window book lock");
        if let Some(s) = schedule.or(book.schedule.as_ref()) {
            return Some(s.window_at(now_ms));
        }
        let mut opens = book.windows.values().filter_map(|w| w.open.as_ref());
        let first = opens.next()?;
        let last = opens.next_back()?;
        let windows = last.window.checked_sub(first.window).filter(|n| *n > 0)?;
        let length = last.opened_at_ms.checked_sub(first.opened_at_ms)? / windows;
        (length > 0).then(|| last.window + now_ms.saturating_sub(last.opened_at_ms) / length)
    }

    pub fn latest_closed(&self) -> Option<u64> {
        let book = self.inner.lock().expect("window book lock");
        book.windows
            .iter()
            .rev()
            .find(|(_, w)| w.close.is_some())
            .map(|(k, _)| *k)
    }

    /// Wait until the book changes (or `timeout`).
    pub async fn changed(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.changed.notified()).await;
    }

    /// Wait for the close message of `window`.
    pub async fn wait_close(&self, window: u64) -> WindowClose {
        loop {
            let notified = self.changed.notified();
            if let Some(c) = self.get(window).close {
                return c;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), notified).await;
        }
    }
}

/// Follow the clock stream from its start, feeding `book`. Returns on stream error (the
/// caller's role loop restarts it).
pub async fn follow_clock(bus: Bus, role: &'static str, book: WindowBook) -> anyhow::Result<()> {
    book.pin_schedule(bus.trust.schedule());
    let mut messages = bus
        .replay(subj::STREAM_CLOCK, subj::CLOCK_ALL, DeliverPolicy::All)
        .await?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("clock stream: {e}"))?;
        let ok = match subj::parse(&msg.subject) {
            Ok(subj::Subject::WindowOpen { .. }) => bus
                .open::<WindowOpen>(role, &msg.payload)
                .map(|(env, _)| book.record_open(env.payload))
                .unwrap_or(false),
            Ok(subj::Subject::WindowClose { .. }) => bus
                .open::<WindowClose>(role, &msg.payload)
                .map(|(env, _)| {
                    // The close reveals the challenge: the server's clock, not the clock's
                    // own claim, must show it was stored after the deadline.
                    let deadline = book.get(env.payload.window).open.map(|o| o.deadline_ms);
                    let stored = crate::bus::server_timestamp_ms(&msg);
                    let early = matches!((deadline, stored), (Some(d), Some(t)) if t < d);
                    !early && book.record_close(env.payload)
                })
                .unwrap_or(false),
            _ => false,
        };
        if !ok {
            bus.metrics.reject(role, "bad_clock_message");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::randomness::HashChain;

    fn schedule(chain: &HashChain) -> Schedule {
        Schedule {
            genesis_ms: 10_000,
            length_ms: 6_000,
            submit_ms: 4_000,
            chain_anchor: Hash32::from(chain.anchor()),
            chain_len: chain.len(),
        }
    }

    fn open(chain: &HashChain, s: &Schedule, window: u64) -> WindowOpen {
        let value = chain.value(window).unwrap();
        WindowOpen {
            version: messages::WIRE_VERSION,
            window,
            randomness: open_randomness(window, &value).into(),
            chain_anchor: s.chain_anchor,
            chain_position: window,
            chain_value: value.into(),
            opened_at_ms: s.start_ms(window),
            deadline_ms: s.deadline_ms(window),
        }
    }

    /// A trusted clock key cannot move a deadline either: the manifest's schedule pins it.
    #[test]
    fn a_pinned_schedule_refuses_off_schedule_clock_messages() {
        let chain = HashChain::new([3; 32], 20);
        let s = schedule(&chain);
        let book = WindowBook::default();
        book.pin_schedule(Some(s.clone()));
        for (deadline, opened) in [
            (s.deadline_ms(2) + 3_600_000, 0),
            (s.start_ms(2) + 1, 0),
            (s.deadline_ms(2), 1),
        ] {
            let mut o = open(&chain, &s, 2);
            o.deadline_ms = deadline;
            o.opened_at_ms += opened;
            assert!(
                !book.record_open(o),
                "deadline {deadline}, opened +{opened}"
            );
        }
        assert!(book.record_open(open(&chain, &s, 2)));
        let value = chain.value(3).unwrap();
        let close = |closed_at_ms| WindowClose {
            version: messages::WIRE_VERSION,
            window: 2,
            randomness: close_randomness(2, &value).into(),
            chain_anchor: s.chain_anchor,
            chain_position: 3,
            chain_value: value.into(),
            closed_at_ms,
        };
        assert!(
            !book.record_close(close(s.deadline_ms(2) - 1)),
            "a close before the deadline reveals the challenge early"
        );
        assert!(book.record_close(close(s.deadline_ms(2) + 5)));
        // Unpinned books (tests without a schedule) keep the chain checks only.
        let free = WindowBook::default();
        let mut o = open(&chain, &s, 2);
        o.deadline_ms += 1;
        assert!(free.record_open(o));
    }

    /// An unpinned book knows the schedule from two verified opens, so a view that stopped
    /// at an old window (its clock reader rebuilding) still knows the clock's window now.
    #[test]
    fn an_unpinned_book_derives_the_schedule_from_its_opens() {
        let chain = HashChain::new([5; 32], 40);
        let s = schedule(&chain);
        let book = WindowBook::default();
        let at_7 = s.start_ms(7) + 10;
        assert_eq!(book.scheduled(None, at_7), None);
        assert!(book.record_open(open(&chain, &s, 2)));
        assert_eq!(book.scheduled(None, at_7), None, "one open gives no length");
        assert!(book.record_open(open(&chain, &s, 4)));
        assert_eq!(book.scheduled(None, at_7), Some(7));
        assert_eq!(book.scheduled(None, s.start_ms(30)), Some(30));
        assert_eq!(book.scheduled(Some(&s), s.start_ms(9)), Some(9));
        // The view has seen window 4; the schedule says the clock is further.
        assert_eq!(book.latest_open().map(|o| o.window), Some(4));
        assert!(book.current(None).unwrap() > 4);
    }
}
