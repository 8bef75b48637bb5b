//! The S3 checkpoint store against a real S3-protocol server (`s3s` over `s3s-fs`, SigV4 auth,
//! loopback): multipart uploads, content-addressed blobs shared between names, digest checks
//! on every read, retention. The store contract shared with NATS and the local directory, and
//! the publisher → book hand-over through S3, are in `checkpoints.rs`.

use actors::checkpoints::{get_bytes, object_digest, put_bytes, CheckpointStore, S3Store};
use grail_integration_tests::s3::TestS3;

const MIB: usize = 1 << 20;

fn body(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Files under `dir` (relative), sorted; s3s-fs keeps upload bookkeeping in hidden files.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_round_trip_is_content_addressed_and_tampering_is_refused_on_read() {
    let s3 = TestS3::start(&["ckpts"]);
    let store = s3.store("ckpts", "run-1");
    // 12.5 MiB with 5 MiB parts: three parts, the last one short.
    let big = body(12 * MIB + MIB / 2, 1);
    let stored = put_bytes(&store, "ckpt-00000003-full", big.clone())
        .await
        .unwrap();
    assert_eq!(
        (stored.bytes, stored.digest),
        (big.len() as u64, object_digest(&big))
    );
    assert_eq!(store.parts_uploaded(), 3, "uploaded as a multipart upload");
    // One part or less: a single PUT.
    let small = body(MIB, 2);
    put_bytes(&store, "staging-abc", small.clone())
        .await
        .unwrap();
    assert_eq!(store.parts_uploaded(), 3);
    let blob = |d: &messages::Hash32| format!("run-1/blobs/{d}");
    assert_eq!(
        files(&s3.root().join("ckpts")),
        vec![
            blob(&object_digest(&big)),
            blob(&object_digest(&small)),
            "run-1/names/ckpt-00000003-full".to_string(),
            "run-1/names/staging-abc".to_string(),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "blobs under their digest, names as pointers, no staging left"
    );
    let (back, digest) = get_bytes(&store, "ckpt-00000003-full", 1 << 30)
        .await
        .unwrap();
    assert!(back == big && digest == stored.digest);

    // Flip one byte of the blob on the server's disk: the read fails, naming the object.
    let path = s3.object_path("ckpts", &blob(&stored.digest));
    let mut raw = std::fs::read(&path).unwrap();
    raw[7 * MIB] ^= 0x40;
    std::fs::write(&path, &raw).unwrap();
    let err = get_bytes(&store, "ckpt-00000003-full", 1 << 30)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "store_error");
    assert!(err.to_string().contains("altered or truncated"), "{err}");
    assert!(err.to_string().contains("ckpt-00000003-full"), "{err}");
    // Truncated: refused too.
    std::fs::write(&path, &big[..big.len() - 1]).unwrap();
    let err = get_bytes(&store, "ckpt-00000003-full", 1 << 30)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("altered or truncated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_blobs_survive_until_the_last_name_goes_and_replacing_frees_the_old_blob() {
    let s3 = TestS3::start(&["ckpts"]);
    let store = s3.store("ckpts", "");
    let a = body(6 * MIB, 3);
    let b = body(2 * MIB, 4);
    // Same bytes under two names (a staged candidate re-published as a full checkpoint).
    put_bytes(&store, "staging-x", a.clone()).await.unwrap();
    put_bytes(&store, "ckpt-00000001-x", a.clone())
        .await
        .unwrap();
    put_bytes(&store, "ckpt-00000002-y", b.clone())
        .await
        .unwrap();
    let blobs = || files(&s3.root().join("ckpts/blobs"));
    assert_eq!(blobs().len(), 2, "one blob per distinct content");
    assert_eq!(
        store.list().await.unwrap(),
        vec!["ckpt-00000001-x", "ckpt-00000002-y", "staging-x"]
    );

    // Retention deletes the staging name: the checkpoint keeping the same blob still reads.
    store.delete("staging-x").await.unwrap();
    assert_eq!(blobs().len(), 2);
    assert_eq!(
        get_bytes(&store, "ckpt-00000001-x", 1 << 30)
            .await
            .unwrap()
            .0,
        a
    );
    store.delete("ckpt-00000001-x").await.unwrap();
    store.delete("ckpt-00000001-x").await.unwrap();
    assert_eq!(blobs(), vec![object_digest(&b).to_string()]);
    let missing = get_bytes(&store, "ckpt-00000001-x", 1 << 30)
        .await
        .unwrap_err();
    assert_eq!(missing.reason(), "object_missing");

    // Replacing a name's bytes frees the blob it pointed at.
    put_bytes(&store, "ckpt-00000002-y", a.clone())
        .await
        .unwrap();
    assert_eq!(blobs(), vec![object_digest(&a).to_string()]);
    assert_eq!(store.list().await.unwrap(), vec!["ckpt-00000002-y"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_with_the_store_named_and_the_secret_kept_out() {
    let s3 = TestS3::start(&["ckpts"]);
    let mut cfg = s3.config("ckpts", "p");
    cfg.secret_access_key = Some("not-the-secret".into());
    let store = S3Store::open(cfg).unwrap();
    let err = put_bytes(&store, "ckpt-1", vec![1, 2, 3])
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "store_error");
    let text = err.to_string();
    assert!(text.contains("s3://ckpts/p"), "{text}");
    assert!(!text.contains("not-the-secret"), "{text}");
    assert!(store.list().await.is_err());
}

/// Yields `good` bytes, then fails: a trainer or publisher whose source breaks mid-upload.
struct BreaksAfter {
    good: usize,
}

impl tokio::io::AsyncRead for BreaksAfter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.good == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("source broke")));
        }
        let n = self.good.min(buf.remaining()).min(64 * 1024);
        buf.put_slice(&vec![7u8; n]);
        self.good -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_multipart_upload_is_aborted_and_leaves_nothing_behind() {
    let s3 = TestS3::start(&["ckpts"]);
    let store = s3.store("ckpts", "p");
    let err = store
        .put("ckpt-9", Box::pin(BreaksAfter { good: 11 * MIB }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("source broke"), "{err}");
    assert!(store.parts_uploaded() >= 2, "the upload had started");
    // No object, no pointer, and no part files (s3s-fs keeps them as `.upload_id-*`).
    assert!(store.list().await.unwrap().is_empty());
    assert!(files(&s3.root().join("ckpts")).is_empty());
    let parts: Vec<_> = std::fs::read_dir(s3.root())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
        .collect();
    assert!(parts.is_empty(), "parts left after the abort: {parts:?}");
}
