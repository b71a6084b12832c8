//! Decoding of one 30 s window: greedy, or sampling at a temperature.

use rand::rngs::StdRng;
use whisk_backend::{Backend, DecodeStep, MelBatch};
use whisk_decode::{
    build_prompt, greedy_pick, language_probs, log_softmax_at, sample_pick, LogitRules,
};
use whisk_types::{SpecialTokens, N_FRAMES};

use crate::Result;

/// What to decode in one window.
pub struct WindowRequest<'a> {
    /// Earlier text tokens to prompt with (empty for none).
    pub previous: &'a [u32],
    pub sot_sequence: &'a [u32],
    pub rules: &'a LogitRules,
    pub special: &'a SpecialTokens,
    /// Most tokens to sample.
    pub sample_len: usize,
}

/// The outcome of one window's decode.
#[derive(Debug, Clone, Default)]
pub struct WindowResult {
    /// Sampled tokens, text and timestamps, end-of-text excluded.
    pub tokens: Vec<u32>,
    pub sum_logprob: f64,
    /// `sum_logprob / (tokens + 1)`, as openai counts the end-of-text token.
    pub avg_logprob: f64,
    /// Probability of `<|nospeech|>` at the `<|startoftranscript|>` position.
    pub no_speech_prob: f64,
    pub temperature: f64,
    /// Filled in by the caller once the text is known.
    pub compression_ratio: f64,
}

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
            tokens: &[special.sot],
            rows: 1,
            logits_at: &[0],
            cross_qk_heads: &[],
        },
    )?;
    Ok(language_probs(&out.logits, special))
}

/// Decodes one encoded window. `temperature == 0` is greedy; above it, tokens are drawn from
/// the softened distribution with `rng`.
pub fn decode_window<B: Backend>(
    backend: &B,
    encoded: &B::Encoded,
    req: &WindowRequest<'_>,
    temperature: f64,
    rng: &mut StdRng,
) -> Result<WindowResult> {
    let dims = backend.dims();
    let vocab = dims.n_vocab;
    let mut decoder = backend.start_decoder(encoded, &[0])?;
    let prompt = build_prompt(req.special, req.previous, req.sot_sequence, dims.n_text_ctx);
    let sot_index = prompt
        .iter()
        .position(|&t| t == req.special.sot)
        .expect("the SOT sequence starts with <|startoftranscript|>");
    let out = backend.decode_step(
        &mut decoder,
        DecodeStep {
            tokens: &prompt,
            rows: 1,
            logits_at: &[sot_index, prompt.len() - 1],
            cross_qk_heads: &[],
        },
    )?;
    let no_speech_prob =
        log_softmax_at(&out.logits[..vocab], req.special.no_speech as usize).exp() as f64;
    let mut logits = out.logits[vocab..2 * vocab].to_vec();

    let mut tokens = Vec::new();
    let mut sum_logprob = 0.0f64;
    let limit = req.sample_len.min(dims.n_text_ctx - prompt.len());
    for _ in 0..limit {
        req.rules.apply(&tokens, &mut logits);
        let (token, logprob) = if temperature > 0.0 {
            sample_pick(&logits, temperature as f32, rng)
        } else {
            greedy_pick(&logits)
        };
        sum_logprob += logprob as f64;
        if token == req.special.eot {
            break;
        }
        tokens.push(token);
        if tokens.len() == limit {
            break;
        }
        let out = backend.decode_step(
            &mut decoder,
            DecodeStep {
                tokens: &[token],
                rows: 1,
                logits_at: &[0],
                cross_qk_heads: &[],
            },
        )?;
        logits = out.logits;
    }
    Ok(WindowResult {
        avg_logprob: sum_logprob / (tokens.len() + 1) as f64,
        tokens,
        sum_logprob,
        no_speech_prob,
        temperature,
        compression_ratio: 0.0,
    })
}
