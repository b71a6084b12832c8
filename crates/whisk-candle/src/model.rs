//! Whisper's encoder and decoder in candle, pinned to openai-whisper's `model.py`.

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::{LayerNorm, Linear};
use whisk_backend::{CrossQk, DecodeStep, StepOutput};
use whisk_types::ModelDims;
use whisk_weights::{block_prefix, Side, WhisperWeights};

/// Whisper's layer norms use PyTorch's default epsilon.
const LN_EPS: f64 = 1e-5;

struct Loader<'a> {
    weights: &'a WhisperWeights,
    device: &'a Device,
    dtype: DType,
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
        Ok(Linear::new(
            self.tensor(&format!("{prefix}.weight"))?,
            self.optional(&format!("{prefix}.bias"))?,
        ))
    }

    fn layer_norm(&self, prefix: &str) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.tensor(&format!("{prefix}.weight"))?,
            self.tensor(&format!("{prefix}.bias"))?,
            LN_EPS,
        ))
    }
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
    n_head: usize,
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

    /// Attention of `x`'s queries over `k`/`v`. Returns the output and the pre-softmax scores
    /// `[b, n_head, t_q, t_k]` (scaled by 1/√dh, as openai's `qk`).
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let q = split_heads(&self.query.forward(x)?, self.n_head)?;
        let dh = q.dim(D::Minus1)?;
        let mut qk = (q.matmul(&k.t()?)? * (1.0 / (dh as f64).sqrt()))?;
        if let Some(mask) = mask {
            qk = qk.broadcast_add(mask)?;
        }
        let w = candle_nn::ops::softmax_last_dim(&qk)?;
        let out = merge_heads(&w.matmul(v)?)?;
        Ok((self.out.forward(&out)?, qk))
    }
}

struct Mlp {
    ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&self.fc1.forward(&self.ln.forward(x)?)?.gelu_erf()?)
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
    token_embedding: Tensor,
    dec_pos: Tensor,
    dec_blocks: Vec<Block>,
    ln: LayerNorm,
}

/// Per-decode state: cross-attention K/V of each row's window and the self-attention cache.
pub struct DecoderState {
    cross_kv: Vec<(Tensor, Tensor)>,
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    rows: usize,
    offset: usize,
}

impl DecoderState {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Tokens already in the cache.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl Whisper {
    pub fn load(weights: &WhisperWeights, device: &Device, dtype: DType) -> Result<Self> {
        let l = Loader {
            weights,
            device,
            dtype,
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
            token_embedding: l.tensor("decoder.token_embedding.weight")?,
            dec_pos: l.tensor("decoder.positional_embedding")?,
            dec_blocks: (0..dims.n_text_layer)
                .map(|i| Block::load(&l, Side::Decoder, i, dims.n_text_head))
                .collect::<Result<_>>()?,
            ln: l.layer_norm("decoder.ln")?,
            dims,
        })
    }

    /// `[windows, n_mels, 3000]` -> `[windows, 1500, n_audio_state]` (openai `AudioEncoder`).
    pub fn encode(&self, mel: &Tensor) -> Result<Tensor> {
        let conv = |x: &Tensor, (w, b): &(Tensor, Tensor), stride| -> Result<Tensor> {
            x.conv1d(w, 1, stride, 1, 1)?
                .broadcast_add(&b.reshape((1, (), 1))?)?
                .gelu_erf()
        };
        let x = conv(mel, &self.conv1, 1)?;
        let x = conv(&x, &self.conv2, 2)?.transpose(1, 2)?;
        let mut x = x.broadcast_add(&self.enc_pos)?;
        for block in &self.enc_blocks {
            let h = block.attn_ln.forward(&x)?;
            let (k, v) = block.attn.kv(&h)?;
            x = (x + block.attn.attend(&h, &k, &v, None)?.0)?;
            x = (&x + block.mlp.forward(&x)?)?;
        }
        self.ln_post.forward(&x)
    }

