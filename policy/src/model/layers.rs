//! The building blocks of a Qwen2/Llama decoder layer. Training needs ops with a backward pass
//! (candle-nn 0.11's fused `rms_norm`, `softmax_last_dim` and `rope` have none), inference wants
//! the fused ones (fewer passes over memory, fewer allocations): [`Ops`] picks per forward.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

use super::kernels::{self, has_cpu_kernel};
use crate::config::ModelConfig;

/// Norms, RoPE, attention scores and the LM head run in f32 when weights are half precision.
pub fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// Which kernels a forward uses. Both compute the same functions in the same dtypes; results
/// differ at f32 rounding level (summation order inside the norm and softmax).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ops {
    /// Only ops with a backward pass: training and gradient checks. On CPU (f32/f64) the
    /// norms, linear layers, RoPE, attention softmax and SwiGLU gate are the `kernels` module's
    /// ops with hand-written backward passes; elsewhere composite candle ops.
    Differentiable,
    /// candle's fused RMSNorm, RoPE and softmax: generation and the proof forward.
    Fused,
}

/// `x: [.., in] -> [.., out]` as one 2-D product: candle's `Linear` multiplies a 3-D input
/// batch by batch against a broadcast weight, which gives the matmul kernel many short
/// products instead of one tall one.
fn linear(layer: &Linear, x: &Tensor, ops: Ops) -> Result<Tensor> {
    if ops == Ops::Differentiable && has_cpu_kernel(x) {
        let y = kernels::linear(x, layer.weight())?;
        return match layer.bias() {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        };
    }
    on_rows(x, |rows| layer.forward(rows))
}

/// Applies `f: [rows, in] -> [rows, out]` to `x: [.., in]` as one 2-D call and restores the
/// leading dims.
pub(crate) fn on_rows(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let inner = x.dim(D::Minus1)?;
    let y = f(&x.reshape((x.elem_count() / inner, inner))?)?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("x has a last dim") = y.dim(1)?;
    y.reshape(dims)
}

/// RMSNorm computed in the compute dtype; the result stays in the compute dtype.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    /// Returns the normalised input in `compute_dtype(x.dtype())`.
    pub fn forward_compute(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        let cd = compute_dtype(x.dtype());
        let x = x.to_dtype(cd)?;
        if ops == Ops::Fused {
            let x = x.contiguous()?;
            return candle_nn::ops::rms_norm(&x, &self.weight.to_dtype(cd)?, self.eps as f32);
        }
        if has_cpu_kernel(&x) {
            return kernels::rms_norm(&x, &self.weight.to_dtype(cd)?, self.eps);
        }
        let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_rms = (mean_sq + self.eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&inv_rms)?
            .broadcast_mul(&self.weight.to_dtype(cd)?)
    }

    /// Normalises and casts back to the input dtype.
    pub fn forward(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        self.forward_compute(x, ops)?.to_dtype(x.dtype())
    }
}

/// RoPE cos/sin tables, `[len, head_dim]` each, for positions `start..start + len`.
///
/// Computed on the host in f32 exactly as HF does (`inv_freq = 1 / theta^(2i/d)`, angle =
/// position × inv_freq, both halves repeated), so they do not depend on the device or dtype.
#[derive(Clone, Debug)]
pub struct RopeTables {
    /// Full width `[len, head_dim]`: the composite (non-CPU differentiable) path.
    cos: Tensor,
    sin: Tensor,
    /// The first halves, `[len, head_dim / 2]`: what the fused kernel takes.
    cos_half: Tensor,
    sin_half: Tensor,
}

