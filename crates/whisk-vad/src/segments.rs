//! Speech segments from frame probabilities: faster-whisper 1.2.1's `get_speech_timestamps`,
//! decision for decision, so that both cut the same audio at the same sample.

use crate::{VadOptions, FRAME_SAMPLES};

const SAMPLE_RATE: f64 = 16_000.0;
/// A silence must last this long before an over-long segment may be split there (98 ms, as
/// faster-whisper).
const MIN_SILENCE_AT_MAX_SPEECH_MS: f64 = 98.0;

/// A stretch of speech, in samples of the 16 kHz input: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechSegment {
    pub start: usize,
    pub end: usize,
}

/// The speech segments of an input of `samples` samples whose frames have `probabilities`
/// ([`crate::SileroVad::speech_probabilities`]), in order and not overlapping.
pub fn speech_segments(
    probabilities: &[f32],
    samples: usize,
    options: &VadOptions,
) -> Vec<SpeechSegment> {
    let raw = raw_segments(probabilities, samples, options);
    pad(
        raw,
        samples,
        SAMPLE_RATE * f64::from(options.speech_pad_ms) / 1000.0,
    )
}

/// Segments before padding, as `(start, end)`.
fn raw_segments(
    probabilities: &[f32],
    samples: usize,
    options: &VadOptions,
) -> Vec<(usize, usize)> {
    let threshold = options.threshold;
    let neg_threshold = options
        .neg_threshold
        .unwrap_or((threshold - 0.15).max(0.01));
    let ms = |ms: f64| SAMPLE_RATE * ms / 1000.0;
    let min_speech = ms(f64::from(options.min_speech_duration_ms));
    let pad = ms(f64::from(options.speech_pad_ms));
    let max_speech = SAMPLE_RATE * options.max_speech_duration_s - FRAME_SAMPLES as f64 - 2.0 * pad;
    let min_silence = ms(f64::from(options.min_silence_duration_ms));
    let min_silence_at_max_speech = ms(MIN_SILENCE_AT_MAX_SPEECH_MS);

    let mut segments = Vec::new();
    // The open segment's start; `Some` exactly while in speech.
    let mut start: Option<usize> = None;
    // Where the current silence began (0: none), the end of the last long-enough silence
    // inside the segment, and where speech came back after it.
    let (mut temp_end, mut prev_end, mut next_start) = (0usize, 0usize, 0usize);
    for (i, &p) in probabilities.iter().enumerate() {
        let p = f64::from(p);
        let at = FRAME_SAMPLES * i;
        if p >= threshold && temp_end != 0 {
            temp_end = 0;
            if next_start < prev_end {
                next_start = at;
            }
        }
        let Some(open) = start else {
            if p >= threshold {
                start = Some(at);
            }
            continue;
        };
        if (at - open) as f64 > max_speech {
            if prev_end != 0 {
                segments.push((open, prev_end));
                start = (next_start >= prev_end).then_some(next_start);
                (prev_end, next_start, temp_end) = (0, 0, 0);
            } else {
                segments.push((open, at));
                start = None;
                (prev_end, next_start, temp_end) = (0, 0, 0);
                continue;
            }
        }
        let Some(open) = start else { continue };
        if p < neg_threshold {
            if temp_end == 0 {
                temp_end = at;
            }
            if (at - temp_end) as f64 > min_silence_at_max_speech {
                prev_end = temp_end;
            }
            if ((at - temp_end) as f64) < min_silence {
                continue;
            }
            if (temp_end - open) as f64 > min_speech {
                segments.push((open, temp_end));
            }
            start = None;
            (prev_end, next_start, temp_end) = (0, 0, 0);
        }
    }
    if let Some(open) = start {
        if (samples as f64 - open as f64) > min_speech {
            segments.push((open, samples));
        }
    }
    segments
}

