//! Publishing in bf16: the trainer's f32 master weights are cast once per window, the cast is
//! what the digest commits to and what miners load (widened exactly to f32 on the CPU), and
//! the sparse delta chain between published windows rebuilds every bit.

use candle_core::{DType, Device, Tensor};
use grail_policy::checkpoint::{
    cast_floats, committed_float_dtype, digest, from_safetensors_bytes, to_safetensors_bytes,
    WeightSet,
};
use grail_policy::delta::{apply_delta, apply_delta_chain, encode_delta, DeltaError};

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Uniform in [-1, 1).
fn uniform(state: &mut u64) -> f32 {
    (xorshift(state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// f32 master weights shaped like a small model: matrices ~N(0, 0.02)-sized, norms near 1,
/// and one integer tensor (kept as it is by the cast).
fn master(seed: u64) -> WeightSet {
    let mut rng = seed | 1;
    let mut w = WeightSet::new();
    for layer in 0..3 {
        for (name, rows, cols, scale, offset) in [
            ("mlp.up_proj.weight", 192, 256, 0.04, 0.0),
            ("self_attn.q_proj.weight", 128, 128, 0.04, 0.0),
            ("input_layernorm.weight", 1, 128, 0.1, 1.0),
        ] {
            let values: Vec<f32> = (0..rows * cols)
                .map(|_| offset + scale * uniform(&mut rng))
                .collect();
            let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
            w.insert(format!("model.layers.{layer}.{name}"), t);
        }
    }
    let ids = Tensor::from_vec(vec![1u32, 2, 3, 4], 4, &Device::Cpu).unwrap();
    w.insert("position_ids".into(), ids);
    w
}

/// One AdamW-like step on every float value: `w -= lr * (±(0.5..1.5) + 0.01 w)`.
fn adam_step(w: &WeightSet, seed: u64, lr: f32) -> WeightSet {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    w.iter()
        .map(|(name, t)| {
            if t.dtype() != DType::F32 {
                return (name.clone(), t.clone());
            }
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let v: Vec<f32> = v
                .iter()
                .map(|&x| {
                    let u = uniform(&mut rng);
                    let adam = u.signum() * (0.5 + u.abs());
                    x - lr * (adam + 0.01 * x)
                })
                .collect();
            let t2 = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            (name.clone(), t2)
        })
        .collect()
}

fn f32_values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn bf16_publishing_round_trips_and_the_digest_commits_to_the_dtype() {
    let m = master(1);
    let published = cast_floats(&m, DType::BF16).unwrap();
    assert_eq!(committed_float_dtype(&published), Some(DType::BF16));
    assert_eq!(committed_float_dtype(&m), Some(DType::F32));
    assert_eq!(
        published["position_ids"].dtype(),
        DType::U32,
        "integers kept"
    );
    // The cast is round-to-nearest-even of every master value, the same every time.
    for (name, t) in &m {
        if t.dtype() != DType::F32 {
            continue;
        }
        let expected: Vec<f32> = f32_values(t)
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect();
        let got = f32_values(&published[name]);
        assert!(
            expected
                .iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: published values are the rounded master values"
        );
    }
    let d = digest(&published).unwrap();
    assert_eq!(digest(&cast_floats(&m, DType::BF16).unwrap()).unwrap(), d);
    // What a miner loads: the stored bytes parse to the same digest and, widened to f32 (what
    // a CPU miner computes in), to exactly the published values.
    let bytes = to_safetensors_bytes(&published).unwrap();
    let loaded = from_safetensors_bytes(&bytes, "test object").unwrap();
    assert_eq!(digest(&loaded).unwrap(), d);
    for (name, t) in &published {
        assert_eq!(loaded[name].dtype(), t.dtype(), "{name}");
        let widened = loaded[name].to_dtype(DType::F32).unwrap();
        let back = widened.to_dtype(t.dtype()).unwrap();
        assert_eq!(
            f32_values(&back),
            f32_values(t),
            "{name}: widening is exact"
        );
    }
    let f32_bytes = to_safetensors_bytes(&m).unwrap().len();
    assert!(
        bytes.len() * 2 < f32_bytes + 4096,
        "{} vs {f32_bytes}",
        bytes.len()
    );
    // The digest commits to the dtype: the same values published as f32 are another
    // checkpoint, and so are the same bits labelled f16.
    let widened = cast_floats(&published, DType::F32).unwrap();
    assert_ne!(digest(&widened).unwrap(), d);
    let relabelled: WeightSet = published
        .iter()
        .map(|(k, t)| match t.dtype() {
            DType::BF16 => {
                let raw = grail_policy::checkpoint::tensor_to_le_bytes(k, t).unwrap();
                let t2 =
                    grail_policy::checkpoint::tensor_from_le_bytes(k, &raw, DType::F16, t.dims())
                        .unwrap();
                (k.clone(), t2)
            }
            _ => (k.clone(), t.clone()),
        })
        .collect();
    assert_ne!(digest(&relabelled).unwrap(), d);
}

/// Windows of bf16 checkpoints cast from f32 master weights moving by lr 1e-6 steps.
fn bf16_windows(count: u64) -> Vec<WeightSet> {
    let mut m = master(2);
    let mut out = vec![cast_floats(&m, DType::BF16).unwrap()];
    for step in 1..count {
        m = adam_step(&m, step, 1e-6);
        out.push(cast_floats(&m, DType::BF16).unwrap());
    }
    out
}

#[test]
fn a_sparse_bf16_delta_chain_rebuilds_every_window_bit_exactly() {
    let windows = bf16_windows(6);
    let deltas: Vec<Vec<u8>> = windows
        .windows(2)
        .map(|w| encode_delta(&w[0], &w[1]).unwrap())
        .collect();
    let full = to_safetensors_bytes(&windows[0]).unwrap().len();
    for (i, d) in deltas.iter().enumerate() {
        // Most lr 1e-6 updates are below half a bf16 ulp: only a few percent of values flip,
        // so the delta is a small fraction of the full checkpoint.
        assert!(
            d.len() * 10 < full,
            "delta {i}: {} bytes of {full}",
            d.len()
        );
    }
    assert!(
        windows
            .windows(2)
            .all(|w| digest(&w[0]).unwrap() != digest(&w[1]).unwrap()),
        "every window changed something"
    );
    for n in 1..windows.len() {
        let rebuilt = apply_delta_chain(&windows[0], &deltas[..n]).unwrap();
        assert_eq!(digest(&rebuilt).unwrap(), digest(&windows[n]).unwrap());
        for (name, t) in &windows[n] {
            let a = grail_policy::checkpoint::tensor_to_le_bytes(name, t).unwrap();
            let b = grail_policy::checkpoint::tensor_to_le_bytes(name, &rebuilt[name]).unwrap();
            assert!(a == b, "window {n} tensor {name} differs");
        }
    }
    // The same master steps published in f32 change nearly every value: far larger deltas.
    let m0 = master(2);
    let m1 = adam_step(&m0, 1, 1e-6);
    let f32_delta = encode_delta(&m0, &m1).unwrap();
    assert!(
        deltas[0].len() * 3 < f32_delta.len(),
        "bf16 delta {} vs f32 delta {}",
        deltas[0].len(),
        f32_delta.len()
    );
    // A late joiner's single cumulative delta (window 0 to 5) rebuilds the same weights.
    let cumulative = encode_delta(&windows[0], &windows[5]).unwrap();
    let rebuilt = apply_delta(&windows[0], &cumulative).unwrap();
    assert_eq!(digest(&rebuilt).unwrap(), digest(&windows[5]).unwrap());
}

#[test]
fn digest_mismatches_are_refused() {
    let windows = bf16_windows(3);
    let delta = encode_delta(&windows[1], &windows[2]).unwrap();
    // The wrong base (one window behind): refused before anything is applied.
    match apply_delta(&windows[0], &delta) {
        Err(DeltaError::WrongBase { .. }) => {}
        other => panic!("expected WrongBase, got {:?}", other.map(|_| ())),
    }
    // A delta whose header promises another result (target digest flipped) is refused
    // after applying: the rebuilt weights do not hash to it.
    let mut forged = delta.clone();
    forged[44] ^= 1;
    match apply_delta(&windows[1], &forged) {
        Err(DeltaError::TargetMismatch { .. }) => {}
        other => panic!("expected TargetMismatch, got {:?}", other.map(|_| ())),
    }
    // The same values labelled f32 are not the published base either.
    let widened = cast_floats(&windows[1], DType::F32).unwrap();
    assert!(matches!(
        apply_delta(&widened, &delta),
        Err(DeltaError::WrongBase { .. })
    ));
}

#[test]
fn a_missing_link_breaks_the_chain_and_the_next_anchor_recovers() {
    let windows = bf16_windows(5);
    let deltas: Vec<Vec<u8>> = windows
        .windows(2)
        .map(|w| encode_delta(&w[0], &w[1]).unwrap())
        .collect();
    // Delta 1 -> 2 lost: applying 0 -> 1 then 2 -> 3 fails at the second step, naming it.
    let gapped = [deltas[0].clone(), deltas[2].clone()];
    match apply_delta_chain(&windows[0], &gapped) {
        Err(DeltaError::ChainStep { index: 1, source }) => {
            assert!(matches!(*source, DeltaError::WrongBase { .. }), "{source}")
        }
        other => panic!(
            "expected a broken chain at step 1, got {:?}",
            other.map(|_| ())
        ),
    }
    // Recovery: a full anchor of window 2 (its safetensors bytes, checked by digest) and the
    // deltas after it.
    let anchor_bytes = to_safetensors_bytes(&windows[2]).unwrap();
    let anchor = from_safetensors_bytes(&anchor_bytes, "anchor").unwrap();
    assert_eq!(digest(&anchor).unwrap(), digest(&windows[2]).unwrap());
    let rebuilt = apply_delta_chain(&anchor, &deltas[2..]).unwrap();
    assert_eq!(digest(&rebuilt).unwrap(), digest(&windows[4]).unwrap());
}
