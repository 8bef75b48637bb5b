//! Publish and fetch time of checkpoint-sized objects through the NATS object store and through
//! the S3 store, both on loopback: a private nats-server (file storage, the production
//! topology) and an S3-protocol server (`s3s` over `s3s-fs`, SigV4) started here.
//!
//!     cargo run -p grail-integration-tests --example checkpoint_store_bench [RUNS] [FULL_MB] [DELTA_MB]
//!
//! Defaults: 3 runs, a 540 MB full checkpoint (SmolLM2-135M in f32) and a 20 MB delta. Each run
//! publishes fresh bytes (a different digest) under a new name, reads them back through
//! `get_bytes` (which hashes every byte, as the book does) and deletes them. Prints a
//! markdown table (per run and the median).

use std::sync::Arc;
use std::time::Instant;

use actors::checkpoints::{get_bytes, put_bytes, CheckpointStore, NatsObjectStore, S3Store};
use grail_integration_tests::s3::TestS3;
use grail_integration_tests::TestNats;

const MB: usize = 1_000_000;

fn body(len: usize) -> Vec<u8> {
    // Weight-like bytes: not compressible, not constant.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

struct Row {
    store: &'static str,
    object: &'static str,
    mb: usize,
    put: Vec<f64>,
    get: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

async fn measure(
    store: &dyn CheckpointStore,
    template: &[u8],
    runs: usize,
    tag: &str,
) -> (Vec<f64>, Vec<f64>) {
    let (mut put, mut get) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut bytes = template.to_vec();
        bytes[..8].copy_from_slice(&(run as u64 + 1).to_le_bytes());
        let name = format!("bench-{tag}-{run}");
        let t = Instant::now();
        let stored = put_bytes(store, &name, bytes).await.expect("put");
        put.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (back, digest) = get_bytes(store, &name, u64::MAX / 2).await.expect("get");
        get.push(t.elapsed().as_secs_f64());
        assert_eq!((back.len() as u64, digest), (stored.bytes, stored.digest));
        drop(back);
        store.delete(&name).await.expect("delete");
    }
    (put, get)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("RUNS FULL_MB DELTA_MB are whole numbers"))
        .collect();
    let runs = args.first().copied().unwrap_or(3).max(1);
    let full_mb = args.get(1).copied().unwrap_or(540);
    let delta_mb = args.get(2).copied().unwrap_or(20);
    let nats = TestNats::start();
    let s3 = TestS3::start(&["grail"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(async {
        let bus = nats.bus().await;
        let mut cfg = s3.config("grail", "bench");
        cfg.part_size = 16 << 20;
        let stores: Vec<(&'static str, Arc<dyn CheckpointStore>)> = vec![
            (
                "nats object store",
                Arc::new(NatsObjectStore::open(&bus.js).await.unwrap()),
            ),
            ("s3 (s3s-fs)", Arc::new(S3Store::open(cfg).unwrap())),
        ];
        let mut rows = Vec::new();
        for (object, mb) in [("delta", delta_mb), ("full", full_mb)] {
            let template = body(mb * MB);
            for (store, s) in &stores {
                let tag = format!("{object}-{}", rows.len());
                let (put, get) = measure(s.as_ref(), &template, runs, &tag).await;
                eprintln!("{store} {object} {mb} MB: put {put:.2?} get {get:.2?}");
                rows.push(Row {
                    store,
                    object,
                    mb,
                    put,
                    get,
                });
            }
        }
        rows
    });
    println!("\n| store | object | MB | runs | put s (median) | put MB/s | fetch s (median) | fetch MB/s | put s per run | fetch s per run |");
    println!("|---|---|--:|--:|--:|--:|--:|--:|---|---|");
    for r in &rows {
        let (p, g) = (median(&r.put), median(&r.get));
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "| {} | {} | {} | {} | {p:.2} | {:.0} | {g:.2} | {:.0} | {} | {} |",
            r.store,
            r.object,
            r.mb,
            r.put.len(),
            r.mb as f64 / p,
            r.mb as f64 / g,
            list(&r.put),
            list(&r.get)
        );
    }
}
