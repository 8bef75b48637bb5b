//! Delta encode/apply: bit-exact reconstruction, chains, layout checks, wrong bases.

mod delta_support;

use candle_core::{DType, Device, Tensor};
use delta_support::{bit_identical, perturb, random_set, rng};
use grail_policy::checkpoint::{digest, WeightSet};
use grail_policy::delta::{
    apply_delta, apply_delta_chain, encode_delta, encode_delta_with, DeltaError, DeltaHeader,
    DeltaOptions,
};

#[test]
fn reconstruction_is_bit_exact_for_sparse_and_dense_changes() {
    for (k, dtype) in [DType::F32, DType::BF16, DType::F16]
        .into_iter()
        .enumerate()
    {
        for (j, fraction) in [0.0, 0.01, 0.3, 0.95, 1.0].into_iter().enumerate() {
            let mut r = rng(100 + 10 * k as u64 + j as u64);
            let base = random_set(&mut r, dtype);
            let new = perturb(&mut r, &base, fraction);
            let (bytes, stats) = encode_delta_with(&base, &new, &DeltaOptions::default()).unwrap();
            let rebuilt = apply_delta(&base, &bytes).unwrap();
            assert!(
                bit_identical(&rebuilt, &new),
                "{dtype:?} fraction {fraction}"
            );
            assert_eq!(stats.encoded_bytes, bytes.len() as u64);
            assert_eq!(stats.tensors_total, base.len());
            if fraction == 0.0 {
                assert_eq!(stats.elements_changed, 0);
                assert_eq!(stats.tensors_sparse + stats.tensors_dense, 0);
            }
            if fraction >= 0.95 {
                assert!(
                    stats.tensors_dense >= 3,
                    "mostly-changed tensors go dense: {stats:?}"
                );
            }
        }
    }
}

#[test]
fn zero_sign_and_nan_payload_changes_are_detected_and_restored() {
    let base_bits = [0x0000_0000u32, 0x7fc0_0001, 0x3f80_0000, 0xffa0_1234];
    let new_bits = [0x8000_0000u32, 0x7fc0_0002, 0x3f80_0000, 0xffa0_1234];
    let tensor = |bits: &[u32]| {
        let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        Tensor::from_vec(values, 4, &Device::Cpu).unwrap()
    };
    let base = WeightSet::from([("w".to_string(), tensor(&base_bits))]);
    let new = WeightSet::from([("w".to_string(), tensor(&new_bits))]);
    let (bytes, stats) = encode_delta_with(&base, &new, &DeltaOptions::default()).unwrap();
    assert_eq!(
        stats.elements_changed, 2,
        "-0.0 vs 0.0 and NaN payloads differ bitwise"
    );
    let rebuilt = apply_delta(&base, &bytes).unwrap();
    let bits: Vec<u32> = rebuilt["w"]
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_eq!(bits, new_bits);
}

#[test]
fn sparse_changes_compress_far_below_dense_ones() {
    let mut r = rng(7);
    let mut base = WeightSet::new();
    base.insert(
        "big".into(),
        delta_support::random_tensor(&mut r, DType::F32, &[256, 256]),
    );
    let sparse = encode_delta(&base, &perturb(&mut r, &base, 0.01)).unwrap();
    let dense = encode_delta(&base, &perturb(&mut r, &base, 0.9)).unwrap();
    let full_bytes = 256 * 256 * 4;
    assert!(
        sparse.len() * 20 < full_bytes,
        "1% delta is {} bytes",
        sparse.len()
    );
    assert!(sparse.len() * 5 < dense.len());
}

#[test]
fn chain_of_five_deltas_rebuilds_the_last_checkpoint() {
    for dtype in [DType::F32, DType::BF16] {
        let mut r = rng(42);
        let mut checkpoints = vec![random_set(&mut r, dtype)];
        for step in 0..5 {
            let fraction = [0.02, 0.5, 0.001, 1.0, 0.1][step];
            let next = perturb(&mut r, checkpoints.last().unwrap(), fraction);
            checkpoints.push(next);
        }
        let deltas: Vec<Vec<u8>> = checkpoints
            .windows(2)
            .map(|w| encode_delta(&w[0], &w[1]).unwrap())
            .collect();
        for pair in deltas.windows(2) {
            let (a, b) = (
                DeltaHeader::parse(&pair[0]).unwrap(),
                DeltaHeader::parse(&pair[1]).unwrap(),
            );
            assert_eq!(a.target_digest, b.base_digest, "headers link up");
        }
        let rebuilt = apply_delta_chain(&checkpoints[0], &deltas).unwrap();
        assert!(bit_identical(&rebuilt, &checkpoints[5]));
        assert_eq!(digest(&rebuilt).unwrap(), digest(&checkpoints[5]).unwrap());

        // Out of order: step 2 applied right after step 0 must fail at index 1, naming the base.
        let shuffled = [&deltas[0], &deltas[2]];
        let err = apply_delta_chain(&checkpoints[0], shuffled).unwrap_err();
        match err {
            DeltaError::ChainStep { index: 1, source } => {
                assert!(matches!(*source, DeltaError::WrongBase { .. }), "{source}")
            }
            other => panic!("unexpected {other}"),
        }
        let empty: [&[u8]; 0] = [];
        assert!(bit_identical(
            &apply_delta_chain(&checkpoints[0], empty).unwrap(),
            &checkpoints[0]
        ));
    }
}

#[test]
fn wrong_base_is_rejected_with_both_digests() {
    let mut r = rng(3);
    let base = random_set(&mut r, DType::F32);
    let new = perturb(&mut r, &base, 0.05);
    let other = perturb(&mut r, &base, 0.01);
    let bytes = encode_delta(&base, &new).unwrap();
    let err = apply_delta(&other, &bytes).unwrap_err();
    let DeltaError::WrongBase { expected, actual } = &err else {
        panic!("unexpected {err}")
    };
    assert_ne!(expected, actual);
    assert!(err.to_string().contains(expected.as_str()));
}

#[test]
fn layout_changes_are_refused_naming_the_tensor() {
    let mut r = rng(5);
    let base = random_set(&mut r, DType::F32);

    let mut missing = base.clone();
    missing.remove("model.norm.weight");
    let err = encode_delta(&base, &missing).unwrap_err();
    assert!(
        matches!(err, DeltaError::NameSetsDiffer { ref tensor, side: "base" } if tensor == "model.norm.weight")
    );

    let mut extra = base.clone();
    extra.insert(
        "zzz".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = encode_delta(&base, &extra).unwrap_err();
    assert!(
        matches!(err, DeltaError::NameSetsDiffer { ref tensor, side: "new" } if tensor == "zzz")
    );

    let mut reshaped = base.clone();
    let t = base["model.norm.weight"].reshape((2, 16)).unwrap();
    reshaped.insert("model.norm.weight".into(), t);
    let err = encode_delta(&base, &reshaped).unwrap_err();
    assert!(
        matches!(err, DeltaError::ShapeMismatch { ref tensor, .. } if tensor == "model.norm.weight")
    );
    assert!(err.to_string().contains("model.norm.weight"));

    let mut retyped = base.clone();
    let t = base["scale"].to_dtype(DType::BF16).unwrap();
    retyped.insert("scale".into(), t);
    let err = encode_delta(&base, &retyped).unwrap_err();
    assert!(matches!(err, DeltaError::DtypeMismatch { ref tensor, .. } if tensor == "scale"));
}
