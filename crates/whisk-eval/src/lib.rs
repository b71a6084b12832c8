//! Accuracy measurement: openai-whisper's English normalisation, word error rate, and the
//! evaluation data sets in `../shared/data`.

pub mod normalize;
pub mod pauses;
pub mod timing;
pub mod wer;

pub use normalize::normalize_english;
pub use wer::{word_errors, WerTotals};
