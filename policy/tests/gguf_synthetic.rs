//! GGUF loader on small files written by the test: metadata types, hand-checked
//! dequantisation, HF names and shapes, q/k un-permutation, config and tokenizer.

mod gguf_support;

use gguf_support::{array_bytes, pack, string_bytes, tiny_llama_metadata, ty, GgufWriter};
use grail_policy::gguf::{
    dequantize, load_gguf, load_gguf_bytes, GgmlType, GgufError, GgufFile, GgufValue,
};

#[test]
fn metadata_of_every_value_type_parses() {
    let mut w = GgufWriter::default();
    w.kv_raw("u8", ty::U8, vec![200])
        .kv_raw("i8", ty::I8, vec![0xfe])
        .kv_raw("u16", ty::U16, 65000u16.to_le_bytes().to_vec())
        .kv_raw("i16", ty::I16, (-3i16).to_le_bytes().to_vec())
        .kv_u32("u32", 4_000_000_000)
        .kv_raw("i32", ty::I32, (-5i32).to_le_bytes().to_vec())
        .kv_f32("f32", 1e-5)
        .kv_bool("bool", true)
        .kv_str("string", "héllo")
        .kv_raw("u64", ty::U64, u64::MAX.to_le_bytes().to_vec())
        .kv_raw("i64", ty::I64, i64::MIN.to_le_bytes().to_vec())
        .kv_raw("f64", ty::F64, 2.5f64.to_le_bytes().to_vec());
    let nested = array_bytes(
        ty::ARRAY,
        &[array_bytes(
            ty::U16,
            &[1u16.to_le_bytes().to_vec(), 2u16.to_le_bytes().to_vec()],
        )],
    );
    w.kv_raw("nested", ty::ARRAY, nested);
    w.kv_raw(
        "strings",
        ty::ARRAY,
        array_bytes(ty::STRING, &[string_bytes("a"), string_bytes("")]),
    );
    let bytes = w.to_bytes();
    let file = GgufFile::parse(&bytes).unwrap();
    let m = &file.metadata;
    assert_eq!(file.version, 3);
    assert_eq!(m["u8"], GgufValue::U8(200));
    assert_eq!(m["i8"], GgufValue::I8(-2));
    assert_eq!(m["u16"], GgufValue::U16(65000));
    assert_eq!(m["i16"], GgufValue::I16(-3));
    assert_eq!(m["u32"].as_u64(), Some(4_000_000_000));
    assert_eq!(m["i32"], GgufValue::I32(-5));
    assert_eq!(m["i32"].as_u64(), None, "negative values are not unsigned");
    assert_eq!(
        m["f32"].as_f64(),
        Some(1e-5),
        "f32 goes through its shortest decimal form"
    );
    assert_eq!(m["bool"].as_bool(), Some(true));
    assert_eq!(m["string"].as_str(), Some("héllo"));
    assert_eq!(m["u64"].as_u64(), Some(u64::MAX));
    assert_eq!(m["i64"], GgufValue::I64(i64::MIN));
    assert_eq!(m["f64"].as_f64(), Some(2.5));
    assert_eq!(
        m["nested"],
        GgufValue::Array(vec![GgufValue::Array(vec![
            GgufValue::U16(1),
            GgufValue::U16(2)
        ])])
    );
    assert_eq!(m["strings"].as_array().unwrap().len(), 2);
}

