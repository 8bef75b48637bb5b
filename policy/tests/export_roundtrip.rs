//! `grail export` writer: the exported directory loads in grail's own HF loader with logits
//! bit-identical to the source (tiny Qwen2 untied, tiny Llama tied, a trained step, a
//! synthetic GGUF and, ignored, SmolLM2), tokenizes identically, and drops `lm_head` when tied.

mod gguf_support;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use grail_policy::checkpoint::WeightSet;
use grail_policy::export::{export_hf_dir, export_loaded, ExportDtype, ExportModel, ModelCard};
use grail_policy::{load_model, write_tiny_model, Arch, LoadOptions, LoadedModel};

const TEXTS: [&str; 4] = [
    "hello world 12",
    "<|im_start|>user\nWhat is 7 * 6?<|im_end|>\n<|im_start|>assistant\n",
    "naïve café — ünïcödé ✓ and <tool> tags",
    "  leading spaces\n\ttabs 2024",
];

fn logits(m: &LoadedModel, ids: &[u32]) -> Vec<u32> {
    let input = Tensor::new(ids, &m.device).unwrap().unsqueeze(0).unwrap();
    let hidden = m.model.forward_hidden(&input).unwrap();
    let l = m.model.logits(&hidden).unwrap();
    l.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

fn prompts(m: &LoadedModel) -> Vec<Vec<u32>> {
    let vocab = m.config.vocab_size as u32;
    let mut out: Vec<Vec<u32>> = TEXTS
        .iter()
        .map(|t| m.tokenizer.encode(t).unwrap())
        .collect();
    out.push((0..40u32).map(|i| (i * 37 + 5) % vocab).collect());
    out
}

/// Loads `dir`, asserts its logits and tokenization are bit-identical to `source`.
fn assert_same_model(source: &LoadedModel, dir: &Path) -> LoadedModel {
    let exported = load_model(dir, &LoadOptions::default()).unwrap();
    assert_eq!(exported.config, source.config, "config round trip");
    assert_eq!(exported.eos_ids, source.eos_ids);
    assert_eq!(exported.pad_id, source.pad_id);
    assert_eq!(exported.chat_template, source.chat_template);
    for text in TEXTS {
        assert_eq!(
            exported.tokenizer.encode(text).unwrap(),
            source.tokenizer.encode(text).unwrap(),
            "tokenization of {text:?}"
        );
    }
    for ids in prompts(source) {
        assert!(
            logits(&exported, &ids) == logits(source, &ids),
            "logits differ on {ids:?}"
        );
    }
    exported
}

fn tensor_names(dir: &Path) -> Vec<String> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
}

