//! The window ledger on the bus: `protocol::checks::WindowLedger`'s rules mirrored onto the
//! JetStream KV bucket [`subj::KV_LEDGER`], so every verifier instance behind the shared
//! durable consumer sees the claims of all the others.
//!
//! * nonce and group index: `create` is an atomic first-writer-wins claim; the value is the
//!   claiming envelope's digest, so the same envelope again (a redelivery, on any instance)
//!   is told apart from a replay with other content;
//! * group count: a miner's distinct group indices are numbered by a compare-and-set counter
//!   and the number is written next to the group's claim (`<digest>:<ordinal>`), so a
//!   redelivered group keeps its number;
//! * copies: each completion digest keeps its earliest publisher by server time
//!   (`<ms>:<miner>`, lowered by compare-and-set), read before and written after a verdict.
//!
//! Entries expire with the bucket's `max_age` ([`subj::KV_LEDGER_MAX_AGE_SECS`]). A bus
//! error is returned, never read as "not claimed": the caller hands the group back.
//!
//! A local cache answers a group this instance already judged without a round trip.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::future::try_join_all;
use messages::subjects as subj;
use protocol::checks::{
    check_ordinal, claim, earlier_holder, judge_copies, late_copies, Admission, Claim, CopyRules,
    GroupClaims, LateCopy, LedgerReject, Limits,
};

type Digest = [u8; 32];
type Verdict = Result<Admission, LedgerReject>;