#[test]
fn quantised_blocks_dequantise_to_hand_computed_values() {
    type Packer = fn(usize) -> (Vec<u8>, Vec<f32>);
    let cases: [(GgmlType, Packer); 12] = [
        (GgmlType::Q4_0, pack::q4_0),
        (GgmlType::Q4_1, pack::q4_1),
        (GgmlType::Q5_0, pack::q5_0),
        (GgmlType::Q5_1, pack::q5_1),
        (GgmlType::Q8_0, pack::q8_0),
        (GgmlType::Q2_K, pack::q2_k),
        (GgmlType::Q3_K, pack::q3_k),
        (GgmlType::Q4_K, pack::q4_k),
        (GgmlType::Q5_K, pack::q5_k),
        (GgmlType::Q6_K, pack::q6_k),
        (GgmlType::Q8_K, pack::q8_k),
        (GgmlType::Q4_0, pack::q4_0),
    ];
    for (ty, packer) in cases {
        let (mut bytes, mut expected) = (Vec::new(), Vec::new());
        for seed in 0..3 {
            let (b, e) = packer(seed);
            assert_eq!(b.len() as u64, ty.block_geometry().1, "{ty:?} packer size");
            bytes.extend(b);
            expected.extend(e);
        }
        let values = dequantize(ty, &bytes, expected.len()).unwrap();
        for (i, (got, want)) in values.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "{ty:?} element {i}");
        }
        // Wrong sizes are typed errors, not panics.
        assert!(dequantize(ty, &bytes[1..], expected.len()).is_err());
        assert!(dequantize(ty, &bytes, expected.len() + 1).is_err());
    }
}

#[test]
fn plain_float_types_dequantise_exactly() {
    let values = [1.5f32, -0.25, 65504.0, 0.0];
    let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(dequantize(GgmlType::F32, &f32_bytes, 4).unwrap(), values);
    let f16_bytes: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    assert_eq!(dequantize(GgmlType::F16, &f16_bytes, 4).unwrap(), values);
    let bf16_bytes: Vec<u8> = [1.5f32, -0.25, 0.0]
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    assert_eq!(
        dequantize(GgmlType::BF16, &bf16_bytes, 3).unwrap(),
        [1.5, -0.25, 0.0]
    );
    assert!(matches!(
        dequantize(GgmlType::IQ2_XXS, &[0; 66], 256),
        Err(grail_policy::gguf::DequantError::Unsupported(
            GgmlType::IQ2_XXS
        ))
    ));
}

/// HF q weight → llama.cpp layout, written literally as numpy's
/// `w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2).reshape(rows, cols)`.
fn llama_permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = Vec::with_capacity(w.len());
    // Iterate the swapped shape (heads, half, 2, cols) in row-major order.
    for h in 0..heads {
        for a in 0..half {
            for b in 0..2 {
                for c in 0..cols {
                    // Source index in the unswapped (heads, 2, half, cols) view.
                    out.push(w[((h * 2 + b) * half + a) * cols + c]);
                }
            }
        }
    }
    out
}

const HIDDEN: usize = 8;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const FFN: usize = 16;

fn numbered(n: usize, offset: f32) -> Vec<f32> {
    (0..n).map(|i| offset + i as f32).collect()
}

/// A 1-layer llama with f32 tensors whose values identify their position.
fn tiny_llama(with_output: bool) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let vocab = gguf_support::tiny_vocab().tokens.len();
    let kv_dim = HIDDEN / HEADS * KV_HEADS;
    let q_hf = numbered(HIDDEN * HIDDEN, 1000.0);
    let k_hf = numbered(kv_dim * HIDDEN, 2000.0);
    let mut w = GgufWriter::default();
    tiny_llama_metadata(
        &mut w,
        HIDDEN as u32,
        HEADS as u32,
        KV_HEADS as u32,
        1,
        FFN as u32,
    );
    w.tensor_f32(
        "token_embd.weight",
        &[vocab, HIDDEN],
        &numbered(vocab * HIDDEN, 0.0),
    )
    .tensor_f32("output_norm.weight", &[HIDDEN], &numbered(HIDDEN, 1.0))
    .tensor_f32("blk.0.attn_norm.weight", &[HIDDEN], &numbered(HIDDEN, 2.0))
    .tensor_f32("blk.0.ffn_norm.weight", &[HIDDEN], &numbered(HIDDEN, 3.0))
    .tensor_f32(
        "blk.0.attn_q.weight",
        &[HIDDEN, HIDDEN],
        &llama_permute(&q_hf, HIDDEN, HIDDEN, HEADS),
    )
    .tensor_f32(
        "blk.0.attn_k.weight",
        &[kv_dim, HIDDEN],
        &llama_permute(&k_hf, kv_dim, HIDDEN, KV_HEADS),
    )
    .tensor_f32(
        "blk.0.attn_v.weight",
        &[kv_dim, HIDDEN],
        &numbered(kv_dim * HIDDEN, 3000.0),
    )
    .tensor_f32(
        "blk.0.attn_output.weight",
        &[HIDDEN, HIDDEN],
        &numbered(HIDDEN * HIDDEN, 4000.0),
    )
    .tensor_f32(
        "blk.0.ffn_gate.weight",
        &[FFN, HIDDEN],
        &numbered(FFN * HIDDEN, 5000.0),
    )
    .tensor_f32(
        "blk.0.ffn_up.weight",
        &[FFN, HIDDEN],
        &numbered(FFN * HIDDEN, 6000.0),
    )
    .tensor_f32(
        "blk.0.ffn_down.weight",
        &[HIDDEN, FFN],
        &numbered(FFN * HIDDEN, 7000.0),
    );
    if with_output {
        w.tensor_f32(
            "output.weight",
            &[vocab, HIDDEN],
            &numbered(vocab * HIDDEN, 9000.0),
        );
    }
    (w.to_bytes(), q_hf, k_hf)
}

