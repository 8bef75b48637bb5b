//! SwiGLU gate `silu(a)·u` with `silu(a) = a / (1 + e^−a)` (candle's formula). Backward, with
//! `σ = 1 / (1 + e^−a)`: `∂a = g·u·σ·(1 + a·(1 − σ))`, `∂u = g·silu(a)`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{run_cpu, Kernel, Real};

/// Elements per rayon task.
const CHUNK: usize = 1 << 13;

/// `silu(gate) · up` for two tensors of one shape and dtype. Differentiable w.r.t. both.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.shape() != up.shape() {
        candle_core::bail!(
            "swiglu: gate {:?} and up {:?} differ",
            gate.shape(),
            up.shape()
        );
    }
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

fn sigmoid<T: Real>(a: T) -> T {
    T::one() / (T::one() + (T::zero() - a).exp())
}

struct SwiGlu;

impl Kernel for SwiGlu {
    const NAME: &'static str = "swiglu";

    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        let (a, u) = (inputs[0], inputs[1]);
        let mut y = vec![T::zero(); a.len()];
        y.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
            .for_each(|(y, (a, u))| {
                for ((y, &a), &u) in y.iter_mut().zip(a).zip(u) {
                    *y = a / (T::one() + (T::zero() - a).exp()) * u;
                }
            });
        y
    }
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        a_layout: &Layout,
        u: &CpuStorage,
        u_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let storage = run_cpu(self, &[(a, a_layout), (u, u_layout)])?;
        Ok((storage, a_layout.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        u: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = a.apply_op3_no_bwd(u, &grad.contiguous()?, &SwiGluGrad)?;
        let n = a.elem_count();
        let da = packed.narrow(0, 0, n)?.reshape(a.shape())?;
        let du = packed.narrow(0, n, n)?.reshape(a.shape())?;
        Ok((Some(da), Some(du)))
    }
}

/// `[2·n]`: `∂a` then `∂u`.
struct SwiGluGrad;

impl Kernel for SwiGluGrad {
    const NAME: &'static str = "swiglu backward";

    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        let (a, u, g) = (inputs[0], inputs[1], inputs[2]);
        let mut out = vec![T::zero(); 2 * a.len()];
        let (da, du) = out.split_at_mut(a.len());
        da.par_chunks_mut(CHUNK)
            .zip(du.par_chunks_mut(CHUNK))
            .zip(
                a.par_chunks(CHUNK)
                    .zip(u.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))),
            )
            .for_each(|((da, du), (a, (u, g)))| {
                for i in 0..a.len() {
                    let s = sigmoid(a[i]);
                    da[i] = g[i] * u[i] * s * (T::one() + a[i] * (T::one() - s));
                    du[i] = g[i] * (a[i] * s);
                }
            });
        out
    }
}

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        a_layout: &Layout,
        u: &CpuStorage,
        u_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let n = a_layout.shape().elem_count();
        let storage = run_cpu(self, &[(a, a_layout), (u, u_layout), (g, g_layout)])?;
        Ok((storage, Shape::from(2 * n)))
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
            cast(Tensor::randn(0f64, 3.0, (4, 5, 33), &dev).unwrap()),
            cast(Tensor::randn(0f64, 1.0, (4, 5, 33), &dev).unwrap()),
        )
    }

    fn reference(a: &Tensor, u: &Tensor) -> Tensor {
        (a.silu().unwrap() * u).unwrap()
    }

    #[test]
    fn values_match_silu_times_up() {
        let (a, u) = inputs(DType::F32);
        let y = swiglu(&a, &u).unwrap();
        assert!(max_diff(&y, &reference(&a, &u)) < 1e-6);
        assert!(swiglu(&a, &u.narrow(2, 0, 32).unwrap()).is_err());
    }

    #[test]
    fn gradients_match_autograd_of_silu_times_up() {
        let (a, u) = inputs(DType::F64);
        assert_same_gradients(&[a, u], &|t| swiglu(&t[0], &t[1]).unwrap(), &|t| {
            reference(&t[0], &t[1])
        });
    }
}
