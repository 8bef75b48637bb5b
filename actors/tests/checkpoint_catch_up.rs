//! The checkpoint book's catch-up path against a real local store: a late joiner rebuilds a
//! delta checkpoint from the anchor plus the announced cumulative delta when that is cheaper,
//! bit-exactly the weights the chain gives; each path is the other's fallback (missing or
//! forged catch-up object → chain, broken chain → catch-up), and a forged catch-up is never
//! accepted.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use grail_actors::checkpoints::{
    put_bytes, BookConfig, CheckpointBook, CheckpointStatus, CheckpointStore, LoadPath,
    LocalDirStore,
};
use grail_actors::metrics::Metrics;
use messages::{
    CatchUpDelta, CheckpointAnnounce, CheckpointKind, Hash32, SamplingSpec, WIRE_VERSION,
};
use policy::checkpoint::{digest, to_safetensors_bytes, WeightSet};
use policy::delta::encode_delta;

const PUBLISHER: &str = "publisher-hotkey";

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Three bf16 matrices and an f32 norm (~0.8 MB).
fn anchor_weights() -> WeightSet {
    let mut rng = 7u64;
    let mut w = WeightSet::new();
    for (name, rows, cols, dtype) in [
        ("a.weight", 256, 384, DType::BF16),
        ("b.weight", 256, 384, DType::BF16),
        ("c.weight", 128, 256, DType::BF16),
        ("norm.weight", 1, 256, DType::F32),
    ] {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| (xorshift(&mut rng) % 20_000) as f32 / 100_000.0 - 0.1)
            .collect();
        let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        w.insert(name.to_string(), t);
    }
    w
}

/// One "step": 2 % of the elements move by ~2 %. `same_positions`: every step moves the same
/// elements (a cumulative delta stays one step's size), else each step its own ones (a
/// cumulative delta grows with the steps it spans).
fn step(w: &WeightSet, step: u64, same_positions: bool) -> WeightSet {
    w.iter()
        .map(|(name, t)| {
            let mut rng = if same_positions { 99 } else { 99 + step * 7919 };
            let mut v: Vec<f32> = t
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for x in v.iter_mut() {
                if xorshift(&mut rng).is_multiple_of(50) {
                    *x += *x * 0.02 + 2e-3;
                }
            }
            let t2 = Tensor::from_vec(v, t.dims(), &Device::Cpu)
                .unwrap()
                .to_dtype(t.dtype())
                .unwrap();
            (name.clone(), t2)
        })
        .collect()
}

fn hash(w: &WeightSet) -> Hash32 {
    Hash32::from(digest(w).unwrap())
}

/// Checkpoints 0 (anchor) ..= 4 published the way the publisher does: deltas on the previous
/// one, a catch-up delta anchor → checkpoint from seq 2 on.
struct Published {
    _dir: tempfile::TempDir,
    store: Arc<dyn CheckpointStore>,
    weights: Vec<WeightSet>,
    announcements: Vec<CheckpointAnnounce>,
}

async fn publish(same_positions: bool) -> Published {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CheckpointStore> = Arc::new(LocalDirStore::open(dir.path()).unwrap());
    let mut weights = vec![anchor_weights()];
    for s in 1..=4 {
        let next = step(&weights[s - 1], s as u64, same_positions);
        weights.push(next);
    }
    let anchor = hash(&weights[0]);
    let mut announcements = Vec::new();
    for (seq, w) in weights.iter().enumerate() {
        let (kind, body) = if seq == 0 {
            (CheckpointKind::Full, to_safetensors_bytes(w).unwrap())
        } else {
            let base = hash(&weights[seq - 1]);
            let body = encode_delta(&weights[seq - 1], w).unwrap();
            (CheckpointKind::Delta { base, anchor }, body)
        };
        let object = messages::subjects::checkpoint_object(seq as u64, &hash(w).to_string());
        let stored = put_bytes(store.as_ref(), &object, body).await.unwrap();
        let catch_up = if seq >= 2 {
            let object = messages::subjects::catch_up_object(seq as u64, &hash(w).to_string());
            let body = encode_delta(&weights[0], w).unwrap();
            let stored = put_bytes(store.as_ref(), &object, body).await.unwrap();
            Some(CatchUpDelta {
                object,
                bytes: stored.bytes,
                object_digest: stored.digest,
            })
        } else {
            None
        };
        announcements.push(CheckpointAnnounce {
            version: WIRE_VERSION,
            checkpoint: hash(w),
            seq: seq as u64,
            valid_from_window: seq as u64,
            kind,
            object,
            bytes: stored.bytes,
            object_digest: stored.digest,
            catch_up,
            sampling: SamplingSpec::default(),
            created_at_ms: 0,
        });
    }
    Published {
        _dir: dir,
        store,
        weights,
        announcements,
    }
}

impl Published {
    /// A late joiner's book holding announcements `..=upto` (nothing loaded yet).
    fn book(&self, upto: usize) -> CheckpointBook {
        let book = CheckpointBook::new(BookConfig::trusting([PUBLISHER]), self.store.clone());
        for a in &self.announcements[..=upto] {
            assert!(book.offer(a.clone(), PUBLISHER, a.seq).unwrap());
        }
        book
    }

    fn path_for(&self, book: &CheckpointBook, seq: usize) -> LoadPath {
        let a = &self.announcements[seq];
        let CheckpointKind::Delta { base, anchor } = a.kind else {
            panic!("seq {seq} is not a delta")
        };
        book.cheaper_path(a, base, anchor)
    }
}