#[test]
fn tiny_llama_maps_names_shapes_and_unpermutes_q_k() {
    let (bytes, q_hf, k_hf) = tiny_llama(false);
    let model = load_gguf_bytes(&bytes).unwrap();
    let t = |name: &str| {
        model
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"))
    };
    let flat = |name: &str| t(name).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let vocab = gguf_support::tiny_vocab().tokens.len();

    assert_eq!(t("model.embed_tokens.weight").dims(), [vocab, HIDDEN]);
    assert_eq!(
        t("model.layers.0.mlp.down_proj.weight").dims(),
        [HIDDEN, FFN]
    );
    assert_eq!(
        t("model.layers.0.mlp.gate_proj.weight").dims(),
        [FFN, HIDDEN]
    );
    assert_eq!(
        t("model.layers.0.self_attn.k_proj.weight").dims(),
        [HIDDEN / HEADS, HIDDEN]
    );
    assert_eq!(flat("model.norm.weight"), numbered(HIDDEN, 1.0));
    assert_eq!(
        flat("model.layers.0.input_layernorm.weight"),
        numbered(HIDDEN, 2.0)
    );
    assert_eq!(
        flat("model.layers.0.post_attention_layernorm.weight"),
        numbered(HIDDEN, 3.0)
    );
    assert_eq!(
        flat("model.layers.0.self_attn.o_proj.weight"),
        numbered(HIDDEN * HIDDEN, 4000.0)
    );
    assert_eq!(
        flat("model.layers.0.mlp.up_proj.weight"),
        numbered(FFN * HIDDEN, 6000.0)
    );
    assert_eq!(flat("model.layers.0.self_attn.q_proj.weight"), q_hf);
    assert_eq!(flat("model.layers.0.self_attn.k_proj.weight"), k_hf);
    assert!(!model.tensors.contains_key("lm_head.weight"));
    assert_eq!(model.tensors.len(), 11);

    let c = &model.config;
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["hidden_size"], HIDDEN);
    assert_eq!(c["intermediate_size"], FFN);
    assert_eq!(c["num_hidden_layers"], 1);
    assert_eq!(c["num_attention_heads"], HEADS);
    assert_eq!(c["num_key_value_heads"], KV_HEADS);
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["rope_theta"], 100000.0);
    assert_eq!(c["vocab_size"], vocab);
    assert_eq!(c["max_position_embeddings"], 256);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["bos_token_id"], 1);
    assert_eq!(c["eos_token_id"], 2);
    assert_eq!(c["pad_token_id"], 2);
    assert_eq!(model.chat_template.as_deref(), Some("{{ messages }}"));

    let (bytes, _, _) = tiny_llama(true);
    let untied = load_gguf_bytes(&bytes).unwrap();
    assert_eq!(untied.config["tie_word_embeddings"], false);
    assert_eq!(untied.tensors["lm_head.weight"].dims(), [vocab, HIDDEN]);
}

