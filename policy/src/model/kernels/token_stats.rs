//! Per-token log-probability of the target and entropy of the next-token distribution, straight
//! from the logits: `log p(t) = z_t − lse(z)` and `H = lse(z) − Σ softmax(z)·z`.
//!
//! With a 49,152-entry vocabulary the log-softmax route (`log_softmax`, `gather`, `exp`, `mul`,
//! `sum`) materialises four more full-vocabulary buffers per position and keeps them for the
//! backward pass; a micro-batch of 8 × 255 positions keeps 1.6 GB per buffer. On CPU (f32 and
//! f64) one fused pass per row computes both numbers, and its backward writes the logits'
//! gradient in one more pass, so the graph keeps only the logits. Other devices and dtypes
//! (CUDA, bf16) run the same formulas as candle ops.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{contiguous, has_cpu_kernel, run_cpu, Kernel, Real};

/// `(log p(targets), entropy)`, each shaped like `targets`, for `logits: [.., vocab]` and u32
/// `targets: [..]`. Differentiable w.r.t. the logits.
pub fn token_logprob_entropy(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let lead = logits.dims()[..logits.rank().saturating_sub(1)].to_vec();
    if lead.as_slice() != targets.dims() {
        candle_core::bail!(
            "token log-probs: logits {:?} and targets {:?} disagree on the leading dims",
            logits.shape(),
            targets.shape()
        );
    }
    let vocab = logits.dim(D::Minus1)?;
    let rows = targets.elem_count();
    if !has_cpu_kernel(logits) {
        return composite(logits, targets);
    }
    let logits = logits.reshape((rows, vocab))?;
    let targets = targets.to_dtype(DType::U32)?.flatten_all()?.contiguous()?;
    let both = logits.apply_op2(&targets, TokenStats)?; // [rows, 2]
    let logp = both.narrow(1, 0, 1)?.reshape(lead.clone())?;
    let entropy = both.narrow(1, 1, 1)?.reshape(lead)?;
    Ok((logp, entropy))
}

/// The same two outputs as candle ops (log-softmax, gather, entropy): CUDA and half
/// precision, and the reference the kernel is tested against.
fn composite(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor)> {
    let logp_all = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp_all
        .gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let entropy = (logp_all.exp()? * &logp_all)?.sum(D::Minus1)?.neg()?;
    Ok((picked, entropy))
}

/// Log-probabilities of `targets` only (the proof forward): same kernel, no graph.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(token_logprob_entropy(&logits.detach(), targets)?.0)
}

/// `(max, Σ e^(z−max), Σ e^(z−max)·z)` of one row, sums in f64.
fn row_moments<T: Real>(row: &[T]) -> (T, f64, f64) {
    let max = row.iter().copied().fold(
        T::from_f64(f64::NEG_INFINITY),
        |a, b| if b > a { b } else { a },
    );
    let (mut sum, mut weighted) = (0f64, 0f64);
    for &z in row {
        let e = (z - max).exp().to_f64();
        sum += e;
        weighted += e * z.to_f64();
    }
    (max, sum, weighted)
}

/// `lse` and entropy of one row.
fn row_lse_entropy<T: Real>(row: &[T]) -> (f64, f64) {
    let (max, sum, weighted) = row_moments(row);
    let lse = max.to_f64() + sum.ln();
    (lse, lse - weighted / sum)
}

/// The kernels' u32 targets (validated) and vocabulary size, borrowed from the op's inputs.
struct Targets<'a> {
    ids: &'a [u32],
    vocab: usize,
}

impl<'a> Targets<'a> {
    fn of(storage: &'a CpuStorage, layout: &Layout, logits: &Layout) -> Result<Self> {
        let (_, vocab) = logits.shape().dims2()?;
        let CpuStorage::U32(ids) = storage else {
            candle_core::bail!("token log-probs: targets must be u32");
        };
        let ids = contiguous(ids, layout, "token log-probs: targets")?;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!("token log-probs: target {bad} is outside the vocabulary of {vocab}")
        }
        Ok(Self { ids, vocab })
    }
}

/// Forward kernel; input: logits `[rows·vocab]`.
struct Forward<'a>(Targets<'a>);

impl Kernel for Forward<'_> {
    const NAME: &'static str = "token log-probs";

    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        forward(inputs[0], self.0.ids, self.0.vocab)
    }
}

/// Backward kernel; inputs: logits `[rows·vocab]`, output gradient `[rows·2]`.
struct Backward<'a>(Targets<'a>);

impl Kernel for Backward<'_> {
    const NAME: &'static str = "token log-probs backward";

    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        backward(inputs[0], self.0.ids, inputs[1], self.0.vocab)
    }
}

fn forward<T: Real>(logits: &[T], targets: &[u32], vocab: usize) -> Vec<T> {
    logits
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .flat_map_iter(|(row, &t)| {
            let (lse, entropy) = row_lse_entropy(row);
            [
                T::from_f64(row[t as usize].to_f64() - lse),
                T::from_f64(entropy),
            ]
        })
        .collect()
}