impl RopeTables {
    pub fn new(
        cfg: &ModelConfig,
        start: usize,
        len: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let d = cfg.head_dim;
        let half = d / 2;
        let theta = cfg.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / d as f32))
            .collect();
        let mut cos = Vec::with_capacity(len * d);
        let mut sin = Vec::with_capacity(len * d);
        for pos in start..start + len {
            let p = pos as f32;
            for _ in 0..2 {
                for f in &inv_freq {
                    let angle = p * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let cd = compute_dtype(dtype);
        let cos = Tensor::from_vec(cos, (len, d), dev)?.to_dtype(cd)?;
        let sin = Tensor::from_vec(sin, (len, d), dev)?.to_dtype(cd)?;
        Ok(Self {
            cos_half: cos.narrow(1, 0, half)?.contiguous()?,
            sin_half: sin.narrow(1, 0, half)?.contiguous()?,
            cos,
            sin,
        })
    }

    /// Tables for one decode step of `positions.len()` rows each at its own position
    /// (`cos_half: [b, 1, head_dim / 2]`, what the fused kernel takes per row): batched decoding
    /// of groups whose prompts differ in length. Same per-position values as [`Self::new`].
    pub fn per_row(
        cfg: &ModelConfig,
        positions: &[usize],
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let b = positions.len();
        let (d, half) = (cfg.head_dim, cfg.head_dim / 2);
        let (mut cos, mut sin) = (Vec::with_capacity(b * d), Vec::with_capacity(b * d));
        for &pos in positions {
            let one = Self::new(cfg, pos, 1, DType::F32, &Device::Cpu)?;
            cos.extend(one.cos.flatten_all()?.to_vec1::<f32>()?);
            sin.extend(one.sin.flatten_all()?.to_vec1::<f32>()?);
        }
        let cd = compute_dtype(dtype);
        let cos = Tensor::from_vec(cos, (b, 1, d), dev)?.to_dtype(cd)?;
        let sin = Tensor::from_vec(sin, (b, 1, d), dev)?.to_dtype(cd)?;
        Ok(Self {
            cos_half: cos.narrow(2, 0, half)?.contiguous()?,
            sin_half: sin.narrow(2, 0, half)?.contiguous()?,
            // [b, 1, 1, d] so the composite path broadcasts over heads.
            cos: cos.unsqueeze(1)?,
            sin: sin.unsqueeze(1)?,
        })
    }

    /// Applies the rotation to `x: [b, heads, len, head_dim]` (HF `rotate_half` convention).
    /// The result is in the compute dtype.
    pub fn apply(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        let cd = compute_dtype(x.dtype());
        let x = x.to_dtype(cd)?;
        if ops == Ops::Fused {
            return candle_nn::rotary_emb::rope(&x.contiguous()?, &self.cos_half, &self.sin_half);
        }
        if has_cpu_kernel(&x) {
            return kernels::rope(&x, &self.cos_half, &self.sin_half);
        }
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&self.cos)?
            .broadcast_add(&rotated.broadcast_mul(&self.sin)?)
    }
}

/// Additive causal mask `[len, offset + len]`: query `i` (absolute `offset + i`) sees keys
/// `0..=offset + i`. Right-padded rows need nothing more: real tokens never see the padding.
pub fn causal_mask(len: usize, offset: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let keys = offset + len;
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..keys).map(move |j| {
                if j <= offset + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (len, keys), dev)?.to_dtype(dtype)
}

/// Grouped-query self-attention with HF projection names.
#[derive(Clone, Debug)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// Where the keys/values of this forward come from: only the current input, or a preallocated
/// cache into which the new ones are written at `offset`.
pub enum KvSource<'a> {
    Fresh,
    Cache {
        k: &'a Tensor,
        v: &'a Tensor,
        offset: usize,
    },
}

