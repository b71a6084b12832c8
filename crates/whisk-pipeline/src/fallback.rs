//! When a window's decode is good enough, and what to keep when none is (openai
//! `decode_with_fallback`; the last resort as faster-whisper picks it).

use whisk_batch::WindowResult;
use whisk_types::TranscribeOptions;

/// Ranks candidates of one temperature: openai's `MaximumLikelihoodRanker` without a length
/// penalty, log-probability per token.
pub(crate) fn score(r: &WindowResult) -> f64 {
    r.sum_logprob / r.tokens.len().max(1) as f64
}

/// A decode passes unless it is repetitive or unlikely; a likely-silent window passes too
/// (it will be skipped as silence).
pub(crate) fn passes(r: &WindowResult, options: &TranscribeOptions) -> bool {
    let too_repetitive = options
        .compression_ratio_threshold
        .is_some_and(|c| r.compression_ratio > c);
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
/// if each is). Reports the last temperature tried, so the caller resets the prompt after it.
pub(crate) fn least_bad(tried: Vec<WindowResult>, options: &TranscribeOptions) -> WindowResult {
    let last_temperature = tried.last().map_or(0.0, |r| r.temperature);
    let not_repetitive = |r: &WindowResult| {
        options
            .compression_ratio_threshold
            .is_none_or(|c| r.compression_ratio <= c)
    };
    let any_fine = tried.iter().any(not_repetitive);
    let best = tried
        .into_iter()
        .filter(|r| !any_fine || not_repetitive(r))
        .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
        .expect("at least one temperature was tried");
    WindowResult {
        temperature: last_temperature,
        ..best
    }
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
