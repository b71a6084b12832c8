//! Whisper's decoding rules on plain logits, no tensor library.
//!
//! Everything here works on one row of logits, a `&mut [f32]` over the vocabulary, and the
//! tokens that row has sampled so far. Rows never share state, so a batch is just a loop over
//! rows, each with its own history. Pinned to openai-whisper's `decoding.py`
//! (`SuppressBlank`, `SuppressTokens`, `ApplyTimestampRules`, `GreedyDecoder`,
//! `BeamSearchDecoder`).

mod beam;
mod repetition;
mod rules;
mod sequence;
mod stats;

pub use beam::{beam_step, best_hypothesis, BeamOptions, BeamStep, Continuation};
pub use repetition::{trailing_repetition, Repetition};
pub use rules::LogitRules;
pub use sequence::{build_prompt, sot_sequence};
pub use stats::{
    compression_ratio, greedy_pick, language_probs, log_softmax_at, logsumexp, sample_pick,
};
