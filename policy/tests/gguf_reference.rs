//! Opt-in cross-check of the dequantisers against llama.cpp's own Python `gguf` package
//! (scripts/gguf_reference.py). Ignored by default (needs `pip install gguf numpy`); set
//! GRAIL_GGUF_PYTHON to pick the interpreter.

mod gguf_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use gguf_support::GgufWriter;
use grail_policy::gguf::{dequantize_tensor, GgmlType, GgufFile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NEEDS_GGUF: &str = "needs python3 with llama.cpp's gguf package: pip install gguf numpy (or set GRAIL_GGUF_PYTHON to an interpreter that has it)";

/// The interpreter (GRAIL_GGUF_PYTHON, else python3); panics naming the fix when it cannot
/// import gguf (the tests are ignored by default).
fn python() -> String {
    let python = std::env::var("GRAIL_GGUF_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import gguf, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "`{python}` cannot import gguf+numpy: {NEEDS_GGUF}");
    python
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gguf_reference.py")
}

/// Runs the reference on `gguf` and returns max |Δ| per tensor (and the largest |value|).
fn compare(python: &str, gguf: &Path, names: &[&str]) -> Vec<(String, GgmlType, f32, f32)> {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(python)
        .arg(script())
        .arg(gguf)
        .arg(out.path())
        .args(names)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let bytes = std::fs::read(gguf).unwrap();
    let file = GgufFile::parse(&bytes).unwrap();
    let mut results = Vec::new();
    for info in file
        .tensors
        .iter()
        .filter(|t| names.is_empty() || names.contains(&t.name.as_str()))
    {
        let ours = dequantize_tensor(&bytes, &file, info).unwrap();
        let reference: Vec<f32> = std::fs::read(out.path().join(format!("{}.f32", info.name)))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(ours.len(), reference.len(), "{}", info.name);
        let max_delta = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let max_abs = reference.iter().map(|v| v.abs()).fold(0f32, f32::max);
        eprintln!(
            "{:<28} {:>6?} max|Δ| = {max_delta:e} (max |value| {max_abs:e})",
            info.name, info.ggml_type
        );
        results.push((info.name.clone(), info.ggml_type, max_delta, max_abs));
    }
    results
}

/// Random blocks with finite, moderate f16 scales at each type's scale offsets.
fn random_blocks(rng: &mut StdRng, ty: GgmlType, blocks: usize) -> Vec<u8> {
    let (_, size) = ty.block_geometry();
    let scale_offsets: &[usize] = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    let mut out = Vec::new();
    for _ in 0..blocks {
        let mut block = vec![0u8; size as usize];
        rng.fill(&mut block[..]);
        for &at in scale_offsets {
            let scale = half::f16::from_f32(rng.random_range(-0.1f32..0.1));
            block[at..at + 2].copy_from_slice(&scale.to_le_bytes());
        }
        out.extend(block);
    }
    out
}

#[test]
#[ignore = "needs python3 with gguf+numpy (pip install gguf numpy, or GRAIL_GGUF_PYTHON); run cargo test -p grail-policy --test gguf_reference -- --ignored"]
fn random_blocks_match_the_python_reference() {
    let python = python();
    let mut rng = StdRng::seed_from_u64(77);
    let mut w = GgufWriter::default();
    let quantised = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];
    for ty in quantised {
        let (block_elements, _) = ty.block_geometry();
        let data = random_blocks(&mut rng, ty, 64);
        w.tensor(&format!("{ty:?}"), &[block_elements * 8, 8], ty.id(), data);
    }
    let floats: Vec<f32> = (0..512).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let f16: Vec<u8> = floats
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = floats
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    w.tensor("F16", &[64, 8], 1, f16)
        .tensor("BF16", &[64, 8], 30, bf16);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random.gguf");
    std::fs::write(&path, w.to_bytes()).unwrap();
    let results = compare(&python, &path, &[]);
    assert_eq!(results.len(), quantised.len() + 2);
    for (name, _, delta, max_abs) in results {
        assert!(
            delta <= 1e-6 * max_abs.max(1.0),
            "{name}: max|Δ| {delta} vs max |value| {max_abs}"
        );
    }
}

#[test]
#[ignore = "needs python3 with gguf+numpy (pip install gguf numpy, or GRAIL_GGUF_PYTHON) and the SmolLM2 GGUF (scripts/fetch-smollm2.sh); run cargo test --release -p grail-policy --test gguf_reference -- --ignored"]
fn smollm2_tensors_match_the_python_reference() {
    let path = gguf_support::smollm2_path();
    let python = python();
    let names = [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.0.ffn_down.weight",
        "blk.29.ffn_gate.weight",
        "blk.0.attn_norm.weight",
        "output_norm.weight",
    ];
    let results = compare(&python, &path, &names);
    assert_eq!(results.len(), names.len());
    for (name, _, delta, max_abs) in results {
        assert!(delta <= 1e-6 * max_abs.max(1.0), "{name}: max|Δ| {delta}");
    }
}
