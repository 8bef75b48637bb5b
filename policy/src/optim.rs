//! Gradient accumulation and a fused AdamW over `Var` storage.
//!
//! candle's `AdamW` builds about fifteen temporary tensors per parameter per step, which
//! dominates a step at ~50M parameters (stack.md §6.3). Here gradients are accumulated into
//! host f32 buffers, the global norm is clipped, and the AdamW update runs as one pass over
//! each parameter (parallel over chunks with rayon) before being written back with `Var::set`.

use candle_core::{backprop::GradStore, CpuStorage, DType, Result, Storage, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;

/// AdamW hyper-parameters (torch semantics: decoupled weight decay, bias correction).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// grail's trainer: lr 1e-6, betas (0.9, 0.95), eps 1e-8, weight decay 0.1.
    fn default() -> Self {
        Self {
            lr: 1e-6,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// The trainable vars of a `VarMap`, in sorted name order.
pub fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap mutex poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// `acc += x`, in parallel.
fn add_into(acc: &mut [f32], x: &[f32]) {
    const CHUNK: usize = 1 << 14;
    acc.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, x)| *a += x));
}

/// Sums gradients of several backward passes into host f32 buffers, one per var.
#[derive(Debug)]
pub struct GradAccumulator {
    buffers: Vec<Vec<f32>>,
}

impl GradAccumulator {
    pub fn new(vars: &[(String, Var)]) -> Self {
        Self {
            buffers: vars
                .iter()
                .map(|(_, v)| vec![0.0; v.elem_count()])
                .collect(),
        }
    }

    /// Adds `grads` (vars without a gradient contribute zeros).
    pub fn add(&mut self, vars: &[(String, Var)], grads: &GradStore) -> Result<()> {
        for ((_, var), buf) in vars.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // CPU f32 gradients are read in place; others are copied to the host first.
            let (storage, layout) = g.storage_and_layout();
            if let (Storage::Cpu(CpuStorage::F32(data)), Some((from, to))) =
                (&*storage, layout.contiguous_offsets())
            {
                add_into(buf, &data[from..to]);
            } else {
                drop(storage);
                add_into(buf, &host_f32(g)?);
            }
        }
        Ok(())
    }

    pub fn buffers(&self) -> &[Vec<f32>] {
        &self.buffers
    }

    /// Global L2 norm (f64 accumulation); NaN/inf if any gradient is non-finite.
    pub fn global_norm(&self) -> f64 {
        self.buffers
            .par_iter()
            .map(|b| b.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
            .sum::<f64>()
            .sqrt()
    }

    /// Scales every gradient so the global norm is at most `max_norm` (torch's
    /// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when it is below 1). Returns the
    /// norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        if max_norm > 0.0 && norm.is_finite() {
            let factor = max_norm / (norm + 1e-6);
            if factor < 1.0 {
                let f = factor as f32;
                self.buffers
                    .par_iter_mut()
                    .for_each(|b| b.iter_mut().for_each(|x| *x *= f));
            }
        }
        norm
    }
}

/// AdamW with its moments in host f32 buffers, updating each `Var` in one fused pass.
#[derive(Debug)]
pub struct FusedAdamW {
    vars: Vec<(String, Var)>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: u64,
    pub config: AdamWConfig,
}

impl FusedAdamW {
    pub fn new(vars: Vec<(String, Var)>, config: AdamWConfig) -> Self {
        let zeros = |vars: &[(String, Var)]| -> Vec<Vec<f32>> {
            vars.iter()
                .map(|(_, v)| vec![0.0; v.elem_count()])
                .collect()
        };
        Self {
            m: zeros(&vars),
            v: zeros(&vars),
            vars,
            step: 0,
            config,
        }
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Applies one update with gradients `grads` (same order as `vars`).
    pub fn step(&mut self, grads: &GradAccumulator) -> Result<()> {
        self.step += 1;
        let c = &self.config;
        let t = self.step as i32;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let step_size = (c.lr / (1.0 - c.beta1.powi(t))) as f32;
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt() as f32;
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let eps = c.eps as f32;
        const CHUNK: usize = 1 << 14;
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let mut p = host_f32(var.as_tensor())?;
            let g = &grads.buffers()[i];
            p.par_chunks_mut(CHUNK)
                .zip(self.m[i].par_chunks_mut(CHUNK))
                .zip(self.v[i].par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for j in 0..p.len() {
                        m[j] = b1 * m[j] + (1.0 - b1) * g[j];
                        v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
                        let denom = v[j].sqrt() / bc2_sqrt + eps;
                        p[j] = p[j] * decay - step_size * m[j] / denom;
                    }
                });
            let updated = Tensor::from_vec(p, var.shape(), var.device())?.to_dtype(var.dtype())?;
            var.set(&updated)?;
        }
        Ok(())
    }
}
