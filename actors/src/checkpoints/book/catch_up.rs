//! A late joiner's shortcut: the anchor plus one catch-up delta (anchor → checkpoint) instead
//! of the anchor plus the chain, whichever downloads fewer bytes. Both reconstruct the same
//! digest-checked weights, so each path is the other's fallback: a missing or forged catch-up
//! object (wrong bytes, wrong base in its header) sends the load down the chain, a broken
//! chain sends it to the catch-up.

use std::sync::Arc;

use messages::{CatchUpDelta, CheckpointAnnounce, Hash32};
use policy::checkpoint::WeightSet;

use super::CheckpointBook;
use crate::checkpoints::load::{decode_delta, fetch_verified, LoadError};

/// Which path a delta checkpoint was (or would be) reconstructed along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadPath {
    /// The previous checkpoint (or the anchor and every delta after it) plus this delta.
    Chain,
    /// The anchor plus the announced catch-up delta.
    CatchUp,
}

impl CheckpointBook {
    /// Bytes still to download to rebuild `digest` along the announced chain (nothing for what
    /// is loaded already); None when no intact chain leads there.
    fn bytes_to_rebuild(&self, digest: Hash32, anchor: Hash32, seq: u64) -> Option<u64> {
        let chain = self.chain_to(digest, anchor, seq).ok()?;
        Some(
            chain
                .iter()
                .filter(|(_, loaded)| loaded.is_none())
                .map(|(a, _)| a.bytes)
                .sum(),
        )
    }

    /// The cheaper path for delta `a` on `base` with anchor `anchor`: the catch-up delta when
    /// it has one and anchor + catch-up costs fewer bytes than the chain (or the chain is broken).
    pub fn cheaper_path(&self, a: &CheckpointAnnounce, base: Hash32, anchor: Hash32) -> LoadPath {
        let Some(c) = &a.catch_up else {
            return LoadPath::Chain;
        };
        let chain = self
            .bytes_to_rebuild(base, anchor, a.seq)
            .map(|b| b + a.bytes);
        let catch_up = self
            .bytes_to_rebuild(anchor, anchor, a.seq)
            .map(|b| b + c.bytes);
        match (chain, catch_up) {
            (Some(chain), Some(catch_up)) if catch_up < chain => LoadPath::CatchUp,
            (None, Some(_)) => LoadPath::CatchUp,
            _ => LoadPath::Chain,
        }
    }

    /// Reconstruct delta checkpoint `a` along the cheaper path, falling back to the other one
    /// when the first fails for a definite reason (a transient store error is returned as is,
    /// to be retried).
    pub(super) async fn load_delta(
        &self,
        a: &CheckpointAnnounce,
        base: Hash32,
        anchor: Hash32,
    ) -> Result<Arc<WeightSet>, LoadError> {
        let Some(c) = &a.catch_up else {
            return self.via_chain(a, base, anchor).await;
        };
        let first = self.cheaper_path(a, base, anchor);
        let result = match first {
            LoadPath::CatchUp => self.via_catch_up(a, anchor, c).await,
            LoadPath::Chain => self.via_chain(a, base, anchor).await,
        };
        let err = match result {
            Err(e) if !e.is_transient() => e,
            done => return done,
        };
        tracing::warn!(seq = a.seq, path = ?first, error = %err, "checkpoint path failed; trying the other one");
        let second = match first {
            LoadPath::CatchUp => self.via_chain(a, base, anchor).await,
            LoadPath::Chain => self.via_catch_up(a, anchor, c).await,
        };
        // Both failed: the first path's error says what was announced and broke.
        second.map_err(|e| {
            tracing::warn!(seq = a.seq, error = %e, "checkpoint fallback path failed too");
            err
        })
    }

    async fn via_chain(
        &self,
        a: &CheckpointAnnounce,
        base: Hash32,
        anchor: Hash32,
    ) -> Result<Arc<WeightSet>, LoadError> {
        let base_weights = self.rebuild(base, anchor, a.seq).await?;
        let bytes =
            fetch_verified(self.store().as_ref(), a, self.config().max_object_bytes).await?;
        decode_delta(a.seq, base_weights, base, bytes, a.checkpoint).await
    }

    async fn via_catch_up(
        &self,
        a: &CheckpointAnnounce,
        anchor: Hash32,
        c: &CatchUpDelta,
    ) -> Result<Arc<WeightSet>, LoadError> {
        let anchor_weights = self.rebuild(anchor, anchor, a.seq).await?;
        // The catch-up object, checked like the checkpoint's own: size and byte digest as
        // announced, then (in decode_delta) header base = the anchor, target = this digest.
        let object = CheckpointAnnounce {
            object: c.object.clone(),
            bytes: c.bytes,
            object_digest: c.object_digest,
            ..a.clone()
        };
        let bytes = fetch_verified(
            self.store().as_ref(),
            &object,
            self.config().max_object_bytes,
        )
        .await?;
        decode_delta(a.seq, anchor_weights, anchor, bytes, a.checkpoint).await
    }
}
