//! Whisper's encoder and decoder in Burn, the same computation as the candle backend (both are
//! pinned to openai-whisper's `model.py`), so the two agree to float rounding.

use burn::tensor::module::{self, conv1d, layer_norm, linear};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{activation, Device, IndexingUpdateOp, Int, Tensor, TensorData};
use whisk_backend::{
    BackendError, DecodeStep, Result, SlotBatch, SlotTable, StepLayout, StepOutput,
};
use whisk_types::ModelDims;
use whisk_weights::{block_prefix, Side, WhisperWeights};

/// Whisper's layer norms use PyTorch's default epsilon.
const LN_EPS: f64 = 1e-5;

fn weights_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Compute(format!("loading weights: {e}"))
}

fn read_err(e: impl std::fmt::Debug) -> BackendError {
    BackendError::Compute(format!("reading a tensor back: {e:?}"))
}

struct Loader<'a> {
    weights: &'a WhisperWeights,
    device: &'a Device,
}

impl Loader<'_> {
    fn tensor<const D: usize>(&self, name: &str) -> Result<Tensor<D>> {
        let t = self.weights.get(name).map_err(weights_err)?;
        if t.shape.len() != D {
            return Err(weights_err(format!(
                "{name} has shape {:?}, expected {D} dimensions",
                t.shape
            )));
        }
        Ok(Tensor::from_data(
            TensorData::new(t.to_f32(), t.shape.clone()),
            self.device,
        ))
    }

    /// A PyTorch `[out, in]` weight as Burn's `[in, out]`, transposed on the host so the
    /// matmuls read it contiguously.
    fn linear_weight(&self, name: &str) -> Result<Tensor<2>> {
        let t = self.weights.get(name).map_err(weights_err)?;
        let [out, inp] = t.shape[..] else {
            return Err(weights_err(format!("{name} has shape {:?}", t.shape)));
        };
        let w = t.to_f32();
        let mut tr = vec![0f32; w.len()];
        for o in 0..out {
            for i in 0..inp {
                tr[i * out + o] = w[o * inp + i];
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(tr, [inp, out]),
            self.device,
        ))
    }

    fn linear(&self, prefix: &str) -> Result<Linear> {
        let bias = format!("{prefix}.bias");
        Ok(Linear {
            weight: self.linear_weight(&format!("{prefix}.weight"))?,
            bias: match self.weights.get_optional(&bias) {
                Some(_) => Some(self.tensor(&bias)?),
                None => None,
            },
        })
    }

    fn layer_norm(&self, prefix: &str) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.tensor(&format!("{prefix}.weight"))?,
            bias: self.tensor(&format!("{prefix}.bias"))?,
        })
    }
}

struct Linear {
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
}

impl Linear {
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.clone(), self.bias.clone())
    }
}

struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
}

impl LayerNorm {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        layer_norm(x, self.weight.clone(), Some(self.bias.clone()), LN_EPS)
    }
}

/// `[b, t, n_head * dh]` -> `[b, n_head, t, dh]`.
fn split_heads(x: Tensor<3>, n_head: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, n_head, d / n_head]).swap_dims(1, 2)
}

/// `[b, n_head, t, dh]` -> `[b, t, n_head * dh]`.
fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, t, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * dh])
}

/// Scaled dot-product attention; returns the merged output and the pre-softmax scores
/// `[b, h, t_q, t_k]` (scaled by 1/√dh, as openai's `qk`).
fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4>>,
) -> (Tensor<3>, Tensor<4>) {
    let dh = q.dims()[3];
    let mut qk = q.matmul(k.swap_dims(2, 3)) * (1.0 / (dh as f64).sqrt());
    if let Some(mask) = mask {
        qk = qk + mask;
    }
    let w = activation::softmax(qk.clone(), 3);
    (merge_heads(w.matmul(v)), qk)
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    n_head: usize,
}

impl Attention {
    fn load(l: &Loader, prefix: &str, n_head: usize) -> Result<Self> {
        Ok(Self {
            query: l.linear(&format!("{prefix}.query"))?,
            key: l.linear(&format!("{prefix}.key"))?,
            value: l.linear(&format!("{prefix}.value"))?,
            out: l.linear(&format!("{prefix}.out"))?,
            n_head,
        })
    }

    fn kv(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (
            split_heads(self.key.forward(x.clone()), self.n_head),
            split_heads(self.value.forward(x), self.n_head),
        )
    }

    /// Self-attention without a mask, whose scores nobody reads: Burn's fused attention
    /// (flash attention on long sequences, on the CPU and GPU backends alike), which never
    /// materialises the `[t, t]` score matrix of each head.
    fn attend_fused(&self, x: Tensor<3>) -> Tensor<3> {
        let q = split_heads(self.query.forward(x.clone()), self.n_head);
        let (k, v) = self.kv(x);
        let out = module::attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.out.forward(merge_heads(out))
    }

