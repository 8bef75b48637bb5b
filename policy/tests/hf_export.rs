//! `grail export` output in HF transformers: AutoTokenizer and AutoModelForCausalLM load the
//! exported directory; token ids equal grail's, logits match grail's (f32, eager attention),
//! the chat template renders as grail renders ChatML. Prints the max |logit diff| measured.

mod gguf_support;
mod torch_support;

use std::path::Path;

use candle_core::{DType, Tensor};
use grail_policy::export::{export_loaded, ExportDtype, ModelCard};
use grail_policy::tokenizer::render_chatml;
use grail_policy::{load_model, write_tiny_model, Arch, ChatMessage, LoadOptions, LoadedModel};

const TEXTS: [&str; 4] = [
    "hello world 12345",
    "<|im_start|>user\nWhat is 7 * 6?<|im_end|>\n<|im_start|>assistant\n",
    "naïve café — ünïcödé ✓",
    "  two spaces\n\ttab, then 2024-12-05.",
];

fn transformers_outputs(dir: &Path, request: &serde_json::Value) -> serde_json::Value {
    torch_support::run_json("hf_export_check.py", dir, request)
}

fn grail_logits(m: &LoadedModel, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &m.device).unwrap().unsqueeze(0).unwrap();
    let hidden = m.model.forward_hidden(&input).unwrap();
    let logits = m.model.logits(&hidden).unwrap();
    logits
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Exports `source`, runs transformers on the export and compares. Returns max |Δ logit|.
fn check(name: &str, source: &LoadedModel, tolerance: f32) -> f32 {
    let out = tempfile::tempdir().unwrap();
    export_loaded(out.path(), source, ExportDtype::F32, &ModelCard::default()).unwrap();
    let vocab = source.config.vocab_size as u32;
    let mut sequences: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| source.tokenizer.encode(t).unwrap())
        .collect();
    sequences.push((0..48u32).map(|i| (i * 7919 + 13) % vocab).collect());
    let chat = vec![
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "2+2?"),
    ];
    let request = serde_json::json!({"texts": TEXTS, "sequences": sequences, "chat": chat});
    let hf = transformers_outputs(out.path(), &request);

    for (i, text) in TEXTS.iter().enumerate() {
        let ids: Vec<u32> = serde_json::from_value(hf["tokens"][i].clone()).unwrap();
        assert_eq!(ids, sequences[i], "{name}: token ids of {text:?}");
        assert_eq!(
            hf["decoded"][i].as_str().unwrap(),
            source.tokenizer.decode(&ids, false).unwrap(),
            "{name}: decode of {text:?}"
        );
    }
    let mut max_abs = 0f32;
    let mut scale = 0f32;
    for (seq, theirs) in sequences.iter().zip(hf["logits"].as_array().unwrap()) {
        let ours = grail_logits(source, seq);
        let theirs: Vec<f32> = serde_json::from_value(theirs.clone()).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: logits length");
        for (a, b) in ours.iter().zip(&theirs) {
            max_abs = max_abs.max((a - b).abs());
            scale = scale.max(b.abs());
        }
    }
    println!(
        "{name}: transformers {} torch {}: max |logit diff| {max_abs:.3e} (max |logit| {scale:.2}) over {} sequences",
        hf["transformers"], hf["torch"], sequences.len()
    );
    assert!(
        max_abs <= tolerance * scale.max(1.0),
        "{name}: max |logit diff| {max_abs} exceeds {tolerance} x {scale}"
    );
    if source.chat_template.as_deref() == Some(grail_policy::tokenizer::CHATML_TEMPLATE) {
        assert_eq!(
            hf["chat"].as_str(),
            Some(render_chatml(&chat, true).as_str())
        );
    } else if source.chat_template.is_some() {
        assert!(
            hf["chat"].as_str().is_some_and(|c| c.contains("2+2?")),
            "{name}: chat template renders"
        );
    }
    max_abs
}

#[test]
#[ignore = "needs python3 with torch+transformers: pip install torch transformers (or python3 -m venv .venv-torch && .venv-torch/bin/pip install torch transformers); run cargo test -p grail-policy --test hf_export -- --ignored"]
fn tiny_and_gguf_exports_match_transformers() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path(), arch, 11).unwrap();
        let source = load_model(dir.path(), &LoadOptions::default()).unwrap();
        check(&format!("tiny {arch:?}"), &source, 1e-5);
    }
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("small.gguf");
    gguf_support::small_llama_gguf(&gguf);
    let source = load_model(&gguf, &LoadOptions::default()).unwrap();
    check("synthetic GGUF llama", &source, 1e-5);
}

#[test]
#[ignore = "needs python3 with torch+transformers (pip install torch transformers, or .venv-torch) and the SmolLM2 GGUF (scripts/fetch-smollm2.sh); run cargo test --release -p grail-policy --test hf_export -- --ignored"]
fn smollm2_export_matches_transformers() {
    let gguf = gguf_support::smollm2_path();
    let source = load_model(&gguf, &LoadOptions::default()).unwrap();
    check("SmolLM2-135M-Instruct (Q4_1 GGUF)", &source, 1e-4);
}
