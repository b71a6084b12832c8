//! Random weights of any Whisper shape, for measuring throughput where a checkpoint cannot be
//! had (large-v3's 3 GB cannot be carried to a GPU machine with no network).

use std::collections::BTreeMap;
use std::path::PathBuf;

use half::f16;
use whisk_types::ModelDims;

use crate::{names, Tensor, TensorData, WeightFormat, WhisperWeights};

/// splitmix64: a fast, seedable stream; these weights need no statistical quality.
struct Stream(u64);

impl Stream {
    fn next_unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Top 24 bits to [-1, 1).
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A tensor's values: layer-norm gains 1, biases 0, everything else uniform with the spread
/// of PyTorch's default initialisation (±1/√fan_in), so activations stay in range through
/// every layer.
fn values(name: &str, shape: &[usize], stream: &mut Stream) -> Vec<f16> {
    let len: usize = shape.iter().product();
    // The only one-dimensional weights are layer-norm gains.
    if shape.len() == 1 && name.ends_with(".weight") {
        return vec![f16::ONE; len];
    }
    if name.ends_with(".bias") {
        return vec![f16::ZERO; len];
    }
    let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
    let scale = 1.0 / (fan_in as f32).sqrt();
    (0..len)
        .map(|_| f16::from_f32(stream.next_unit() * scale))
        .collect()
}

impl WhisperWeights {
    /// Random weights with the shapes `dims` implies, stored as `f16` (large-v3: 3.1 GB).
    /// The same seed gives the same weights. Transcribes nothing: for throughput only.
    pub fn random(dims: ModelDims, seed: u64) -> WhisperWeights {
        let mut stream = Stream(seed);
        let tensors: BTreeMap<String, Tensor> = names::expected_shapes(&dims)
            .into_iter()
            .map(|(name, shape)| {
                let data = TensorData::F16(values(&name, &shape, &mut stream));
                (name, Tensor { shape, data })
            })
            .collect();
        WhisperWeights {
            dims,
            format: WeightFormat::Random,
            source: PathBuf::from(format!("<random weights, seed {seed}>")),
            alignment_heads: None,
            tensors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tensor_has_its_shape_and_sensible_values() {
        let dims = ModelDims::official("tiny.en").unwrap();
        let a = WhisperWeights::random(dims.clone(), 7);
        for (name, shape) in names::expected_shapes(&dims) {
            let t = a.get(&name).unwrap();
            assert_eq!(t.shape, shape, "{name}");
            let v = t.to_f32();
            assert!(v.iter().all(|x| x.is_finite() && x.abs() <= 1.0), "{name}");
        }
        let gain = a
            .get("decoder.blocks.0.cross_attn_ln.weight")
            .unwrap()
            .to_f32();
        assert!(gain.iter().all(|&x| x == 1.0));
        let w = a.get("encoder.blocks.1.mlp.0.weight").unwrap().to_f32();
        let mean_abs = w.iter().map(|x| x.abs()).sum::<f32>() / w.len() as f32;
        // Uniform on ±1/√384 has a mean magnitude of 1/(2√384).
        assert!(
            (mean_abs * 2.0 * 384f32.sqrt() - 1.0).abs() < 0.02,
            "{mean_abs}"
        );
        let b = WhisperWeights::random(dims.clone(), 7);
        assert_eq!(
            a.get("decoder.token_embedding.weight").unwrap(),
            b.get("decoder.token_embedding.weight").unwrap()
        );
        let c = WhisperWeights::random(dims, 8);
        assert_ne!(
            a.get("decoder.token_embedding.weight").unwrap(),
            c.get("decoder.token_embedding.weight").unwrap()
        );
    }
}