    fn attend(
        &self,
        x: Tensor<3>,
        k: Tensor<4>,
        v: Tensor<4>,
        mask: Option<Tensor<4>>,
    ) -> (Tensor<3>, Tensor<4>) {
        let q = split_heads(self.query.forward(x), self.n_head);
        let (out, qk) = attention(q, k, v, mask);
        (self.out.forward(out), qk)
    }
}

struct Mlp {
    ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2
            .forward(activation::gelu(self.fc1.forward(self.ln.forward(x))))
    }
}

struct Block {
    attn_ln: LayerNorm,
    attn: Attention,
    cross: Option<(LayerNorm, Attention)>,
    mlp: Mlp,
}

impl Block {
    fn load(l: &Loader, side: Side, layer: usize, n_head: usize) -> Result<Self> {
        let p = block_prefix(side, layer);
        let cross = match side {
            Side::Decoder => Some((
                l.layer_norm(&format!("{p}.cross_attn_ln"))?,
                Attention::load(l, &format!("{p}.cross_attn"), n_head)?,
            )),
            Side::Encoder => None,
        };
        Ok(Self {
            attn_ln: l.layer_norm(&format!("{p}.attn_ln"))?,
            attn: Attention::load(l, &format!("{p}.attn"), n_head)?,
            cross,
            mlp: Mlp {
                ln: l.layer_norm(&format!("{p}.mlp_ln"))?,
                fc1: l.linear(&format!("{p}.mlp.0"))?,
                fc2: l.linear(&format!("{p}.mlp.2"))?,
            },
        })
    }

    fn cross(&self) -> &(LayerNorm, Attention) {
        self.cross
            .as_ref()
            .expect("decoder blocks are loaded with cross-attention")
    }
}

/// A loaded Whisper model. Holds weights only; decodes keep their state in [`DecoderState`].
pub struct Whisper {
    pub dims: ModelDims,
    device: Device,
    conv1: (Tensor<3>, Tensor<1>),
    conv2: (Tensor<3>, Tensor<1>),
    enc_pos: Tensor<2>,
    enc_blocks: Vec<Block>,
    ln_post: LayerNorm,
    token_embedding: Tensor<2>,
    dec_pos: Tensor<2>,
    dec_blocks: Vec<Block>,
    ln: LayerNorm,
}

/// Per-decode state: every slot's cross-attention K/V and a self-attention cache with room
/// for the whole text context (see the candle backend; same layout).
pub struct DecoderState {
    /// Per layer: `[slots, n_head, n_audio_ctx, dh]` keys and values.
    cross: Vec<(Tensor<4>, Tensor<4>)>,
    /// Per layer: keys and values as `[slots * n_text_ctx, n_text_state]`, row
    /// `slot * n_text_ctx + position`, so that one indexed write stores every row's new
    /// tokens and one indexed read gathers what a step attends to (a kernel each on a GPU,
    /// not one per row).
    cache: Vec<(Tensor<2>, Tensor<2>)>,
    pub table: SlotTable,
}

/// Writes `value` into `t` at slot `slot` (dim 0), from `start` along dim 2.
fn put(t: &mut Tensor<4>, slot: usize, start: usize, value: Tensor<4>) {
    let [_, h, len, dh] = value.dims();
    t.inplace(|t| t.slice_assign([slot..slot + 1, 0..h, start..start + len, 0..dh], value));
}

/// Overwrites rows `rows` of `t` with `values` (one row each, rows distinct).
fn put_rows(t: &mut Tensor<2>, rows: Tensor<1, Int>, values: Tensor<2>) {
    t.inplace(|t| t.select_assign(0, rows, values, IndexingUpdateOp::Assign));
}

