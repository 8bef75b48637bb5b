//! Weight-set digest and safetensors round trips.

mod delta_support;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use candle_core::{DType, Device, Tensor};
use delta_support::{bit_identical, perturb, random_set, rng};
use grail_policy::checkpoint::{
    digest, digest_hex, from_safetensors_bytes, load_safetensors, save_safetensors,
    to_safetensors_bytes, CheckpointError, WeightSet,
};

#[test]
fn digest_follows_the_documented_byte_layout() {
    let mut set = WeightSet::new();
    let b = Tensor::from_vec(vec![1.5f32, -0.0, 2.0, 3.0, 4.0, 5.0], (2, 3), &Device::Cpu).unwrap();
    let a = Tensor::from_vec(vec![half::bf16::from_bits(0x3f80)], 1, &Device::Cpu).unwrap();
    set.insert("b.weight".into(), b);
    set.insert("a".into(), a);

    // Rebuild the hashed stream by hand from the doc comment of `digest`.
    let mut stream = Vec::new();
    let bytes = |s: &mut Vec<u8>, x: &[u8]| {
        s.extend_from_slice(&(x.len() as u64).to_le_bytes());
        s.extend_from_slice(x);
    };
    bytes(&mut stream, b"grail-weights-v1");
    stream.extend_from_slice(&2u64.to_le_bytes());
    bytes(&mut stream, b"a");
    bytes(&mut stream, b"BF16");
    stream.extend_from_slice(&1u64.to_le_bytes());
    stream.extend_from_slice(&1u64.to_le_bytes());
    bytes(&mut stream, &[0x80, 0x3f]);
    bytes(&mut stream, b"b.weight");
    bytes(&mut stream, b"F32");
    stream.extend_from_slice(&2u64.to_le_bytes());
    stream.extend_from_slice(&2u64.to_le_bytes());
    stream.extend_from_slice(&3u64.to_le_bytes());
    let values: Vec<u8> = [1.5f32, -0.0, 2.0, 3.0, 4.0, 5.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    bytes(&mut stream, &values);
    let expected: [u8; 32] = Blake2b::<U32>::digest(&stream).into();

    assert_eq!(digest(&set).unwrap(), expected);
    assert_eq!(digest_hex(&set).unwrap().len(), 64);
}

#[test]
fn digest_sees_every_bit_name_shape_and_dtype() {
    let mut r = rng(1);
    let set = random_set(&mut r, DType::F32);
    let base = digest(&set).unwrap();

    let one_bit = perturb(&mut r, &set, 0.002);
    assert!(!bit_identical(&set, &one_bit));
    assert_ne!(digest(&one_bit).unwrap(), base);

    let mut renamed = set.clone();
    let t = renamed.remove("scale").unwrap();
    renamed.insert("scale2".into(), t);
    assert_ne!(digest(&renamed).unwrap(), base);

    let mut reshaped = set.clone();
    let t = reshaped["model.norm.weight"].reshape((4, 8)).unwrap();
    reshaped.insert("model.norm.weight".into(), t);
    assert_ne!(digest(&reshaped).unwrap(), base);

    // Same bits, other dtype: u32 view of the f32 data.
    let mut retyped = set.clone();
    let bytes = grail_policy::checkpoint::tensor_to_le_bytes("s", &set["scale"]).unwrap();
    let t = Tensor::from_raw_buffer(&bytes, DType::U32, &[], &Device::Cpu).unwrap();
    retyped.insert("scale".into(), t);
    assert_ne!(digest(&retyped).unwrap(), base);

    assert_eq!(digest(&set.clone()).unwrap(), base);
}

#[test]
fn safetensors_round_trip_is_bit_exact_for_each_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for (k, dtype) in [DType::F32, DType::BF16, DType::F16]
        .into_iter()
        .enumerate()
    {
        let set = random_set(&mut rng(10 + k as u64), dtype);
        let path = dir.path().join(format!("model-{k}.safetensors"));
        save_safetensors(&set, &path).unwrap();
        let loaded = load_safetensors(&path).unwrap();
        assert!(bit_identical(&set, &loaded), "{dtype:?} file round trip");
        assert_eq!(digest(&set).unwrap(), digest(&loaded).unwrap());

        let bytes = to_safetensors_bytes(&set).unwrap();
        let from_bytes = from_safetensors_bytes(&bytes, "memory").unwrap();
        assert!(
            bit_identical(&set, &from_bytes),
            "{dtype:?} in-memory round trip"
        );
        assert!(!dir
            .path()
            .join(format!("model-{k}.safetensors.partial"))
            .exists());
    }
}

#[test]
fn safetensors_errors_are_typed() {
    let missing = load_safetensors(std::path::Path::new("/nonexistent/x.safetensors"));
    assert!(matches!(missing, Err(CheckpointError::Io { .. })));
    let garbage = from_safetensors_bytes(b"definitely not safetensors", "garbage");
    assert!(matches!(garbage, Err(CheckpointError::Safetensors { .. })));
    let f8 = Tensor::zeros(4, DType::F32, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F8E4M3)
        .unwrap();
    let mut set = WeightSet::new();
    set.insert("f8".into(), f8);
    let err = digest(&set).unwrap_err();
    assert!(matches!(err, CheckpointError::UnsupportedDtype { ref tensor, .. } if tensor == "f8"));
}
