//! A key/value cache preallocated to its full capacity: each step writes the new keys and
//! values in place (`slice_set`), so decoding never re-concatenates the whole cache.

use candle_core::{Result, Tensor};

use super::Model;

/// Per-layer `[batch, kv_heads, capacity, head_dim]` key and value buffers.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
    batch: usize,
}

impl KvCache {
    /// An empty cache for `batch` rows of up to `capacity` positions, in the model's dtype.
    pub fn new(model: &Model, batch: usize, capacity: usize) -> Result<Self> {
        let cfg = model.config();
        let shape = (batch, cfg.num_key_value_heads, capacity, cfg.head_dim);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, model.dtype(), model.device())?,
                    Tensor::zeros(shape, model.dtype(), model.device())?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity,
            batch,
        })
    }

    /// Positions filled so far (the same for every row).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub(crate) fn layers(&self) -> impl Iterator<Item = (&Tensor, &Tensor)> {
        self.layers.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn advance(&mut self, len: usize) {
        self.len += len;
    }

    /// A new cache (same capacity and length) holding the given rows of this one, in order.
    /// Repeating a row expands a one-row prefill into a group; dropping rows compacts the
    /// batch when sequences finish.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        let device = self
            .layers
            .first()
            .map(|(k, _)| k.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let index = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &device,
        )?;
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.index_select(&index, 0)?, v.index_select(&index, 0)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: self.len,
            capacity: self.capacity,
            batch: rows.len(),
        })
    }

    /// A cache for a batch of groups whose prompts differ in length: part `i` is a filled
    /// one-row (prefill) cache repeated `repeats` times, its positions written at the right end
    /// of the first `width` slots (slots `width - len_i..width`; the ones before stay zero and
    /// are masked). Keys keep the RoPE of their true positions, so a row attends exactly as in
    /// its own cache. The new cache has length `width` and `capacity` slots.
    pub fn left_padded(parts: &[(&KvCache, usize)], width: usize, capacity: usize) -> Result<Self> {
        let Some((first, _)) = parts.first() else {
            candle_core::bail!("left_padded: no parts");
        };
        let batch = parts.iter().map(|(_, r)| r).sum();
        let mut layers = Vec::with_capacity(first.layers.len());
        for l in 0..first.layers.len() {
            let mut ks = Vec::with_capacity(parts.len());
            let mut vs = Vec::with_capacity(parts.len());
            for (part, repeats) in parts {
                if part.batch != 1 || part.len > width || width > capacity {
                    candle_core::bail!(
                        "left_padded: a part of {} rows × {} positions into width {width}, capacity {capacity}",
                        part.batch,
                        part.len
                    );
                }
                let pad = |t: &Tensor| -> Result<Tensor> {
                    let (_, h, _, d) = t.dims4()?;
                    let z = |n: usize| Tensor::zeros((1, h, n, d), t.dtype(), t.device());
                    let row = Tensor::cat(
                        &[
                            &z(width - part.len)?,
                            &t.narrow(2, 0, part.len)?,
                            &z(capacity - width)?,
                        ],
                        2,
                    )?;
                    row.repeat((*repeats, 1, 1, 1))
                };
                let (k, v) = &part.layers[l];
                ks.push(pad(k)?);
                vs.push(pad(v)?);
            }
            layers.push((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?));
        }
        Ok(Self {
            layers,
            len: width,
            capacity,
            batch,
        })
    }
}