/// Widens every segment by `pad` samples, splitting the silence between neighbours closer
/// than twice that.
fn pad(mut raw: Vec<(usize, usize)>, samples: usize, pad: f64) -> Vec<SpeechSegment> {
    let widen_start = |start: usize, by: f64| (start as f64 - by).max(0.0) as usize;
    let n = raw.len();
    for i in 0..n {
        if i == 0 {
            raw[0].0 = widen_start(raw[0].0, pad);
        }
        if i + 1 < n {
            let silence = raw[i + 1].0 as i64 - raw[i].1 as i64;
            if (silence as f64) < 2.0 * pad {
                let half = silence.div_euclid(2);
                raw[i].1 = (raw[i].1 as i64 + half) as usize;
                raw[i + 1].0 = (raw[i + 1].0 as i64 - half).max(0) as usize;
            } else {
                raw[i].1 = (samples as f64).min(raw[i].1 as f64 + pad) as usize;
                raw[i + 1].0 = widen_start(raw[i + 1].0, pad);
            }
        } else {
            raw[i].1 = (samples as f64).min(raw[i].1 as f64 + pad) as usize;
        }
    }
    raw.into_iter()
        .map(|(start, end)| SpeechSegment { start, end })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(pattern: &str) -> Vec<f32> {
        pattern
            .chars()
            .map(|c| if c == '#' { 0.9 } else { 0.1 })
            .collect()
    }

    fn options(min_silence_ms: u32, pad_ms: u32) -> VadOptions {
        VadOptions {
            min_silence_duration_ms: min_silence_ms,
            speech_pad_ms: pad_ms,
            ..VadOptions::default()
        }
    }

    #[test]
    fn no_speech_gives_no_segments() {
        let p = frames("..........");
        assert!(speech_segments(&p, 5120, &VadOptions::default()).is_empty());
        assert!(speech_segments(&[], 0, &VadOptions::default()).is_empty());
    }

    #[test]
    fn speech_to_the_last_sample_ends_at_the_input_end() {
        let p = frames("...#######");
        let s = speech_segments(&p, 5000, &options(100, 0));
        assert_eq!(
            s,
            [SpeechSegment {
                start: 3 * 512,
                end: 5000
            }]
        );
    }

    #[test]
    fn silence_long_enough_splits_and_padding_shares_a_short_gap() {
        // Speech, 8 frames (256 ms) of silence, speech: min silence 100 ms splits it.
        let p = frames("####........####");
        let raw = raw_segments(&p, 16 * 512, &options(100, 0));
        assert_eq!(raw, [(0, 4 * 512), (12 * 512, 16 * 512)]);
        // 200 ms of padding each side: the 4096-sample gap is under 2 × 3200, so it is halved.
        let s = speech_segments(&p, 16 * 512, &options(100, 200));
        assert_eq!(
            s[0],
            SpeechSegment {
                start: 0,
                end: 4 * 512 + 2048
            }
        );
        assert_eq!(
            s[1],
            SpeechSegment {
                start: 12 * 512 - 2048,
                end: 16 * 512
            }
        );
    }

    #[test]
    fn an_over_long_segment_is_cut_at_its_last_silence() {
        // 1 s segments allowed (16000 - 512 samples with no padding); a 160 ms pause at frames
        // 10-14 (over 98 ms) comes before the limit, so the cut falls at its start and the
        // next segment starts where speech came back.
        let p = frames("##########.....################################");
        let o = VadOptions {
            max_speech_duration_s: 1.0,
            min_silence_duration_ms: 2000,
            speech_pad_ms: 0,
            ..VadOptions::default()
        };
        let s = speech_segments(&p, p.len() * 512, &o);
        assert_eq!(
            s[0],
            SpeechSegment {
                start: 0,
                end: 10 * 512
            }
        );
        assert_eq!(s[1].start, 15 * 512);
        assert!(s.iter().all(|s| s.end - s.start <= 16000));
    }

    #[test]
    fn an_over_long_segment_without_silence_is_cut_at_the_limit() {
        let p = frames(&"#".repeat(70));
        let o = VadOptions {
            max_speech_duration_s: 1.0,
            speech_pad_ms: 0,
            ..VadOptions::default()
        };
        let s = speech_segments(&p, 70 * 512, &o);
        assert_eq!(
            s[0],
            SpeechSegment {
                start: 0,
                end: 31 * 512
            }
        );
        // The frame at the cut is not reopened: speech resumes one frame later.
        assert_eq!(s[1].start, 32 * 512);
    }
}
