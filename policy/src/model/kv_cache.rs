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
}
