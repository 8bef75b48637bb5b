//! Causal softmax of attention scores: the additive `-inf` mask and the softmax in one pass,
//! masked entries exactly 0 (as `exp(-inf)` gives). Backward: `∂s = p·(g − Σ g·p)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{dot, run_cpu, Kernel, Real, ROWS_PER_TASK};

/// Softmax over the last dim of `scores: [.., rows, keys]` where the rows cycle through the
/// `len` newest query positions (`rows` is a multiple of `len`: heads sharing a kv head are
/// stacked) and query `i` of them sees keys `0..=keys − len + i`. Differentiable.
pub fn causal_softmax(scores: &Tensor, len: usize) -> Result<Tensor> {
    let keys = scores.dim(D::Minus1)?;
    let rows = scores.dim(D::Minus2)?;
    if len == 0 || len > keys || rows % len != 0 {
        candle_core::bail!(
            "causal_softmax: scores {:?} do not hold whole blocks of {len} queries",
            scores.shape()
        );
    }
    scores.contiguous()?.apply_op1(CausalSoftmax { len, keys })
}

struct CausalSoftmax {
    len: usize,
    keys: usize,
}

impl Kernel for CausalSoftmax {
    const NAME: &'static str = "causal_softmax";

    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        let (s, keys, offset) = (inputs[0], self.keys, self.keys - self.len);
        let mut p = vec![T::zero(); s.len()];
        p.par_chunks_mut(keys)
            .zip(s.par_chunks(keys))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, (p, s))| {
                let visible = offset + row % self.len + 1;
                let (p, s) = (&mut p[..visible], &s[..visible]);
                let max = s
                    .iter()
                    .copied()
                    .fold(s[0], |a, b| if b > a { b } else { a });
                let mut sum = 0f64;
                for (p, &s) in p.iter_mut().zip(s) {
                    *p = (s - max).exp();
                    sum += p.to_f64();
                }
                let sum = T::from_f64(sum);
                p.iter_mut().for_each(|p| *p /= sum);
            });
        p
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((run_cpu(self, &[(s, layout)])?, layout.shape().clone()))
    }

    fn bwd(&self, _s: &Tensor, p: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(p.apply_op2_no_bwd(
            &grad.contiguous()?,
            &SoftmaxGrad { keys: self.keys },
        )?))
    }
}

/// `∂s` from the probabilities and their gradient, row by row.
struct SoftmaxGrad {
    keys: usize,
}

impl Kernel for SoftmaxGrad {
    const NAME: &'static str = "causal_softmax backward";

    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        let (p, g) = (inputs[0], inputs[1]);
        let mut ds = vec![T::zero(); p.len()];
        ds.par_chunks_mut(self.keys)
            .zip(p.par_chunks(self.keys).zip(g.par_chunks(self.keys)))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(ds, (p, g))| {
                let weighted = T::from_f64(dot(p, g));
                for ((d, &p), &g) in ds.iter_mut().zip(p).zip(g) {
                    *d = p * (g - weighted);
                }
            });
        ds
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        p: &CpuStorage,
        p_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let storage = run_cpu(self, &[(p, p_layout), (g, g_layout)])?;
        Ok((storage, p_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_same_gradients, max_diff};
    use super::*;
    use crate::model::causal_mask;
    use candle_core::{DType, Device};

    /// Two query blocks of `len` 5 over 8 keys (3 cached positions), as attention stacks them.
    fn scores(dtype: DType) -> Tensor {
        Tensor::randn(0f64, 2.0, (2, 3, 10, 8), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn reference(s: &Tensor) -> Tensor {
        let mask = causal_mask(5, 3, s.dtype(), s.device()).unwrap();
        let masked = s
            .reshape((2, 3, 2, 5, 8))
            .unwrap()
            .broadcast_add(&mask)
            .unwrap()
            .reshape((2, 3, 10, 8))
            .unwrap();
        candle_nn::ops::softmax(&masked, D::Minus1).unwrap()
    }

    #[test]
    fn values_match_mask_plus_softmax() {
        let s = scores(DType::F32);
        let p = causal_softmax(&s, 5).unwrap();
        assert!(max_diff(&p, &reference(&s)) < 1e-6);
        // Query 0 sees keys 0..=3 only.
        let first: Vec<f32> = p.flatten_to(2).unwrap().get(0).unwrap().to_vec1().unwrap();
        assert!(first[4..].iter().all(|&v| v == 0.0));
        assert!(causal_softmax(&s, 3).is_err());
    }

    #[test]
    fn gradient_matches_autograd_of_mask_plus_softmax() {
        assert_same_gradients(
            &[scores(DType::F64)],
            &|t| causal_softmax(&t[0], 5).unwrap(),
            &|t| reference(&t[0]),
        );
    }
}
