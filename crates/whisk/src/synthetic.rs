//! Throughput on random weights of any Whisper shape: encoder passes and a fixed number of
//! decoder steps, with no text and no decoding rules. It measures a device with a model whose
//! weights cannot be had there (large-v3 on a GPU machine without a network), and transcribes
//! nothing.

use std::time::Instant;

use whisk_backend::{Backend, DecodeStep, MelBatch, RowStep};
use whisk_types::{AlignmentHeads, ComputeType, ModelDims, N_FRAMES};
use whisk_weights::WhisperWeights;

use crate::engine::{with_backend, WithBackend};
use crate::{BackendKind, Device, Result};

/// What to measure.
#[derive(Debug, Clone)]
pub struct SyntheticOptions {
    pub dims: ModelDims,
    pub backend: BackendKind,
    pub device: Device,
    pub compute_type: ComputeType,
    /// Windows encoded together and decoder rows stepped together, one measurement each.
    pub batches: Vec<usize>,
    /// Decoder steps per window after a three-token prompt (at most 440).
    pub tokens: usize,
    pub seed: u64,
}

/// One batch size, with or without word timing's work.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticResult {
    pub batch: usize,
    /// With the alignment heads' attention returned at every step and one alignment pass per
    /// window over four times `tokens` (the text spelled a letter per token).
    pub words: bool,
    /// One encoder pass over `batch` windows.
    pub encode_seconds: f64,
    /// Cross K/V, the prompt, `tokens` steps of `batch` rows (and the alignment pass).
    pub decode_seconds: f64,
    pub tokens: usize,
}

impl SyntheticResult {
    /// Audio seconds per second of work, counting each window as 30 s of audio that needs
    /// `tokens` tokens.
    pub fn realtime_factor(&self) -> f64 {
        30.0 * self.batch as f64 / (self.encode_seconds + self.decode_seconds)
    }
}

/// Loading and every measurement of [`run`].
#[derive(Debug, Clone)]
pub struct SyntheticReport {
    pub device_name: String,
    pub load_seconds: f64,
    pub results: Vec<SyntheticResult>,
}

/// Builds random weights of `options.dims`, loads them and measures each batch size with and
/// without word timing's work, after one warm-up run (kernel compilation, library handles).
pub fn run(options: &SyntheticOptions) -> Result<SyntheticReport> {
    let start = Instant::now();
    let weights = WhisperWeights::random(options.dims.clone(), options.seed);
    with_backend(
        options.backend,
        options.device,
        options.compute_type,
        &weights,
        Runs { options, start },
    )
}

struct Runs<'a> {
    options: &'a SyntheticOptions,
    start: Instant,
}

impl WithBackend for Runs<'_> {
    type Output = SyntheticReport;

    fn run<B: Backend + Send + Sync + 'static>(self, backend: B) -> Result<SyntheticReport> {
        backend.synchronize()?;
        let load_seconds = self.start.elapsed().as_secs_f64();
        let heads = AlignmentHeads::resolve(None, backend.dims()).pairs;
        let tokens = self.options.tokens.clamp(1, 440);
        measure(&backend, 1, tokens.min(8), Some(&heads))?;
        let mut results = Vec::new();
        for &batch in &self.options.batches {
            for words in [false, true] {
                let heads = words.then_some(heads.as_slice());
                results.push(measure(&backend, batch.max(1), tokens, heads)?);
            }
        }
        Ok(SyntheticReport {
            device_name: backend.device_name(),
            load_seconds,
            results,
        })
    }
}

/// Log-mel-like input: values in [-0.5, 0.5) with no structure.
fn mel_input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7_919) % 1_000) as f32 / 1_000.0 - 0.5)
        .collect()
}

fn measure<B: Backend>(
    backend: &B,
    batch: usize,
    tokens: usize,
    heads: Option<&[(usize, usize)]>,
) -> Result<SyntheticResult> {
    let dims = backend.dims().clone();
    let mel = mel_input(batch * dims.n_mels * N_FRAMES);
    backend.synchronize()?;
    let started = Instant::now();
    let encoded = backend.encode(MelBatch {
        data: &mel,
        windows: batch,
        n_mels: dims.n_mels,
        frames: N_FRAMES,
    })?;
    backend.synchronize()?;
    let encode_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let slots: Vec<usize> = (0..batch).collect();
    let mut decoder = backend.new_decoder(batch)?;
    backend.attach(&mut decoder, &slots, &encoded, &slots)?;
    let every_step_heads = heads.unwrap_or(&[]);
    // Any ids below the vocabulary size do: the weights are random.
    let token = |i: usize| ((i * 7_919) % 50_000) as u32;
    let prompt: Vec<u32> = (0..3).map(token).collect();
    let mut step = |position: usize, fed: &[u32], logits_at: &[usize], heads: &[(usize, usize)]| {
        let rows: Vec<RowStep> = slots
            .iter()
            .map(|&slot| RowStep {
                slot,
                position,
                tokens: fed,
                logits_at,
            })
            .collect();
        let step = DecodeStep {
            rows: &rows,
            cross_qk_heads: heads,
            keep_cache: true,
        };
        backend.decode_step(&mut decoder, step).map(drop)
    };
    step(0, &prompt, &[prompt.len() - 1], every_step_heads)?;
    for i in 0..tokens {
        step(prompt.len() + i, &[token(i + 3)], &[0], every_step_heads)?;
    }
    if let Some(heads) = heads {
        let letters: Vec<u32> = (0..(4 * tokens).min(dims.n_text_ctx - 8))
            .map(token)
            .collect();
        step(0, &letters, &[], heads)?;
    }
    backend.synchronize()?;
    Ok(SyntheticResult {
        batch,
        words: heads.is_some(),
        encode_seconds,
        decode_seconds: started.elapsed().as_secs_f64(),
        tokens,
    })
}

#[cfg(all(test, feature = "candle"))]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_shaped_model_runs_on_the_cpu() {
        let options = SyntheticOptions {
            dims: ModelDims::official("tiny.en").unwrap(),
            backend: BackendKind::Candle,
            device: Device::Cpu,
            compute_type: ComputeType::Float32,
            batches: vec![2],
            tokens: 4,
            seed: 1,
        };
        let report = run(&options).unwrap();
        assert_eq!(report.device_name, "candle cpu");
        let shape: Vec<(usize, bool)> = report.results.iter().map(|r| (r.batch, r.words)).collect();
        assert_eq!(shape, [(2, false), (2, true)]);
        for r in &report.results {
            assert!(r.encode_seconds > 0.0 && r.decode_seconds > 0.0);
            assert!(r.realtime_factor().is_finite());
        }
    }
}
