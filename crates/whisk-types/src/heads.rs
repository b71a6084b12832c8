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
    /// openai-whisper's table for its official checkpoints, recognised by their dimensions.
    OpenAiPreset,
    /// The documented fallback: every head of the last half of the decoder layers.
    LastHalfFallback,
}

/// openai-whisper's `_ALIGNMENT_HEADS`, decoded into (layer, head) pairs.
const OPENAI_PRESETS: &[(&str, &[(usize, usize)])] = &[
    (
        "tiny.en",
        &[
            (1, 0),
            (2, 0),
            (2, 5),
            (3, 0),
            (3, 1),
            (3, 2),
            (3, 3),
            (3, 4),
        ],
    ),
    ("tiny", &[(2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)]),
    ("base.en", &[(3, 3), (4, 7), (5, 1), (5, 5), (5, 7)]),
    (
        "base",
        &[
            (3, 1),
            (4, 2),
            (4, 3),
            (4, 7),
            (5, 1),
            (5, 2),
            (5, 4),
            (5, 6),
        ],
    ),
    (
        "small.en",
        &[
            (6, 6),
            (7, 0),
            (7, 3),
            (7, 8),
            (8, 2),
            (8, 5),
            (8, 7),
            (9, 0),
            (9, 4),
            (9, 8),
            (9, 10),
            (10, 0),
            (10, 1),
            (10, 2),
            (10, 3),
            (10, 6),
            (10, 11),
            (11, 2),
            (11, 4),
        ],
    ),
    (
        "small",
        &[
            (5, 3),
            (5, 9),
            (8, 0),
            (8, 4),
            (8, 7),
            (8, 8),
            (9, 0),
            (9, 7),
            (9, 9),
            (10, 5),
        ],
    ),
    (
        "medium.en",
        &[
            (11, 4),
            (14, 1),
            (14, 12),
            (14, 14),
            (15, 4),
            (16, 0),
            (16, 4),
            (16, 9),
            (17, 12),
            (17, 14),
            (18, 7),
            (18, 10),
            (18, 15),
            (20, 0),
            (20, 3),
            (20, 9),
            (20, 14),
            (21, 12),
        ],
    ),
    (
        "medium",
        &[(13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4)],
    ),
    (
        "large-v1",
        &[
            (9, 19),
            (11, 2),
            (11, 4),
            (11, 17),
            (22, 7),
            (22, 11),
            (22, 17),
            (23, 2),
            (23, 15),
        ],
    ),
    (
        "large-v2",
        &[
            (10, 12),
            (13, 17),
            (16, 11),
            (16, 12),
            (16, 13),
            (17, 15),
            (17, 16),
            (18, 4),
            (18, 11),
            (18, 19),
            (19, 11),
            (21, 2),
            (21, 3),
            (22, 3),
            (22, 9),
            (22, 12),
            (23, 5),
            (23, 7),
            (23, 13),
            (25, 5),
            (26, 1),
            (26, 12),
            (27, 15),
        ],
    ),
    (
        "large-v3",
        &[
            (7, 0),
            (10, 17),
            (12, 18),
            (13, 12),
            (16, 1),
            (17, 14),
            (19, 11),
            (21, 4),
            (24, 1),
            (25, 6),
        ],
    ),
    (
        "large-v3-turbo",
        &[(2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14)],
    ),
];

impl AlignmentHeads {
    /// The heads openai-whisper lists for one of its checkpoints (`tiny.en`, `large-v3`, ...).
    pub fn openai_preset(name: &str) -> Option<Self> {
        OPENAI_PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, pairs)| Self {
                pairs: pairs.to_vec(),
                source: HeadsSource::OpenAiPreset,
            })
    }

    /// The preset of the official checkpoint with these dimensions, when only one fits
    /// (large-v1 and large-v2 share theirs, so neither is guessed).
    pub fn preset_for(dims: &crate::ModelDims) -> Option<Self> {
        let name = match (
            dims.n_text_layer,
            dims.n_text_state,
            dims.is_multilingual(),
            dims.n_mels,
        ) {
            (4, 384, false, 80) => "tiny.en",
            (4, 384, true, 80) => "tiny",
            (6, 512, false, 80) => "base.en",
            (6, 512, true, 80) => "base",
            (12, 768, false, 80) => "small.en",
            (12, 768, true, 80) => "small",
            (24, 1024, false, 80) => "medium.en",
            (24, 1024, true, 80) => "medium",
            (32, 1280, true, 128) => "large-v3",
            (4, 1280, true, 128) => "large-v3-turbo",
            _ => return None,
        };
        Self::openai_preset(name)
    }

    /// Heads from a model's own configuration, else the OpenAI preset its dimensions match,
    /// else the last-half fallback.
    pub fn resolve(configured: Option<Vec<(usize, usize)>>, dims: &crate::ModelDims) -> Self {
        match configured {
            Some(pairs) if !pairs.is_empty() => Self {
                pairs,
                source: HeadsSource::ModelConfig,
            },
            _ => Self::preset_for(dims)
                .unwrap_or_else(|| Self::last_half(dims.n_text_layer, dims.n_text_head)),
        }
    }

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
    fn presets_fit_their_models() {
        for (name, pairs) in OPENAI_PRESETS {
            let layers = if name.starts_with("large-v3-turbo") {
                4
            } else {
                match &name[..name.find(['.', '-']).unwrap_or(name.len())] {
                    "tiny" => 4,
                    "base" => 6,
                    "small" => 12,
                    "medium" => 24,
                    _ => 32,
                }
            };
            assert!(pairs.iter().all(|&(l, h)| l < layers && h < 20), "{name}");
            assert!(pairs.windows(2).all(|w| w[0] < w[1]), "{name} sorted");
        }
        let tiny_en = AlignmentHeads::openai_preset("tiny.en").unwrap();
        assert_eq!(tiny_en.pairs[..3], [(1, 0), (2, 0), (2, 5)]);
    }

    #[test]
    fn last_half_covers_upper_layers() {
        let heads = AlignmentHeads::last_half(4, 6);
        assert_eq!(heads.pairs.len(), 12);
        assert_eq!(heads.pairs[0], (2, 0));
        assert_eq!(*heads.pairs.last().unwrap(), (3, 5));
    }
}
