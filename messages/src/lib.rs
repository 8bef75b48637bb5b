//! grail-messages: everything that crosses the bus, and nothing that does IO.
//!
//! * [`types`]: the wire messages (all carry a `version` field).
//! * [`packed`]: numeric arrays packed as little-endian byte strings (compact msgpack `bin`).
//! * [`codec`]: msgpack named-map encoding and size-limited, typed-error decoding.
//! * [`identity`]: sr25519 keypairs, SS58 addresses, Bittensor-compatible key files.
//! * [`envelope`]: signed envelopes (BLAKE2b-256 digest of the canonical encoding + sr25519).
//! * [`subjects`]: the one place that spells NATS subjects, streams, buckets and headers.
//! * [`manifest`]: the owner-signed network manifest: who may sign which kind, and limits.
//! * [`validate`]: bounds on every wire field that reaches a subject, key, index or token id.

pub mod bus_permissions;
pub mod codec;
pub mod envelope;
pub mod identity;
pub mod manifest;
pub mod packed;
pub mod reject;
pub mod subjects;
pub mod types;
pub mod validate;

pub use codec::{decode, encode, DecodeError, DEFAULT_MAX_MESSAGE_BYTES};
pub use envelope::{Envelope, EnvelopeError, SignedMessage};
pub use identity::{Identity, IdentityError, KeyFile, Ss58Address};
pub use manifest::{Authority, NetworkManifest};
pub use packed::{PackedF32, PackedU32};
pub use reject::{RejectCode, Severity};
pub use types::*;

/// Version of every wire message defined in [`types`]. Bumped on any incompatible change.
pub const WIRE_VERSION: u16 = 3;