/// `∂/∂z_j = g_logp·(δ_jt − p_j) − g_H·p_j·(log p_j + H)`.
fn backward<T: Real>(logits: &[T], targets: &[u32], grads: &[T], vocab: usize) -> Vec<T> {
    let mut out = vec![T::zero(); logits.len()];
    out.par_chunks_mut(vocab)
        .zip(logits.par_chunks(vocab))
        .zip(targets.par_iter().zip(grads.par_chunks(2)))
        .for_each(|((dst, row), (&t, g))| {
            let (lse, entropy) = row_lse_entropy(row);
            let (lse, entropy) = (T::from_f64(lse), T::from_f64(entropy));
            let (g_logp, g_h) = (g[0], g[1]);
            for (d, &z) in dst.iter_mut().zip(row) {
                let log_p = z - lse;
                let p = log_p.exp();
                *d = T::zero() - g_logp * p - g_h * p * (log_p + entropy);
            }
            dst[t as usize] += g_logp;
        });
    out
}

/// `[rows, vocab]` logits × `[rows]` targets → `[rows, 2]` (log p(target), entropy).
struct TokenStats;

impl CustomOp2 for TokenStats {
    fn name(&self) -> &'static str {
        "token-logprob-entropy"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        logits_layout: &Layout,
        targets: &CpuStorage,
        targets_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let targets = Targets::of(targets, targets_layout, logits_layout)?;
        let rows = targets.ids.len();
        let storage = run_cpu(&Forward(targets), &[(logits, logits_layout)])?;
        Ok((storage, Shape::from((rows, 2))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = logits.apply_op3_no_bwd(targets, &grad_res.contiguous()?, &TokenStatsGrad)?;
        Ok((Some(grad), None))
    }
}

/// The logits' gradient from the `[rows, 2]` output gradient.
struct TokenStatsGrad;

impl CustomOp3 for TokenStatsGrad {
    fn name(&self) -> &'static str {
        "token-logprob-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        logits_layout: &Layout,
        targets: &CpuStorage,
        targets_layout: &Layout,
        grads: &CpuStorage,
        grads_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let targets = Targets::of(targets, targets_layout, logits_layout)?;
        let inputs = [(logits, logits_layout), (grads, grads_layout)];
        let storage = run_cpu(&Backward(targets), &inputs)?;
        Ok((storage, logits_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::max_diff;
    use super::*;
    use candle_core::{Device, Var};

    fn reference(logits: &Tensor, targets: &Tensor) -> (Tensor, Tensor) {
        composite(logits, targets).unwrap()
    }

    fn inputs(dtype: DType) -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let logits = (Tensor::randn(0f64, 3.0, (3, 5, 300), &dev).unwrap() + 7.0)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let targets: Vec<u32> = (0..15u32).map(|i| (i * 61) % 300).collect();
        (logits, Tensor::from_vec(targets, (3, 5), &dev).unwrap())
    }

    #[test]
    fn values_match_log_softmax_gather_and_entropy() {
        let (logits, targets) = inputs(DType::F32);
        let (logp, entropy) = token_logprob_entropy(&logits, &targets).unwrap();
        let (want_logp, want_entropy) = reference(&logits, &targets);
        assert_eq!(logp.dims(), &[3, 5]);
        assert!(max_diff(&logp, &want_logp) < 1e-5);
        assert!(max_diff(&entropy, &want_entropy) < 1e-4);
        assert!(max_diff(&token_logprobs(&logits, &targets).unwrap(), &want_logp) < 1e-5);
        let out_of_vocab = Tensor::from_vec(vec![300u32; 15], (3, 5), &Device::Cpu).unwrap();
        assert!(token_logprob_entropy(&logits, &out_of_vocab).is_err());
    }

    /// The hand-written backward equals autograd through the reference ops, for a loss that
    /// weights both outputs (as the GRPO loss with an entropy bonus does).
    #[test]
    fn gradient_matches_autograd_of_the_reference() {
        let (logits, targets) = inputs(DType::F64);
        let weights = Tensor::randn(0f64, 1.0, (3, 5), &Device::Cpu).unwrap();
        let loss = |(logp, entropy): (Tensor, Tensor)| {
            ((logp * &weights).unwrap() - (entropy * 0.3).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let var = Var::from_tensor(&logits).unwrap();
        let fused = loss(token_logprob_entropy(var.as_tensor(), &targets).unwrap())
            .backward()
            .unwrap();
        let var_ref = Var::from_tensor(&logits).unwrap();
        let plain = loss(reference(var_ref.as_tensor(), &targets))
            .backward()
            .unwrap();
        let (g, g_ref) = (
            fused.get(var.as_tensor()).unwrap(),
            plain.get(var_ref.as_tensor()).unwrap(),
        );
        let diff = max_diff(g, g_ref);
        assert!(
            diff < 1e-12,
            "fused backward differs from autograd by {diff}"
        );
    }
}
