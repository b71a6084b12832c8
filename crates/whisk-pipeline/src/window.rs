//! Greedy decoding of one 30 s window.

use whisk_backend::{Backend, DecodeStep, MelBatch};
use whisk_decode::{build_prompt, greedy_pick, language_probs, log_softmax_at, LogitRules};
use whisk_types::{SpecialTokens, N_FRAMES};

use crate::Result;

/// What to decode in one window.
pub struct WindowRequest<'a> {
    /// `[n_mels, N_FRAMES]` log-mel frames.
    pub mel: &'a [f32],
    /// Earlier text tokens to prompt with (empty for none).
    pub previous: &'a [u32],
    pub sot_sequence: &'a [u32],
    /// Detect the language instead of decoding (multilingual models, language unknown).
    pub detect_language: bool,
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
    /// Set when `detect_language` was asked: the index of the likeliest language. No tokens
    /// are decoded then.
    pub language: Option<usize>,
    /// Probabilities of all languages, when detected.
    pub language_probs: Vec<f32>,
}

/// Decodes one window greedily (temperature 0).
pub fn decode_window<B: Backend>(backend: &B, req: &WindowRequest<'_>) -> Result<WindowResult> {
    let dims = backend.dims();
    let encoded = backend.encode(MelBatch {
        data: req.mel,
        windows: 1,
        n_mels: dims.n_mels,
        frames: N_FRAMES,
    })?;
    let mut decoder = backend.start_decoder(&encoded, &[0])?;
    let vocab = dims.n_vocab;

    if req.detect_language {
        let out = backend.decode_step(
            &mut decoder,
            DecodeStep {
                tokens: &[req.special.sot],
                rows: 1,
                logits_at: &[0],
                cross_qk_heads: &[],
            },
        )?;
        let probs = language_probs(&out.logits[..vocab], req.special);
        let best = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        return Ok(WindowResult {
            language: best,
            language_probs: probs,
            ..WindowResult::default()
        });
    }

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
    let room = dims.n_text_ctx - prompt.len();
    for _ in 0..req.sample_len.min(room) {
        req.rules.apply(&tokens, &mut logits);
        let (token, logprob) = greedy_pick(&logits);
        sum_logprob += logprob as f64;
        if token == req.special.eot {
            break;
        }
        tokens.push(token);
        if tokens.len() == req.sample_len.min(room) {
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
    let avg_logprob = sum_logprob / (tokens.len() + 1) as f64;
    Ok(WindowResult {
        tokens,
        sum_logprob,
        avg_logprob,
        no_speech_prob,
        language: None,
        language_probs: Vec::new(),
    })
}
