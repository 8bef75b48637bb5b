//! llama.cpp tensor names → Hugging Face names, and undoing convert's q/k row permutation.

/// Per-block llama.cpp suffixes and their HF counterparts.
const BLOCK_NAMES: [(&str, &str); 11] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
];

/// Which attention projection a tensor is, for the RoPE un-permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projection {
    Query,
    Key,
    Other,
}

/// The HF name of a llama.cpp tensor, or `None` for names with no HF counterpart.
pub fn hf_name(gguf_name: &str) -> Option<(String, Projection)> {
    let (stem, kind) = gguf_name.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let top = match stem {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(hf) = top {
        return Some((format!("{hf}.{kind}"), Projection::Other));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let (_, hf) = BLOCK_NAMES.iter().find(|(gguf, _)| *gguf == suffix)?;
    let projection = match suffix {
        "attn_q" => Projection::Query,
        "attn_k" => Projection::Key,
        _ => Projection::Other,
    };
    Some((format!("model.layers.{layer}.{hf}.{kind}"), projection))
}

/// Undoes llama.cpp's `permute` of q/k projections (done so ggml can apply interleaved
/// RoPE to weights trained for HF's rotate-half RoPE).
///
/// convert_hf_to_gguf.py computes, on the HF weight `w` of shape `[out, in]`,
/// `w.reshape(heads, 2, out / heads / 2, in).swapaxes(1, 2).reshape(out, in)`: within each
/// head, GGUF row `2 * i + j` holds HF row `j * half + i` (`half = head_dim / 2`). This
/// moves the rows back. `values` is row-major `[rows, cols]`; a 1-D bias uses `cols = 1`.
pub fn unpermute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Option<Vec<f32>> {
    if heads == 0
        || !rows.is_multiple_of(heads)
        || !(rows / heads).is_multiple_of(2)
        || values.len() != rows * cols
    {
        return None;
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let gguf_row = h * head_dim + 2 * i + j;
                let hf_row = h * head_dim + j * half + i;
                out[hf_row * cols..(hf_row + 1) * cols]
                    .copy_from_slice(&values[gguf_row * cols..(gguf_row + 1) * cols]);
            }
        }
    }
    Some(out)
}
