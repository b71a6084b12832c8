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

/// A loop, or text that compresses too well (both only with a compression-ratio threshold).
fn repetitive(r: &WindowResult, options: &TranscribeOptions) -> bool {
    options
        .compression_ratio_threshold
        .is_some_and(|c| r.looped || r.compression_ratio > c)
}

/// Average log-probability more than `margin` below the threshold (never without one).
fn unlikely(r: &WindowResult, options: &TranscribeOptions, margin: f64) -> bool {
    options
        .logprob_threshold
        .is_some_and(|lp| r.avg_logprob < lp - margin)
}

/// A decode passes unless it is repetitive or unlikely; a likely-silent window passes too
/// (it will be skipped as silence).
pub(crate) fn passes(r: &WindowResult, options: &TranscribeOptions) -> bool {
    let too_unlikely = unlikely(r, options, 0.0);
    let silent = options
        .no_speech_threshold
        .is_some_and(|ns| r.no_speech_prob > ns)
        && too_unlikely;
    silent || (!repetitive(r, options) && !too_unlikely)
}

/// How far below the log-probability threshold a decode that is not repetitive is past
/// rescuing. On the bench's long file (English model; foreign speech and music after 490 s),
/// no window whose best candidate fell this low at some temperature passed at a higher one:
/// sampling hotter only lowered it further, at best-of-5 candidates a temperature. Not used
/// after earlier text (the sequential loop's prompt), which can be what made the decode poor.
const HOPELESS_LOGPROB_MARGIN: f64 = 0.5;

/// Whether to stop the fallback at a failed decode: it is unlikely far past the threshold
/// without being repetitive, so a hotter temperature would only sample worse text.
pub(crate) fn hopeless(r: &WindowResult, options: &TranscribeOptions) -> bool {
    unlikely(r, options, HOPELESS_LOGPROB_MARGIN) && !repetitive(r, options)
}

/// Whether a hotter temperature gave back, word for word, the text that failed at the one
/// before, failing again only for compressing too well, with no loop at its end: the
/// repetition is what was said (TIMIT's speakers each read the same two sentences, and the
/// pause set holds one four times in 20 s), and hotter tries only sample less likely
/// variants of it. On that window of the bench's pause set, the four temperatures after the
/// second were most of the fallback's work, and all failed the same way.
pub(crate) fn said_again(
    previous: &WindowResult,
    now: &WindowResult,
    options: &TranscribeOptions,
    special: &SpecialTokens,
) -> bool {
    let text = |r: &WindowResult| -> Vec<u32> {
        r.tokens
            .iter()
            .copied()
            .filter(|&t| special.is_text(t))
            .collect()
    };
    let now_text = text(now);
    repetitive(now, options)
        && !unlikely(now, options, 0.0)
        && trailing_repetition(&now_text).is_none()
        && text(previous) == now_text
}

/// Every temperature failed (or the fallback stopped early: hopeless, or said again): the
/// likeliest result among those that are not repetitive (all, if each is), its loop cut after
/// the phrase's first time. Reports the last temperature tried, so the caller resets the
/// prompt after it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn result(avg_logprob: f64, compression_ratio: f64, looped: bool) -> WindowResult {
        WindowResult {
            tokens: vec![1, 2, 3],
            sum_logprob: avg_logprob * 4.0,
            avg_logprob,
            no_speech_prob: 0.1,
            temperature: 0.0,
            compression_ratio,
            qk_rows: Vec::new(),
            token_probs: Vec::new(),
            refeed: None,
            rng: rand::rngs::StdRng::seed_from_u64(0),
            looped,
        }
    }

    #[test]
    fn only_plain_text_far_below_the_threshold_ends_the_fallback() {
        let options = TranscribeOptions::default();
        assert_eq!(options.logprob_threshold, Some(-1.0));
        // Failing, but near enough to the threshold that a hotter try may pass.
        assert!(!passes(&result(-1.2, 1.5, false), &options));
        assert!(!hopeless(&result(-1.2, 1.5, false), &options));
        // Far below: hopeless.
        assert!(hopeless(&result(-1.8, 1.5, false), &options));
        // A loop or text that compresses too well fails for that; sampling may break it.
        assert!(!hopeless(&result(-1.8, 1.5, true), &options));
        assert!(!hopeless(&result(-1.8, 3.0, false), &options));
        // Without a log-probability threshold nothing is hopeless.
        let no_threshold = TranscribeOptions {
            logprob_threshold: None,
            ..options
        };
        assert!(!hopeless(&result(-5.0, 1.5, false), &no_threshold));
    }

    #[test]
    fn the_same_repetitive_text_again_ends_the_fallback_unless_it_ends_in_a_loop() {
        let options = TranscribeOptions::default();
        let special = SpecialTokens::small_for_tests();
        // Flagged as a loop where the text compresses too well, as the decode's check does.
        let with = |tokens: Vec<u32>, avg_logprob: f64, compression_ratio: f64| WindowResult {
            tokens,
            ..result(avg_logprob, compression_ratio, compression_ratio > 2.4)
        };
        // A sentence said twice over (timestamps apart), likely but compressing too well.
        let said =
            |ts: u32| [vec![19], vec![1, 2, 3, 4, 5], vec![ts], vec![1, 2, 3, 4, 5]].concat();
        let (cold, hot) = (with(said(25), -0.2, 2.7), with(said(26), -0.15, 2.7));
        assert!(!passes(&hot, &options));
        assert!(said_again(&cold, &hot, &options, &special));
        // Other text, or the same text failing for its log-probability, goes on.
        let other = with([vec![19], vec![1, 2, 3, 4, 6]].concat(), -0.2, 2.7);
        assert!(!said_again(&other, &hot, &options, &special));
        let unlikely = with(said(26), -1.2, 2.7);
        assert!(!said_again(&cold, &unlikely, &options, &special));
        // Text that fails for no repetition, or only without a compression threshold, too.
        assert!(!said_again(
            &cold,
            &with(said(26), -0.15, 1.5),
            &options,
            &special
        ));
        let no_threshold = TranscribeOptions {
            compression_ratio_threshold: None,
            ..options.clone()
        };
        assert!(!said_again(&cold, &hot, &no_threshold, &special));
        // A loop at its end ("A- A- A- ..."): hotter tries may break it.
        let looping = |ts: u32| [vec![ts], vec![1, 2, 3], [4, 5].repeat(8)].concat();
        let (cold, hot) = (with(looping(19), -0.4, 1.4), with(looping(19), -0.4, 1.4));
        assert!(!said_again(&cold, &hot, &options, &special));
    }
}
