//! The tiny model directory: determinism, loading, tokenizer round trip, typed load errors.

use std::path::Path;

use grail_policy::tiny::{tiny_config, TINY_EOS_ID, TINY_IM_START_ID, TINY_PAD_ID};
use grail_policy::tokenizer::{render_chatml, ChatMessage, CHATML_TEMPLATE};
use grail_policy::{load_model, write_tiny_model, Arch, LoadError, LoadOptions};

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn same_seed_gives_byte_identical_files_and_other_seed_differs() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        write_tiny_model(a.path(), arch, 7).unwrap();
        write_tiny_model(b.path(), arch, 7).unwrap();
        write_tiny_model(c.path(), arch, 8).unwrap();
        let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
        assert_eq!(fa.len(), 5);
        assert_eq!(fa, fb);
        let weights = |f: &[(String, Vec<u8>)]| {
            f.iter()
                .find(|(n, _)| n == "model.safetensors")
                .unwrap()
                .1
                .clone()
        };
        assert_ne!(weights(&fa), weights(&fc));
    }
}

#[test]
fn loads_with_tokenizer_template_and_eos() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_model(dir.path(), arch, 1).unwrap();
        let m = load_model(dir.path(), &LoadOptions::default()).unwrap();
        assert_eq!(m.config, tiny_config(arch));
        assert_eq!(m.eos_ids, vec![TINY_EOS_ID]);
        assert_eq!(m.pad_id, TINY_PAD_ID);
        assert_eq!(m.chat_template.as_deref(), Some(CHATML_TEMPLATE));
        assert_eq!(m.tokenizer.token_to_id("<|im_end|>"), Some(TINY_EOS_ID));
        // Tied (llama) models carry no lm_head tensor; untied (qwen2) ones do.
        assert_eq!(
            m.weights.contains_key("lm_head.weight"),
            arch == Arch::Qwen2
        );
    }
}

#[test]
fn tokenizer_round_trips_text_bytes_and_special_tokens() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), Arch::Qwen2, 1).unwrap();
    let m = load_model(dir.path(), &LoadOptions::default()).unwrap();
    for text in [
        " leading space",
        "héllo wörld\n\ttabs  and  spaces ",
        "数学 ∑ 🚀",
        "",
    ] {
        let ids = m.tokenizer.encode(text).unwrap();
        assert_eq!(ids.len(), text.len(), "one token per byte for {text:?}");
        assert!(ids.iter().zip(text.bytes()).all(|(&id, b)| id == b as u32));
        assert_eq!(m.tokenizer.decode(&ids, false).unwrap(), text);
    }
    let prompt = render_chatml(&[ChatMessage::new("user", "hi")], true);
    let ids = m.tokenizer.encode(&prompt).unwrap();
    assert_eq!(ids[0], TINY_IM_START_ID);
    assert!(ids.contains(&TINY_EOS_ID));
    assert_eq!(m.tokenizer.decode(&ids, false).unwrap(), prompt);
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(dir.path(), Arch::Qwen2, 1).unwrap();
    let cfg_path = dir.path().join("config.json");
    let original = std::fs::read_to_string(&cfg_path).unwrap();

    // Shape mismatch: config says a bigger ffn than the weights have.
    std::fs::write(
        &cfg_path,
        original.replace("\"intermediate_size\": 256", "\"intermediate_size\": 128"),
    )
    .unwrap();
    let err = load_model(dir.path(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("gate_proj"),
        "{msg}"
    );

    // Missing tensor: untied config needs lm_head, which a tied checkpoint lacks.
    let llama = tempfile::tempdir().unwrap();
    write_tiny_model(llama.path(), Arch::Llama, 1).unwrap();
    let p = llama.path().join("config.json");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": false",
    );
    std::fs::write(&p, text).unwrap();
    let err = load_model(llama.path(), &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(err, LoadError::MissingTensor { ref name, .. } if name == "lm_head.weight"),
        "{err}"
    );

    // Missing and corrupt files.
    std::fs::write(&cfg_path, &original).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let err = load_model(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    std::fs::remove_file(&cfg_path).unwrap();
    let err = load_model(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    let err = load_model(&dir.path().join("nope.gguf"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, LoadError::Gguf { .. }), "{err}");
}
