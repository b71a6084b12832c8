use serde::{Deserialize, Serialize};

/// Hyper-parameters of a Whisper model, named as in OpenAI's `ModelDimensions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDims {
    /// Mel bins of the input (80, or 128 for large-v3).
    pub n_mels: usize,
    /// Encoder positions: 1500 frames of 20 ms.
    pub n_audio_ctx: usize,
    /// Encoder width (`d_model`).
    pub n_audio_state: usize,
    /// Encoder attention heads.
    pub n_audio_head: usize,
    /// Encoder layers.
    pub n_audio_layer: usize,
    /// Vocabulary size, special and timestamp tokens included.
    pub n_vocab: usize,
    /// Decoder positions (448).
    pub n_text_ctx: usize,
    /// Decoder width.
    pub n_text_state: usize,
    /// Decoder attention heads.
    pub n_text_head: usize,
    /// Decoder layers.
    pub n_text_layer: usize,
}

impl ModelDims {
    /// Multilingual checkpoints have the larger vocabulary (51865 and up); `.en` ones 51864.
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }

    /// Number of language tokens in the vocabulary (99, or 100 from large-v3 on).
    pub fn num_languages(&self) -> usize {
        self.n_vocab - 51765 - usize::from(self.is_multilingual())
    }

    /// Width of one attention head in the decoder.
    pub fn text_head_dim(&self) -> usize {
        self.n_text_state / self.n_text_head
    }
}
