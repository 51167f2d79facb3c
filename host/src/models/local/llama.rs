//! A llama-family transformer over GGUF weights, with a KV cache that can be
//! cut back to any length.
//!
//! candle-transformers has a quantized llama, but its cache only grows: it
//! cannot drop the tail of a conversation that the next request rewrote (a
//! processor edited the reply, an action was rendered differently), and it
//! cannot take a chunk of tokens on top of a non-empty cache. Both are what
//! prefix reuse across the steps of a task needs, so the forward pass is
//! written here on candle-core and candle-nn kernels (quantized matmul,
//! RMS norm, interleaved rope, softmax), about as long as that file.
//!
//! Layout choices:
//! - The cache is one preallocated buffer per layer, grown by doubling and
//!   written in place (`slice_set`), so appending a token does not copy
//!   the history; truncating only moves the length.
//! - Grouped-query attention folds the query heads that share a key/value
//!   head into the row dimension instead of copying keys and values once per
//!   query head.
//! - The token embedding stays quantized; rows are dequantized on lookup, and
//!   the same tensor serves as the output head when the file ties them.
//! - Q4_1 matrices are re-quantized to Q8_0 at load (optional, on by
//!   default): candle's CPU kernel for Q4_1 is scalar, its Q8_0 kernel uses
//!   SIMD, and Q8_0 holds every Q4_1 value almost exactly. It costs memory
//!   (8.5 instead of 5 bits a weight) and buys speed; see the module docs of
//!   [`super`] for the measured numbers.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use super::error::LocalError;
use super::gguf::{GgufFile, Hyper};

/// How the layers' weight matrices are held in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Matrices {
    /// Dequantized to f32 and multiplied by the `gemm` crate, which picks
    /// AVX2/AVX-512/FMA kernels at run time.
    #[default]
    Dense,
    /// Re-quantized to Q8_0 (nearly lossless from 4- and 5-bit formats) for
    /// candle's AVX2 kernel, which it selects at run time.
    Q8,
    /// Kept as stored in the file.
    Quantized,
}

/// How to load the weights.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    pub matrices: Matrices,
}

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
}

/// The loaded weights. Immutable: all state lives in a [`KvCache`].
pub struct Llama {
    pub hyper: Hyper,
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: Tensor,
    head: QMatMul,
    /// The head in f32, for scoring several rows at once (dense loads only).
    head_dense: Option<Tensor>,
    /// Rope tables for every position of the window: (window, head_dim / 2).
    cos: Tensor,
    sin: Tensor,
    pub window: usize,
}

