use serde::{Deserialize, Serialize};

/// A timed word. Times are seconds from the start of the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    /// The word as decoded, with its leading space and attached punctuation.
    pub word: String,
    pub start: f64,
    pub end: f64,
    /// Mean probability of the word's tokens.
    pub probability: f64,
}

/// A stretch of text between two timestamp tokens. Serialises in openai-whisper's JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: usize,
    /// Mel frame where the window that produced this segment began.
    pub seek: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Text and timestamp tokens of the segment.
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

/// A whole input's transcription (openai-whisper's `transcribe` result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub text: String,
    pub language: String,
    pub segments: Vec<Segment>,
    /// What went wrong with the input without stopping its transcription, e.g. a damaged
    /// file transcribed up to where decoding stopped. Empty (and left out of JSON) when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Every language's probability, likeliest first, when the language was detected (on the
    /// input's first window); empty when it was given, when the model speaks only English, and
    /// when VAD heard no speech (nothing was decoded). Left out of JSON (a hundred entries);
    /// `language` is the first.
    #[serde(skip)]
    pub language_probs: Vec<(String, f32)>,
}
