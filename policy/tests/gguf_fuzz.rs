//! Hostile GGUF bytes: the parser and loader must return typed errors, never panic or
//! allocate without bound.

mod gguf_support;

use gguf_support::{array_bytes, string_bytes, tiny_llama_metadata, ty, GgufWriter};
use grail_policy::gguf::{load_gguf_bytes, GgufError, GgufFile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn tiny_model_bytes() -> Vec<u8> {
    let mut w = GgufWriter::default();
    tiny_llama_metadata(&mut w, 8, 2, 1, 1, 16);
    let vocab = gguf_support::tiny_vocab().tokens.len();
    w.tensor_f32("token_embd.weight", &[vocab, 8], &vec![0.5; vocab * 8])
        .tensor_f32("output_norm.weight", &[8], &[1.0; 8])
        .tensor_f32("blk.0.attn_q.weight", &[8, 8], &[0.25; 64]);
    w.to_bytes()
}

fn load_without_panic(bytes: &[u8]) -> bool {
    match std::panic::catch_unwind(|| load_gguf_bytes(bytes).is_ok()) {
        Ok(ok) => ok,
        Err(_) => panic!("load_gguf_bytes panicked on {} hostile bytes", bytes.len()),
    }
}

#[test]
fn random_flips_truncations_and_garbage_never_panic() {
    let good = tiny_model_bytes();
    assert!(load_without_panic(&good));
    // Header, metadata and tensor infos occupy everything before the tensor data.
    let data_start = GgufFile::parse(&good).unwrap().data_offset as usize;
    let mut rng = StdRng::seed_from_u64(5);
    let mut failures = 0;
    for i in 0..3000 {
        let mut bytes = good.clone();
        match i % 4 {
            0 => {
                let k = rng.random_range(0..data_start);
                bytes[k] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                for _ in 0..rng.random_range(1..8) {
                    let k = rng.random_range(0..data_start);
                    bytes[k] = rng.random();
                }
            }
            2 => bytes.truncate(rng.random_range(0..bytes.len())),
            _ => {
                // A plausible-looking length field set to something huge.
                let k = rng.random_range(0..data_start.saturating_sub(8));
                bytes[k..k + 8]
                    .copy_from_slice(&(u64::MAX >> rng.random_range(0..40)).to_le_bytes());
            }
        }
        if !load_without_panic(&bytes) {
            failures += 1;
        }
    }
    // Most mutations must be detected; the rest changed only values or unused text.
    assert!(
        failures > 1500,
        "only {failures} of 3000 mutations were rejected"
    );
}

#[test]
fn absurd_counts_and_lengths_are_refused_before_allocating() {
    let header = |tensors: u64, kvs: u64| {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(tensors.to_le_bytes());
        b.extend(kvs.to_le_bytes());
        b
    };
    assert!(matches!(
        GgufFile::parse(&header(u64::MAX, 0)),
        Err(GgufError::Malformed(_))
    ));
    assert!(matches!(
        GgufFile::parse(&header(0, 1 << 40)),
        Err(GgufError::Malformed(_))
    ));

    let mut huge_array = header(0, 1);
    huge_array.extend(string_bytes("k"));
    huge_array.extend(ty::ARRAY.to_le_bytes());
    huge_array.extend(ty::U64.to_le_bytes());
    huge_array.extend((1u64 << 60).to_le_bytes());
    assert!(matches!(
        GgufFile::parse(&huge_array),
        Err(GgufError::Malformed(_))
    ));

    let mut huge_string = header(0, 1);
    huge_string.extend(string_bytes("k"));
    huge_string.extend(ty::STRING.to_le_bytes());
    huge_string.extend((u64::MAX - 3).to_le_bytes());
    assert!(GgufFile::parse(&huge_string).is_err());

    // Arrays nested 10 deep.
    let mut value = array_bytes(ty::U8, &[vec![1]]);
    for _ in 0..10 {
        value = array_bytes(ty::ARRAY, &[value]);
    }
    let mut w = GgufWriter::default();
    w.kv_raw("deep", ty::ARRAY, value);
    assert!(
        matches!(GgufFile::parse(&w.to_bytes()), Err(GgufError::BadMetadata { ref key, .. }) if key == "deep")
    );

    // A tensor whose dimensions overflow, and one that points past the end of the file.
    let mut w = GgufWriter::default();
    w.tensor("t", &[u64::MAX, 4], 0, vec![]);
    assert!(matches!(
        GgufFile::parse(&w.to_bytes()),
        Err(GgufError::BadTensor { .. })
    ));
    let mut w = GgufWriter::default();
    w.tensor("t", &[1024], 0, vec![0; 16]);
    let err = GgufFile::parse(&w.to_bytes()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");

    assert!(matches!(
        GgufFile::parse(b"GGML\x03\0\0\0"),
        Err(GgufError::NotGguf)
    ));
    assert!(matches!(
        GgufFile::parse(b"GG"),
        Err(GgufError::Truncated { .. })
    ));
}