/// A ledger key could not be read or written: the group's claims are unknown.
#[derive(Debug, thiserror::Error)]
#[error("window ledger `{bucket}` key `{key}`: {what}: {source} (the group is handed back and retried; check the bus and that `grail streams` created the bucket)")]
pub struct LedgerBusError {
    pub bucket: &'static str,
    pub key: String,
    pub what: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn bus_err(
    key: &str,
    what: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> LedgerBusError {
    LedgerBusError {
        bucket: subj::KV_LEDGER,
        key: key.to_string(),
        what,
        source: Box::new(e),
    }
}

fn contended(key: &str) -> LedgerBusError {
    bus_err(
        key,
        "still contended after retries",
        std::io::Error::other("compare-and-set kept losing"),
    )
}

/// Compare-and-set retries before a key counts as unavailable. Each loss means another
/// worker changed the key in between (one miner's flood judged by every worker of every
/// instance at once contends on its group counter), so losers back off with jitter.
const CAS_TRIES: u32 = 64;

/// 1..=4 ms times the attempt (capped), randomised so contenders spread out.
async fn back_off(attempt: u32) {
    let ms = (1 + rand::random::<u64>() % 4) * u64::from(attempt.min(16) + 1);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

/// Windows whose local answers are kept.
const LOCAL_WINDOWS: u64 = 4;

/// See module docs.
pub struct BusLedger {
    kv: kv::Store,
    rules: CopyRules,
    /// (window → envelope → answer): this instance's fast path.
    local: Mutex<BTreeMap<u64, HashMap<Digest, Verdict>>>,
}

impl BusLedger {
    /// Binds to the bucket `grail streams` / `grail up` created (with auth only the admin may).
    pub async fn open(js: &jetstream::Context, rules: CopyRules) -> Result<Self, LedgerBusError> {
        let kv = js
            .get_key_value(subj::KV_LEDGER)
            .await
            .map_err(|e| bus_err("", "bucket not found (run `grail streams`)", e))?;
        Ok(Self {
            kv,
            rules,
            local: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn rules(&self) -> &CopyRules {
        &self.rules
    }

    fn cached(&self, window: u64, envelope: &Digest) -> Option<Verdict> {
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.get(&window)?.get(envelope).cloned()
    }

    fn remember(&self, window: u64, envelope: Digest, verdict: &Verdict) {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let newest = local
            .keys()
            .next_back()
            .copied()
            .unwrap_or(window)
            .max(window);
        local.retain(|&w, _| w + LOCAL_WINDOWS >= newest);
        local
            .entry(window)
            .or_default()
            .entry(envelope)
            .or_insert_with(|| verdict.clone());
    }

    /// Applies the group's claims (nonce, group index, count) and judges its completions
    /// against the earliest publishers recorded so far, across all verifier instances. The
    /// first answer for an envelope is kept, so a redelivery gets the same one.
    pub async fn admit(
        &self,
        window: u64,
        g: &GroupClaims<'_>,
        limits: &Limits,
    ) -> Result<Verdict, LedgerBusError> {
        if let Some(answer) = self.cached(window, &g.envelope) {
            return Ok(match answer {
                Ok(_) => Ok(Admission::Repeat),
                refused => refused,
            });
        }
        let answer = self.admit_on_bus(window, g, limits).await?;
        self.remember(window, g.envelope, &answer);
        Ok(answer)
    }

    async fn admit_on_bus(
        &self,
        window: u64,
        g: &GroupClaims<'_>,
        limits: &Limits,
    ) -> Result<Verdict, LedgerBusError> {
        let envelope = hex::encode(g.envelope);
        let nonce_key = subj::ledger_nonce(window, g.miner, g.nonce);
        let (nonce, _) = self.claim_key(&nonce_key, &envelope).await?;
        if nonce == Claim::Taken {
            return Ok(Err(LedgerReject::DuplicateNonce { nonce: g.nonce }));
        }
        let group_key = subj::ledger_group(window, g.miner, g.group_index);
        let (group, held) = self.claim_key(&group_key, &envelope).await?;
        if group == Claim::Taken {
            return Ok(Err(LedgerReject::DuplicateGroupIndex {
                group: g.group_index,
            }));
        }
        let ordinal = match held.ordinal {
            Some(ordinal) => ordinal,
            None => {
                self.number_group(window, g.miner, &group_key, &envelope, held.revision)
                    .await?
            }
        };
        if let Err(refused) = check_ordinal(ordinal, limits) {
            return Ok(Err(refused));
        }
        let earliest = try_join_all(g.completions.iter().map(|d| self.earliest(window, d))).await?;
        let earliest = earliest
            .iter()
            .map(|e| e.as_ref().map(|(m, t)| (m.as_str(), *t)));
        if let Err(refused) = judge_copies(
            g.miner,
            g.server_ts_ms,
            earliest,
            g.completions.len(),
            &self.rules,
        ) {
            return Ok(Err(refused));
        }
        Ok(Ok(if (nonce, group) == (Claim::Ours, Claim::Ours) {
            Admission::Repeat
        } else {
            Admission::New
        }))
    }

    /// Records an accepted group's completions (earliest server time per digest wins) and
    /// returns the copies this reveals among groups judged before (`LateCopy`).
    pub async fn record(
        &self,
        window: u64,
        miner: &str,
        server_ts_ms: u64,
        completions: &[Digest],
    ) -> Result<Vec<LateCopy>, LedgerBusError> {
        let displaced = try_join_all(
            completions
                .iter()
                .map(|d| self.lower_holder(window, d, miner, server_ts_ms)),
        )
        .await?;
        let mut counts: HashMap<String, u32> = HashMap::new();
        for holder in displaced.into_iter().flatten() {
            if holder != miner {
                *counts.entry(holder).or_default() += 1;
            }
        }
        Ok(late_copies(miner, counts, completions.len(), &self.rules))
    }

    /// First-writer-wins claim of `key` for `envelope` (hex): who holds it now.
    async fn claim_key(&self, key: &str, envelope: &str) -> Result<(Claim, Held), LedgerBusError> {
        let mine = digest_of(envelope);
        for _ in 0..CAS_TRIES {
            match self.kv.create(key, Bytes::from(envelope.to_string())).await {
                Ok(revision) => {
                    let held = Held {
                        revision,
                        ordinal: None,
                    };
                    return Ok((claim(None, &mine), held));
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(bus_err(key, "claiming", e)),
            }
            // Expired or deleted between the two calls: try to create it again.
            let Some((value, revision)) = self.read(key).await? else {
                continue;
            };
            let (held_digest, ordinal) = match value.split_once(':') {
                Some((d, n)) => (d, n.parse().ok()),
                None => (value.as_str(), None),
            };
            let held = Held { revision, ordinal };
            return Ok((claim(Some(&digest_of(held_digest)), &mine), held));
        }
        Err(contended(key))
    }

    /// Gives a newly claimed group index the miner's next number and writes it next to the
    /// claim. Two instances numbering the same envelope at once (a redelivery racing the
    /// first delivery) waste one number; the claim written first wins.
    async fn number_group(
        &self,
        window: u64,
        miner: &str,
        group_key: &str,
        envelope: &str,
        revision: u64,
    ) -> Result<u32, LedgerBusError> {
        let count_key = subj::ledger_group_count(window, miner);
        let mut ordinal = None;
        for attempt in 0..CAS_TRIES {
            let written = match self.read(&count_key).await? {
                None => self
                    .kv
                    .create(&count_key, Bytes::from_static(b"1"))
                    .await
                    .map(|_| 1)
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
                Some((value, rev)) => {
                    let next = value.parse::<u32>().unwrap_or(u32::MAX).saturating_add(1);
                    self.kv
                        .update(&count_key, Bytes::from(next.to_string()), rev)
                        .await
                        .map(|_| next)
                        .map_err(|e| {
                            (
                                e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                                e.to_string(),
                            )
                        })
                }
            };
            match written {
                Ok(n) => {
                    ordinal = Some(n);
                    break;
                }
                Err((true, _)) => back_off(attempt).await,
                Err((false, e)) => {
                    return Err(bus_err(
                        &count_key,
                        "counting groups",
                        std::io::Error::other(e),
                    ))
                }
            }
        }
        let ordinal = ordinal.ok_or_else(|| contended(&count_key))?;
        let value = Bytes::from(format!("{envelope}:{ordinal}"));
        match self.kv.update(group_key, value, revision).await {
            Ok(_) => Ok(ordinal),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Numbered by another instance meanwhile: its number stands.
                let (_, held) = self.claim_key(group_key, envelope).await?;
                held.ordinal.ok_or_else(|| contended(group_key))
            }
            Err(e) => Err(bus_err(group_key, "numbering the group", e)),
        }
    }

    /// Earliest (miner, server ms) recorded for a completion digest.
    async fn earliest(
        &self,
        window: u64,
        digest: &Digest,
    ) -> Result<Option<(String, u64)>, LedgerBusError> {
        let key = subj::ledger_completion(window, &hex::encode(digest));
        Ok(self.read(&key).await?.and_then(|(v, _)| parse_holder(&v)))
    }

    /// Makes (`miner`, `ts`) the digest's holder if it is the earliest; returns the holder it
    /// displaced.
    async fn lower_holder(
        &self,
        window: u64,
        digest: &Digest,
        miner: &str,
        ts: u64,
    ) -> Result<Option<String>, LedgerBusError> {
        let key = subj::ledger_completion(window, &hex::encode(digest));
        let value = format!("{ts}:{miner}");
        for attempt in 0..CAS_TRIES {
            match self.kv.create(&key, Bytes::from(value.clone())).await {
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(bus_err(&key, "recording a completion", e)),
            }
            let Some((held, revision)) = self.read(&key).await? else {
                continue;
            };
            let Some((holder, held_ts)) = parse_holder(&held) else {
                return Err(bus_err(
                    &key,
                    "unreadable holder",
                    std::io::Error::other(held),
                ));
            };
            if !earlier_holder((holder.as_str(), held_ts), (miner, ts)) {
                return Ok(None);
            }
            match self
                .kv
                .update(&key, Bytes::from(value.clone()), revision)
                .await
            {
                Ok(_) => return Ok(Some(holder)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    back_off(attempt).await
                }
                Err(e) => return Err(bus_err(&key, "recording a completion", e)),
            }
        }
        Err(contended(&key))
    }

    /// The live value and revision of `key` (None: absent, deleted or expired).
    async fn read(&self, key: &str) -> Result<Option<(String, u64)>, LedgerBusError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| bus_err(key, "reading", e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (String::from_utf8_lossy(&e.value).into_owned(), e.revision)))
    }
}

struct Held {
    revision: u64,
    ordinal: Option<u32>,
}

/// An unparsable stored digest never equals a real one, so it reads as "taken".
fn digest_of(hex_digest: &str) -> Digest {
    let mut out = [0xff; 32];
    if let Ok(raw) = hex::decode(hex_digest) {
        if raw.len() == 32 {
            out.copy_from_slice(&raw);
        }
    }
    out
}

fn parse_holder(value: &str) -> Option<(String, u64)> {
    let (ts, miner) = value.split_once(':')?;
    Some((miner.to_string(), ts.parse().ok()?))
}