/// Bit-exact: same digest and the same bytes in every tensor.
fn assert_same(got: &WeightSet, want: &WeightSet) {
    assert_eq!(hash(got), hash(want));
    assert_eq!(
        to_safetensors_bytes(got).unwrap(),
        to_safetensors_bytes(want).unwrap()
    );
}

fn loaded(book: &CheckpointBook, seq: u64) -> bool {
    matches!(book.status_of_seq(seq), CheckpointStatus::Ready(_))
}

#[tokio::test]
async fn a_late_joiner_takes_the_cheaper_catch_up_and_gets_the_chains_weights_bit_exactly() {
    let p = publish(true).await;
    let c4 = p.announcements[4].catch_up.clone().unwrap();
    let chain: u64 = p.announcements[1..=4].iter().map(|a| a.bytes).sum();
    assert!(
        c4.bytes * 2 < chain,
        "catch-up {} B, chain {chain} B",
        c4.bytes
    );

    let joiner = p.book(4);
    assert_eq!(p.path_for(&joiner, 4), LoadPath::CatchUp);
    let via_catch_up = joiner.load_seq(4).await.unwrap();
    assert_same(&via_catch_up.weights.0, &p.weights[4]);
    // The catch-up path reconstructs nothing in between; the chain path caches every step.
    assert!(loaded(&joiner, 0) && !loaded(&joiner, 2) && !loaded(&joiner, 3));

    p.store.delete(&c4.object).await.unwrap();
    let chain_book = p.book(4);
    let via_chain = chain_book.load_seq(4).await.unwrap();
    assert!(
        loaded(&chain_book, 3),
        "the missing catch-up sends the load down the chain"
    );
    assert_same(&via_chain.weights.0, &via_catch_up.weights.0);
}

#[tokio::test]
async fn a_catch_up_object_with_the_wrong_bytes_falls_back_to_the_chain() {
    let p = publish(true).await;
    let c4 = p.announcements[4].catch_up.clone().unwrap();
    // Replaced in the store by another valid delta (checkpoint 3's catch-up): digest mismatch.
    let other = p.announcements[3].catch_up.clone().unwrap();
    let (bytes, _) =
        grail_actors::checkpoints::get_bytes(p.store.as_ref(), &other.object, other.bytes)
            .await
            .unwrap();
    p.store.delete(&c4.object).await.unwrap();
    put_bytes(p.store.as_ref(), &c4.object, bytes)
        .await
        .unwrap();

    let book = p.book(4);
    assert_eq!(p.path_for(&book, 4), LoadPath::CatchUp);
    let got = book.load_seq(4).await.unwrap();
    assert!(loaded(&book, 3), "fell back to the chain");
    assert_same(&got.weights.0, &p.weights[4]);
}

#[tokio::test]
async fn a_catch_up_on_the_wrong_base_is_refused_even_with_matching_digests() {
    let p = publish(true).await;
    // A forged catch-up, consistent with its announcement (bytes and digest), that starts from
    // checkpoint 1 instead of the anchor: applied to the anchor it must never be accepted.
    let forged = encode_delta(&p.weights[1], &p.weights[4]).unwrap();
    let stored = put_bytes(p.store.as_ref(), "forged-catchup", forged)
        .await
        .unwrap();
    let mut forged_announce = p.announcements.clone();
    forged_announce[4].catch_up = Some(CatchUpDelta {
        object: "forged-catchup".into(),
        bytes: stored.bytes,
        object_digest: stored.digest,
    });
    let forged_book = |p: &Published| {
        let book = CheckpointBook::new(BookConfig::trusting([PUBLISHER]), p.store.clone());
        for a in &forged_announce {
            book.offer(a.clone(), PUBLISHER, a.seq).unwrap();
        }
        book
    };

    let book = forged_book(&p);
    let got = book.load_seq(4).await.unwrap();
    assert!(loaded(&book, 3), "refused, then rebuilt along the chain");
    assert_same(&got.weights.0, &p.weights[4]);

    // With the chain broken too, nothing loads: the forged object is refused for its header
    // (the error of the path tried first), not a way in.
    p.store.delete(&p.announcements[2].object).await.unwrap();
    let err = forged_book(&p).load_seq(4).await.unwrap_err();
    assert_eq!(err.reason(), "delta_header_mismatch", "{err}");
}

#[tokio::test]
async fn a_broken_chain_falls_back_to_the_catch_up() {
    // Each step moves its own elements: checkpoint 3's catch-up spans three steps, so a
    // role holding checkpoint 2 takes the one-step chain first.
    let p = publish(false).await;
    let book = p.book(2);
    book.load_pending(&Metrics::new(), "miner").await;
    assert!((0..=2).all(|s| loaded(&book, s)));
    let a3 = p.announcements[3].clone();
    assert!(book.offer(a3.clone(), PUBLISHER, 3).unwrap());
    assert_eq!(p.path_for(&book, 3), LoadPath::Chain);

    p.store.delete(&a3.object).await.unwrap();
    let got = book.load_seq(3).await.unwrap();
    assert_same(&got.weights.0, &p.weights[3]);

    // Neither path left: the load fails (with the chain's error), no older substitute.
    let c3 = a3.catch_up.unwrap();
    p.store.delete(&c3.object).await.unwrap();
    let err = p.book(3).load_seq(3).await.unwrap_err();
    assert_eq!(err.reason(), "object_missing", "{err}");
}