impl Attention {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let q_out = cfg.num_attention_heads * hd;
        let kv_out = cfg.num_key_value_heads * hd;
        let b = cfg.qkv_bias;
        Ok(Self {
            q_proj: candle_nn::linear_b(h, q_out, b, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear_b(h, kv_out, b, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear_b(h, kv_out, b, vb.pp("v_proj"))?,
            o_proj: candle_nn::linear_b(q_out, h, false, vb.pp("o_proj"))?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    /// `x: [b, len, hidden]`; `mask: [len, keys]` (None for a single decode step), or
    /// `[b, 1, 1, 1, keys]` for a decode step whose rows start at different cache slots.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: Option<&Tensor>,
        kv: KvSource,
        ops: Ops,
    ) -> Result<Tensor> {
        let (b, len, _) = x.dims3()?;
        let dtype = x.dtype();
        let cd = compute_dtype(dtype);
        let (hd, kvh) = (self.head_dim, self.kv_heads);
        let split = |t: Tensor, heads: usize| -> Result<Tensor> {
            t.reshape((b, len, heads, hd))?.transpose(1, 2)
        };
        let q = rope.apply(&split(linear(&self.q_proj, x, ops)?, self.heads)?, ops)?;
        let k = rope
            .apply(&split(linear(&self.k_proj, x, ops)?, kvh)?, ops)?
            .to_dtype(dtype)?;
        let v = split(linear(&self.v_proj, x, ops)?, kvh)?;
        let (k, v) = match kv {
            KvSource::Fresh => (k.contiguous()?, v.contiguous()?),
            KvSource::Cache {
                k: kc,
                v: vc,
                offset,
            } => {
                kc.slice_set(&k.contiguous()?, 2, offset)?;
                vc.slice_set(&v.contiguous()?, 2, offset)?;
                (
                    kc.narrow(2, 0, offset + len)?,
                    vc.narrow(2, 0, offset + len)?,
                )
            }
        };
        let keys = k.dim(2)?;
        let rep = self.heads / kvh;
        // Heads sharing a kv head are adjacent, so [b, heads, len, hd] regroups for free as
        // [b, kv_heads, rep * len, hd]: no repeat_kv copies of k and v.
        let q = (q.to_dtype(dtype)?.contiguous()? * (1.0 / (hd as f64).sqrt()))?.reshape((
            b,
            kvh,
            rep * len,
            hd,
        ))?;
        let scores = q.matmul(&k.t()?)?.to_dtype(cd)?;
        let probs = if ops == Ops::Differentiable && has_cpu_kernel(&scores) {
            // `mask` is the causal mask of these `len` queries over `keys` keys (or no mask
            // for one query); the kernel applies it without materialising it.
            kernels::causal_softmax(&scores, len)?
        } else {
            let scores = match mask {
                Some(m) => scores
                    .reshape((b, kvh, rep, len, keys))?
                    .broadcast_add(m)?
                    .reshape((b, kvh, rep * len, keys))?,
                None => scores,
            };
            match ops {
                Ops::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
                Ops::Fused => candle_nn::ops::softmax_last_dim(&scores.contiguous()?)?,
            }
        }
        .to_dtype(dtype)?;
        let out = probs
            .matmul(&v)?
            .reshape((b, self.heads, len, hd))?
            .transpose(1, 2)?
            .reshape((b, len, self.heads * hd))?;
        linear(&self.o_proj, &out, ops)
    }
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Clone, Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: candle_nn::linear_no_bias(h, i, vb.pp("gate_proj"))?,
            up_proj: candle_nn::linear_no_bias(h, i, vb.pp("up_proj"))?,
            down_proj: candle_nn::linear_no_bias(i, h, vb.pp("down_proj"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, ops: Ops) -> Result<Tensor> {
        let (gate, up) = (
            linear(&self.gate_proj, x, ops)?,
            linear(&self.up_proj, x, ops)?,
        );
        let gated = if ops == Ops::Differentiable && has_cpu_kernel(&gate) {
            kernels::swiglu(&gate, &up)?
        } else {
            (gate.silu()? * up)?
        };
        linear(&self.down_proj, &gated, ops)
    }
}

/// One pre-norm decoder layer.
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::new(cfg, vb.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        mask: Option<&Tensor>,
        kv: KvSource,
        ops: Ops,
    ) -> Result<Tensor> {
        let normed = self.input_layernorm.forward(x, ops)?;
        let attn = self.self_attn.forward(&normed, rope, mask, kv, ops)?;
        let x = (x + attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x, ops)?, ops)?;
        x + mlp
    }
}
