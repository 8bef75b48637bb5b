//! CPU kernels with hand-written backward passes.
//!
//! candle differentiates a composite op node by node, and its gradient store adds every
//! gradient into a freshly zeroed tensor: a differentiable RMSNorm is ~10 graph nodes, each
//! costing a forward pass, a backward pass, an allocation and a zero-fill plus add. On CPU
//! (f32 and f64) these kernels do the same math in one pass forward and one backward. Other
//! devices and dtypes (CUDA, bf16) take the composite candle ops: `has_cpu_kernel` decides.
//!
//! Every kernel is deterministic: reductions run in a fixed order (f64 accumulators), so a
//! training step gives the same bits on every run and thread count.

mod causal_softmax;
mod linear;
mod rms_norm;
mod rope;
mod swiglu;
mod token_stats;

pub use causal_softmax::causal_softmax;
pub use linear::linear;
pub use rms_norm::rms_norm;
pub use rope::rope;
pub use swiglu::swiglu;
pub use token_stats::{token_logprob_entropy, token_logprobs};

use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType};

/// Rows per rayon task: the kernels' rows are short (64–1536 values), so one task per row
/// would cost more in scheduling than in arithmetic.
const ROWS_PER_TASK: usize = 16;

/// The float types the CPU kernels run on.
trait Real: WithDType {
    fn exp(self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
}

/// Whether `t` runs on the hand-written CPU kernels.
pub fn has_cpu_kernel(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// A kernel over same-dtype contiguous float inputs, written once for f32 and f64.
trait Kernel {
    const NAME: &'static str;
    fn run<T: Real>(&self, inputs: &[&[T]]) -> Vec<T>;
}

/// Runs `kernel` on the storages' contiguous slices, in their (shared) dtype.
fn run_cpu<K: Kernel>(kernel: &K, inputs: &[(&CpuStorage, &Layout)]) -> Result<CpuStorage> {
    fn typed<T: Real, K: Kernel>(
        kernel: &K,
        inputs: &[(&CpuStorage, &Layout)],
    ) -> Result<CpuStorage> {
        let slices = inputs
            .iter()
            .map(|(s, l)| contiguous(T::cpu_storage_as_slice(s)?, l, K::NAME))
            .collect::<Result<Vec<&[T]>>>()?;
        Ok(T::to_cpu_storage_owned(kernel.run(&slices)))
    }
    use candle_core::backend::BackendStorage;
    match inputs[0].0.dtype() {
        DType::F32 => typed::<f32, K>(kernel, inputs),
        DType::F64 => typed::<f64, K>(kernel, inputs),
        other => candle_core::bail!("{}: no CPU kernel for {other:?}", K::NAME),
    }
}

/// `Σ a_i·b_i` in f64.
fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x.to_f64() * y.to_f64())
        .sum()
}

#[cfg(test)]
pub(crate) mod testing {
    use candle_core::{DType, Device, Tensor, Var};

    pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64))
            .and_then(|m| m.to_scalar::<f64>())
            .expect("tensors of one shape")
    }

    /// Gradients of `Σ f(inputs)·upstream` w.r.t. each input, by candle's autograd.
    fn autograd(
        inputs: &[Tensor],
        f: &dyn Fn(&[Tensor]) -> Tensor,
        upstream: &Tensor,
    ) -> Vec<Tensor> {
        let vars: Vec<Tensor> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap().as_tensor().clone())
            .collect();
        let grads = (f(&vars) * upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        vars.iter()
            .map(|v| grads.get(v).expect("every input gets a gradient").clone())
            .collect()
    }

    /// The kernel's hand-written backward equals autograd through the reference ops, for a
    /// random upstream gradient (inputs in f64).
    pub fn assert_same_gradients(
        inputs: &[Tensor],
        kernel: &dyn Fn(&[Tensor]) -> Tensor,
        reference: &dyn Fn(&[Tensor]) -> Tensor,
    ) {
        let out = reference(inputs);
        let upstream = Tensor::randn(0f64, 1.0, out.dims(), &Device::Cpu).unwrap();
        let got = autograd(inputs, kernel, &upstream);
        let want = autograd(inputs, reference, &upstream);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = max_diff(g, w);
            assert!(
                diff < 1e-12,
                "input {i}: gradient differs from autograd by {diff}"
            );
        }
    }
}