impl Whisper {
    pub fn load(weights: &WhisperWeights, device: &Device) -> Result<Self> {
        let l = Loader { weights, device };
        let dims = weights.dims.clone();
        let conv = |p: &str| -> Result<(Tensor<3>, Tensor<1>)> {
            Ok((
                l.tensor(&format!("{p}.weight"))?,
                l.tensor(&format!("{p}.bias"))?,
            ))
        };
        Ok(Self {
            conv1: conv("encoder.conv1")?,
            conv2: conv("encoder.conv2")?,
            enc_pos: l.tensor("encoder.positional_embedding")?,
            enc_blocks: (0..dims.n_audio_layer)
                .map(|i| Block::load(&l, Side::Encoder, i, dims.n_audio_head))
                .collect::<Result<_>>()?,
            ln_post: l.layer_norm("encoder.ln_post")?,
            token_embedding: l.tensor("decoder.token_embedding.weight")?,
            dec_pos: l.tensor("decoder.positional_embedding")?,
            dec_blocks: (0..dims.n_text_layer)
                .map(|i| Block::load(&l, Side::Decoder, i, dims.n_text_head))
                .collect::<Result<_>>()?,
            ln: l.layer_norm("decoder.ln")?,
            device: device.clone(),
            dims,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `[windows, n_mels, 3000]` -> `[windows, 1500, n_audio_state]` (openai `AudioEncoder`).
    pub fn encode(&self, mel: Tensor<3>) -> Tensor<3> {
        let conv = |x: Tensor<3>, (w, b): &(Tensor<3>, Tensor<1>), stride| {
            let options = ConvOptions::new([stride], [1], [1], 1);
            activation::gelu(conv1d(x, w.clone(), Some(b.clone()), options))
        };
        let x = conv(mel, &self.conv1, 1);
        let x = conv(x, &self.conv2, 2).swap_dims(1, 2);
        let mut x = x + self.enc_pos.clone().unsqueeze::<3>();
        for block in &self.enc_blocks {
            x = x.clone() + block.attn.attend_fused(block.attn_ln.forward(x));
            x = x.clone() + block.mlp.forward(x);
        }
        self.ln_post.forward(x)
    }

    pub fn new_decoder(&self, table: SlotTable) -> DecoderState {
        let d = &self.dims;
        let slots = table.slots();
        let dh = d.n_text_state / d.n_text_head;
        let cross = || Tensor::<4>::zeros([slots, d.n_text_head, d.n_audio_ctx, dh], &self.device);
        let cache = || Tensor::<2>::zeros([slots * d.n_text_ctx, d.n_text_state], &self.device);
        DecoderState {
            cross: (0..d.n_text_layer).map(|_| (cross(), cross())).collect(),
            cache: (0..d.n_text_layer).map(|_| (cache(), cache())).collect(),
            table,
        }
    }

    /// Computes the cross-attention K/V of `windows` of `encoded` into `slots`.
    pub fn attach(
        &self,
        state: &mut DecoderState,
        slots: &[usize],
        encoded: &Tensor<3>,
        windows: &[usize],
    ) {
        let audio = encoded.clone().select(0, self.indices(windows));
        for (block, (ck, cv)) in self.dec_blocks.iter().zip(&mut state.cross) {
            let (k, v) = block.cross().1.kv(audio.clone());
            for (i, &slot) in slots.iter().enumerate() {
                put(ck, slot, 0, k.clone().narrow(0, i, 1));
                put(cv, slot, 0, v.clone().narrow(0, i, 1));
            }
        }
        state.table.attached(slots);
    }

    /// Copies slot `from` into slot `to` for each move: cached tokens, and the cross K/V
    /// when the two slots attend to different windows.
    pub fn copy_slots(&self, state: &mut DecoderState, moves: &[(usize, usize)]) {
        let cross_moves = state.table.cross_moves(moves);
        // Cached tokens: every source row read (a copy) before any destination is written.
        let ctx = self.dims.n_text_ctx;
        let (mut from_rows, mut to_rows) = (Vec::new(), Vec::new());
        for &(from, to) in moves {
            let len = state.table.length(from);
            from_rows.extend(from * ctx..from * ctx + len);
            to_rows.extend(to * ctx..to * ctx + len);
        }
        if !from_rows.is_empty() {
            let (from_rows, to_rows) = (self.indices(&from_rows), self.indices(&to_rows));
            for (k, v) in &mut state.cache {
                for t in [k, v] {
                    let sources = t.clone().select(0, from_rows.clone());
                    put_rows(t, to_rows.clone(), sources);
                }
            }
        }
        // Sources are gathered (copied) before any destination is written: a view would keep
        // the tensor shared, and writing into a shared tensor copies all of it.
        let gathered = |t: &Tensor<4>, from: usize| t.clone().select(0, self.indices(&[from]));
        for (k, v) in &mut state.cross {
            for t in [k, v] {
                let sources: Vec<Tensor<4>> = cross_moves
                    .iter()
                    .map(|&(from, _)| gathered(t, from))
                    .collect();
                for (src, &(_, to)) in sources.into_iter().zip(&cross_moves) {
                    put(t, to, 0, src);
                }
            }
        }
        state.table.copied(moves);
    }

    fn indices(&self, values: &[usize]) -> Tensor<1, Int> {
        let values: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [n]), &self.device)
    }

    /// One decoder step over ragged rows (openai `TextDecoder.forward` with a kv-cache), laid
    /// out by [`StepLayout`] exactly as the candle backend does.
    pub fn decode_step(
        &self,
        state: &mut DecoderState,
        step: DecodeStep<'_>,
    ) -> Result<StepOutput> {
        let d = &self.dims;
        let rows = step.rows;
        let layout = StepLayout::new(&step, d.n_text_ctx);
        let (size, n, span) = (layout.size, layout.n, layout.span);
        let (gather, range) = match &layout.batch {
            SlotBatch::Gather(slots) => (Some(self.indices(slots)), (0, 0)),
            SlotBatch::Range { first, len } => (None, (*first, *len)),
        };
        let batch = |t: &Tensor<4>| match &gather {
            Some(idx) => t.clone().select(0, idx.clone()),
            None => t.clone().narrow(0, range.0, range.1),
        };
        let mask = Tensor::<4>::from_data(
            TensorData::new(layout.mask.clone(), [size, 1, n, span]),
            &self.device,
        );
        let as_index = |v: &[u32]| -> Vec<usize> { v.iter().map(|&t| t as usize).collect() };
        let tokens = self.indices(&as_index(&layout.tokens));
        let positions = self.indices(&as_index(&layout.positions));
        let mut x = (self.token_embedding.clone().select(0, tokens)
            + self.dec_pos.clone().select(0, positions))
        .reshape([size, n, d.n_text_state]);

        // The step's new tokens (flat rows of the padded `[size * n]` batch) and the cache
        // rows they go to; then the cache rows every computed row attends to.
        let ctx = d.n_text_ctx;
        let (mut new_rows, mut cache_rows) = (Vec::new(), Vec::new());
        for (r, row) in rows.iter().enumerate() {
            let b = layout.index[r];
            for j in 0..row.tokens.len() {
                new_rows.push(b * n + j);
                cache_rows.push(row.slot * ctx + row.position + j);
            }
        }
        // Every padded row is a token of its row: no gather needed.
        let all_new = new_rows.iter().copied().eq(0..size * n);
        let new_rows = self.indices(&new_rows);
        let cache_rows = self.indices(&cache_rows);
        let batch_slots: Vec<usize> = match &layout.batch {
            SlotBatch::Gather(slots) => slots.clone(),
            SlotBatch::Range { first, len } => (*first..first + len).collect(),
        };
        let attended: Vec<usize> = batch_slots
            .iter()
            .flat_map(|&slot| slot * ctx..slot * ctx + span)
            .collect();
        let attended = self.indices(&attended);
        let store = |t: &mut Tensor<2>, new: Tensor<3>| {
            let new = new.reshape([size * n, d.n_text_state]);
            let new = if all_new {
                new
            } else {
                new.select(0, new_rows.clone())
            };
            put_rows(t, cache_rows.clone(), new);
            let seen = t.clone().select(0, attended.clone());
            split_heads(seen.reshape([size, span, d.n_text_state]), d.n_text_head)
        };

        // Each chosen head's scores, copied out as its layer finishes.
        let mut qk_heads: Vec<Vec<f32>> = vec![Vec::new(); step.cross_qk_heads.len()];
        let mut frames = 0;
        for (layer, block) in self.dec_blocks.iter().enumerate() {
            let attn = &block.attn;
            let h = block.attn_ln.forward(x.clone());
            let q = split_heads(attn.query.forward(h.clone()), attn.n_head);
            let (k_cache, v_cache) = &mut state.cache[layer];
            let k = store(k_cache, attn.key.forward(h.clone()));
            let v = store(v_cache, attn.value.forward(h));
            let (out, _) = attention(q, k, v, Some(mask.clone()));
            x = x + attn.out.forward(out);

            let (cross_ln, cross) = block.cross();
            let (ck, cv) = &state.cross[layer];
            let (out, qk) = cross.attend(cross_ln.forward(x.clone()), batch(ck), batch(cv), None);
            x = x + out;
            for (i, &(l, head)) in step.cross_qk_heads.iter().enumerate() {
                if l == layer {
                    frames = qk.dims()[3];
                    let one = qk.clone().narrow(1, head, 1);
                    qk_heads[i] = one.try_into_vec_as::<f32>().map_err(read_err)?;
                }
            }
            x = x.clone() + block.mlp.forward(x);
        }
        state.table.stepped(&step);

        let x = self.ln.forward(x).reshape([size * n, d.n_text_state]);
        let logits = if layout.picks.is_empty() {
            vec![Vec::new(); rows.len()]
        } else {
            let picked = x.select(0, self.indices(&layout.picks));
            // `E · xᵀ`, transposing the few picked rows rather than the vocabulary matrix.
            let all = self
                .token_embedding
                .clone()
                .matmul(picked.transpose())
                .transpose()
                .try_into_vec_as::<f32>()
                .map_err(read_err)?;
            layout.split_logits(rows, &all, d.n_vocab)
        };

        let cross_qk = if qk_heads.is_empty() {
            Vec::new()
        } else {
            layout.split_cross_qk(rows, &qk_heads, frames)
        };
        Ok(StepOutput { logits, cross_qk })
    }
}
