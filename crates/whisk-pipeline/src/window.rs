//! Encoding one 30 s window, and language detection on it.

use whisk_backend::{Backend, DecodeStep, MelBatch, RowStep};
use whisk_decode::language_probs;
use whisk_types::{SpecialTokens, N_FRAMES};

use crate::Result;

/// Runs the encoder on one `[n_mels, N_FRAMES]` window.
pub fn encode_window<B: Backend>(backend: &B, mel: &[f32]) -> Result<B::Encoded> {
    let n_mels = backend.dims().n_mels;
    Ok(backend.encode(MelBatch {
        data: mel,
        windows: 1,
        n_mels,
        frames: N_FRAMES,
    })?)
}

/// Probabilities of every language, from the logits after `<|startoftranscript|>`.
pub fn detect_language<B: Backend>(
    backend: &B,
    encoded: &B::Encoded,
    special: &SpecialTokens,
) -> Result<Vec<f32>> {
    let mut decoder = backend.start_decoder(encoded, &[0])?;
    let out = backend.decode_step(
        &mut decoder,
        DecodeStep {
            rows: &[RowStep {
                slot: 0,
                position: 0,
                tokens: &[special.sot],
                logits_at: &[0],
            }],
            cross_qk_heads: &[],
            keep_cache: true,
        },
    )?;
    Ok(language_probs(&out.logits[0], special))
}
