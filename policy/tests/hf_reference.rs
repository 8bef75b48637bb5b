//! Faithfulness against HF transformers (f32, eager attention): hidden states after the final
//! norm and next-token log-probs of the tiny Qwen2 and Llama models. Ignored by default: needs
//! python3 with torch and transformers (see torch_support).

mod torch_support;

use grail_policy::proof::{proof_forward, ProofInput, ProofOptions};
use grail_policy::{load_model, write_tiny_model, Arch, LoadOptions};

fn hf_outputs(dir: &std::path::Path, sequences: &[Vec<u32>]) -> serde_json::Value {
    let request = serde_json::json!({ "sequences": sequences });
    torch_support::run_json("hf_reference.py", dir, &request)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(floats).collect(),
        other => vec![other.as_f64().unwrap() as f32],
    }
}

/// (max |Δ|, max |Δ| / max |reference|) over paired values.
fn errors(ours: &[f32], reference: &[f32]) -> (f32, f32) {
    assert_eq!(ours.len(), reference.len());
    let abs = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let scale = reference.iter().map(|b| b.abs()).fold(0.0, f32::max);
    (abs, abs / scale.max(f32::MIN_POSITIVE))
}

#[test]
#[ignore = "needs python3 with torch+transformers: pip install torch transformers (or python3 -m venv .venv-torch && .venv-torch/bin/pip install torch transformers, or GRAIL_TORCH_PYTHON); run cargo test -p grail-policy --test hf_reference -- --ignored"]
fn hidden_states_and_logprobs_match_hf_transformers() {
    let sequences: Vec<Vec<u32>> = vec![
        (0..37u32).map(|i| (i * 17 + 3) % 259).collect(),
        (0..200u32).map(|i| (i * i + 11) % 259).collect(),
    ];
    for arch in [Arch::Qwen2, Arch::Llama] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path(), arch, 21).unwrap();
        let m = load_model(dir.path(), &LoadOptions::default()).unwrap();
        let reference = hf_outputs(dir.path(), &sequences);
        for (seq, hf) in sequences
            .iter()
            .zip(reference["outputs"].as_array().unwrap())
        {
            let ours = &proof_forward(
                &m.model,
                &[ProofInput {
                    tokens: seq,
                    logit_positions: &[],
                }],
                &ProofOptions::default(),
            )
            .unwrap()[0];
            let (h_abs, h_rel) = errors(&ours.hidden, &floats(&hf["hidden"]));
            let (l_abs, l_rel) = errors(
                &ours.next_token_logprobs,
                &floats(&hf["next_token_logprobs"]),
            );
            println!(
                "{arch:?} len {}: hidden max |Δ| {h_abs:.2e} (rel {h_rel:.2e}); log-prob max |Δ| {l_abs:.2e} (rel {l_rel:.2e}); transformers {}",
                seq.len(),
                reference["transformers"]
            );
            assert!(
                h_rel < 1e-4 && l_rel < 1e-4,
                "{arch:?}: hidden {h_rel}, log-prob {l_rel}"
            );
        }
    }
}
