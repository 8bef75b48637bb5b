//! Gradient accumulation and a fused AdamW over `Var` storage.
//!
//! candle's `AdamW` builds about fifteen temporary tensors per parameter per step, which
//! dominates a step at ~50M parameters (stack.md §6.3). Here gradients are accumulated into
//! f32 buffers, the global norm is clipped, and the AdamW update runs as one pass over each
//! parameter before being written back with `Var::set`. For CPU vars the buffers and moments
//! are host memory updated in place (parallel over chunks with rayon); for GPU vars they are
//! f32 tensors on the device ([`Placement`]), so nothing crosses to the host per step.

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

/// Elements per rayon task in the host loops.
const CHUNK: usize = 1 << 14;

/// `acc += x`, in parallel.
fn add_into(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, x)| *a += x));
}

/// Where gradient sums and AdamW moments live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Host f32 buffers updated in place, in parallel: vars on the CPU.
    Host,
    /// f32 tensors on the vars' device, updated with tensor ops: vars on a GPU, whose
    /// gradients and weights would otherwise cross to the host and back every step (83% of a
    /// GPU training step in session 2's H100 measurement).
    Device,
}

impl Placement {
    /// `Host` when every var is on the CPU.
    pub fn for_vars(vars: &[(String, Var)]) -> Self {
        if vars.iter().all(|(_, v)| v.device().is_cpu()) {
            Placement::Host
        } else {
            Placement::Device
        }
    }
}

/// One var's gradient sum.
#[derive(Debug)]
enum GradBuffer {
    Host(Vec<f32>),
    Device(Tensor),
}

/// Sums gradients of several backward passes, one f32 buffer per var.
#[derive(Debug)]
pub struct GradAccumulator {
    buffers: Vec<GradBuffer>,
}

