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
    /// Alignment heads whose cross-attention is kept for word timing in the same pass; empty
    /// for none.
    pub cross_qk_heads: &'a [(usize, usize)],
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
    /// With alignment heads asked for: `qk_rows[j]` is the heads' attention (`[heads][frames]`)
    /// at the position whose output predicted `tokens[j]`; one more row follows for the
    /// position that predicted the end.
    pub qk_rows: Vec<Vec<f32>>,
    /// Probability of each sampled token among text tokens, from the unfiltered logits
    /// (openai's word probability); kept only with alignment heads.
    pub token_probs: Vec<f32>,
}

/// Log of the softmax normaliser over the text vocabulary (`logits[..eot]`), taken before
/// the rules mask anything: openai's word probability uses the unfiltered logits.
pub(crate) fn text_logsumexp(logits: &[f32], eot: u32) -> f32 {
    whisk_decode::logsumexp(&logits[..eot as usize])
}

/// Probability of a sampled `token` among text tokens, from `text_lse`. The rules only ever
/// set logits to `-inf`, so a token that was sampled still holds its unfiltered logit.
pub(crate) fn text_probability(logits: &[f32], token: u32, eot: u32, text_lse: f32) -> f32 {
    if token >= eot {
        return 0.0;
    }
    (logits[token as usize] - text_lse).exp()
}

/// Heads' attention of the last position of a step's output for row 0.
fn last_qk_row(qk: &[whisk_backend::CrossQk]) -> Vec<f32> {
    last_qk_row_of(&qk[0])
}

/// Heads' attention (`[heads][frames]`) at the last position of one row's step output.
pub(crate) fn last_qk_row_of(q: &whisk_backend::CrossQk) -> Vec<f32> {
    let mut row = Vec::with_capacity(q.heads * q.frames);
    for h in 0..q.heads {
        row.extend_from_slice(q.row(h, q.tokens - 1));
    }
    row
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
            cross_qk_heads: req.cross_qk_heads,
        },
    )?;
    let align = !req.cross_qk_heads.is_empty();
    let mut qk_rows = Vec::new();
    let mut token_probs = Vec::new();
    if align {
        qk_rows.push(last_qk_row(&out.cross_qk));
    }
    let no_speech_prob =
        log_softmax_at(&out.logits[..vocab], req.special.no_speech as usize).exp() as f64;
    let mut logits = out.logits[vocab..2 * vocab].to_vec();

    let mut tokens = Vec::new();
    let mut sum_logprob = 0.0f64;
    let limit = req.sample_len.min(dims.n_text_ctx - prompt.len());
    for _ in 0..limit {
        let text_lse = align.then(|| text_logsumexp(&logits, req.special.eot));
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
        if let Some(lse) = text_lse {
            token_probs.push(text_probability(&logits, token, req.special.eot, lse));
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
                cross_qk_heads: req.cross_qk_heads,
            },
        )?;
        if align {
            qk_rows.push(last_qk_row(&out.cross_qk));
        }
        logits = out.logits;
    }
    // Stopped at the length limit: the last token was never fed, so its row is missing.
    while align && qk_rows.len() < tokens.len() + 1 {
        let last = qk_rows.last().cloned().unwrap_or_default();
        qk_rows.push(last);
    }
    Ok(WindowResult {
        avg_logprob: sum_logprob / (tokens.len() + 1) as f64,
        tokens,
        sum_logprob,
        no_speech_prob,
        temperature,
        compression_ratio: 0.0,
        qk_rows,
        token_probs,
    })
}
