//! grail-protocol: the GRAIL proof protocol v1 as pure functions over arrays.
//!
//! No IO, no model, no async. The normative description, derivations byte by byte, thresholds with
//! their reasons, the threat model and frozen test vectors are in `docs/PROTOCOL.md`.
//!
//! - [`randomness`]: PRF, the clock's hash chain, OPEN/CLOSE window randomness, problem seeds,
//!   sampling keys, challenged positions, deep-check selection.
//! - [`sketch`]: the per-token hidden-state commitment and its distance/tolerance.
//! - [`sampling`]: logit processing, Gumbel-max choice and its replay check.
//! - [`checks`]: every verifier check, [`checks::RejectReason`] and the window verdict.
//! - [`scoring`]: per-window scores, superlinear weights, u16 normalisation.
//! - [`rng`], [`synthetic`]: deterministic test data (not protocol randomness).

pub mod checks;
pub mod mix;
pub mod randomness;
pub mod rng;
pub mod sampling;
pub mod scoring;
pub mod sketch;
pub mod synthetic;

/// Protocol version string; bump on any change to a derivation, rule or constant in `docs/PROTOCOL.md`.
pub const PROTOCOL_VERSION: &str = "grail/v1";
