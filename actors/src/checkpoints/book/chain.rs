//! Rebuilding a delta's base: walk the announced chain back to the nearest loaded checkpoint
//! or the full anchor, then apply the deltas forward (each step digest-checked).

use std::sync::Arc;

use messages::{CheckpointAnnounce, CheckpointKind, Hash32};
use policy::checkpoint::WeightSet;

use super::{CheckpointBook, Loaded};
use crate::checkpoints::load::{decode_delta, decode_full, fetch_verified, LoadError};
use crate::checkpoints::SharedWeights;

/// One step of a chain rebuild: the entry's announcement and whether it is already loaded.
type ChainStep = (CheckpointAnnounce, Option<SharedWeights>);

impl CheckpointBook {
    /// The chain of announcements from the nearest loaded checkpoint (or the full anchor)
    /// to the one with weight digest `digest`, oldest first.
    pub(super) fn chain_to(
        &self,
        digest: Hash32,
        anchor: Hash32,
        seq: u64,
    ) -> Result<Vec<ChainStep>, LoadError> {
        let unavailable = |why: String| LoadError::BaseUnavailable {
            seq,
            base: digest,
            why,
        };
        let state = self.state();
        let mut chain = Vec::new();
        let (mut want, mut before) = (digest, seq);
        loop {
            let e = state
                .by_digest(&want, before)
                .ok_or_else(|| unavailable(format!("not announced before seq {before}")))?;
            match &e.loaded {
                Loaded::Ready(w) => {
                    chain.push((e.announce.clone(), Some(w.clone())));
                    break;
                }
                Loaded::Failed { reason } => {
                    return Err(unavailable(format!(
                        "seq {} failed: {reason}",
                        e.announce.seq
                    )))
                }
                _ => chain.push((e.announce.clone(), None)),
            }
            match &e.announce.kind {
                CheckpointKind::Full if e.announce.checkpoint == anchor => break,
                CheckpointKind::Full => {
                    return Err(unavailable(format!(
                        "a chain ending at full seq {}, not at the announced anchor {}",
                        e.announce.seq,
                        anchor.short()
                    )))
                }
                CheckpointKind::Delta { base, .. } => {
                    (want, before) = (*base, e.announce.seq);
                }
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// Weights with digest `digest`: from the cache, or rebuilt from the anchor / the nearest
    /// loaded checkpoint along the delta chain (intermediate results are cached too).
    pub(super) async fn rebuild(
        &self,
        digest: Hash32,
        anchor: Hash32,
        seq: u64,
    ) -> Result<Arc<WeightSet>, LoadError> {
        let chain = self.chain_to(digest, anchor, seq)?;
        let store = self.inner.store.as_ref();
        let max = self.inner.cfg.max_object_bytes;
        let mut current: Option<(Arc<WeightSet>, Hash32)> = None;
        for (a, loaded) in chain {
            let step = match (loaded, &current, &a.kind) {
                (Some(w), _, _) => Ok(w.0),
                (None, None, CheckpointKind::Full) => match fetch_verified(store, &a, max).await {
                    Ok(bytes) => decode_full(a.seq, a.object.clone(), bytes, a.checkpoint).await,
                    Err(e) => Err(e),
                },
                (None, Some((base, base_digest)), CheckpointKind::Delta { .. }) => {
                    match fetch_verified(store, &a, max).await {
                        Ok(bytes) => {
                            decode_delta(a.seq, base.clone(), *base_digest, bytes, a.checkpoint)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => Err(LoadError::BaseUnavailable {
                    seq,
                    base: digest,
                    why: format!("seq {} cannot follow the previous chain step", a.seq),
                }),
            };
            let weights = match step {
                Ok(w) => w,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    if let Some(entry) = self.state().entries.get_mut(&a.seq) {
                        entry.loaded = Loaded::Failed { reason: e.reason() };
                    }
                    return Err(LoadError::BaseUnavailable {
                        seq,
                        base: digest,
                        why: format!("its chain broke: {e}"),
                    });
                }
            };
            {
                let mut state = self.state();
                if let Some(entry) = state.entries.get_mut(&a.seq) {
                    if !matches!(entry.loaded, Loaded::Ready(_)) {
                        entry.loaded = Loaded::Ready(SharedWeights(weights.clone()));
                    }
                }
            }
            current = Some((weights, a.checkpoint));
        }
        current
            .map(|(w, _)| w)
            .ok_or_else(|| LoadError::BaseUnavailable {
                seq,
                base: digest,
                why: "an empty chain".into(),
            })
    }
}
