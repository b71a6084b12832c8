//! Types shared by every whisk crate.
//!
//! Nothing here computes; these are the nouns the other crates speak in: model dimensions
//! ([`ModelDims`]), the special-token layout of a vocabulary ([`SpecialTokens`]), what a
//! transcription produces ([`Segment`], [`Word`], [`Transcript`]), the options that steer it
//! ([`DecodeOptions`], [`TranscribeOptions`], [`ComputeType`]) and alignment-head presets.
//! The one exception is [`lanes`]: the vectorised `exp` that the backend's softmax and the
//! decoder's log-probabilities share, and the macro that builds such loops for AVX2.

mod compute;
mod dims;
mod heads;
pub mod lanes;
mod options;
mod output;
mod tokens;
mod vad;

pub use compute::ComputeType;
pub use dims::ModelDims;
pub use heads::{AlignmentHeads, HeadsSource};
pub use options::{
    DecodeOptions, MelPadding, Task, TranscribeOptions, WordAlignment, WINDOW_OVERLAP_SECONDS,
};
pub use output::{Segment, Transcript, Word};
pub use tokens::SpecialTokens;
pub use vad::VadOptions;

/// Audio sample rate every Whisper model expects (OpenAI `SAMPLE_RATE`).
pub const SAMPLE_RATE: usize = 16_000;
/// FFT window length in samples (OpenAI `N_FFT`).
pub const N_FFT: usize = 400;
/// Hop between mel frames in samples (OpenAI `HOP_LENGTH`): 10 ms.
pub const HOP_LENGTH: usize = 160;
/// Length of one decoding window in seconds (OpenAI `CHUNK_LENGTH`).
pub const CHUNK_LENGTH: usize = 30;
/// Samples in one window (OpenAI `N_SAMPLES`).
pub const N_SAMPLES: usize = CHUNK_LENGTH * SAMPLE_RATE;
/// Mel frames in one window (OpenAI `N_FRAMES`).
pub const N_FRAMES: usize = N_SAMPLES / HOP_LENGTH;
/// Mel frames per encoder output frame: conv2 has stride 2 (OpenAI `N_SAMPLES_PER_TOKEN / HOP`).
pub const INPUT_STRIDE: usize = 2;
/// Seconds per timestamp token and per encoder frame (20 ms).
pub const TIME_PRECISION: f64 = (INPUT_STRIDE * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
