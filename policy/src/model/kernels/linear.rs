//! `y = x·wᵀ` for `x: [.., in]` and an HF weight `w: [out, in]` as one graph node.
//!
//! The composite route (reshape to 2-D, transpose the weight, matmul, reshape back) leaves four
//! nodes, and candle's backward gives each a zeroed gradient buffer plus an add: the weight's
//! gradient is even added through the transpose, a strided pass over every parameter per
//! micro-batch. Here the backward writes `∂x = g·w` and `∂w = gᵀ·x` directly in `x`'s and `w`'s
//! layouts. The forward is the same 2-D gemm call as the composite route.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, D};

/// `x·wᵀ`, differentiable w.r.t. both (same dtype, CPU).
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (_, inner) = w.dims2()?;
    if x.dim(D::Minus1)? != inner {
        candle_core::bail!(
            "linear: input {:?} does not end in the weight's {inner} inputs ({:?})",
            x.shape(),
            w.shape()
        );
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (out, inner) = w_layout.shape().dims2()?;
        let rows = x_layout.shape().elem_count() / inner;
        let Some((start, _)) = x_layout.contiguous_offsets() else {
            candle_core::bail!("linear: input must be contiguous");
        };
        let x_2d = Layout::contiguous_with_offset((rows, inner), start);
        let y = x.matmul(w, (1, rows, out, inner), &x_2d, &w_layout.transpose(0, 1)?)?;
        let mut dims = x_layout.dims().to_vec();
        *dims.last_mut().expect("x has a last dim") = out;
        Ok((y, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (out, inner) = w.dims2()?;
        let rows = x.elem_count() / inner;
        let g = grad.contiguous()?.reshape((rows, out))?;
        let dx = g.matmul(&w.detach())?.reshape(x.shape())?;
        let dw = g.t()?.matmul(&x.detach().reshape((rows, inner))?)?;
        Ok((Some(dx), Some(dw)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_same_gradients, max_diff};
    use super::*;
    use candle_core::{DType, Device};

    fn inputs(dtype: DType) -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let cast = |t: Tensor| t.to_dtype(dtype).unwrap();
        (
            cast(Tensor::randn(0f64, 1.0, (3, 5, 12), &dev).unwrap()),
            cast(Tensor::randn(0f64, 1.0, (7, 12), &dev).unwrap()),
        )
    }

    fn reference(x: &Tensor, w: &Tensor) -> Tensor {
        x.reshape((15, 12))
            .unwrap()
            .matmul(&w.t().unwrap())
            .unwrap()
            .reshape((3, 5, 7))
            .unwrap()
    }

    #[test]
    fn values_equal_the_2d_product() {
        let (x, w) = inputs(DType::F32);
        let y = linear(&x, &w).unwrap();
        assert_eq!(y.dims(), &[3, 5, 7]);
        assert_eq!(max_diff(&y, &reference(&x, &w)), 0.0);
        assert!(linear(&x, &w.narrow(1, 0, 11).unwrap()).is_err());
    }

    #[test]
    fn gradients_match_autograd_of_the_2d_product() {
        let (x, w) = inputs(DType::F64);
        assert_same_gradients(&[x, w], &|t| linear(&t[0], &t[1]).unwrap(), &|t| {
            reference(&t[0], &t[1])
        });
    }
}
