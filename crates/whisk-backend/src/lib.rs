//! The seam between whisk's plain-Rust pipeline and a tensor library.
//!
//! A backend runs Whisper's encoder on mel windows and steps its decoder with a KV cache. What
//! crosses this trait is plain data: mel frames and logits as `f32` slices, tokens as `u32`, and
//! the cross-attention of the alignment heads as [`CrossQk`]. Tensors stay inside the backend as
//! its associated types, so decoding, alignment and batching never see a tensor library.

use whisk_types::ModelDims;

/// Error a backend reports; carries the tensor library's message.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend: {0}")]
    Compute(String),
    #[error("backend: invalid request: {0}")]
    InvalidRequest(String),
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// A batch of log-mel windows, `[windows, n_mels, frames]` row-major.
#[derive(Debug, Clone, Copy)]
pub struct MelBatch<'a> {
    pub data: &'a [f32],
    pub windows: usize,
    pub n_mels: usize,
    pub frames: usize,
}

/// Pre-softmax cross-attention scores (`q·kᵀ/√d`) of chosen heads for one decoder row:
/// `data[head][token][frame]`, row-major, `tokens` being the positions fed in that step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrossQk {
    pub heads: usize,
    pub tokens: usize,
    pub frames: usize,
    pub data: Vec<f32>,
}

impl CrossQk {
    /// Scores of one head for one token, over all audio frames.
    pub fn row(&self, head: usize, token: usize) -> &[f32] {
        let start = (head * self.tokens + token) * self.frames;
        &self.data[start..start + self.frames]
    }
}

/// One decoder step over a batch of rows that each feed the same number of tokens.
#[derive(Debug, Clone, Copy)]
pub struct DecodeStep<'a> {
    /// `[rows, tokens_per_row]` row-major.
    pub tokens: &'a [u32],
    pub rows: usize,
    /// Positions within this step's tokens whose logits are returned (e.g. the last one, and
    /// the `<|startoftranscript|>` position for the no-speech probability).
    pub logits_at: &'a [usize],
    /// (layer, head) pairs whose cross-attention scores are returned; empty for none.
    pub cross_qk_heads: &'a [(usize, usize)],
}

/// What a decoder step returns.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// `[rows, logits_at.len(), n_vocab]` row-major.
    pub logits: Vec<f32>,
    /// One entry per row when heads were asked for, else empty.
    pub cross_qk: Vec<CrossQk>,
}

/// Runs Whisper's forward passes. One loaded model serves many decodes: per-run state lives in
/// [`Backend::Decoder`], never in the backend itself.
pub trait Backend {
    /// Encoder output of a batch of windows (`[windows, n_audio_ctx, n_audio_state]`).
    type Encoded;
    /// Per-decode state: self-attention KV cache and the cross-attention K/V of its windows.
    type Decoder;

    fn dims(&self) -> &ModelDims;

    /// Human-readable device name, e.g. `"candle cpu"`.
    fn device_name(&self) -> String;

    /// Runs the encoder over a batch of mel windows.
    fn encode(&self, mel: MelBatch<'_>) -> Result<Self::Encoded>;

    /// Starts decoding: row `r` attends to window `windows[r]` of `encoded`. Cross-attention
    /// K/V are computed here once and reused by every step.
    fn start_decoder(&self, encoded: &Self::Encoded, windows: &[usize]) -> Result<Self::Decoder>;

    /// Feeds tokens to every row, extends the KV cache, returns the asked-for logits and
    /// cross-attention scores.
    fn decode_step(&self, decoder: &mut Self::Decoder, step: DecodeStep<'_>) -> Result<StepOutput>;
}