    pub fn start_decoder(&self, encoded: &Tensor, windows: &[usize]) -> Result<DecoderState> {
        let idx: Vec<u32> = windows.iter().map(|&w| w as u32).collect();
        let idx = Tensor::new(idx.as_slice(), encoded.device())?;
        let audio = encoded.index_select(&idx, 0)?;
        let cross_kv = self
            .dec_blocks
            .iter()
            .map(|b| {
                b.cross
                    .as_ref()
                    .expect("decoder blocks have cross-attention")
                    .1
                    .kv(&audio)
            })
            .collect::<Result<_>>()?;
        Ok(DecoderState {
            cross_kv,
            self_kv: vec![None; self.dec_blocks.len()],
            rows: windows.len(),
            offset: 0,
        })
    }

    /// One decoder step (openai `TextDecoder.forward` with a kv-cache).
    pub fn decode_step(
        &self,
        state: &mut DecoderState,
        step: DecodeStep<'_>,
        device: &Device,
    ) -> Result<StepOutput> {
        let rows = step.rows;
        let n = step.tokens.len() / rows;
        let tokens = Tensor::from_slice(step.tokens, (rows, n), device)?;
        let emb = self
            .token_embedding
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((rows, n, ()))?;
        let mut x = emb.broadcast_add(&self.dec_pos.narrow(0, state.offset, n)?)?;

        // New token i sees every cached position and new positions up to itself.
        let mask = if n > 1 {
            let past = state.offset;
            let m: Vec<f32> = (0..n)
                .flat_map(|i| {
                    (0..past + n).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(m, (n, past + n), device)?.to_dtype(x.dtype())?)
        } else {
            None
        };

        let mut qk_parts: Vec<Option<Tensor>> = vec![None; step.cross_qk_heads.len()];
        for (layer, block) in self.dec_blocks.iter().enumerate() {
            let h = block.attn_ln.forward(&x)?;
            let (k_new, v_new) = block.attn.kv(&h)?;
            let (k, v) = match &state.self_kv[layer] {
                Some((k, v)) => (Tensor::cat(&[k, &k_new], 2)?, Tensor::cat(&[v, &v_new], 2)?),
                None => (k_new, v_new),
            };
            x = (x + block.attn.attend(&h, &k, &v, mask.as_ref())?.0)?;
            state.self_kv[layer] = Some((k, v));

            let (cross_ln, cross) = block
                .cross
                .as_ref()
                .expect("decoder blocks have cross-attention");
            let (ck, cv) = &state.cross_kv[layer];
            let (out, qk) = cross.attend(&cross_ln.forward(&x)?, ck, cv, None)?;
            x = (x + out)?;
            for (i, &(l, head)) in step.cross_qk_heads.iter().enumerate() {
                if l == layer {
                    qk_parts[i] = Some(qk.i((.., head))?.to_dtype(DType::F32)?);
                }
            }
            x = (&x + block.mlp.forward(&x)?)?;
        }
        state.offset += n;

        let x = self.ln.forward(&x)?;
        let logits = if step.logits_at.is_empty() {
            Vec::new()
        } else {
            let pos: Vec<u32> = step.logits_at.iter().map(|&p| p as u32).collect();
            let pos = Tensor::new(pos.as_slice(), device)?;
            let picked = x.index_select(&pos, 1)?; // [rows, npos, d]
            picked
                .broadcast_matmul(&self.token_embedding.t()?)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
        };

        let cross_qk = if qk_parts.is_empty() {
            Vec::new()
        } else {
            // [heads, rows, n, frames] -> one CrossQk per row.
            let parts: Vec<Tensor> = qk_parts
                .into_iter()
                .map(|p| p.expect("every head's layer was visited"))
                .collect();
            let all = Tensor::stack(&parts, 0)?.transpose(0, 1)?.contiguous()?; // [rows, heads, n, frames]
            let frames = all.dim(3)?;
            (0..rows)
                .map(|r| {
                    Ok(CrossQk {
                        heads: parts.len(),
                        tokens: n,
                        frames,
                        data: all.i(r)?.flatten_all()?.to_vec1::<f32>()?,
                    })
                })
                .collect::<Result<_>>()?
        };
        Ok(StepOutput { logits, cross_qk })
    }
}