impl GradAccumulator {
    pub fn new(vars: &[(String, Var)], placement: Placement) -> Result<Self> {
        let buffers = vars
            .iter()
            .map(|(_, v)| {
                Ok(match placement {
                    Placement::Host => GradBuffer::Host(vec![0.0; v.elem_count()]),
                    Placement::Device => {
                        GradBuffer::Device(Tensor::zeros(v.shape(), DType::F32, v.device())?)
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { buffers })
    }

    /// Adds `grads` (vars without a gradient contribute zeros).
    pub fn add(&mut self, vars: &[(String, Var)], grads: &GradStore) -> Result<()> {
        for ((_, var), buf) in vars.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let buf = match buf {
                GradBuffer::Device(acc) => {
                    *acc = (&*acc + g.to_dtype(DType::F32)?)?;
                    continue;
                }
                GradBuffer::Host(buf) => buf,
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

    /// Global L2 norm (f64 accumulation); NaN/inf if any gradient is non-finite. On the host,
    /// fixed chunks are summed in parallel and added in order, so the norm (and hence the
    /// clipped update) has the same bits on every run and thread count.
    pub fn global_norm(&self) -> Result<f64> {
        let mut host = 0.0;
        let mut device = Vec::new();
        for buf in &self.buffers {
            match buf {
                GradBuffer::Host(b) => {
                    let partials: Vec<f64> = b
                        .par_chunks(CHUNK)
                        .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum())
                        .collect();
                    host += partials.iter().sum::<f64>();
                }
                GradBuffer::Device(t) => device.push(t.to_dtype(DType::F64)?.sqr()?.sum_all()?),
            }
        }
        if !device.is_empty() {
            // One device-to-host transfer for all the per-var sums.
            host += Tensor::stack(&device, 0)?.sum_all()?.to_scalar::<f64>()?;
        }
        Ok(host.sqrt())
    }

    /// Scales every gradient so the global norm is at most `max_norm` (torch's
    /// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when it is below 1). Returns the
    /// norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> Result<f64> {
        let norm = self.global_norm()?;
        if max_norm > 0.0 && norm.is_finite() {
            let factor = max_norm / (norm + 1e-6);
            if factor < 1.0 {
                for buf in &mut self.buffers {
                    match buf {
                        GradBuffer::Host(b) => {
                            let f = factor as f32;
                            b.par_iter_mut().for_each(|x| *x *= f);
                        }
                        GradBuffer::Device(t) => *t = t.affine(factor, 0.0)?,
                    }
                }
            }
        }
        Ok(norm)
    }
}

/// One var's AdamW moments.
#[derive(Debug)]
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Device { m: Tensor, v: Tensor },
}

/// One var's name, first moment and second moment (CPU f32), as [`FusedAdamW::state`] has them.
pub type VarMoments = (String, Tensor, Tensor);

/// AdamW whose moments live where [`Placement`] says, updating each `Var` in one pass (host:
/// one fused loop per parameter chunk; device: a handful of tensor ops per var).
#[derive(Debug)]
pub struct FusedAdamW {
    vars: Vec<(String, Var)>,
    moments: Vec<Moments>,
    placement: Placement,
    step: u64,
    pub config: AdamWConfig,
}

impl FusedAdamW {
    /// Moments on the host for CPU vars, on the device otherwise.
    pub fn new(vars: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let placement = Placement::for_vars(&vars);
        Self::with_placement(vars, config, placement)
    }

    pub fn with_placement(
        vars: Vec<(String, Var)>,
        config: AdamWConfig,
        placement: Placement,
    ) -> Result<Self> {
        let moments = vars
            .iter()
            .map(|(_, var)| {
                let n = var.elem_count();
                Ok(match placement {
                    Placement::Host => Moments::Host {
                        m: vec![0.0; n],
                        v: vec![0.0; n],
                    },
                    Placement::Device => Moments::Device {
                        m: Tensor::zeros(var.shape(), DType::F32, var.device())?,
                        v: Tensor::zeros(var.shape(), DType::F32, var.device())?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            moments,
            placement,
            step: 0,
            config,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Where the moments live.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// An empty gradient sum over this optimizer's vars, where [`Self::step`] reads it.
    pub fn grad_accumulator(&self) -> Result<GradAccumulator> {
        GradAccumulator::new(&self.vars, self.placement)
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The step count and every var's first and second moments as CPU f32 tensors, by var
    /// name: what a trainer persists to resume after a crash exactly where it stopped.
    pub fn state(&self) -> Result<(u64, Vec<VarMoments>)> {
        let mut out = Vec::with_capacity(self.vars.len());
        for ((name, var), moments) in self.vars.iter().zip(&self.moments) {
            let cpu = candle_core::Device::Cpu;
            let (m, v) = match moments {
                Moments::Host { m, v } => (
                    Tensor::from_slice(m, var.shape(), &cpu)?,
                    Tensor::from_slice(v, var.shape(), &cpu)?,
                ),
                Moments::Device { m, v } => (m.to_device(&cpu)?, v.to_device(&cpu)?),
            };
            out.push((name.clone(), m, v));
        }
        Ok((self.step, out))
    }

    /// Restores what [`Self::state`] returned; every var needs both moments of its shape.
    pub fn restore(&mut self, step: u64, state: &[VarMoments]) -> Result<()> {
        let by_name: std::collections::HashMap<&str, (&Tensor, &Tensor)> =
            state.iter().map(|(n, m, v)| (n.as_str(), (m, v))).collect();
        for ((name, var), moments) in self.vars.iter().zip(self.moments.iter_mut()) {
            let Some((m, v)) = by_name.get(name.as_str()) else {
                candle_core::bail!("optimizer state lacks the moments of `{name}`");
            };
            if m.dims() != var.dims() || v.dims() != var.dims() {
                candle_core::bail!(
                    "optimizer state of `{name}` has shape {:?}, the var {:?}",
                    m.dims(),
                    var.dims()
                );
            }
            *moments = match moments {
                Moments::Host { .. } => Moments::Host {
                    m: host_f32(m)?,
                    v: host_f32(v)?,
                },
                Moments::Device { .. } => Moments::Device {
                    m: m.to_dtype(DType::F32)?.to_device(var.device())?,
                    v: v.to_dtype(DType::F32)?.to_device(var.device())?,
                },
            };
        }
        self.step = step;
        Ok(())
    }

    /// Applies one update with gradients `grads` (same order as `vars`, same placement).
    pub fn step(&mut self, grads: &GradAccumulator) -> Result<()> {
        self.step += 1;
        let c = &self.config;
        let t = self.step as i32;
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let step_size = (c.lr / (1.0 - c.beta1.powi(t))) as f32;
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt() as f32;
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        let eps = c.eps as f32;
        for (((name, var), moments), g) in self
            .vars
            .iter()
            .zip(self.moments.iter_mut())
            .zip(&grads.buffers)
        {
            let updated = match (moments, g) {
                (Moments::Host { m, v }, GradBuffer::Host(g)) => {
                    let mut p = host_f32(var.as_tensor())?;
                    p.par_chunks_mut(CHUNK)
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(v.par_chunks_mut(CHUNK))
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|(((p, m), v), g)| {
                            for j in 0..p.len() {
                                m[j] = b1 * m[j] + (1.0 - b1) * g[j];
                                v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
                                let denom = v[j].sqrt() / bc2_sqrt + eps;
                                p[j] = p[j] * decay - step_size * m[j] / denom;
                            }
                        });
                    Tensor::from_vec(p, var.shape(), var.device())?
                }
                (Moments::Device { m, v }, GradBuffer::Device(g)) => {
                    // The host loop's formula, one tensor op per term.
                    *m = (m.affine(b1 as f64, 0.0)? + g.affine((1.0 - b1) as f64, 0.0)?)?;
                    *v = (v.affine(b2 as f64, 0.0)? + g.sqr()?.affine((1.0 - b2) as f64, 0.0)?)?;
                    let denom = v.sqrt()?.affine(1.0 / bc2_sqrt as f64, eps as f64)?;
                    let p = var.as_tensor().to_dtype(DType::F32)?;
                    (p.affine(decay as f64, 0.0)?
                        - (&*m / denom)?.affine(step_size as f64, 0.0)?)?
                }
                _ => candle_core::bail!(
                    "AdamW moments of `{name}` and its gradient sum are on different placements"
                ),
            };
            var.set(&updated.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Vars of a few shapes with deterministic values.
    fn vars() -> Vec<(String, Var)> {
        [(3usize, 5usize), (7, 2), (1, 11)]
            .iter()
            .enumerate()
            .map(|(i, &(r, c))| {
                let values: Vec<f32> = (0..r * c)
                    .map(|j| ((i * 31 + j * 7) % 13) as f32 / 13.0 - 0.4)
                    .collect();
                let t = Tensor::from_vec(values, (r, c), &Device::Cpu).unwrap();
                (format!("w{i}"), Var::from_tensor(&t).unwrap())
            })
            .collect()
    }

    /// Loss Σ (w · k + w² / 2) over the vars: gradient k + w, different on every step.
    fn backward(vars: &[(String, Var)], k: f64) -> GradStore {
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for (_, v) in vars {
            let w = v.as_tensor();
            let term = ((w * k).unwrap() + (w.sqr().unwrap() * 0.5).unwrap()).unwrap();
            loss = (loss + term.sum_all().unwrap()).unwrap();
        }
        loss.backward().unwrap()
    }

    fn run(placement: Placement, max_norm: f64) -> (Vec<Vec<f32>>, Vec<f64>) {
        let vars = vars();
        let config = AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        };
        let mut opt = FusedAdamW::with_placement(vars.clone(), config, placement).unwrap();
        let mut norms = Vec::new();
        for step in 0..3 {
            let mut acc = GradAccumulator::new(&vars, placement).unwrap();
            for micro in 0..2 {
                acc.add(
                    &vars,
                    &backward(&vars, (step * 2 + micro) as f64 * 0.3 + 0.1),
                )
                .unwrap();
            }
            norms.push(acc.clip_global_norm(max_norm).unwrap());
            opt.step(&acc).unwrap();
        }
        let weights = vars
            .iter()
            .map(|(_, v)| host_f32(v.as_tensor()).unwrap())
            .collect();
        (weights, norms)
    }

    /// The device placement (tensor ops; forced here on the CPU, what a GPU trainer runs)
    /// computes what the host loop computes: same clipped norms, same updates to f32 rounding.
    #[test]
    fn device_placement_matches_the_host_loop() {
        for max_norm in [0.0, 0.5] {
            let (host, host_norms) = run(Placement::Host, max_norm);
            let (device, device_norms) = run(Placement::Device, max_norm);
            for (a, b) in host_norms.iter().zip(&device_norms) {
                assert!((a - b).abs() <= 1e-6 * a.abs(), "norms {a} vs {b}");
            }
            let initial = vars();
            for ((h, d), (_, w0)) in host.iter().zip(&device).zip(&initial) {
                let w0 = host_f32(w0.as_tensor()).unwrap();
                for ((h, d), w0) in h.iter().zip(d).zip(&w0) {
                    assert!((h - d).abs() <= 1e-6, "{h} vs {d} (max_norm {max_norm})");
                    assert!((h - w0).abs() > 1e-4, "every weight moved");
                }
            }
        }
    }

    #[test]
    fn host_norm_has_the_same_bits_on_any_thread_count() {
        let values: Vec<f32> = (0..300_001u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0 - 0.5) * 1e-3)
            .collect();
        let t = Tensor::from_vec(values, 300_001, &Device::Cpu).unwrap();
        let vars = vec![("g".to_string(), Var::from_tensor(&t).unwrap())];
        let mut acc = GradAccumulator::new(&vars, Placement::Host).unwrap();
        acc.add(&vars, &backward_of_sum(&vars)).unwrap();
        let norms: Vec<u64> = [1, 2, 3, 7]
            .iter()
            .map(|&threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| acc.global_norm().unwrap().to_bits())
            })
            .collect();
        assert!(norms.iter().all(|&n| n == norms[0]), "{norms:?}");
        assert!(f64::from_bits(norms[0]) > 0.0);
    }

    /// Gradient of Σ w²/2: w itself.
    fn backward_of_sum(vars: &[(String, Var)]) -> GradStore {
        let w = vars[0].1.as_tensor();
        (w.sqr().unwrap() * 0.5)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn mixed_placements_are_refused_with_the_var_name() {
        let vars = vars();
        let mut opt =
            FusedAdamW::with_placement(vars.clone(), AdamWConfig::default(), Placement::Device)
                .unwrap();
        let acc = GradAccumulator::new(&vars, Placement::Host).unwrap();
        let e = opt.step(&acc).unwrap_err().to_string();
        assert!(e.contains("`w0`"), "{e}");
    }
}
