//! When a window's decode is good enough, and what to keep when none is (openai
//! `decode_with_fallback`; the last resort as faster-whisper picks it).

use whisk_batch::WindowResult;
use whisk_decode::trailing_repetition;
use whisk_types::{SpecialTokens, TranscribeOptions};

/// Ranks candidates of one temperature: openai's `MaximumLikelihoodRanker` without a length
/// penalty, log-probability per token.
pub(crate) fn score(r: &WindowResult) -> f64 {
    r.sum_logprob / r.tokens.len().max(1) as f64
}

/// A decode passes unless it is repetitive (a loop, or text that compresses too well; both
/// only with a compression-ratio threshold) or unlikely; a likely-silent window passes too
/// (it will be skipped as silence).
pub(crate) fn passes(r: &WindowResult, options: &TranscribeOptions) -> bool {
    let too_repetitive = options
        .compression_ratio_threshold
        .is_some_and(|c| r.looped || r.compression_ratio > c);
    let too_unlikely = options
        .logprob_threshold
        .is_some_and(|lp| r.avg_logprob < lp);
    let silent = options
        .no_speech_threshold
        .is_some_and(|ns| r.no_speech_prob > ns)
        && too_unlikely;
    silent || (!too_repetitive && !too_unlikely)
}

/// Every temperature failed: the likeliest result among those that are not repetitive (all,
/// if each is), its loop cut after the phrase's first time. Reports the last temperature
/// tried, so the caller resets the prompt after it.
pub(crate) fn least_bad(
    tried: Vec<WindowResult>,
    options: &TranscribeOptions,
    special: &SpecialTokens,
) -> WindowResult {
    let last_temperature = tried.last().map_or(0.0, |r| r.temperature);
    let not_repetitive = |r: &WindowResult| {
        !r.looped
            && options
                .compression_ratio_threshold
                .is_none_or(|c| r.compression_ratio <= c)
    };
    let any_fine = tried.iter().any(not_repetitive);
    let best = tried
        .into_iter()
        .filter(|r| !any_fine || not_repetitive(r))
        .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
        .expect("at least one temperature was tried");
    cut_loop(
        WindowResult {
            temperature: last_temperature,
            ..best
        },
        special,
    )
}

/// The decode kept, a loop in it cut after the phrase's first time (with what it holds of
/// probabilities and attention), so no loop is ever written out.
pub(crate) fn cut_loop(mut r: WindowResult, special: &SpecialTokens) -> WindowResult {
    if !r.looped {
        return r;
    }
    let text_at: Vec<usize> = (0..r.tokens.len())
        .filter(|&j| special.is_text(r.tokens[j]))
        .collect();
    let text: Vec<u32> = text_at.iter().map(|&j| r.tokens[j]).collect();
    if let Some(repetition) = trailing_repetition(&text) {
        let end = text_at[repetition.keep];
        r.tokens.truncate(end);
        r.token_probs.truncate(end);
        r.qk_rows.truncate(end + 1);
        r.refeed = None;
    }
    r.looped = false;
    r
}

/// Whether a window is silence to skip: likely no speech, and not confidently decoded.
pub(crate) fn is_silent(r: &WindowResult, options: &TranscribeOptions) -> bool {
    options.no_speech_threshold.is_some_and(|t| {
        r.no_speech_prob > t
            && !options
                .logprob_threshold
                .is_some_and(|lp| r.avg_logprob > lp)
    })
}
