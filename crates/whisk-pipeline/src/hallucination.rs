//! Suspected hallucinations and the silence around them (openai-whisper's
//! `hallucination_silence_threshold`): a segment whose words are improbable, very short or
//! very long is suspect; one with silence on both sides is dropped and decoding resumes
//! after it, and silence before a suspect first segment is skipped.

use whisk_types::{Segment, Word, HOP_LENGTH, N_FRAMES, SAMPLE_RATE};

/// Marks that never count as words when scoring a segment (openai's set).
const PUNCTUATION: &str = "\"'“¿([{-\"'.。,，!！?？:：”)]}、";

/// How unlike a real word `word` looks: improbable, shorter than 133 ms, longer than 2 s.
pub(crate) fn word_anomaly_score(word: &Word) -> f64 {
    let duration = word.end - word.start;
    let mut score = 0.0;
    if word.probability < 0.15 {
        score += 1.0;
    }
    if duration < 0.133 {
        score += (0.133 - duration) * 15.0;
    }
    if duration > 2.0 {
        score += duration - 2.0;
    }
    score
}

/// Whether a segment's first eight words (punctuation aside) look hallucinated.
pub(crate) fn is_anomaly(segment: Option<&Segment>) -> bool {
    let Some(words) = segment.and_then(|s| s.words.as_deref()) else {
        return false;
    };
    if words.is_empty() {
        return false;
    }
    // A word that is part of the punctuation string (as openai's `not in`) is skipped.
    let scored: Vec<&Word> = words
        .iter()
        .filter(|w| !PUNCTUATION.contains(w.word.as_str()))
        .take(8)
        .collect();
    let score: f64 = scored.iter().map(|w| word_anomaly_score(w)).sum();
    score >= 3.0 || score + 0.01 >= scored.len() as f64
}

/// End of the last word of `segments`, if any has words.
pub(crate) fn last_word_end(segments: &[Segment]) -> Option<f64> {
    segments
        .iter()
        .rev()
        .find_map(|s| s.words.as_ref()?.last().map(|w| w.end))
}

fn has_words(s: &Segment) -> bool {
    s.words.as_ref().is_some_and(|w| !w.is_empty())
}

fn frames(seconds: f64) -> usize {
    (seconds * SAMPLE_RATE as f64 / HOP_LENGTH as f64)
        .round()
        .max(0.0) as usize
}

/// One window's segments (with words) and where it sits.
pub(crate) struct ScreenedWindow {
    pub seek: usize,
    /// Frames of audio the window covered.
    pub segment_size: usize,
    pub single_timestamp_ending: bool,
    /// Last word end before this window.
    pub last_speech: f64,
    pub content_frames: usize,
}

/// What to do with a window after screening it.
pub(crate) enum Verdict {
    /// Keep the (possibly shortened) segments and go on from `seek`.
    Keep { seek: usize },
    /// Drop the whole window and go on from `seek`: it opens with silence and then a
    /// suspect segment.
    Skip { seek: usize },
}