impl Llama {
    /// Load every weight of `file`; `window` caps the context (at most the
    /// trained length).
    pub fn load(file: &mut GgufFile, hyper: Hyper, window: usize, options: LoadOptions) -> Result<Llama, LocalError> {
        let h = &hyper;
        let (d, kv) = (h.n_embd, h.n_kv_head * h.head_dim);
        let matrix = |file: &mut GgufFile, name: &str, shape: [usize; 2]| -> Result<QMatMul, LocalError> {
            let tensor = file.tensor(name, &shape)?;
            let bad = |e: candle_core::Error| file.bad(format!("tensor `{name}`: {e}"));
            match options.matrices {
                Matrices::Dense => Ok(QMatMul::Tensor(tensor.dequantize(&Device::Cpu).map_err(bad)?)),
                Matrices::Q8 if tensor.dtype() != GgmlDType::Q8_0 => {
                    let dense = tensor.dequantize(&Device::Cpu).map_err(bad)?;
                    QMatMul::from_qtensor(QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(bad)?).map_err(bad)
                }
                Matrices::Q8 | Matrices::Quantized => QMatMul::from_qtensor(tensor).map_err(bad),
            }
        };
        let vector = |file: &mut GgufFile, name: &str| -> Result<Tensor, LocalError> {
            let tensor = file.tensor(name, &[d])?;
            tensor.dequantize(&Device::Cpu).map_err(|e| file.bad(format!("tensor `{name}`: {e}")))
        };
        let embed = Arc::new(file.tensor("token_embd.weight", &[h.vocab_size, d])?);
        let mut layers = Vec::with_capacity(h.n_layer);
        for i in 0..h.n_layer {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            layers.push(Layer {
                attn_norm: vector(file, &name("attn_norm"))?,
                wq: matrix(file, &name("attn_q"), [d, d])?,
                wk: matrix(file, &name("attn_k"), [kv, d])?,
                wv: matrix(file, &name("attn_v"), [kv, d])?,
                wo: matrix(file, &name("attn_output"), [d, d])?,
                ffn_norm: vector(file, &name("ffn_norm"))?,
                w_gate: matrix(file, &name("ffn_gate"), [h.n_ff, d])?,
                w_up: matrix(file, &name("ffn_up"), [h.n_ff, d])?,
                w_down: matrix(file, &name("ffn_down"), [d, h.n_ff])?,
            });
        }
        let norm = vector(file, "output_norm.weight")?;
        // The head stays quantized: it is the largest matrix and, run for
        // one row at a time, bound by memory rather than arithmetic.
        let head = match file.has_tensor("output.weight") {
            true => Arc::new(file.tensor("output.weight", &[h.vocab_size, d])?),
            false => Arc::clone(&embed),
        };
        let head_dense = match options.matrices {
            Matrices::Dense => {
                Some(head.dequantize(&Device::Cpu).map_err(|e| file.bad(format!("the output head: {e}")))?)
            }
            _ => None,
        };
        let head = QMatMul::from_arc(head).map_err(|e| file.bad(format!("the output head: {e}")))?;
        let (cos, sin) =
            rope_tables(h.head_dim, h.rope_base, window).map_err(|e| file.bad(format!("rope tables: {e}")))?;
        Ok(Llama { hyper, embed, layers, norm, head, head_dense, cos, sin, window })
    }