#[test]
fn tiny_tokenizer_handles_specials_merges_digits_and_unicode() {
    let (bytes, _, _) = tiny_llama(false);
    let tok = load_gguf_bytes(&bytes).unwrap().tokenizer;
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    let ids = tok
        .encode("<|im_start|>user\nhello<|im_end|>", false)
        .unwrap();
    let ids = ids.get_ids();
    assert_eq!(ids[0], 1, "special token is one id");
    assert_eq!(*ids.last().unwrap(), 2);
    let hell = tok.token_to_id("hell").unwrap();
    assert!(ids.contains(&hell), "merges applied: {ids:?}");
    // smollm pre-tokenizer: digits are split one by one, so the "12" merge never fires.
    let digits = tok.encode("12", false).unwrap();
    assert_eq!(digits.get_ids().len(), 2);
    // Non-special user-defined token is still a single id.
    let tool = tok.encode("a<tool>b", false).unwrap();
    assert!(tool.get_ids().contains(&tok.token_to_id("<tool>").unwrap()));

    for text in [
        "hello world",
        "naïve café — 東京 🚀\n\ttabs  and  spaces",
        "<|im_end|>x",
        "",
    ] {
        let enc = tok.encode(text, false).unwrap();
        let dec = tok.decode(enc.get_ids(), false).unwrap();
        assert_eq!(dec, text);
    }
}

#[test]
fn unsupported_content_gets_typed_errors() {
    // Unknown tensor name.
    let mut w = GgufWriter::default();
    tiny_llama_metadata(&mut w, 8, 2, 1, 1, 16);
    w.tensor_f32("rope_freqs.weight", &[4], &[1.0; 4]);
    let err = load_gguf_bytes(&w.to_bytes()).err().unwrap();
    assert!(
        matches!(err, GgufError::UnknownTensor(ref n) if n == "rope_freqs.weight"),
        "{err}"
    );

    // Unsupported architecture.
    let mut w = GgufWriter::default();
    w.kv_str("general.architecture", "mamba");
    assert!(matches!(
        load_gguf_bytes(&w.to_bytes()),
        Err(GgufError::UnsupportedArchitecture(ref a)) if a == "mamba"
    ));

    // Version 1 and big-endian files.
    let mut w = GgufWriter::default();
    w.version = 1;
    assert!(matches!(
        GgufFile::parse(&w.to_bytes()),
        Err(GgufError::UnsupportedVersion { version: 1, .. })
    ));
    w.version = 3u32.swap_bytes();
    assert!(matches!(
        GgufFile::parse(&w.to_bytes()),
        Err(GgufError::UnsupportedVersion { .. })
    ));

    // Missing file.
    let err = load_gguf(std::path::Path::new("/nonexistent/model.gguf"))
        .err()
        .unwrap();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/model.gguf"));

    // A tensor whose row is not a whole number of blocks.
    let mut w = GgufWriter::default();
    w.tensor("token_embd.weight", &[16, 2], 2, vec![0; 36]);
    assert!(
        matches!(GgufFile::parse(&w.to_bytes()), Err(GgufError::BadTensor { ref tensor, .. }) if tensor == "token_embd.weight")
    );
}

#[test]
fn version_2_and_custom_alignment_are_honoured() {
    for (version, alignment) in [(2u32, 32u64), (3, 64), (3, 256)] {
        let mut w = GgufWriter::default();
        (w.version, w.alignment) = (version, alignment);
        w.kv_u32("general.alignment", alignment as u32);
        w.tensor_f32("a", &[3], &[1.0, 2.0, 3.0])
            .tensor_f32("b", &[2, 2], &[4.0, 5.0, 6.0, 7.0]);
        let bytes = w.to_bytes();
        let file = GgufFile::parse(&bytes).unwrap();
        assert_eq!((file.version, file.alignment), (version, alignment));
        assert_eq!(file.data_offset % alignment, 0);
        let b = &file.tensors[1];
        assert_eq!(
            b.data_start % alignment,
            0,
            "second tensor starts on an aligned offset"
        );
        let values = grail_policy::gguf::dequantize_tensor(&bytes, &file, b).unwrap();
        assert_eq!(values, [4.0, 5.0, 6.0, 7.0]);
    }
    let mut w = GgufWriter::default();
    w.kv_u32("general.alignment", 48);
    assert!(matches!(
        GgufFile::parse(&w.to_bytes()),
        Err(GgufError::BadMetadata { ref key, .. }) if key == "general.alignment"
    ));
}
