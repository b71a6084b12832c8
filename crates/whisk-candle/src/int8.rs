//! Linear layers and the token embedding in int8 on the CPU ([`ComputeType::Int8`]): each
//! layer's weight is quantised once at load and kept only in the kernel's packed layout; the
//! activations stay `f32` between layers (see `whisk-int8`).
//!
//! [`ComputeType::Int8`]: whisk_types::ComputeType::Int8

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Module, Result, Shape, Tensor};
use whisk_int8::{Int8Linear, Int8Rows};

use crate::cpu_ops::contiguous_f32;

pub fn err(e: whisk_int8::Int8Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// A linear layer in the model's float type (candle's) or in int8.
pub enum Linear {
    Float(candle_nn::Linear),
    Int8(Int8Op),
}

impl Linear {
    /// `weight` `[out, in]` and `bias` `[out]` in the model's float type.
    pub fn float(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::Float(candle_nn::Linear::new(weight, bias))
    }

    /// An int8 layer over `weight`'s rows as output features.
    pub fn int8(weight: &Int8Rows, bias: Option<Tensor>) -> Result<Self> {
        let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
        Ok(Self::Int8(Int8Op(
            Int8Linear::new(weight, bias).map_err(err)?,
        )))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Float(l) => l.forward(x),
            Linear::Int8(op) => x.contiguous()?.apply_op1_no_bwd(op),
        }
    }
}

pub struct Int8Op(Int8Linear);

impl CustomOp1 for Int8Op {
    fn name(&self) -> &'static str {
        "whisk-int8-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout)?;
        let mut dims = layout.shape().dims().to_vec();
        let k = dims.pop().unwrap_or(1);
        if k != self.0.in_features() {
            candle_core::bail!("int8 linear: {k} inputs, expected {}", self.0.in_features());
        }
        let rows = dims.iter().product();
        let y = self.0.forward(x, rows).map_err(err)?;
        dims.push(self.0.out_features());
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

/// The token embedding `E` `[vocab, d]`: looked up by token, and multiplied by the decoder's
/// output for the logits (`x·Eᵀ`).
pub enum TokenEmbedding {
    Float(Tensor),
    /// Plain rows for lookups and the same values packed for the logits: 2×vocab×d bytes,
    /// half of `f32`'s 4×.
    Int8 {
        rows: Int8Rows,
        logits: Box<Int8Op>,
    },
}

impl TokenEmbedding {
    pub fn int8(rows: Int8Rows) -> Result<Self> {
        let logits = Box::new(Int8Op(Int8Linear::new(&rows, None).map_err(err)?));
        Ok(Self::Int8 { rows, logits })
    }

    /// `[tokens.len(), d]`.
    pub fn embed(&self, tokens: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Self::Float(e) => e.index_select(&Tensor::new(tokens, device)?, 0),
            Self::Int8 { rows, .. } => {
                let d = rows.cols();
                let mut out = vec![0f32; tokens.len() * d];
                for (&t, out) in tokens.iter().zip(out.chunks_mut(d.max(1))) {
                    if t as usize >= rows.rows() {
                        candle_core::bail!("token {t} is outside the vocabulary");
                    }
                    rows.dequantize_row(t as usize, out);
                }
                Tensor::from_vec(out, (tokens.len(), d), device)
            }
        }
    }

    /// Logits `[rows, vocab]` of decoder outputs `x` `[rows, d]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            // `E · xᵀ` rather than `x · Eᵀ`: with the vocabulary as the long side of the
            // product, candle's gemm runs 2-2.5x faster for a handful of rows.
            Self::Float(e) => e.matmul(&x.t()?)?.t(),
            Self::Int8 { logits, .. } => x.contiguous()?.apply_op1_no_bwd(logits.as_ref()),
        }
    }
}