    /// A cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache { layers: (0..self.layers.len()).map(|_| None).collect(), len: 0 }
    }

    /// Run `tokens` at positions `cache.positions()..`, append their keys
    /// and values to `cache`, and return the last position's logits, (1, vocab).
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32]) -> candle_core::Result<Tensor> {
        let (t, past) = (tokens.len(), cache.len);
        if t == 0 {
            candle_core::bail!("forward needs at least one token");
        }
        if past + t > self.window {
            candle_core::bail!("positions {past}..{} exceed the window of {}", past + t, self.window);
        }
        let positions: Vec<u32> = (past..past + t).map(|p| p as u32).collect();
        let mask = (t > 1).then(|| Mask::causal(t, past));
        let x = self.layers_forward(cache, tokens, &positions, mask)?;
        cache.len = past + t;
        self.logits(&x.narrow(1, t - 1, 1)?)
    }

    /// Run several independent continuations of the cached sequence in one
    /// pass: each branch sees the cache and its own earlier tokens only (a
    /// tree mask), at the positions it would have alone. Returns each
    /// branch's logits (rows = its length); the cache is left as it was.
    pub fn forward_branches(&self, cache: &mut KvCache, branches: &[&[u32]]) -> candle_core::Result<Vec<Tensor>> {
        let past = cache.len;
        let tokens: Vec<u32> = branches.iter().flat_map(|b| b.iter().copied()).collect();
        if branches.iter().any(|b| b.is_empty()) {
            candle_core::bail!("every branch needs at least one token");
        }
        let longest = branches.iter().map(|b| b.len()).max().unwrap_or(0);
        if past + longest > self.window {
            candle_core::bail!("positions {past}..{} exceed the window of {}", past + longest, self.window);
        }
        let positions: Vec<u32> = branches.iter().flat_map(|b| (past..past + b.len()).map(|p| p as u32)).collect();
        let result = self.layers_forward(cache, &tokens, &positions, Some(Mask::branches(branches, past)));
        // The branches' keys were written past the end; forget them.
        cache.len = past;
        let logits = self.logits(&result?)?;
        let mut out = Vec::with_capacity(branches.len());
        let mut start = 0;
        for branch in branches {
            out.push(logits.narrow(0, start, branch.len())?);
            start += branch.len();
        }
        Ok(out)
    }

    /// The transformer layers over `tokens` at `positions`, writing keys and
    /// values at `cache.len..`; returns the hidden states (1, t, d).
    fn layers_forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        positions: &[u32],
        mask: Option<Mask>,
    ) -> candle_core::Result<Tensor> {
        let h = &self.hyper;
        let (t, past) = (tokens.len(), cache.len);
        let n_rep = h.n_head / h.n_kv_head;
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?; // (1, t, d)
        let (cos, sin) = match positions.first() {
            Some(&first) if positions.iter().enumerate().all(|(i, &p)| p as usize == first as usize + i) => {
                (self.cos.narrow(0, first as usize, t)?, self.sin.narrow(0, first as usize, t)?)
            }
            _ => {
                let index = Tensor::new(positions, &Device::Cpu)?;
                (self.cos.index_select(&index, 0)?, self.sin.index_select(&index, 0)?)
            }
        };
        let mask = mask.map(|m| m.tensor(n_rep)).transpose()?;
        let scale = 1.0 / (h.head_dim as f64).sqrt();
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let residual = &x;
            let hidden = candle_nn::ops::rms_norm(&x, &layer.attn_norm, h.rms_eps)?;
            let heads = |w: &QMatMul, n: usize| -> candle_core::Result<Tensor> {
                w.forward(&hidden)?.reshape((1, t, n, h.head_dim))?.transpose(1, 2)?.contiguous()
            };
            let q = candle_nn::rotary_emb::rope_i(&heads(&layer.wq, h.n_head)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&heads(&layer.wk, h.n_kv_head)?, &cos, &sin)?;
            let v = heads(&layer.wv, h.n_kv_head)?;
            let (k_t, v) = append(slot, past, &k.t()?.contiguous()?, &v)?;
            // Query heads sharing a key/value head become extra rows.
            let q = q.reshape((1, h.n_kv_head, n_rep * t, h.head_dim))?;
            let scores = (q.matmul(&k_t)? * scale)?;
            let scores = match &mask {
                Some(mask) => scores.broadcast_add(mask)?,
                None => scores,
            };
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            let attended = weights.matmul(&v)?; // (1, kv_heads, n_rep * t, head_dim)
            let attended =
                attended.reshape((1, h.n_head, t, h.head_dim))?.transpose(1, 2)?.reshape((1, t, h.n_embd))?;
            x = (residual + layer.wo.forward(&attended)?)?;
            let hidden = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, h.rms_eps)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&hidden)?)?;
            let up = layer.w_up.forward(&hidden)?;
            x = (&x + layer.w_down.forward(&(gate * up)?)?)?;
        }
        Ok(x)
    }

    /// Final norm and output head: (1, rows, d) to (rows, vocab). Several
    /// rows go through the dense copy of the head when there is one.
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = candle_nn::ops::rms_norm(x, &self.norm, self.hyper.rms_eps)?;
        match &self.head_dense {
            Some(dense) if x.dim(1)? > 1 => x.squeeze(0)?.matmul(&dense.t()?),
            _ => self.head.forward(&x)?.squeeze(0),
        }
    }
}

/// Which keys each new row may attend to, beyond the `past` cached ones.
enum Mask {
    /// Row `i` sees new rows `0..=i`.
    Causal { t: usize, past: usize },
    /// Rows are branches laid end to end; each sees its own earlier rows.
    Branches { lengths: Vec<usize>, past: usize },
}

impl Mask {
    fn causal(t: usize, past: usize) -> Mask {
        Mask::Causal { t, past }
    }

    fn branches(branches: &[&[u32]], past: usize) -> Mask {
        Mask::Branches { lengths: branches.iter().map(|b| b.len()).collect(), past }
    }

