//! Whisper's encoder and decoder in candle, pinned to openai-whisper's `model.py`.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::LayerNorm;
use whisk_backend::{DecodeStep, RowStep, SlotBatch, SlotTable, StepLayout, StepOutput};
use whisk_types::ModelDims;
use whisk_weights::{block_prefix, Side, WhisperWeights};

use crate::cpu_ops;
use crate::cross_attention;
use crate::encoder_attention;
use crate::entries::CrossEntries;
use crate::int8::{self, Linear, TokenEmbedding};
use whisk_int8::Int8Rows;
use whisk_weights::TensorData;

/// Whisper's layer norms use PyTorch's default epsilon.
const LN_EPS: f64 = 1e-5;

const EMBEDDING: &str = "decoder.token_embedding.weight";

struct Loader<'a> {
    weights: &'a WhisperWeights,
    device: &'a Device,
    dtype: DType,
    /// Linear layers and the token embedding in int8 (CPU, `f32` activations).
    int8: bool,
}

impl Loader<'_> {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let t = self
            .weights
            .get(name)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Tensor::from_vec(t.to_f32(), t.shape.as_slice(), self.device)?.to_dtype(self.dtype)
    }

    fn optional(&self, name: &str) -> Result<Option<Tensor>> {
        match self.weights.get_optional(name) {
            Some(_) => self.tensor(name).map(Some),
            None => Ok(None),
        }
    }

    fn linear(&self, prefix: &str) -> Result<Linear> {
        let (weight, bias) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let bias = self.optional(&bias)?;
        if self.int8 {
            Linear::int8(&self.int8_rows(&weight)?, bias)
        } else {
            Ok(Linear::float(self.tensor(&weight)?, bias))
        }
    }

    /// A matrix in int8: an int8 checkpoint's values as they are, others quantised.
    fn int8_rows(&self, name: &str) -> Result<Int8Rows> {
        let t = self
            .weights
            .get(name)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let [rows, cols] = t.shape[..] else {
            candle_core::bail!("`{name}` is not a matrix: {:?}", t.shape)
        };
        match &t.data {
            TensorData::I8 { values, row_scales } => {
                Int8Rows::from_quantized(values.clone(), row_scales.clone(), cols)
            }
            _ => Int8Rows::quantize(&t.to_f32(), rows, cols),
        }
        .map_err(int8::err)
    }

    fn layer_norm(&self, prefix: &str) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.tensor(&format!("{prefix}.weight"))?,
            self.tensor(&format!("{prefix}.bias"))?,
            LN_EPS,
        ))
    }
}

/// Heads whose encoder attention scores are held at once: 1500² floats each (9 MB).
const ENCODER_HEADS_AT_ONCE: usize = 2;

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    n_head: usize,
}

/// How a decoder step's rows read their windows' cross-attention keys and values: row `r`
/// reads the `of_row[r]`-th of the step's windows.
enum CrossReads {
    /// In place (a few tokens a row, on the CPU): `cross_attention.rs`.
    InPlace { of_row: Vec<usize> },
    /// Gathered into a copy a row, widened to the activations' type.
    Gathered { of_row: Vec<usize>, dtype: DType },
}

/// `[b, t, n_head * dh]` -> `[b, n_head, t, dh]`.
fn split_heads(x: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, n_head, d / n_head))?
        .transpose(1, 2)?
        .contiguous()
}

