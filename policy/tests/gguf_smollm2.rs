//! Opt-in tests on the real SmolLM2-135M-Instruct Q4_1 GGUF (scripts/fetch-smollm2.sh or
//! $GRAIL_SMOLLM2_GGUF); ignored by default, they fail naming the fix when run without it.

mod gguf_support;

use grail_policy::generate::{generate_group, Greedy, GroupRequest};
use grail_policy::gguf::load_gguf;
use grail_policy::tokenizer::{render_chatml, ChatMessage};
use grail_policy::{LoadOptions, LoadedModel};

#[test]
#[ignore = "needs the SmolLM2-135M-Instruct Q4_1 GGUF (~100 MB): run scripts/fetch-smollm2.sh (or set GRAIL_SMOLLM2_GGUF), then cargo test --release -p grail-policy --test gguf_smollm2 -- --ignored"]
fn smollm2_config_tensors_and_tokenizer() {
    let path = gguf_support::smollm2_path();
    let model = load_gguf(&path).unwrap();
    let c = &model.config;
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["hidden_size"], 576);
    assert_eq!(c["intermediate_size"], 1536);
    assert_eq!(c["num_hidden_layers"], 30);
    assert_eq!(c["num_attention_heads"], 9);
    assert_eq!(c["num_key_value_heads"], 3);
    assert_eq!(c["head_dim"], 64);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["rope_theta"], 100000.0);
    assert_eq!(c["vocab_size"], 49152);
    assert_eq!(c["max_position_embeddings"], 8192);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(
        (c["bos_token_id"].as_u64(), c["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );

    assert_eq!(model.tensors.len(), 272);
    assert_eq!(
        model.tensors["model.embed_tokens.weight"].dims(),
        [49152, 576]
    );
    assert_eq!(
        model.tensors["model.layers.7.self_attn.k_proj.weight"].dims(),
        [192, 576]
    );
    assert_eq!(
        model.tensors["model.layers.29.mlp.down_proj.weight"].dims(),
        [576, 1536]
    );
    assert!(model
        .chat_template
        .as_deref()
        .unwrap()
        .contains("<|im_start|>"));

    let tok = &model.tokenizer;
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.get_vocab_size(true), 49152);
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!(ids.get_ids()[0], 1);
    assert_eq!(*ids.get_ids().last().unwrap(), 2);
    // SmolLM splits numbers into single digits.
    assert_eq!(tok.encode("2024", false).unwrap().get_ids().len(), 4);
    for text in [
        "The quick brown fox jumps over the lazy dog.",
        "naïve café — 東京 🚀 Ünïcödé\n\n\ttabs   and spaces ",
        "fn main() { println!(\"{}\", 1 + 2); }",
        "<|im_start|>assistant\nThe answer is 42.<|im_end|>",
    ] {
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    }
}

#[test]
#[ignore = "needs the SmolLM2-135M-Instruct Q4_1 GGUF (~100 MB): run scripts/fetch-smollm2.sh (or set GRAIL_SMOLLM2_GGUF), then cargo test --release -p grail-policy --test gguf_smollm2 -- --ignored"]
fn smollm2_answers_the_capital_of_france() {
    let path = gguf_support::smollm2_path();
    let gguf = load_gguf(&path).unwrap();
    let loaded = LoadedModel::from_parts(
        gguf.tensors,
        gguf.config,
        gguf.tokenizer,
        gguf.chat_template,
        &path.display().to_string(),
        &LoadOptions::default(),
    )
    .unwrap();
    let prompt = render_chatml(
        &[
            ChatMessage::new(
                "system",
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
            ),
            ChatMessage::new("user", "What is the capital of France?"),
        ],
        true,
    );
    let ids = loaded.tokenizer.encode(&prompt).unwrap();
    let request = GroupRequest {
        prompt: &ids,
        group_size: 1,
        max_new_tokens: 20,
        eos_ids: &loaded.eos_ids,
    };
    let rows = generate_group(&loaded.model, &request, &mut Greedy).unwrap();
    let answer = loaded.tokenizer.decode(rows[0].completion(), true).unwrap();
    eprintln!("SmolLM2 answered: {answer:?}");
    assert!(answer.contains("Paris"), "answer: {answer:?}");
}
