//! The seam between whisk's plain-Rust pipeline and a tensor library.
//!
//! A backend runs Whisper's encoder on mel windows and steps its decoder with a KV cache. What
//! crosses this trait is plain data: mel frames and logits as `f32` slices, tokens as `u32`, and
//! the cross-attention of the alignment heads as [`CrossQk`]. Tensors stay inside the backend as
//! its associated types, so decoding, alignment and batching never see a tensor library.

use whisk_types::ModelDims;

mod layout;
mod slots;
mod timed;

pub use layout::{SlotBatch, StepLayout};
pub use slots::{check_mel, SlotTable};
pub use timed::{BackendTimes, TimeLog, Timed};

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

/// What one cache slot is fed in a decoder step.
#[derive(Debug, Clone, Copy)]
pub struct RowStep<'a> {
    /// The decoder slot (see [`Backend::new_decoder`]).
    pub slot: usize,
    /// Position in the slot's sequence of `tokens[0]`. Cached positions from here on are
    /// overwritten; 0 starts the sequence afresh. At most the slot's current length.
    pub position: usize,
    /// Tokens fed, at least one. Rows of one step may feed different numbers of tokens.
    pub tokens: &'a [u32],
    /// Indices into `tokens` whose logits are returned (e.g. the last one, and the
    /// `<|startoftranscript|>` position for the no-speech probability).
    pub logits_at: &'a [usize],
}

/// One decoder step over some slots, each at its own position with its own tokens.
#[derive(Debug, Clone, Copy)]
pub struct DecodeStep<'a> {
    pub rows: &'a [RowStep<'a>],
    /// (layer, head) pairs whose cross-attention scores are returned; empty for none.
    pub cross_qk_heads: &'a [(usize, usize)],
    /// Whether the rows' keys and values stay in their slots' caches for later steps. `false`
    /// is for rows fed once and never again (an alignment pass): every row starts at
    /// position 0, a backend may attend within the step alone without growing its caches,
    /// and the slots hold no cached tokens afterwards.
    pub keep_cache: bool,
}

/// What a decoder step returns, one entry per row of the step, in order.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// `[logits_at.len(), n_vocab]` row-major per row.
    pub logits: Vec<Vec<f32>>,
    /// Per row when heads were asked for (`tokens` = that row's fed tokens), else empty.
    pub cross_qk: Vec<CrossQk>,
}

/// Runs Whisper's forward passes. One loaded model serves many decodes: per-run state lives in
/// [`Backend::Decoder`], never in the backend itself.
///
/// A decoder has a fixed number of slots. Each slot attends to one encoded window and keeps
/// its own self-attention cache, so rows can join (attach a new window to a free slot), leave,
/// and sit at different positions while they are stepped together.
pub trait Backend {
    /// Encoder output of a batch of windows (`[windows, n_audio_ctx, n_audio_state]`).
    type Encoded;
    /// Per-decode state: cross-attention K/V and self-attention cache of every slot.
    type Decoder;

    fn dims(&self) -> &ModelDims;

    /// Human-readable device name, e.g. `"candle cpu"`.
    fn device_name(&self) -> String;

    /// Runs the encoder over a batch of mel windows.
    fn encode(&self, mel: MelBatch<'_>) -> Result<Self::Encoded>;

    /// A decoder with `slots` empty slots.
    fn new_decoder(&self, slots: usize) -> Result<Self::Decoder>;

    /// Points `slots[i]` at window `windows[i]` of `encoded`: computes that window's
    /// cross-attention K/V once, for every later step of the slot, and empties its cache.
    fn attach(
        &self,
        decoder: &mut Self::Decoder,
        slots: &[usize],
        encoded: &Self::Encoded,
        windows: &[usize],
    ) -> Result<()>;

    /// Makes slot `to` a copy of slot `from` for each `(from, to)`: the window it attends to
    /// and its cached tokens. Beam search forks and reorders hypotheses this way. All sources are
    /// read before any destination is written (a permutation is fine); destinations are
    /// distinct.
    fn copy_slots(&self, decoder: &mut Self::Decoder, moves: &[(usize, usize)]) -> Result<()>;

    /// Lets go of what `slots` hold (their window's cross-attention K/V and cached tokens), so
    /// that a window no slot reads any more frees its memory. A released slot is attached
    /// again before it is stepped or copied from.
    fn release(&self, decoder: &mut Self::Decoder, slots: &[usize]) -> Result<()>;

    /// Feeds every row its tokens, extends the rows' caches (unless `step.keep_cache` is
    /// false), returns the asked-for logits and cross-attention scores.
    fn decode_step(&self, decoder: &mut Self::Decoder, step: DecodeStep<'_>) -> Result<StepOutput>;

    /// Waits until the work queued on the device has finished. GPUs run asynchronously, so a
    /// call may return before its work is done; timing calls needs this (a no-op on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// A decoder whose slot `i` attends to window `windows[i]` of `encoded`.
    fn start_decoder(&self, encoded: &Self::Encoded, windows: &[usize]) -> Result<Self::Decoder> {
        let mut decoder = self.new_decoder(windows.len())?;
        let slots: Vec<usize> = (0..windows.len()).collect();
        self.attach(&mut decoder, &slots, encoded, windows)?;
        Ok(decoder)
    }
}