/// `[b, n_head, t, dh]` -> `[b, t, n_head * dh]`.
fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, dh) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * dh))
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

    /// Keys and values of `x`, split into heads.
    fn kv(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            split_heads(&self.key.forward(x)?, self.n_head)?,
            split_heads(&self.value.forward(x)?, self.n_head)?,
        ))
    }

    /// The encoder's self-attention of one window, `x` `[1, t, d]`: no scores returned (word
    /// timing reads the decoder's). On the CPU in f32, a block of rows at a time
    /// ([`encoder_attention`]); elsewhere only [`ENCODER_HEADS_AT_ONCE`] heads' scores held at
    /// a time, their softmax written over them.
    fn attend_encoder(&self, x: &Tensor) -> Result<Tensor> {
        let q = self.query.forward(x)?;
        if encoder_attention::applies(&q) {
            let (k, v) = (self.key.forward(x)?, self.value.forward(x)?);
            return self
                .out
                .forward(&encoder_attention::attend(&q, &k, &v, self.n_head)?);
        }
        let (k, v) = self.kv(x)?;
        let q = split_heads(&q, self.n_head)?;
        let q = (q * (1.0 / (k.dim(D::Minus1)? as f64).sqrt()))?;
        let heads: Vec<Tensor> = (0..self.n_head)
            .step_by(ENCODER_HEADS_AT_ONCE)
            .map(|first| {
                let n = ENCODER_HEADS_AT_ONCE.min(self.n_head - first);
                let part = |t: &Tensor| t.narrow(1, first, n);
                let scores = part(&q)?.matmul(&part(&k)?.t()?)?;
                cpu_ops::softmax_last_dim_in_place(scores)?.matmul(&part(&v)?)
            })
            .collect::<Result<_>>()?;
        self.out.forward(&merge_heads(&Tensor::cat(&heads, 1)?)?)
    }

    /// A decoder step's cross-attention of `h` `[b, n, d]` over the keys (stored transposed)
    /// and values of the windows `kv` its rows read (as `reads` says). `scores_of(head,
    /// scores)` sees each head's pre-softmax scores `[b, n, frames]`. Steps of many tokens a row (alignment passes) go one head at a
    /// time, the softmax written over the scores: all heads' scores and their softmax at once
    /// would be the decoder's peak of memory (2 × 11 MB a row for 300 letters in tiny).
    fn attend_cross(
        &self,
        h: &Tensor,
        kv: &[&(Tensor, Tensor)],
        reads: &CrossReads,
        mut scores_of: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let q = split_heads(&self.query.forward(h)?, self.n_head)?;
        let (out, qk) = match reads {
            CrossReads::InPlace { of_row } => {
                let (out, qk) = cross_attention::attend_entries(&q, kv, of_row)?;
                (merge_heads(&out)?, qk)
            }
            CrossReads::Gathered { of_row, dtype } => {
                let gather = |part: fn(&(Tensor, Tensor)) -> &Tensor| {
                    let rows: Vec<&Tensor> = of_row.iter().map(|&w| part(kv[w])).collect();
                    Tensor::cat(&rows, 0)?.to_dtype(*dtype)
                };
                let (k_t, v) = (gather(|kv| &kv.0)?, gather(|kv| &kv.1)?);
                if q.dim(2)? > cross_attention::MAX_TOKENS {
                    return self.attend_head_by_head(&q, &k_t, &v, scores_of);
                }
                attention(&q, &k_t.transpose(2, 3)?, &v, None)?
            }
        };
        for head in 0..self.n_head {
            scores_of(head, &qk.i((.., head))?)?;
        }
        self.out.forward(&out)
    }

    /// Scaled dot-product attention of `q` `[b, h, n, dh]` over keys `k_t` `[b, h, dh, frames]`
    /// and values, one head at a time.
    fn attend_head_by_head(
        &self,
        q: &Tensor,
        k_t: &Tensor,
        v: &Tensor,
        mut scores_of: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let q = (q * (1.0 / (q.dim(D::Minus1)? as f64).sqrt()))?;
        let heads: Vec<Tensor> = (0..self.n_head)
            .map(|head| {
                let part = |t: &Tensor| t.narrow(1, head, 1);
                let scores = part(&q)?.matmul(&part(k_t)?)?;
                scores_of(head, &scores.squeeze(1)?)?;
                cpu_ops::softmax_last_dim_in_place(scores)?.matmul(&part(v)?)
            })
            .collect::<Result<_>>()?;
        self.out.forward(&merge_heads(&Tensor::cat(&heads, 1)?)?)
    }
}