    /// The additive mask (n_rep * t, past + t), each row block repeated for
    /// the folded query heads.
    fn tensor(&self, n_rep: usize) -> candle_core::Result<Tensor> {
        let (t, past) = match self {
            Mask::Causal { t, past } => (*t, *past),
            Mask::Branches { lengths, past } => (lengths.iter().sum(), *past),
        };
        let width = past + t;
        let mut block = vec![0.0f32; t * width];
        match self {
            Mask::Causal { .. } => {
                for i in 0..t {
                    block[i * width + past + i + 1..(i + 1) * width].fill(f32::NEG_INFINITY);
                }
            }
            Mask::Branches { lengths, .. } => {
                let mut start = 0;
                for &len in lengths {
                    for i in start..start + len {
                        let row = &mut block[i * width + past..(i + 1) * width];
                        row[..start].fill(f32::NEG_INFINITY);
                        row[i + 1..].fill(f32::NEG_INFINITY);
                    }
                    start += len;
                }
            }
        }
        let rows = block.repeat(n_rep);
        Tensor::from_vec(rows, (n_rep * t, width), &Device::Cpu)
    }
}

/// The key/value history of one token sequence.
pub struct KvCache {
    /// Per layer: the transposed key buffer (1, kv_heads, head_dim, capacity)
    /// and the value buffer (1, kv_heads, capacity, head_dim).
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn positions(&self) -> usize {
        self.len
    }

    /// Forget every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Make this cache hold the first `len` positions of `other`.
    pub fn copy_prefix(&mut self, other: &KvCache, len: usize) -> candle_core::Result<()> {
        let len = len.min(other.len);
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            if let Some((k, v)) = theirs {
                let k = k.narrow(3, 0, len)?.contiguous()?;
                let v = v.narrow(2, 0, len)?.contiguous()?;
                self.len = 0;
                append(mine, 0, &k, &v)?;
            }
        }
        self.len = len;
        Ok(())
    }
}

/// Write keys `k_t` (1, kv_heads, head_dim, t) and values `v` (1, kv_heads,
/// t, head_dim) at position `past` of a layer's buffers, growing them when
/// full, and return views of positions `0..past + t` in the same layouts.
/// Keys are kept transposed so that `q · kᵀ` reads them with unit stride.
fn append(
    slot: &mut Option<(Tensor, Tensor)>,
    past: usize,
    k_t: &Tensor,
    v: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (_, heads, t, dim) = v.dims4()?;
    let needed = past + t;
    let capacity = slot.as_ref().map_or(0, |(_, v)| v.dim(2).unwrap_or(0));
    if needed > capacity {
        let grown = needed.next_power_of_two().max(256);
        let fresh_k = Tensor::zeros((1, heads, dim, grown), DType::F32, &Device::Cpu)?;
        let fresh_v = Tensor::zeros((1, heads, grown, dim), DType::F32, &Device::Cpu)?;
        if let (Some((old_k, old_v)), true) = (slot.as_ref(), past > 0) {
            fresh_k.slice_set(&old_k.narrow(3, 0, past)?.contiguous()?, 3, 0)?;
            fresh_v.slice_set(&old_v.narrow(2, 0, past)?.contiguous()?, 2, 0)?;
        }
        *slot = Some((fresh_k, fresh_v));
    }
    let (buf_k, buf_v) = slot.as_ref().expect("allocated above");
    buf_k.slice_set(k_t, 3, past)?;
    buf_v.slice_set(v, 2, past)?;
    Ok((buf_k.narrow(3, 0, needed)?, buf_v.narrow(2, 0, needed)?))
}

/// Rope cosines and sines for positions `0..window`, (window, head_dim / 2).
fn rope_tables(head_dim: usize, base: f32, window: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / head_dim as f32)).collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), &Device::Cpu)?;
    let positions = Tensor::arange(0u32, window as u32, &Device::Cpu)?.to_dtype(DType::F32)?.reshape((window, 1))?;
    let angles = positions.broadcast_mul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}
