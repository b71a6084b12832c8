use serde::{Deserialize, Serialize};

/// The (decoder layer, head) pairs whose cross-attention follows the audio in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlignmentHeads {
    pub pairs: Vec<(usize, usize)>,
    pub source: HeadsSource,
}

/// Where a model's alignment heads came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadsSource {
    /// Listed in the model directory's configuration.
    ModelConfig,
    /// The documented fallback: every head of the last half of the decoder layers.
    LastHalfFallback,
}

impl AlignmentHeads {
    /// OpenAI's fallback when a checkpoint has no curated heads: all heads of the upper half of
    /// the decoder (`model.py`, `ModelDimensions` -> `alignment_heads`).
    pub fn last_half(n_text_layer: usize, n_text_head: usize) -> Self {
        let pairs = (n_text_layer / 2..n_text_layer)
            .flat_map(|layer| (0..n_text_head).map(move |head| (layer, head)))
            .collect();
        Self {
            pairs,
            source: HeadsSource::LastHalfFallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_half_covers_upper_layers() {
        let heads = AlignmentHeads::last_half(4, 6);
        assert_eq!(heads.pairs.len(), 12);
        assert_eq!(heads.pairs[0], (2, 0));
        assert_eq!(*heads.pairs.last().unwrap(), (3, 5));
    }
}
