//! RMSNorm `y = x / sqrt(mean(x²) + eps) · w` over the last dim, differentiable w.r.t. `x`
//! and `w`. With `n = x·r`, `r = (mean(x²) + eps)^-½` and upstream gradient `g`:
//! `∂w = Σ_rows g·n` and `∂x = r·(g·w − n·mean(g·w·n))`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{dot, run_cpu, Kernel, Real, ROWS_PER_TASK};

/// RMSNorm of `x: [.., h]` with `weight: [h]`, in `x`'s dtype (both must share it).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let h = x.dim(D::Minus1)?;
    if weight.dims() != [h] {
        candle_core::bail!(
            "rms_norm: weight {:?} does not match the last dim of {:?}",
            weight.shape(),
            x.shape()
        );
    }
    // Any rank: the kernels see rows of `h`, and a reshape here would be two more graph nodes.
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNormOp { eps })
}

/// `r` of one row, in f64.
fn inv_rms<T: Real>(row: &[T], eps: f64) -> f64 {
    1.0 / (dot(row, row) / row.len() as f64 + eps).sqrt()
}

struct RmsNormOp {
    eps: f64,
}

impl Kernel for RmsNormOp {
    const NAME: &'static str = "rms_norm";

    /// Inputs: x `[rows·h]`, w `[h]`. HF order: `(x·r)·w` with `r` rounded to `T`.
    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        let (x, w) = (inputs[0], inputs[1]);
        let h = w.len();
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(h)
            .zip(x.par_chunks(h))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(y, x)| {
                let r = T::from_f64(inv_rms(x, self.eps));
                for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                    *y = x * r * w;
                }
            });
        y
    }
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let storage = run_cpu(self, &[(x, x_layout), (w, w_layout)])?;
        Ok((storage, x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let rows = x.elem_count() / w.elem_count();
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &RmsNormGrad { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.squeeze(0)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `[rows + 1, h]`: `∂x` in the first `rows` rows, `∂w` in the last.
struct RmsNormGrad {
    eps: f64,
}

impl Kernel for RmsNormGrad {
    const NAME: &'static str = "rms_norm backward";

    /// Inputs: x and g `[rows·h]`, w `[h]`.
    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T> {
        let (x, w, g) = (inputs[0], inputs[1], inputs[2]);
        let h = w.len();
        let mut out = vec![T::zero(); x.len() + h];
        let (dx, dw) = out.split_at_mut(x.len());
        // 1/rms per row, shared by the ∂x and ∂w passes.
        let inv: Vec<f64> = x
            .par_chunks(h)
            .with_min_len(ROWS_PER_TASK)
            .map(|x| inv_rms(x, self.eps))
            .collect();
        dx.par_chunks_mut(h)
            .zip(x.par_chunks(h).zip(g.par_chunks(h)))
            .zip(inv.par_iter())
            .with_min_len(ROWS_PER_TASK)
            .for_each(|((dx, (x, g)), &r)| {
                // mean(g·w·n) = r·mean(g·w·x)
                let c: f64 = x
                    .iter()
                    .zip(g)
                    .zip(w)
                    .map(|((&x, &g), &w)| g.to_f64() * w.to_f64() * x.to_f64())
                    .sum::<f64>()
                    * r
                    / h as f64;
                for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                    let n = x.to_f64() * r;
                    *dx = T::from_f64(r * (g.to_f64() * w.to_f64() - n * c));
                }
            });
        // ∂w: fixed blocks of rows summed in block order, so the result does not depend on
        // how rayon splits the work.
        let block = ROWS_PER_TASK * h;
        let partials: Vec<Vec<f64>> = x
            .par_chunks(block)
            .zip(g.par_chunks(block))
            .zip(inv.par_chunks(ROWS_PER_TASK))
            .map(|((x, g), inv)| {
                let mut acc = vec![0f64; h];
                for ((x, g), &r) in x.chunks(h).zip(g.chunks(h)).zip(inv) {
                    for ((a, &x), &g) in acc.iter_mut().zip(x).zip(g) {
                        *a += g.to_f64() * x.to_f64() * r;
                    }
                }
                acc
            })
            .collect();
        for (j, d) in dw.iter_mut().enumerate() {
            *d = T::from_f64(partials.iter().map(|p| p[j]).sum());
        }
        out
    }
}

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        g: &CpuStorage,
        g_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = w_layout.shape().elem_count();
        let rows = x_layout.shape().elem_count() / h;
        let storage = run_cpu(self, &[(x, x_layout), (w, w_layout), (g, g_layout)])?;
        Ok((storage, Shape::from((rows + 1, h))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_same_gradients, max_diff};
    use super::*;
    use candle_core::{DType, Device};

    const EPS: f64 = 1e-5;

    fn reference(x: &Tensor, w: &Tensor) -> Tensor {
        let inv = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + EPS)
            .unwrap()
            .sqrt()
            .unwrap()
            .recip()
            .unwrap();
        x.broadcast_mul(&inv).unwrap().broadcast_mul(w).unwrap()
    }

    fn inputs(dtype: DType) -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f64, 2.0, (3, 37, 24), &dev).unwrap();
        let w = (Tensor::randn(0f64, 0.5, 24, &dev).unwrap() + 1.0).unwrap();
        (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap())
    }

    #[test]
    fn values_match_the_composite_ops() {
        let (x, w) = inputs(DType::F32);
        let y = rms_norm(&x, &w, EPS).unwrap();
        assert_eq!(y.dims(), x.dims());
        assert!(max_diff(&y, &reference(&x, &w)) < 1e-5);
        assert!(rms_norm(&x, &w.narrow(0, 0, 23).unwrap(), EPS).is_err());
    }

    #[test]
    fn gradients_match_autograd_of_the_composite_ops() {
        let (x, w) = inputs(DType::F64);
        assert_same_gradients(&[x, w], &|t| rms_norm(&t[0], &t[1], EPS).unwrap(), &|t| {
            reference(&t[0], &t[1])
        });
    }
}
