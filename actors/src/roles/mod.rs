//! One module per role. Each exposes a config, a compute interface where it has compute, and
//! a [`crate::role::RoleLoop`] that the supervisor runs.

pub mod clock;
pub mod clock_schedule;
pub mod evaluator;
pub mod miner;
pub mod publisher;
pub mod scorer;
pub mod scorer_record;
pub mod trainer;
pub mod trainer_batch;
pub mod verifier;
pub mod verifier_disposition;
pub mod verifier_ledger;
