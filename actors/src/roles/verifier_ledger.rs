//! The verifier's use of the shared window ledger ([`crate::ledger::BusLedger`]): claims go
//! to the bus before the group is verified, its completions are recorded after it passed.
//! A bus error never lets a group through unclaimed: it is handed back and retried, counted
//! (`grail_ledger_events_total{event="bus_error"}`) and logged naming the miner.

use std::time::Duration;

use messages::{Hash32, RejectCode, RolloutGroup};
use protocol::checks::{Admission, GroupClaims, LedgerReject, Limits};

use crate::compute::structural::reject;
use crate::compute::verify::VerifyOutcome;
use crate::ledger::BusLedger;
use crate::metrics::Metrics;

/// A group handed back after a ledger bus error is retried after this long.
pub const RETRY_AFTER_LEDGER_ERROR: Duration = Duration::from_secs(1);

/// What the ledger says about a group before verification.
#[derive(Debug)]
pub enum LedgerStep {
    /// Verify it.
    Verify,
    /// Refused for a ledger reason: publish this verdict without verifying.
    Refused(VerifyOutcome),
    /// The ledger could not be asked: nak it.
    HandBack(Duration),
}

fn code(refused: &LedgerReject) -> RejectCode {
    refused.reason().code()
}

pub async fn admit(
    ledger: &BusLedger,
    metrics: &Metrics,
    group: &RolloutGroup,
    envelope: &Hash32,
    server_ts_ms: u64,
    max_groups_per_window: u32,
    completions: &[[u8; 32]],
) -> LedgerStep {
    let claims = GroupClaims {
        miner: &group.miner,
        nonce: group.nonce,
        group_index: group.group_index,
        envelope: envelope.0,
        server_ts_ms,
        completions,
    };
    let limits = Limits {
        max_groups_per_window,
        ..Limits::default()
    };
    let event = |e: &str| metrics.ledger_events.with_label_values(&[e]).inc();
    match ledger.admit(group.window, &claims, &limits).await {
        Ok(Ok(Admission::New)) => LedgerStep::Verify,
        Ok(Ok(Admission::Repeat)) => {
            event("repeat");
            LedgerStep::Verify
        }
        Ok(Err(refused)) => {
            let code = code(&refused);
            event(code.as_str());
            tracing::info!(window = group.window, miner = %group.miner, group = group.group_index, reason = %refused.reason(), "window ledger refused the group");
            LedgerStep::Refused(reject(code))
        }
        Err(e) => {
            event("bus_error");
            tracing::warn!(window = group.window, miner = %group.miner, group = group.group_index, error = %e, "window ledger unavailable; handing the group back");
            LedgerStep::HandBack(RETRY_AFTER_LEDGER_ERROR)
        }
    }
}

/// After an accepted verdict: records the group's counted completions (`completions`, as
/// given to [`admit`]). `Err` = hand the group back (its redelivery is a ledger repeat and
/// gets verified and recorded again).
pub async fn record(
    ledger: &BusLedger,
    metrics: &Metrics,
    (window, miner, group_index): (u64, &str, u32),
    server_ts_ms: u64,
    completions: &[[u8; 32]],
) -> Result<(), Duration> {
    match ledger
        .record(window, miner, server_ts_ms, completions)
        .await
    {
        Ok(late) => {
            for copy in late {
                metrics
                    .ledger_events
                    .with_label_values(&["late_copy"])
                    .inc();
                tracing::warn!(window, copier = %copy.copier, original = %copy.original, shared = copy.shared, "copy found after it was judged (its original was verified later); its verdict stands");
            }
            Ok(())
        }
        Err(e) => {
            metrics
                .ledger_events
                .with_label_values(&["bus_error"])
                .inc();
            tracing::warn!(window, miner, group = group_index, error = %e, "window ledger unavailable while recording; handing the group back");
            Err(RETRY_AFTER_LEDGER_ERROR)
        }
    }
}