/// Scaled dot-product attention of `q` `[b, h, t_q, dh]` over `k`/`v` `[b, h, t_k, dh]`.
/// Returns the merged output `[b, t_q, h * dh]` and the pre-softmax scores `[b, h, t_q, t_k]`
/// (scaled by 1/√dh, as openai's `qk`). `k` and `v` may be views into a larger cache.
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let dh = q.dim(D::Minus1)?;
    // Scaling the queries rather than the scores saves a pass over `[t_q, t_k]`.
    let mut qk = (q * (1.0 / (dh as f64).sqrt()))?.matmul(&k.t()?)?;
    if let Some(mask) = mask {
        qk = qk.broadcast_add(mask)?;
    }
    let w = cpu_ops::softmax_last_dim(&qk)?;
    Ok((merge_heads(&w.matmul(v)?)?, qk))
}

struct Mlp {
    ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&cpu_ops::gelu_erf_in_place(
            self.fc1.forward(&self.ln.forward(x)?)?,
        )?)
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
}

/// A loaded Whisper model. Holds weights only; decodes keep their state in [`DecoderState`].
pub struct Whisper {
    pub dims: ModelDims,
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    enc_pos: Tensor,
    enc_blocks: Vec<Block>,
    ln_post: LayerNorm,
    token_embedding: TokenEmbedding,
    dec_pos: Tensor,
    dec_blocks: Vec<Block>,
    ln: LayerNorm,
    /// The activations' type (and the self-attention cache's).
    dtype: DType,
    /// The slots' cross-attention K/V's: f16 with int8 layers, which the in-place kernels
    /// widen as they load it, else `dtype`. They are most of a slot's memory (1500 frames
    /// against at most 448 tokens); TIMIT's word times are the same as in f32.
    cross_dtype: DType,
}

/// One window's cross-attention K/V, per layer: keys `[1, n_head, dh, n_audio_ctx]`
/// (transposed: what `q · Kᵀ` reads in order) and values `[1, n_head, n_audio_ctx, dh]`, in
/// `Whisper::cross_dtype`.
type CrossKv = Vec<(Tensor, Tensor)>;

/// Per-decode state. Every slot reads its window's cross-attention K/V (an entry that slots
/// of one window share) and has its own self-attention cache, grown with the longest row,
/// so rows join and leave without moving others.
pub struct DecoderState {
    /// Each entry's K/V, `None` once no slot reads it: a tensor each, freed with its window,
    /// so memory follows the windows in flight (one tensor for all, grown by doubling, held
    /// 16 windows, 147 MB, at the 160 TIMIT files' beam-5 peak, where at most 11 are read).
    cross: Vec<Option<CrossKv>>,
    /// The entry of `cross` each slot reads.
    entries: CrossEntries,
    /// Per layer: `[slots, n_head, positions, dh]` keys and values, `positions` grown to the
    /// longest row so far (up to `n_text_ctx`): most windows need a quarter of the context.
    /// Kept in the activations' type even with int8 layers: in f16 it cut the 160 TIMIT
    /// files' peak RSS at beam 5 from 645 to 542 MB but raised their WER from 18.53% to
    /// 20.35% (greedy 19.09% to 19.58%), where f16 cross K/V changed nothing.
    cache: Vec<(Tensor, Tensor)>,
    pub table: SlotTable,
}

/// Self-attention positions a decoder holds before a row needs more, and the step it grows
/// by (every slot grows with the longest decoding row, under 200 positions; alignment
/// passes, up to 300, keep no cache and grow nothing).
const FIRST_CACHED_POSITIONS: usize = 64;
const CACHE_GROWTH: usize = 64;

impl DecoderState {
    /// Makes room for `positions` cached tokens a slot, up to `n_text_ctx`.
    fn grow_cache(&mut self, positions: usize, n_text_ctx: usize) -> Result<()> {
        let room = |_| positions.next_multiple_of(CACHE_GROWTH).min(n_text_ctx);
        grow_along(&mut self.cache, 2, positions, room)
    }

