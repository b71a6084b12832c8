//! Candle backend for whisk.
//!
//! Our own Whisper forward pass (candle-transformers' model hides attention weights): the
//! decoder returns the pre-softmax cross-attention scores of the heads a caller asks for, in
//! the same pass that produces the logits. Computes in `f32` on the CPU; `cuda` and `metal`
//! features add candle's GPU devices.

mod model;

use candle_core::{DType, Device, Tensor};
use whisk_backend::{Backend, BackendError, DecodeStep, MelBatch, Result, StepOutput};
use whisk_types::ModelDims;
use whisk_weights::WhisperWeights;

pub use model::Whisper;

fn err(e: candle_core::Error) -> BackendError {
    BackendError::Compute(e.to_string())
}

/// Which candle device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CandleDevice {
    #[default]
    Cpu,
    /// NVIDIA GPU by ordinal; needs the `cuda` feature.
    Cuda(usize),
    /// Apple GPU; needs the `metal` feature.
    Metal,
}

/// A Whisper model loaded onto a candle device.
pub struct CandleBackend {
    model: Whisper,
    device: Device,
}

impl CandleBackend {
    /// Builds the model from loaded weights on `device`.
    pub fn new(weights: &WhisperWeights, device: CandleDevice) -> Result<Self> {
        let missing = |feature: &str| {
            BackendError::InvalidRequest(format!(
                "{feature} support is not compiled in: build whisk with `--features {feature}`"
            ))
        };
        if matches!(device, CandleDevice::Cuda(_)) && !cfg!(feature = "cuda") {
            return Err(missing("cuda"));
        }
        if device == CandleDevice::Metal && !cfg!(feature = "metal") {
            return Err(missing("metal"));
        }
        let device = match device {
            CandleDevice::Cpu => Device::Cpu,
            CandleDevice::Cuda(i) => Device::new_cuda(i).map_err(err)?,
            CandleDevice::Metal => Device::new_metal(0).map_err(err)?,
        };
        let model = Whisper::load(weights, &device, DType::F32).map_err(err)?;
        Ok(Self { model, device })
    }
}

/// Encoder output: `[windows, n_audio_ctx, n_audio_state]`.
pub struct Encoded(Tensor);

/// KV caches of one decode.
pub struct Decoder(model::DecoderState);

impl Backend for CandleBackend {
    type Encoded = Encoded;
    type Decoder = Decoder;

    fn dims(&self) -> &ModelDims {
        &self.model.dims
    }

    fn device_name(&self) -> String {
        match &self.device {
            Device::Cpu => "candle cpu".into(),
            Device::Cuda(_) => "candle cuda".into(),
            Device::Metal(_) => "candle metal".into(),
        }
    }

    fn encode(&self, mel: MelBatch<'_>) -> Result<Encoded> {
        let d = &self.model.dims;
        if mel.n_mels != d.n_mels || mel.data.len() != mel.windows * mel.n_mels * mel.frames {
            return Err(BackendError::InvalidRequest(format!(
                "mel batch is {}x{}x{} ({} values); the model reads {} mel bins",
                mel.windows,
                mel.n_mels,
                mel.frames,
                mel.data.len(),
                d.n_mels
            )));
        }
        if mel.frames != 2 * d.n_audio_ctx {
            return Err(BackendError::InvalidRequest(format!(
                "mel windows have {} frames; the model reads {}",
                mel.frames,
                2 * d.n_audio_ctx
            )));
        }
        let x = Tensor::from_slice(
            mel.data,
            (mel.windows, mel.n_mels, mel.frames),
            &self.device,
        )
        .map_err(err)?;
        self.model.encode(&x).map(Encoded).map_err(err)
    }

    fn start_decoder(&self, encoded: &Encoded, windows: &[usize]) -> Result<Decoder> {
        let n = encoded.0.dim(0).map_err(err)?;
        if let Some(w) = windows.iter().find(|&&w| w >= n) {
            return Err(BackendError::InvalidRequest(format!(
                "window {w} asked for, {n} encoded"
            )));
        }
        self.model
            .start_decoder(&encoded.0, windows)
            .map(Decoder)
            .map_err(err)
    }

    fn decode_step(&self, decoder: &mut Decoder, step: DecodeStep<'_>) -> Result<StepOutput> {
        let d = &self.model.dims;
        let per_row = step.tokens.len() / step.rows.max(1);
        if step.rows != decoder.0.rows() || per_row * step.rows != step.tokens.len() || per_row == 0
        {
            return Err(BackendError::InvalidRequest(format!(
                "{} tokens for {} rows (decoder has {} rows)",
                step.tokens.len(),
                step.rows,
                decoder.0.rows()
            )));
        }
        if decoder.0.offset() + per_row > d.n_text_ctx {
            return Err(BackendError::InvalidRequest(format!(
                "sequence of {} tokens exceeds the text context of {}",
                decoder.0.offset() + per_row,
                d.n_text_ctx
            )));
        }
        if let Some(&p) = step.logits_at.iter().find(|&&p| p >= per_row) {
            return Err(BackendError::InvalidRequest(format!(
                "logits asked at position {p} of a {per_row}-token step"
            )));
        }
        if let Some(&(l, h)) = step
            .cross_qk_heads
            .iter()
            .find(|&&(l, h)| l >= d.n_text_layer || h >= d.n_text_head)
        {
            return Err(BackendError::InvalidRequest(format!(
                "alignment head ({l}, {h}) is outside the {}x{} decoder",
                d.n_text_layer, d.n_text_head
            )));
        }
        self.model
            .decode_step(&mut decoder.0, step, &self.device)
            .map_err(err)
    }
}
