//! Voice activity before transcription: the stretches Silero VAD hears speech in become clips
//! of the input, merged up to 30 s, so that the sequential loop and batched windows alike hear
//! only them and every time stays on the input's own timeline (nothing to map back).

use std::path::{Path, PathBuf};

use whisk_types::{VadOptions, N_SAMPLES, SAMPLE_RATE};
use whisk_vad::{speech_segments, SileroVad, SpeechSegment};

use crate::{Error, Result};

/// The ONNX file's name, as faster-whisper ships it.
pub const VAD_FILE: &str = "silero_vad_v6.onnx";

/// Where Silero VAD is looked for when no path is given: `WHISK_VAD_MODEL`, the Whisper
/// model's directory, then where `cargo xtask fetch-models` puts it.
pub(crate) fn find_vad_model(model_dir: &Path) -> Result<PathBuf> {
    let candidates = std::env::var_os("WHISK_VAD_MODEL")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            model_dir.join(VAD_FILE),
            Path::new("target/models/silero-vad-v6").join(VAD_FILE),
        ]);
    let tried: Vec<PathBuf> = candidates.collect();
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        Error::Unavailable(format!(
            "voice activity detection needs Silero VAD v6 ({VAD_FILE}, in faster-whisper's wheel \
             under faster_whisper/assets; `cargo xtask fetch-models` fetches it): give its path \
             (--vad-model or WHISK_VAD_MODEL); looked in {}",
            tried.join(", ")
        ))
    })
}

/// Speech segments joined into clips `[start, end)` (samples) of at most `max` samples: a
/// segment joins the clip before it while the clip, silence between them included, stays
/// within `max` and that silence is at most `max_gap` samples. A segment longer than `max`
/// is a clip of its own.
pub fn merge_into_clips(
    segments: &[SpeechSegment],
    max: usize,
    max_gap: usize,
) -> Vec<(usize, usize)> {
    let mut clips: Vec<(usize, usize)> = Vec::new();
    for s in segments {
        match clips.last_mut() {
            Some(clip)
                if s.end.saturating_sub(clip.0) <= max
                    && s.start.saturating_sub(clip.1) <= max_gap =>
            {
                clip.1 = clip.1.max(s.end)
            }
            _ => clips.push((s.start, s.end)),
        }
    }
    clips
}

/// Silence (between padded speech segments) up to which packed clips still join: 0.5 s,
/// i.e. pauses under 1.3 s with the 400 ms padding on both sides. Splitting at shorter
/// pauses, which fall inside sentences, made the model drop words next to the silence put in
/// their place ("where a farm" became "where farm" in `tests/vad.rs`).
const PACKED_CLIP_GAP_SECONDS: f64 = 0.5;

/// What Silero VAD heard in one input, from one pass over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    /// The stretches to transcribe, `[start, end)` in samples: speech segments joined into
    /// clips of at most 30 s, as the transcription options will hear them.
    pub clips: Vec<(usize, usize)>,
    /// Seconds of speech, segment by segment (faster-whisper's `duration_after_vad`).
    pub seconds: f64,
}

/// The speech of `samples`. `packed`: the clips will share windows, digital silence
/// between them, so only speech separated by short pauses is joined and the noise VAD left
/// out between sentences is not heard; otherwise a clip takes in the silences (and noises)
/// between its speech, to fill its window.
pub(crate) fn speech_of(
    vad: &SileroVad,
    samples: &[f32],
    options: &VadOptions,
    packed: bool,
) -> Speech {
    let probabilities = vad.speech_probabilities(samples);
    let segments = speech_segments(&probabilities, samples.len(), options);
    let max_gap = if packed {
        (PACKED_CLIP_GAP_SECONDS * SAMPLE_RATE as f64) as usize
    } else {
        usize::MAX
    };
    let speech: usize = segments.iter().map(|s| s.end - s.start).sum();
    Speech {
        clips: merge_into_clips(&segments, N_SAMPLES, max_gap),
        seconds: speech as f64 / SAMPLE_RATE as f64,
    }
}

/// Clips as `clip_timestamps`: `start, end, start, end, ...` in seconds.
pub(crate) fn clip_seconds(clips: &[(usize, usize)]) -> Vec<f64> {
    clips
        .iter()
        .flat_map(|&(a, b)| [a, b])
        .map(|s| s as f64 / SAMPLE_RATE as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: usize, end: usize) -> SpeechSegment {
        SpeechSegment { start, end }
    }

    #[test]
    fn segments_merge_up_to_the_limit_and_never_across_it() {
        assert!(merge_into_clips(&[], 100, usize::MAX).is_empty());
        let segments = [
            seg(0, 10),
            seg(20, 40),
            seg(50, 100),
            seg(101, 150),
            seg(300, 450),
        ];
        // 0-100 fits in 100; 101-150 would make 0-150; 300-450 is longer than the limit.
        assert_eq!(
            merge_into_clips(&segments, 100, usize::MAX),
            [(0, 100), (101, 150), (300, 450)]
        );
        // Exactly the limit joins; one sample more does not.
        assert_eq!(
            merge_into_clips(&[seg(0, 5), seg(8, 10)], 10, usize::MAX),
            [(0, 10)]
        );
        assert_eq!(
            merge_into_clips(&[seg(0, 5), seg(8, 11)], 10, usize::MAX),
            [(0, 5), (8, 11)]
        );
    }

    #[test]
    fn packed_clips_join_only_speech_that_touches() {
        let segments = [
            seg(0, 10),
            seg(10, 30),
            seg(31, 40),
            seg(60, 70),
            seg(70, 200),
        ];
        // Padding meeting padding joins; one sample of silence between does not; the limit
        // still holds.
        assert_eq!(
            merge_into_clips(&segments, 100, 0),
            [(0, 30), (31, 40), (60, 70), (70, 200)]
        );
        assert_eq!(
            merge_into_clips(&segments, 100, 1),
            [(0, 40), (60, 70), (70, 200)]
        );
    }

    #[test]
    fn clips_become_clip_timestamps_in_seconds() {
        let clips = [(8_000, 16_000), (32_000, 48_000)];
        assert_eq!(clip_seconds(&clips), [0.5, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_missing_vad_model_names_where_it_was_looked_for() {
        let dir = Path::new("/nonexistent/model");
        if std::env::var_os("WHISK_VAD_MODEL").is_none()
            && !Path::new("target/models/silero-vad-v6")
                .join(VAD_FILE)
                .is_file()
        {
            let err = find_vad_model(dir).unwrap_err().to_string();
            assert!(
                err.contains("/nonexistent/model/silero_vad_v6.onnx"),
                "{err}"
            );
        }
    }
}