    /// Frees the K/V of the entries no slot reads.
    fn drop_unread(&mut self) {
        for (entry, kv) in self.cross.iter_mut().enumerate() {
            if !self.entries.is_read(entry) {
                *kv = None;
            }
        }
    }
}

/// Widens every tensor of `pairs` along `axis` to `room(have)` when it holds fewer than
/// `needed`, keeping what they hold.
fn grow_along(
    pairs: &mut [(Tensor, Tensor)],
    axis: usize,
    needed: usize,
    room: impl Fn(usize) -> usize,
) -> Result<()> {
    let Some((k, _)) = pairs.first() else {
        return Ok(());
    };
    let have = k.dim(axis)?;
    if needed <= have {
        return Ok(());
    }
    let room = room(have);
    for (k, v) in pairs {
        for t in [k, v] {
            let mut dims = t.dims().to_vec();
            dims[axis] = room;
            let grown = Tensor::zeros(dims, t.dtype(), t.device())?;
            grown.slice_set(t, axis, 0)?;
            *t = grown;
        }
    }
    Ok(())
}

/// Writes each row's new keys and values into its slot's cache at its position, and returns
/// the cached keys and values the step's rows attend to.
fn cached_keys_and_values(
    (k_cache, v_cache): &(Tensor, Tensor),
    (k_new, v_new): (&Tensor, &Tensor),
    layout: &StepLayout,
    rows: &[RowStep<'_>],
) -> Result<(Tensor, Tensor)> {
    for (r, row) in rows.iter().enumerate() {
        let len = row.tokens.len();
        for (cache, new) in [(k_cache, k_new), (v_cache, v_new)] {
            let src = new
                .narrow(0, layout.index[r], 1)?
                .narrow(2, 0, len)?
                .contiguous()?;
            cache
                .narrow(0, row.slot, 1)?
                .slice_set(&src, 2, row.position)?;
        }
    }
    Ok((
        seen(&layout.batch, k_cache, layout.span)?,
        seen(&layout.batch, v_cache, layout.span)?,
    ))
}

/// The first `span` cached positions of the stepped slots, `[size, heads, span, dh]`: slots
/// apart are gathered position-range by position-range, so only what is attended to is
/// copied (gathering whole slots copied all 448 positions: 220 MB a step at beam 5).
fn seen(batch: &SlotBatch, cache: &Tensor, span: usize) -> Result<Tensor> {
    match batch {
        SlotBatch::Range { first, len } => cache.narrow(0, *first, *len)?.narrow(2, 0, span),
        SlotBatch::Gather(slots) => {
            let parts = slots
                .iter()
                .map(|&s| cache.narrow(0, s, 1)?.narrow(2, 0, span))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)
        }
    }
}

/// The windows a step's batch reads, each once, and the one each row reads (its index in
/// them). A slot riding along unstepped inside a range may read none, and reads the batch's
/// first window for nothing.
fn step_windows<'s>(
    state: &'s DecoderState,
    batch: &SlotBatch,
) -> Result<(Vec<&'s CrossKv>, Vec<usize>)> {
    let slots = match batch {
        SlotBatch::Range { first, len } => (*first..first + len).collect::<Vec<_>>(),
        SlotBatch::Gather(slots) => slots.clone(),
    };
    let Some(fallback) = slots.iter().find_map(|&s| state.entries.of(s)) else {
        candle_core::bail!("a decoder step with no window attached");
    };
    let mut entries: Vec<usize> = Vec::new();
    let mut of_row = Vec::with_capacity(slots.len());
    for &slot in &slots {
        let entry = state.entries.of(slot).unwrap_or(fallback);
        of_row.push(match entries.iter().position(|&e| e == entry) {
            Some(i) => i,
            None => {
                entries.push(entry);
                entries.len() - 1
            }
        });
    }
    let windows = entries
        .iter()
        .map(|&e| {
            state.cross[e]
                .as_ref()
                .expect("an entry a slot reads is kept")
        })
        .collect();
    Ok((windows, of_row))
}

