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

impl ModelDims {
    /// The dimensions of an official OpenAI checkpoint by name (`tiny.en`, `base`, `small`,
    /// `medium`, `large-v3`, `large-v3-turbo`, ...), for building models of that shape.
    pub fn official(name: &str) -> Option<ModelDims> {
        let english = name.ends_with(".en");
        let (width, heads, layers, text_layers, mels, vocab) = match name.trim_end_matches(".en") {
            "tiny" => (384, 6, 4, 4, 80, 51865),
            "base" => (512, 8, 6, 6, 80, 51865),
            "small" => (768, 12, 12, 12, 80, 51865),
            "medium" => (1024, 16, 24, 24, 80, 51865),
            "large-v2" if !english => (1280, 20, 32, 32, 80, 51865),
            "large-v3" if !english => (1280, 20, 32, 32, 128, 51866),
            "large-v3-turbo" if !english => (1280, 20, 32, 4, 128, 51866),
            _ => return None,
        };
        Some(ModelDims {
            n_mels: mels,
            n_audio_ctx: 1500,
            n_audio_state: width,
            n_audio_head: heads,
            n_audio_layer: layers,
            n_vocab: if english { 51864 } else { vocab },
            n_text_ctx: 448,
            n_text_state: width,
            n_text_head: heads,
            n_text_layer: text_layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_shapes() {
        let large = ModelDims::official("large-v3").unwrap();
        assert_eq!(
            (large.n_mels, large.n_text_layer, large.n_vocab),
            (128, 32, 51866)
        );
        assert_eq!(large.num_languages(), 100);
        let tiny_en = ModelDims::official("tiny.en").unwrap();
        assert!(!tiny_en.is_multilingual());
        assert_eq!(tiny_en.text_head_dim(), 64);
        assert_eq!(
            ModelDims::official("large-v3-turbo").unwrap().n_text_layer,
            4
        );
        assert!(ModelDims::official("large-v3.en").is_none());
        assert!(ModelDims::official("huge").is_none());
    }
}
