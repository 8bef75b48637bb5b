//! Checkpoint hand-over: how trained weights travel from the trainer to every miner and
//! verifier.
//!
//! ```text
//! trainer ──put staging object──▶ store ◀──put full / delta── publisher ──▶ grail.checkpoint.<seq>
//!    └──CheckpointCandidate (grail.checkpoint.candidate.<w>)──▶ publisher        │
//!                                                   miners, verifiers, trainer ◀──┘ CheckpointBook
//! ```
//!
//! * [`store`]: the [`CheckpointStore`] of named blobs (NATS object store, local directory;
//!   [`s3`]: an S3-compatible bucket, content-addressed).
//! * [`book`]: the [`CheckpointBook`] every consuming role follows: trusted announcements only,
//!   object digest, reconstruction (full, anchor + delta chain, or anchor + the announced
//!   catch-up delta when that downloads fewer bytes; each the other's fallback), weight digest, a small cache
//!   of shared weight sets, and the answer to "which checkpoint governs window `w`?".
//! * [`load`]: the fetch-and-verify steps the book runs (CPU work on blocking threads).
//!
//! # When a window's checkpoint is unavailable
//!
//! A window is governed by the announcement with the highest seq whose `valid_from_window` is
//! at most the window. If that checkpoint cannot be reconstructed (its object or one of the
//! deltas it depends on is missing or corrupt), the book does **not** substitute an older one:
//! groups mined on other weights would fail verification anyway. Instead:
//!
//! * the **miner** skips the window (counted as `checkpoint_unavailable` in
//!   `grail_messages_rejected_total{role="miner"}`) and mines again as soon as a window is
//!   governed by a checkpoint it has;
//! * the **verifier** naks the group with a delay while the checkpoint is still loading, and
//!   publishes an explicit rejection with reason [`messages::RejectCode::CheckpointUnavailable`] (a discard: not the miner's fault) once the book
//!   has given up on it (so the scorer sees a verdict instead of a silently dropped group);
//! * the book itself recovers at the next **full anchor** it can reconstruct: anchors are
//!   self-contained, so everything announced after a readable anchor loads again, and
//!   [`CheckpointBook::latest`] (what the trainer starts from) falls back to the newest
//!   checkpoint that did load.

pub mod active;
pub mod book;
pub mod load;
pub mod s3;
pub mod store;

pub use active::{ActiveCheckpoint, SharedWeights};
pub use book::{BookConfig, CheckpointBook, CheckpointStatus, Follower, LoadPath};
pub use s3::{S3Config, S3Store};
pub use store::{
    get_bytes, object_digest, put_bytes, CheckpointStore, LocalDirStore, NatsObjectStore,
    ObjectReader, StoreError, StoredObject,
};