impl Whisper {
    /// The model on `device` in `dtype`, its linear layers in int8 when `int8` (CPU only;
    /// `dtype` is then `f32`).
    pub fn load(
        weights: &WhisperWeights,
        device: &Device,
        dtype: DType,
        int8: bool,
    ) -> Result<Self> {
        if int8 && (!device.is_cpu() || dtype != DType::F32) {
            candle_core::bail!("int8 layers run on the CPU with f32 activations");
        }
        let l = Loader {
            weights,
            device,
            dtype,
            int8,
        };
        let dims = weights.dims.clone();
        let conv = |p: &str| -> Result<(Tensor, Tensor)> {
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
            token_embedding: if int8 {
                TokenEmbedding::int8(l.int8_rows(EMBEDDING)?)?
            } else {
                TokenEmbedding::Float(l.tensor(EMBEDDING)?)
            },
            dec_pos: l.tensor("decoder.positional_embedding")?,
            dec_blocks: (0..dims.n_text_layer)
                .map(|i| Block::load(&l, Side::Decoder, i, dims.n_text_head))
                .collect::<Result<_>>()?,
            ln: l.layer_norm("decoder.ln")?,
            dims,
            dtype,
            cross_dtype: match int8 {
                true => cross_attention::CACHE_DTYPE,
                false => dtype,
            },
        })
    }

    /// `[windows, n_mels, 3000]` -> `[windows, 1500, n_audio_state]` (openai `AudioEncoder`),
    /// one window at a time: every layer's buffers (the MLP's hidden layer is 9 MB a window
    /// in tiny, an attention head's scores 9 MB) are then held for one window, not the batch,
    /// for the same work.
    pub fn encode(&self, mel: &Tensor) -> Result<Tensor> {
        let windows = (0..mel.dim(0)?)
            .map(|w| self.encode_window(&mel.narrow(0, w, 1)?))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&windows, 0)
    }

    fn encode_window(&self, mel: &Tensor) -> Result<Tensor> {
        let conv = |x: &Tensor, (w, b): &(Tensor, Tensor), stride| -> Result<Tensor> {
            cpu_ops::gelu_erf_in_place(
                x.conv1d(w, 1, stride, 1, 1)?
                    .broadcast_add(&b.reshape((1, (), 1))?)?,
            )
        };
        let x = conv(mel, &self.conv1, 1)?;
        let x = conv(&x, &self.conv2, 2)?.transpose(1, 2)?;
        let mut x = x.broadcast_add(&self.enc_pos)?;
        for block in &self.enc_blocks {
            let h = block.attn_ln.forward(&x)?;
            x = (x + block.attn.attend_encoder(&h)?)?;
            x = (&x + block.mlp.forward(&x)?)?;
        }
        self.ln_post.forward(&x)
    }

    pub fn new_decoder(&self, table: SlotTable, device: &Device) -> Result<DecoderState> {
        let slots = table.slots();
        let d = &self.dims;
        let dh = d.n_text_state / d.n_text_head;
        let dtype = self.dtype;
        let zeros = |len| Tensor::zeros((slots, d.n_text_head, len, dh), dtype, device);
        let pair = |len| -> Result<(Tensor, Tensor)> { Ok((zeros(len)?, zeros(len)?)) };
        Ok(DecoderState {
            cross: Vec::new(),
            cache: (0..d.n_text_layer)
                .map(|_| pair(FIRST_CACHED_POSITIONS.min(d.n_text_ctx)))
                .collect::<Result<_>>()?,
            entries: CrossEntries::new(slots),
            table,
        })
    }

    /// Computes the cross-attention K/V of `windows` of `encoded` into a fresh entry for each
    /// of `slots`.
    pub fn attach(
        &self,
        state: &mut DecoderState,
        slots: &[usize],
        encoded: &Tensor,
        windows: &[usize],
    ) -> Result<()> {
        let idx: Vec<u32> = windows.iter().map(|&w| w as u32).collect();
        let idx = Tensor::new(idx.as_slice(), encoded.device())?;
        let audio = encoded.index_select(&idx, 0)?;
        // What the slots read before is let go of first, not kept beside its successor
        // (kept, the 160 TIMIT files' greedy peak RSS rose from 324 to 342 MB).
        self.release(state, slots);
        let windows = self.cross_kv(&audio)?;
        for (&slot, kv) in slots.iter().zip(windows) {
            let entry = state.entries.fresh(slot);
            if state.cross.len() <= entry {
                state.cross.resize(entry + 1, None);
            }
            state.cross[entry] = Some(kv);
        }
        state.table.attached(slots);
        Ok(())
    }

    /// The cross-attention K/V of each window of `audio` `[windows, frames, d]`. A window's
    /// keys (transposed) and values of every layer are one allocation, `[1, 2 * layers,
    /// heads, dh * frames]`, written layer by layer, so that no window-sized temporary sits
    /// beside the decoder's state (built whole and then copied, the 160 TIMIT files' greedy
    /// peak RSS rose by 16 MB).
    fn cross_kv(&self, audio: &Tensor) -> Result<Vec<CrossKv>> {
        let d = &self.dims;
        let (layers, heads, frames) = (self.dec_blocks.len(), d.n_text_head, d.n_audio_ctx);
        let dh = d.n_text_state / heads;
        let (dtype, windows) = (self.cross_dtype, audio.dim(0)?);
        let owned: Vec<Tensor> = (0..windows)
            .map(|_| Tensor::zeros((1, 2 * layers, heads, dh * frames), dtype, audio.device()))
            .collect::<Result<_>>()?;
        for (l, block) in self.dec_blocks.iter().enumerate() {
            let (k, v) = cross_attention(block).kv(audio)?;
            let flat = |t: Tensor| t.to_dtype(dtype)?.reshape((windows, 1, heads, ()));
            let (k, v) = (flat(k.transpose(2, 3)?.contiguous()?)?, flat(v)?);
            for (i, own) in owned.iter().enumerate() {
                own.slice_set(&k.narrow(0, i, 1)?, 1, 2 * l)?;
                own.slice_set(&v.narrow(0, i, 1)?, 1, 2 * l + 1)?;
            }
        }
        let layer = |own: &Tensor, l: usize| -> Result<(Tensor, Tensor)> {
            let part =
                |at, shape: (usize, usize, usize, usize)| own.narrow(1, at, 1)?.reshape(shape);
            Ok((
                part(2 * l, (1, heads, dh, frames))?,
                part(2 * l + 1, (1, heads, frames, dh))?,
            ))
        };
        owned
            .iter()
            .map(|own| (0..layers).map(|l| layer(own, l)).collect())
            .collect()
    }

    /// `slots` read no window and hold no tokens any more.
    pub fn release(&self, state: &mut DecoderState, slots: &[usize]) {
        for &slot in slots {
            state.entries.release(slot);
        }
        state.drop_unread();
        state.table.released(slots);
    }

    /// Copies slot `from` into slot `to` for each move: its cached tokens; `to` then reads
    /// `from`'s cross K/V entry.
    pub fn copy_slots(&self, state: &mut DecoderState, moves: &[(usize, usize)]) -> Result<()> {
        let snapshot = |t: &Tensor, from: usize, len: usize| -> Result<Tensor> {
            t.narrow(0, from, 1)?.narrow(2, 0, len)?.force_contiguous()
        };
        for (k, v) in &state.cache {
            for t in [k, v] {
                let sources: Vec<Option<Tensor>> = moves
                    .iter()
                    .map(|&(from, _)| {
                        let len = state.table.length(from);
                        (len > 0).then(|| snapshot(t, from, len)).transpose()
                    })
                    .collect::<Result<_>>()?;
                for (src, &(_, to)) in sources.iter().zip(moves) {
                    if let Some(src) = src {
                        t.narrow(0, to, 1)?.slice_set(src, 2, 0)?;
                    }
                }
            }
        }
        state.entries.share(moves);
        state.drop_unread();
        state.table.copied(moves);
        Ok(())
    }

    /// One decoder step (openai `TextDecoder.forward` with a kv-cache) over ragged rows: each
    /// row's tokens are padded to the longest, written into its slot's cache at its own
    /// position, and masked so that every query sees only its own row's past.
    pub fn decode_step(
        &self,
        state: &mut DecoderState,
        step: DecodeStep<'_>,
        device: &Device,
    ) -> Result<StepOutput> {
        let d = &self.dims;
        let rows = step.rows;
        let layout = StepLayout::new(&step, d.n_text_ctx);
        if step.keep_cache {
            let longest = rows.iter().map(|r| r.position + r.tokens.len());
            state.grow_cache(longest.max().unwrap_or(0), d.n_text_ctx)?;
        }
        let (size, n, span) = (layout.size, layout.n, layout.span);
        let (windows, of_row) = step_windows(state, &layout.batch)?;
        let reads =
            if device.is_cpu() && self.dtype == DType::F32 && n <= cross_attention::MAX_TOKENS {
                CrossReads::InPlace { of_row }
            } else {
                CrossReads::Gathered {
                    of_row,
                    dtype: self.dtype,
                }
            };
        let dtype = self.dtype;
        let mask = Tensor::from_slice(&layout.mask, (size, 1, n, span), device)?.to_dtype(dtype)?;
        let positions = Tensor::from_slice(&layout.positions, size * n, device)?;
        let mut x = (self.token_embedding.embed(&layout.tokens, device)?
            + self.dec_pos.index_select(&positions, 0)?)?
        .reshape((size, n, ()))?;

        let mut cross_qk = match step.cross_qk_heads.len() {
            0 => Vec::new(),
            heads => layout.empty_cross_qk(rows, heads, d.n_audio_ctx),
        };
        for (layer, block) in self.dec_blocks.iter().enumerate() {
            let attn = &block.attn;
            let h = block.attn_ln.forward(&x)?;
            let q = split_heads(&attn.query.forward(&h)?, attn.n_head)?;
            let (k_new, v_new) = attn.kv(&h)?;
            let (out, _) = if step.keep_cache {
                let (k, v) =
                    cached_keys_and_values(&state.cache[layer], (&k_new, &v_new), &layout, rows)?;
                attention(&q, &k, &v, Some(&mask))?
            } else {
                // Every row starts at position 0: its past is this step's own tokens, and an
                // alignment pass of 300 letters no longer grows every slot's cache.
                attention(&q, &k_new, &v_new, Some(&mask))?
            };
            x = (x + attn.out.forward(&out)?)?;

            let (cross_ln, cross) = block
                .cross
                .as_ref()
                .expect("decoder blocks have cross-attention");
            let h = cross_ln.forward(&x)?;
            let kv: Vec<&(Tensor, Tensor)> = windows.iter().map(|w| &w[layer]).collect();
            let out = cross.attend_cross(&h, &kv, &reads, |head, scores| {
                // Chosen heads go straight into the rows' scores: no layer's scores are kept.
                if let Some(i) = step.cross_qk_heads.iter().position(|&c| c == (layer, head)) {
                    let scores = scores
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    layout.put_cross_qk(&mut cross_qk, i, &scores);
                }
                Ok(())
            })?;
            x = (x + out)?;
            x = (&x + block.mlp.forward(&x)?)?;
        }
        state.table.stepped(&step);

        let x = self.ln.forward(&x)?.reshape((size * n, ()))?;
        let logits = if layout.picks.is_empty() {
            vec![Vec::new(); rows.len()]
        } else {
            let picks: Vec<u32> = layout.picks.iter().map(|&p| p as u32).collect();
            let picks = Tensor::new(picks.as_slice(), device)?;
            let all = self
                .token_embedding
                .logits(&x.index_select(&picks, 0)?)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            layout.split_logits(rows, &all, d.n_vocab)
        };

        Ok(StepOutput { logits, cross_qk })
    }
}

fn cross_attention(block: &Block) -> &Attention {
    &block
        .cross
        .as_ref()
        .expect("decoder blocks have cross-attention")
        .1
}
