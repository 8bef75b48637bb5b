//! Hostile delta bytes: flips, truncations and garbage must give typed errors, never panics
//! and never a silently wrong result.

mod delta_support;

use candle_core::DType;
use delta_support::{bit_identical, perturb, random_set, rng};
use grail_policy::checkpoint::{digest, WeightSet};
use grail_policy::delta::{apply_delta, encode_delta, DeltaError, DeltaHeader};
use rand::Rng;

/// Applies hostile bytes; a success is only acceptable if it is exactly the intended target.
fn check(base: &WeightSet, target: &WeightSet, bytes: &[u8]) -> Result<(), DeltaError> {
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply_delta(base, bytes)));
    match result {
        Err(_) => panic!("apply_delta panicked on {} hostile bytes", bytes.len()),
        Ok(Ok(rebuilt)) => {
            assert!(
                bit_identical(&rebuilt, target),
                "corruption produced a wrong result"
            );
            Ok(())
        }
        Ok(Err(e)) => Err(e),
    }
}

#[test]
fn random_flips_and_truncations_are_rejected() {
    let mut r = rng(9);
    let base = random_set(&mut r, DType::BF16);
    let cases = [perturb(&mut r, &base, 0.02), perturb(&mut r, &base, 0.9)];
    let mut rejected = 0;
    let mut tried = 0;
    for target in &cases {
        let good = encode_delta(&base, target).unwrap();
        for _ in 0..1500 {
            let mut bytes = good.clone();
            match r.random_range(0..4) {
                0 => {
                    let i = r.random_range(0..bytes.len());
                    bytes[i] ^= 1 << r.random_range(0..8);
                }
                1 => {
                    for _ in 0..r.random_range(2..16) {
                        let i = r.random_range(0..bytes.len());
                        bytes[i] = r.random();
                    }
                }
                2 => bytes.truncate(r.random_range(0..bytes.len())),
                _ => {
                    let extra: Vec<u8> = (0..r.random_range(1..64)).map(|_| r.random()).collect();
                    bytes.extend_from_slice(&extra);
                }
            }
            tried += 1;
            if check(&base, target, &bytes).is_err() {
                rejected += 1;
            }
        }
    }
    // Almost every mutation must be caught (a flip in an unused zstd header bit may not matter,
    // but then the result was verified bit-exact above).
    assert!(rejected * 100 >= tried * 99, "{rejected}/{tried} rejected");
}

#[test]
fn each_header_field_has_its_own_error() {
    let mut r = rng(11);
    let base = random_set(&mut r, DType::F32);
    let target = perturb(&mut r, &base, 0.1);
    let good = encode_delta(&base, &target).unwrap();

    let mut magic = good.clone();
    magic[0] ^= 1;
    assert!(matches!(
        check(&base, &target, &magic),
        Err(DeltaError::NotADelta)
    ));

    let mut version = good.clone();
    version[8] = 9;
    assert!(matches!(
        check(&base, &target, &version),
        Err(DeltaError::UnsupportedVersion { found: 9 })
    ));

    let mut base_digest = good.clone();
    base_digest[20] ^= 0x40;
    assert!(matches!(
        check(&base, &target, &base_digest),
        Err(DeltaError::WrongBase { .. })
    ));

    let mut target_digest = good.clone();
    target_digest[50] ^= 0x40;
    assert!(matches!(
        check(&base, &target, &target_digest),
        Err(DeltaError::TargetMismatch { .. })
    ));

    let mut huge = good.clone();
    huge[76..84].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        check(&base, &target, &huge),
        Err(DeltaError::Corrupt { .. })
    ));

    let mut short = good.clone();
    let declared = DeltaHeader::parse(&good).unwrap().body_len;
    short[76..84].copy_from_slice(&(declared - 1).to_le_bytes());
    assert!(check(&base, &target, &short).is_err());

    assert!(matches!(
        check(&base, &target, &good[..40]),
        Err(DeltaError::Truncated { .. })
    ));
    assert!(check(&base, &target, &good).is_ok());
    assert_eq!(
        digest(&target).unwrap(),
        DeltaHeader::parse(&good).unwrap().target_digest
    );
}

/// A well-formed zstd frame around a hostile body must be rejected by the body parser.
#[test]
fn hostile_bodies_in_valid_frames_are_rejected() {
    let mut r = rng(13);
    let base = random_set(&mut r, DType::F32);
    let target = perturb(&mut r, &base, 0.1);
    let good = encode_delta(&base, &target).unwrap();
    let header = DeltaHeader::parse(&good).unwrap();
    let body = zstd::decode_all(&good[84..]).unwrap();
    let mut rejected = 0;
    for i in 0..1000 {
        let mut hostile = body.clone();
        if i % 2 == 0 {
            let k = r.random_range(0..hostile.len());
            hostile[k] ^= 1 << r.random_range(0..8);
        } else {
            hostile.truncate(r.random_range(0..hostile.len()));
        }
        let mut bytes = good[..76].to_vec();
        bytes.extend_from_slice(&(hostile.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&zstd::encode_all(&hostile[..], 1).unwrap());
        assert_eq!(
            DeltaHeader::parse(&bytes).unwrap().base_digest,
            header.base_digest
        );
        if check(&base, &target, &bytes).is_err() {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 1000);
}
