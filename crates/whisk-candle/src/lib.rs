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

    fn new_decoder(&self, slots: usize) -> Result<Decoder> {
        if slots == 0 {
            return Err(BackendError::InvalidRequest(
                "a decoder needs at least one slot".into(),
            ));
        }
        self.model
            .new_decoder(slots, &self.device)
            .map(Decoder)
            .map_err(err)
    }

    fn attach(
        &self,
        decoder: &mut Decoder,
        slots: &[usize],
        encoded: &Encoded,
        windows: &[usize],
    ) -> Result<()> {
        let n = encoded.0.dim(0).map_err(err)?;
        if let Some(w) = windows.iter().find(|&&w| w >= n) {
            return Err(BackendError::InvalidRequest(format!(
                "window {w} asked for, {n} encoded"
            )));
        }
        if slots.len() != windows.len() {
            return Err(BackendError::InvalidRequest(format!(
                "{} slots for {} windows",
                slots.len(),
                windows.len()
            )));
        }
        check_slots(slots.iter().copied(), decoder.0.slots())?;
        self.model
            .attach(&mut decoder.0, slots, &encoded.0, windows)
            .map_err(err)
    }

    fn copy_slots(&self, decoder: &mut Decoder, moves: &[(usize, usize)]) -> Result<()> {
        let state = &decoder.0;
        check_slots(moves.iter().map(|m| m.1), state.slots())?;
        // A source may feed several destinations; it only has to exist.
        if let Some(&(from, _)) = moves.iter().find(|m| m.0 >= state.slots()) {
            return Err(BackendError::InvalidRequest(format!(
                "slot {from} asked for; the decoder has {}",
                state.slots()
            )));
        }
        if let Some(&(from, _)) = moves.iter().find(|m| !state.is_attached(m.0)) {
            return Err(BackendError::InvalidRequest(format!(
                "slot {from}: no window attached to copy"
            )));
        }
        self.model.copy_slots(&mut decoder.0, moves).map_err(err)
    }

    fn decode_step(&self, decoder: &mut Decoder, step: DecodeStep<'_>) -> Result<StepOutput> {
        let d = &self.model.dims;
        let state = &decoder.0;
        check_slots(step.rows.iter().map(|r| r.slot), state.slots())?;
        for row in step.rows {
            let invalid = |why: String| {
                Err(BackendError::InvalidRequest(format!(
                    "slot {}: {why}",
                    row.slot
                )))
            };
            if !state.is_attached(row.slot) {
                return invalid("no window attached".into());
            }
            if row.tokens.is_empty() {
                return invalid("no tokens fed".into());
            }
            if row.position > state.length(row.slot) {
                return invalid(format!(
                    "position {} is past the {} cached tokens",
                    row.position,
                    state.length(row.slot)
                ));
            }
            if row.position + row.tokens.len() > d.n_text_ctx {
                return invalid(format!(
                    "sequence of {} tokens exceeds the text context of {}",
                    row.position + row.tokens.len(),
                    d.n_text_ctx
                ));
            }
            if let Some(&t) = row.tokens.iter().find(|&&t| t as usize >= d.n_vocab) {
                return invalid(format!("token {t} is outside the vocabulary"));
            }
            if let Some(&p) = row.logits_at.iter().find(|&&p| p >= row.tokens.len()) {
                return invalid(format!(
                    "logits asked at position {p} of a {}-token step",
                    row.tokens.len()
                ));
            }
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
        if step.rows.is_empty() {
            return Ok(StepOutput::default());
        }
        self.model
            .decode_step(&mut decoder.0, step, &self.device)
            .map_err(err)
    }
}

/// Slots must exist and appear at most once.
fn check_slots(slots: impl Iterator<Item = usize>, count: usize) -> Result<()> {
    let mut seen = vec![false; count];
    for slot in slots {
        match seen.get_mut(slot) {
            None => {
                return Err(BackendError::InvalidRequest(format!(
                    "slot {slot} asked for; the decoder has {count}"
                )))
            }
            Some(true) => {
                return Err(BackendError::InvalidRequest(format!(
                    "slot {slot} appears twice in one request"
                )))
            }
            Some(s) => *s = true,
        }
    }
    Ok(())
}
