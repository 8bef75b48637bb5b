//! Rotary position embedding in HF's `rotate_half` layout: for the halves `x1`, `x2` of each
//! head vector, `y1 = x1·cos − x2·sin` and `y2 = x2·cos + x1·sin`. The map is a rotation, so
//! its backward is the rotation by the opposite angle (the same kernel with `sin` negated).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{run_cpu, Kernel, Real};

/// Rotates `x: [b, heads, len, head_dim]` by the half tables `cos`, `sin: [len, head_dim / 2]`
/// (all in one dtype). Differentiable w.r.t. `x`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, _, len, head_dim) = x.dims4()?;
    if cos.dims() != [len, head_dim / 2] || sin.dims() != cos.dims() || head_dim % 2 != 0 {
        candle_core::bail!(
            "rope: tables {:?}/{:?} do not fit {:?} (want [len, head_dim / 2])",
            cos.shape(),
            sin.shape(),
            x.shape()
        );
    }
    let op = Rope {
        half: head_dim / 2,
        inverse: false,
    };
    x.contiguous()?
        .apply_op3(&cos.contiguous()?, &sin.contiguous()?, op)
}

struct Rope {
    half: usize,
    /// Rotate by minus the angle: the backward pass.
    inverse: bool,
}

impl Kernel for Rope {
    const NAME: &'static str = "rope";

    /// Inputs: x `[b·heads, len, 2·half]`, cos and sin `[len, half]`.
    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        let (x, cos, sin) = (inputs[0], inputs[1], inputs[2]);
        let half = self.half;
        // One head's [len, 2·half] block per task.
        let head = 2 * cos.len();
        // The backward rotates by the opposite angle; × ±1 is exact.
        let sign = T::from_f64(if self.inverse { -1.0 } else { 1.0 });
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(head)
            .zip(x.par_chunks(head))
            .for_each(|(y, x)| {
                let rows = y.chunks_mut(2 * half).zip(x.chunks(2 * half));
                let tables = cos.chunks(half).zip(sin.chunks(half));
                for ((y, x), (cos, sin)) in rows.zip(tables) {
                    let (y1, y2) = y.split_at_mut(half);
                    let (x1, x2) = x.split_at(half);
                    for i in 0..half {
                        let (c, s) = (cos[i], sin[i] * sign);
                        y1[i] = x1[i] * c - x2[i] * s;
                        y2[i] = x2[i] * c + x1[i] * s;
                    }
                }
            });
        y
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        cos: &CpuStorage,
        cos_layout: &Layout,
        sin: &CpuStorage,
        sin_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let storage = run_cpu(self, &[(x, x_layout), (cos, cos_layout), (sin, sin_layout)])?;
        Ok((storage, x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let inverse = Rope {
            half: self.half,
            inverse: !self.inverse,
        };
        let dx = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &inverse)?;
        Ok((Some(dx), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_same_gradients, max_diff};
    use super::*;
    use candle_core::{DType, Device, D};

    /// HF's `x·cos + rotate_half(x)·sin` with full-width tables.
    fn reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let full = |t: &Tensor| Tensor::cat(&[t, t], D::Minus1).unwrap();
        let half = x.dim(D::Minus1).unwrap() / 2;
        let x1 = x.narrow(D::Minus1, 0, half).unwrap();
        let x2 = x.narrow(D::Minus1, half, half).unwrap();
        let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
        (x.broadcast_mul(&full(cos)).unwrap() + rotated.broadcast_mul(&full(sin)).unwrap()).unwrap()
    }

    fn inputs(dtype: DType) -> (Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 1.0, (2, 3, 7, 8), &dev).unwrap();
        let angles = Tensor::randn(0f64, 3.0, (7, 4), &dev).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let cast = |t: Tensor| t.to_dtype(dtype).unwrap();
        (cast(x), cast(cos), cast(sin))
    }

    #[test]
    fn values_match_rotate_half() {
        let (x, cos, sin) = inputs(DType::F32);
        let y = rope(&x, &cos, &sin).unwrap();
        assert_eq!(max_diff(&y, &reference(&x, &cos, &sin)), 0.0);
        let short = cos.narrow(0, 0, 6).unwrap();
        assert!(rope(&x, &short, &short).is_err());
    }

    #[test]
    fn gradient_matches_autograd_of_rotate_half() {
        let (x, cos, sin) = inputs(DType::F64);
        assert_same_gradients(&[x], &|t| rope(&t[0], &cos, &sin).unwrap(), &|t| {
            reference(&t[0], &cos, &sin)
        });
    }
}
