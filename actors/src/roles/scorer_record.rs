//! What the streams already hold for a window the scorer is about to publish.
//!
//! The scorer's `scorer.last_window` KV record is only a shortcut: a restart between
//! publishing a window and writing the record (a crash, or the KV write failing during a NATS
//! failover) would otherwise publish the window a second time, and its replayed tallies can
//! differ from the first time (verdicts stored since), so the network would see two different
//! scores for one window. The streams are the record: before publishing window W the scorer
//! asks them whether W's weights are stored (then W is done) and which of W's miner verdicts
//! are (those are not sent again). Only messages that open as signed by a key the trust
//! boundary admits for the kind count; a forgery on the subject does not silence the scorer.

use std::collections::HashSet;

use messages::subjects as subj;
use messages::{MinerWindowVerdict, SignedMessage, Weights};

use crate::bus::{last_on_subject, subject_counts, Bus};

/// Window W's messages already in the streams.
#[derive(Debug, Default)]
pub struct Stored {
    /// W's `Weights` are stored: the window was published in full.
    pub weights: bool,
    /// Miners whose `MinerWindowVerdict` for W is stored.
    pub miner_verdicts: HashSet<String>,
}

/// Reads what the streams hold for `window`; `None` when they cannot be read now (the caller
/// waits rather than publish blind).
pub async fn stored(bus: &Bus, window: u64) -> Option<Stored> {
    let weights = last_valid::<Weights>(bus, subj::STREAM_WEIGHTS, &subj::weights(window))
        .await?
        .is_some_and(|w| w.window == window);
    if weights {
        return Some(Stored {
            weights,
            ..Default::default()
        });
    }
    let filter = subj::miner_verdict(window, "*");
    let subjects = subject_counts(&bus.js, subj::STREAM_VERDICTS, &filter)
        .await
        .ok()?;
    let mut miner_verdicts = HashSet::new();
    for (subject, _) in subjects {
        let v = last_valid::<MinerWindowVerdict>(bus, subj::STREAM_VERDICTS, &subject).await?;
        if let Some(v) = v.filter(|v| v.window == window) {
            miner_verdicts.insert(v.miner);
        }
    }
    Some(Stored {
        weights,
        miner_verdicts,
    })
}

/// The last message on `subject` if it opens as an admitted `T` (`Some(None)`: nothing there,
/// or not a valid one), `None` if the stream could not be read.
async fn last_valid<T: SignedMessage>(bus: &Bus, stream: &str, subject: &str) -> Option<Option<T>> {
    let s = bus.js.get_stream(stream).await.ok()?;
    let raw = last_on_subject(&s, subject).await.ok()?;
    Some(raw.and_then(|raw| {
        bus.open::<T>("scorer", &raw.payload)
            .ok()
            .map(|(env, _)| env.payload)
    }))
}