/// openai's screening of one decoded window. `segments` may be cut short at a suspect
/// segment with silence around it.
pub(crate) fn screen(
    segments: &mut Vec<Segment>,
    span: &ScreenedWindow,
    threshold: f64,
    default_seek: usize,
) -> Verdict {
    let seconds = |f: usize| (f * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
    let time_offset = seconds(span.seek);
    let window_end = seconds(span.seek + N_FRAMES);
    let segment_duration = seconds(span.segment_size);
    let content_duration = seconds(span.content_frames);

    let mut seek = default_seek;
    if !span.single_timestamp_ending {
        if let Some(end) = last_word_end(segments).filter(|&e| e > time_offset) {
            // A long silence after the last word: resume right after it; else after the
            // window (the silence holds nothing the next window would find).
            seek = if window_end - end > threshold {
                frames(end)
            } else {
                span.seek + span.segment_size
            };
        }
    }

    if let Some(first) = segments.iter().find(|s| has_words(s)) {
        if is_anomaly(Some(first)) {
            let gap = first.start - time_offset;
            if gap > threshold {
                return Verdict::Skip {
                    seek: span.seek + frames(gap),
                };
            }
        }
    }

    let mut last_end = span.last_speech;
    for i in 0..segments.len() {
        if !has_words(&segments[i]) {
            continue;
        }
        let segment = &segments[i];
        if is_anomaly(Some(segment)) {
            let next = segments[i + 1..].iter().find(|s| has_words(s));
            let next_start = next
                .and_then(|n| n.words.as_ref()?.first().map(|w| w.start))
                .unwrap_or(time_offset + segment_duration);
            let silence_before = segment.start - last_end > threshold
                || segment.start < threshold
                || segment.start - time_offset < 2.0;
            let silence_after = next_start - segment.end > threshold
                || is_anomaly(next)
                || window_end - segment.end < 2.0;
            if silence_before && silence_after {
                seek = frames((time_offset + 1.0).max(segment.start));
                if content_duration - segment.end < threshold {
                    seek = span.content_frames;
                }
                segments.truncate(i);
                break;
            }
        }
        last_end = segment.end;
    }
    Verdict::Keep { seek }
}

/// Batched mode's screening, on one input's stitched segments. Its windows were decoded
/// independently, so there is no seek to move: a suspect segment is dropped when it has
/// silence (no kept words) for more than `threshold` seconds before it, or starts within
/// `threshold` of the input's start, and after it more than `threshold` of silence, another
/// suspect segment, or the end of the input.
pub(crate) fn drop_isolated_anomalies(segments: Vec<Segment>, threshold: f64) -> Vec<Segment> {
    let suspect: Vec<bool> = segments
        .iter()
        .map(|s| has_words(s) && is_anomaly(Some(s)))
        .collect();
    let first_word = |s: &Segment| s.words.as_ref().and_then(|w| w.first()).map(|w| w.start);
    let last_word = |s: &Segment| s.words.as_ref().and_then(|w| w.last()).map(|w| w.end);
    let mut last_end: Option<f64> = None;
    let mut kept = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        if suspect[i] {
            let (start, end) = (
                first_word(segment).unwrap_or(segment.start),
                last_word(segment).unwrap_or(segment.end),
            );
            let before = match last_end {
                Some(e) => start - e > threshold,
                None => true,
            } || start < threshold;
            let next = (i + 1..segments.len()).find(|&j| has_words(&segments[j]));
            let after = match next {
                Some(j) => {
                    suspect[j] || first_word(&segments[j]).is_some_and(|s| s - end > threshold)
                }
                None => true,
            };
            if before && after {
                continue;
            }
        }
        if let Some(end) = last_word(segment) {
            last_end = Some(end);
        }
        kept.push(segment.clone());
    }
    kept
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn word(text: &str, start: f64, end: f64, probability: f64) -> Word {
        Word {
            word: text.into(),
            start,
            end,
            probability,
        }
    }

    pub(crate) fn segment(start: f64, end: f64, words: Vec<Word>) -> Segment {
        Segment {
            id: 0,
            seek: 0,
            start,
            end,
            text: words.iter().map(|w| w.word.as_str()).collect(),
            tokens: Vec::new(),
            temperature: 0.0,
            avg_logprob: 0.0,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            words: Some(words),
        }
    }

    #[test]
    fn anomaly_scores() {
        assert_eq!(word_anomaly_score(&word(" fine", 0.0, 0.5, 0.9)), 0.0);
        assert_eq!(word_anomaly_score(&word(" meh", 0.0, 0.5, 0.1)), 1.0);
        let short = word_anomaly_score(&word(" x", 0.0, 0.033, 0.9));
        assert!((short - 1.5).abs() < 1e-9);
        let long = word_anomaly_score(&word(" yyy", 0.0, 4.5, 0.9));
        assert!((long - 2.5).abs() < 1e-9);
    }

    #[test]
    fn segments_of_improbable_words_are_suspect() {
        let good = segment(
            0.0,
            1.0,
            vec![word(" hi", 0.0, 0.4, 0.9), word(" there", 0.4, 1.0, 0.8)],
        );
        assert!(!is_anomaly(Some(&good)));
        let bad = segment(
            0.0,
            1.0,
            vec![word(" thanks", 0.0, 0.5, 0.05), word(" all", 0.5, 1.0, 0.1)],
        );
        assert!(is_anomaly(Some(&bad)));
        // Punctuation does not dilute the score.
        let with_dots = segment(
            0.0,
            1.0,
            vec![word(" thanks", 0.0, 0.5, 0.05), word(".", 0.5, 0.5, 0.9)],
        );
        assert!(is_anomaly(Some(&with_dots)));
        assert!(!is_anomaly(None));
        assert!(!is_anomaly(Some(&segment(0.0, 1.0, Vec::new()))));
    }

    fn span() -> ScreenedWindow {
        ScreenedWindow {
            seek: 0,
            segment_size: N_FRAMES,
            single_timestamp_ending: false,
            last_speech: 0.0,
            content_frames: 6000,
        }
    }

    #[test]
    fn a_suspect_segment_between_silences_is_dropped() {
        // Real speech to 5 s, then a suspect segment at 15-16 s with silence around it.
        let mut segments = vec![
            segment(
                0.0,
                5.0,
                vec![word(" real", 0.0, 2.0, 0.9), word(" speech", 2.0, 5.0, 0.9)],
            ),
            segment(
                15.0,
                16.0,
                vec![
                    word(" thanks", 15.0, 15.5, 0.05),
                    word(" watching", 15.5, 16.0, 0.05),
                ],
            ),
        ];
        let Verdict::Keep { seek } = screen(&mut segments, &span(), 2.0, 0) else {
            panic!("the window has real speech");
        };
        assert_eq!(segments.len(), 1);
        assert_eq!(seek, 1500, "resumes at the suspect segment's start");
    }

    #[test]
    fn batched_screening_drops_only_suspects_between_silences() {
        let real = |a: f64, b: f64| {
            let words = vec![
                word(" real", a, a + 0.4, 0.9),
                word(" talk", b - 0.4, b, 0.9),
            ];
            segment(a, b, words)
        };
        let suspect = |a: f64, b: f64| segment(a, b, vec![word(" thanks", a, b, 0.05)]);
        let texts = |s: &[Segment]| s.iter().map(|s| s.start).collect::<Vec<_>>();
        // Silence on both sides: dropped; a suspect right after speech: kept.
        let kept = drop_isolated_anomalies(
            vec![real(0.0, 5.0), suspect(10.0, 11.0), real(15.0, 16.0)],
            2.0,
        );
        assert_eq!(texts(&kept), [0.0, 15.0]);
        let kept = drop_isolated_anomalies(
            vec![real(0.0, 5.0), suspect(5.5, 6.0), real(10.0, 11.0)],
            2.0,
        );
        assert_eq!(texts(&kept), [0.0, 5.5, 10.0]);
        // Speech follows closely: kept.
        let kept = drop_isolated_anomalies(
            vec![real(0.0, 5.0), suspect(10.0, 11.0), real(11.5, 12.0)],
            2.0,
        );
        assert_eq!(texts(&kept), [0.0, 10.0, 11.5]);
        // Two suspects in a row after silence, the input's end after them: both dropped.
        let kept = drop_isolated_anomalies(
            vec![real(0.0, 5.0), suspect(10.0, 11.0), suspect(11.2, 11.5)],
            2.0,
        );
        assert_eq!(texts(&kept), [0.0]);
        // At the input's start, a suspect followed closely by speech stays.
        let kept = drop_isolated_anomalies(vec![suspect(0.5, 1.0), real(1.2, 3.0)], 2.0);
        assert_eq!(texts(&kept), [0.5, 1.2]);
    }

    #[test]
    fn silence_then_a_suspect_first_segment_skips_the_silence() {
        let mut segments = vec![segment(10.0, 11.0, vec![word(" you", 10.0, 10.05, 0.05)])];
        match screen(&mut segments, &span(), 2.0, 0) {
            Verdict::Skip { seek } => assert_eq!(seek, 1000),
            Verdict::Keep { .. } => panic!("10 s of silence before a suspect segment"),
        }
    }

    #[test]
    fn clean_speech_is_kept_and_resumes_after_the_last_word() {
        let mut segments = vec![segment(
            0.0,
            5.0,
            vec![word(" real", 0.0, 2.0, 0.9), word(" speech", 2.0, 5.0, 0.9)],
        )];
        let Verdict::Keep { seek } = screen(&mut segments, &span(), 2.0, 0) else {
            panic!("clean speech");
        };
        assert_eq!(segments.len(), 1);
        // 25 s of silence after the last word: resume right after it.
        assert_eq!(seek, 500);
    }
}