#[test]
fn tiny_models_round_trip_bit_identically() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let src = tempfile::tempdir().unwrap();
        write_tiny_model(src.path(), arch, 5).unwrap();
        let source = load_model(src.path(), &LoadOptions::default()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let summary = export_loaded(
            out.path(),
            &source,
            ExportDtype::F32,
            &ModelCard {
                source: "tiny".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(summary.parameters, source.config.parameter_count());
        assert_same_model(&source, out.path());

        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architectures"][0], arch.hf_architecture());
        assert_eq!(config["model_type"], arch.hf_model_type());
        assert_eq!(config["torch_dtype"], "float32");
        let tied = arch == Arch::Llama;
        assert_eq!(config["tie_word_embeddings"], tied);
        assert_eq!(
            tensor_names(out.path()).contains(&"lm_head.weight".to_string()),
            !tied,
            "lm_head.weight is written exactly when embeddings are untied"
        );
        let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
        assert!(card.contains("Not evaluated."), "{card}");
        assert!(card.contains(arch.hf_architecture()), "{card}");
        let tok_cfg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.path().join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(tok_cfg["eos_token"], "<|im_end|>");
        assert_eq!(tok_cfg["pad_token"], "<|endoftext|>");
    }
}

#[test]
fn bf16_export_holds_the_source_weights_rounded_to_bf16() {
    let src = tempfile::tempdir().unwrap();
    write_tiny_model(src.path(), Arch::Qwen2, 9).unwrap();
    let source = load_model(src.path(), &LoadOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    export_loaded(
        out.path(),
        &source,
        ExportDtype::Bf16,
        &ModelCard::default(),
    )
    .unwrap();
    let bf16 = LoadOptions {
        device: Device::Cpu,
        dtype: DType::BF16,
    };
    let exported = load_model(out.path(), &bf16).unwrap();
    let source_bf16 = load_model(src.path(), &bf16).unwrap();
    for ids in prompts(&source_bf16) {
        assert!(logits(&exported, &ids) == logits(&source_bf16, &ids));
    }
    let bytes = std::fs::read(out.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::BF16, "{name}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["torch_dtype"], "bfloat16");
}

#[test]
fn trained_checkpoint_weights_round_trip() {
    let src = tempfile::tempdir().unwrap();
    write_tiny_model(src.path(), Arch::Llama, 3).unwrap();
    let base = load_model(src.path(), &LoadOptions::default()).unwrap();
    // A "checkpoint": every weight moved by a deterministic step, as a trainer would.
    let trained: WeightSet = base
        .weights
        .iter()
        .map(|(n, t)| {
            let step = (t.affine(0.01, 0.001).unwrap().sin()).unwrap();
            (n.clone(), (t + step).unwrap())
        })
        .collect();
    let out = tempfile::tempdir().unwrap();
    let model = ExportModel {
        config: &base.config,
        weights: &trained,
        tokenizer: &base.tokenizer,
        chat_template: base.chat_template.as_deref(),
        eos_ids: &base.eos_ids,
        pad_id: base.pad_id,
    };
    export_hf_dir(out.path(), &model, ExportDtype::F32, &ModelCard::default()).unwrap();
    let reference = LoadedModel::from_parts(
        trained.clone().into_iter().collect(),
        base.config.to_hf_json(),
        base.tokenizer.inner().clone(),
        base.chat_template.clone(),
        "trained",
        &LoadOptions::default(),
    )
    .unwrap();
    let exported = assert_same_model(&reference, out.path());
    let ids = prompts(&base).remove(0);
    assert!(
        logits(&exported, &ids) != logits(&base, &ids),
        "the step changed the model"
    );
}

#[test]
fn missing_weights_fail_naming_the_tensor_before_writing() {
    let src = tempfile::tempdir().unwrap();
    write_tiny_model(src.path(), Arch::Qwen2, 1).unwrap();
    let base = load_model(src.path(), &LoadOptions::default()).unwrap();
    let mut weights: WeightSet = base.weights.clone().into_iter().collect();
    weights.remove("model.layers.1.mlp.up_proj.weight");
    let out = tempfile::tempdir().unwrap();
    let model = ExportModel {
        config: &base.config,
        weights: &weights,
        tokenizer: &base.tokenizer,
        chat_template: None,
        eos_ids: &base.eos_ids,
        pad_id: base.pad_id,
    };
    let err = export_hf_dir(out.path(), &model, ExportDtype::F32, &ModelCard::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
    assert!(!out.path().join("config.json").exists());
}

#[test]
fn gguf_base_exports_with_a_rebuilt_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("synthetic.gguf");
    gguf_support::small_llama_gguf(&gguf);
    let source = load_model(&gguf, &LoadOptions::default()).unwrap();
    let out = dir.path().join("hf");
    export_loaded(&out, &source, ExportDtype::F32, &ModelCard::default()).unwrap();
    let exported = assert_same_model(&source, &out);
    // Specials stay special, the user-defined token stays a plain added token, merges apply.
    assert_eq!(exported.tokenizer.encode("hello").unwrap().len(), 2);
    let tokenizer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(tokenizer["model"]["type"], "BPE");
    assert_eq!(tokenizer["model"]["merges"].as_array().unwrap().len(), 5);
    let added = tokenizer["added_tokens"].as_array().unwrap();
    let special = |content: &str| {
        added
            .iter()
            .find(|t| t["content"] == content)
            .map(|t| t["special"].as_bool().unwrap())
    };
    assert_eq!(special("<|im_end|>"), Some(true));
    assert_eq!(special("<tool>"), Some(false));
    let tok_cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tok_cfg["bos_token"], "<|im_start|>");
    assert_eq!(tok_cfg["eos_token"], "<|im_end|>");
    assert_eq!(tok_cfg["chat_template"], "{{ messages }}");
    assert!(!tensor_names(&out).contains(&"lm_head.weight".to_string()));
}

#[test]
#[ignore = "needs the SmolLM2-135M-Instruct GGUF (~100 MB): run scripts/fetch-smollm2.sh (or set GRAIL_SMOLLM2_GGUF), then cargo test -p grail-policy --test export_roundtrip -- --ignored"]
fn smollm2_gguf_exports_bit_identically() {
    let gguf = gguf_support::smollm2_path();
    let source = load_model(&gguf, &LoadOptions::default()).unwrap();
    let out = tempfile::tempdir().unwrap();
    export_loaded(out.path(), &source, ExportDtype::F32, &ModelCard::default()).unwrap();
    assert_same_model(&source, out.path());
}
