//! openai-whisper's sequential loop over one input: a 30 s window is decoded, its segments
//! are cut at timestamp pairs (and timed word by word), and the next window starts where its
//! text ended, prompted with the text so far.

use rand::rngs::StdRng;
use rand::SeedableRng;
use whisk_audio::Mel;
use whisk_backend::Backend;
use whisk_batch::{Repetitive, WindowRequest, WindowResult};
use whisk_decode::{sot_sequence, BeamOptions, LogitRules};
use whisk_types::{
    Segment, SpecialTokens, TranscribeOptions, Transcript, WordAlignment, HOP_LENGTH, INPUT_STRIDE,
    N_FRAMES, SAMPLE_RATE, TIME_PRECISION,
};

use crate::{
    check_options, clip_ranges, encode_window, fallback, hallucination, padded_mel, Pipeline,
    PipelineError, Progress, Result,
};

impl<B: Backend> Pipeline<B> {
    /// Transcribes 16 kHz mono samples. `progress` is called after every window, with the
    /// segments that window finished.
    pub fn transcribe(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Transcript> {
        check_options(options)?;
        let repetitive = self.repetitive(options);
        let mut run = Sequential::start(
            self,
            samples,
            options,
            repetitive.as_ref().map(|r| r as &Repetitive),
        )?;
        let total_seconds = samples.len() as f64 / SAMPLE_RATE as f64;
        let clips = clip_ranges(
            &options.clip_timestamps,
            run.content_frames,
            SAMPLE_RATE / HOP_LENGTH,
        );
        let stop = std::cell::Cell::new(false);
        for (clip_start, clip_end) in clips {
            let mut seek = clip_start;
            while seek < clip_end {
                let finished_before = run.segments.len();
                seek = run.window(seek, clip_end)?.max(clip_start);
                progress(Progress {
                    done_seconds: frames_to_seconds(seek.min(run.content_frames)),
                    total_seconds,
                    input: 0,
                    segments: &run.segments[finished_before..],
                    stop: &stop,
                });
                if stop.get() {
                    return Err(PipelineError::Stopped);
                }
            }
        }
        run.finish()
    }
}

fn frames_to_seconds(frames: usize) -> f64 {
    (frames * HOP_LENGTH) as f64 / SAMPLE_RATE as f64
}

/// What the loop carries from one window to the next.
struct Sequential<'a, B: Backend> {
    pipeline: &'a Pipeline<B>,
    options: &'a TranscribeOptions,
    repetitive: Option<&'a Repetitive<'a>>,
    mel: Mel,
    /// Mel frames that hold audio (the rest is padding).
    content_frames: usize,
    /// Index into the tokenizer's languages: given, or detected on the first window.
    language: Option<usize>,
    /// Languages by probability, when `language` was detected.
    language_probs: Vec<(usize, f32)>,
    sot: Vec<u32>,
    rules: LogitRules,
    /// Heads whose attention the decode itself keeps (single-pass word timing), else none.
    qk_heads: &'a [(usize, usize)],
    /// The prompt history: the initial prompt, then every kept segment's tokens.
    all_tokens: Vec<u32>,
    initial_len: usize,
    /// The prompt starts here (after a hot fallback, earlier text is not fed forward).
    prompt_reset_since: usize,
    segments: Vec<Segment>,
    rng: StdRng,
    /// End of the last word so far, in seconds.
    last_speech: f64,
}

impl<'a, B: Backend> Sequential<'a, B> {
    fn start(
        pipeline: &'a Pipeline<B>,
        samples: &[f32],
        options: &'a TranscribeOptions,
        repetitive: Option<&'a Repetitive<'a>>,
    ) -> Result<Self> {
        let dims = pipeline.backend.dims();
        let tokenizer = &pipeline.tokenizer;
        let special = tokenizer.special();
        let multilingual = tokenizer.is_multilingual();
        let (mel, content_frames) = padded_mel(samples, dims.n_mels, options.mel_padding);
        let mut language = pipeline.given_language(options)?;
        let mut language_probs = Vec::new();
        if multilingual && language.is_none() {
            // openai detects once, on the first window, and keeps that language throughout.
            language_probs = pipeline.detect_language_of(&mel.window(0, N_FRAMES))?;
            language = language_probs.first().map(|l| l.0);
        }
        let sot = sot_sequence(
            special,
            multilingual,
            language,
            options.decode.task,
            options.decode.without_timestamps,
        );
        let rules = LogitRules::new(
            special,
            &options.decode,
            &pipeline.non_speech,
            &pipeline.space,
        );
        let all_tokens: Vec<u32> = match &options.initial_prompt {
            Some(p) => tokenizer.encode(&format!(" {}", p.trim()))?,
            None => Vec::new(),
        };
        // The single pass times words with the decode's attention; the character pass keeps
        // it too, to decide where the next window starts (`Pipeline::decode_timed`).
        let decode_attention = options.word_timestamps
            && matches!(
                options.word_alignment,
                WordAlignment::SinglePass | WordAlignment::Chars
            );
        Ok(Self {
            pipeline,
            options,
            repetitive,
            mel,
            content_frames,
            language,
            language_probs,
            sot,
            rules,
            qk_heads: if decode_attention {
                &pipeline.alignment_heads
            } else {
                &[]
            },
            initial_len: all_tokens.len(),
            all_tokens,
            prompt_reset_since: 0,
            segments: Vec::new(),
            rng: StdRng::seed_from_u64(options.seed),
            last_speech: 0.0,
        })
    }

    /// Decodes the window at `seek` inside a clip that ends at `clip_end`; its segments join
    /// the transcript. Returns where the next window starts.
    fn window(&mut self, seek: usize, clip_end: usize) -> Result<usize> {
        let segment_size = N_FRAMES
            .min(self.content_frames - seek)
            .min(clip_end - seek);
        let mut window = self.mel.window(seek, N_FRAMES);
        if clip_end < self.content_frames {
            // Audio after the clip is not the model's to hear: zero features, as openai.
            for row in window.chunks_mut(N_FRAMES) {
                row[segment_size..].fill(0.0);
            }
        }
        let encoded = encode_window(&self.pipeline.backend, &window)?;
        let result = self.decode(&encoded)?;
        if fallback::is_silent(&result, self.options) {
            return Ok(seek + segment_size);
        }
        let special = self.pipeline.tokenizer.special();
        let time_offset = frames_to_seconds(seek);
        let cut = cut_window(&result.tokens, special, time_offset, segment_size);
        let mut segments: Vec<Segment> = cut
            .segments
            .iter()
            .map(|(start, end, range)| {
                let tokens = result.tokens[range.clone()].to_vec();
                self.pipeline.segment(&result, tokens, (*start, *end), seek)
            })
            .collect::<Result<_>>()?;
        let mut next = seek + cut.advance;
        if self.options.word_timestamps {
            let speech_before = self.last_speech;
            let decode_timed = self.time_words(
                &encoded,
                &result,
                &cut,
                &window,
                segment_size,
                seek,
                &mut segments,
            )?;
            let screened = hallucination::ScreenedWindow {
                seek,
                segment_size,
                single_timestamp_ending: cut.single_timestamp_ending,
                last_speech: speech_before,
                content_frames: self.content_frames,
            };
            let keep;
            (next, keep) = seek_after_words(
                &mut segments,
                decode_timed.as_deref(),
                &screened,
                next,
                self.options,
                &mut self.last_speech,
            );
            if !keep {
                return Ok(next);
            }
        }
        self.keep(segments, result.temperature);
        Ok(next)
    }

    /// The window's decode at rising temperatures, prompted with the text so far.
    fn decode(&mut self, encoded: &B::Encoded) -> Result<WindowResult> {
        let options = self.options;
        let previous = if options.condition_on_previous_text {
            &self.all_tokens[self.prompt_reset_since..]
        } else {
            &self.all_tokens[..0]
        };
        let request = WindowRequest {
            previous,
            sot_sequence: &self.sot,
            rules: &self.rules,
            special: self.pipeline.tokenizer.special(),
            sample_len: options
                .decode
                .sample_len
                .unwrap_or(self.pipeline.backend.dims().n_text_ctx / 2),
            cross_qk_heads: self.qk_heads,
            keep_probs: options.word_timestamps && options.word_alignment == WordAlignment::Chars,
            beam: BeamOptions::from_decode(&options.decode),
            repetitive: self.repetitive,
        };
        self.pipeline
            .decode_with_fallback(encoded, &request, options, &mut self.rng)
    }

    /// Times the words of the window's segments (stored in them); returns them timed by the
    /// decode's attention too, where it was kept ([`Pipeline::decode_timed`]).
    #[allow(clippy::too_many_arguments)]
    fn time_words(
        &mut self,
        encoded: &B::Encoded,
        result: &WindowResult,
        cut: &WindowCut,
        window: &[f32],
        segment_size: usize,
        seek: usize,
        segments: &mut [Segment],
    ) -> Result<Option<Vec<Segment>>> {
        let special = self.pipeline.tokenizer.special();
        let positions: Vec<usize> = cut
            .segments
            .iter()
            .flat_map(|(_, _, r)| r.clone())
            .filter(|&j| special.is_text(result.tokens[j]))
            .collect();
        let languages = self.pipeline.tokenizer.languages();
        let language = self.language.map_or("en", |i| languages[i].as_str());
        self.pipeline.add_words(
            encoded,
            result,
            &positions,
            &self.sot,
            language,
            window,
            segment_size,
            frames_to_seconds(seek),
            segments,
            &mut self.last_speech,
            self.options,
        )
    }

    /// The window's segments join the transcript and the prompt history.
    fn keep(&mut self, segments: Vec<Segment>, temperature: f64) {
        for mut segment in segments {
            // openai clears instantaneous or empty segments; we drop them from the output.
            if segment.start == segment.end || segment.text.trim().is_empty() {
                continue;
            }
            // Timestamps stay in the prompt history, as in openai's `all_tokens`.
            self.all_tokens.extend_from_slice(&segment.tokens);
            segment.id = self.segments.len();
            self.segments.push(segment);
        }
        // A hot fallback may have derailed; do not feed its text forward (openai).
        if !self.options.condition_on_previous_text || temperature > 0.5 {
            self.prompt_reset_since = self.all_tokens.len();
        }
    }

    fn finish(self) -> Result<Transcript> {
        let tokenizer = &self.pipeline.tokenizer;
        Ok(Transcript {
            text: tokenizer.decode(&self.all_tokens[self.initial_len..])?,
            language: match self.language {
                Some(i) => tokenizer.languages()[i].clone(),
                None => "en".to_string(),
            },
            segments: self.segments,
            warnings: Vec::new(),
            language_probs: self.pipeline.language_names(&self.language_probs),
        })
    }
}

/// openai's rules once a sequential window's words are timed: with hallucination screening,
/// the window may be skipped (`false`) or cut short; without it, decoding resumes after the
/// last word rather than at the last timestamp, that word as timed by the decode's own
/// attention where it was kept (`decode_timed`): the character pass can stretch a last word
/// over the start of speech the decode never wrote, and resuming after it would lose that
/// speech. Returns where to seek on. `last_speech` is the last word's end so far
/// (`window.last_speech` before this window).
fn seek_after_words(
    segments: &mut Vec<Segment>,
    decode_timed: Option<&[Segment]>,
    window: &hallucination::ScreenedWindow,
    seek: usize,
    options: &TranscribeOptions,
    last_speech: &mut f64,
) -> (usize, bool) {
    let time_offset = (window.seek * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
    match options.hallucination_silence_threshold {
        Some(threshold) => match hallucination::screen(segments, window, threshold, seek) {
            hallucination::Verdict::Keep { seek } => {
                *last_speech = hallucination::last_word_end(segments).unwrap_or(window.last_speech);
                (seek, true)
            }
            hallucination::Verdict::Skip { seek } => {
                *last_speech = window.last_speech;
                (seek, false)
            }
        },
        None if !window.single_timestamp_ending => {
            let last_word_end = hallucination::last_word_end(decode_timed.unwrap_or(segments));
            let resume = last_word_end.filter(|&end| end > time_offset);
            (
                resume.map_or(seek, |end| (end * 100.0).round() as usize),
                true,
            )
        }
        None => (seek, true),
    }
}

/// One sequential window's tokens cut into segments, as openai's `transcribe` cuts them.
struct WindowCut {
    /// `(start, end, range of the tokens)` per segment, in seconds of the input.
    segments: Vec<(f64, f64, std::ops::Range<usize>)>,
    /// Mel frames to seek on: to the last closing timestamp, or the whole window when the
    /// text ends with a lone timestamp or has no pair.
    advance: usize,
    /// The text ends with a lone timestamp: the window's speech ended inside it.
    single_timestamp_ending: bool,
}

fn cut_window(
    tokens: &[u32],
    special: &SpecialTokens,
    time_offset: f64,
    segment_size: usize,
) -> WindowCut {
    let is_ts = |t: u32| special.is_timestamp(t);
    let time = |t: u32| (t - special.timestamp_begin) as f64 * TIME_PRECISION;
    let single_timestamp_ending =
        tokens.len() >= 2 && !is_ts(tokens[tokens.len() - 2]) && is_ts(tokens[tokens.len() - 1]);
    let mut slices: Vec<usize> = (1..tokens.len())
        .filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i]))
        .collect();
    if slices.is_empty() {
        let duration = match tokens.iter().rev().find(|&&t| is_ts(t)) {
            Some(&t) if t != special.timestamp_begin => time(t),
            _ => segment_size as f64 * HOP_LENGTH as f64 / SAMPLE_RATE as f64,
        };
        return WindowCut {
            segments: vec![(time_offset, time_offset + duration, 0..tokens.len())],
            advance: segment_size,
            single_timestamp_ending,
        };
    }
    if single_timestamp_ending {
        slices.push(tokens.len());
    }
    let mut segments = Vec::with_capacity(slices.len());
    let mut last = 0;
    for &cur in &slices {
        let piece = &tokens[last..cur];
        let (start, end) = (time(piece[0]), time(piece[piece.len() - 1]));
        segments.push((time_offset + start, time_offset + end, last..cur));
        last = cur;
    }
    let advance = if single_timestamp_ending {
        segment_size
    } else {
        (tokens[last - 1] - special.timestamp_begin) as usize * INPUT_STRIDE
    };
    WindowCut {
        segments,
        advance,
        single_timestamp_ending,
    }
}

#[cfg(test)]
mod tests {
    use whisk_types::Word;

    use super::*;

    fn segment(start: f64, end: f64, words: &[(&str, f64, f64)]) -> Segment {
        Segment {
            id: 0,
            seek: 0,
            start,
            end,
            text: words.iter().map(|w| w.0).collect(),
            tokens: Vec::new(),
            temperature: 0.0,
            avg_logprob: -0.2,
            compression_ratio: 1.2,
            no_speech_prob: 0.1,
            words: Some(
                words
                    .iter()
                    .map(|&(word, start, end)| Word {
                        word: word.into(),
                        start,
                        end,
                        probability: 0.9,
                    })
                    .collect(),
            ),
        }
    }

    fn window() -> hallucination::ScreenedWindow {
        hallucination::ScreenedWindow {
            seek: 2000,
            segment_size: N_FRAMES,
            single_timestamp_ending: false,
            last_speech: 0.0,
            content_frames: 60_000,
        }
    }

    /// The pause set's window at 641.48 s (tiny.en): the decode closed "... vanquished him."
    /// at 668.48 s; the character pass stretched "vanquished" to 669.46 s, over the first
    /// words of the next sentence (668.33 s). Resuming there lost three sentences.
    #[test]
    fn the_next_window_starts_after_the_last_word_as_the_decode_timed_it() {
        let seek_at_timestamp = 2000 + 2700;
        let by_chars = segment(
            20.0,
            28.0,
            &[(" vanquished", 26.41, 29.46), (" him.", 29.46, 29.48)],
        );
        let by_decode = segment(
            20.0,
            28.0,
            &[(" vanquished", 26.50, 27.02), (" him.", 27.02, 27.30)],
        );
        let options = TranscribeOptions::default();
        let (mut segments, mut last_speech) = (vec![by_chars.clone()], 0.0);
        let (seek, keep) = seek_after_words(
            &mut segments,
            Some(std::slice::from_ref(&by_decode)),
            &window(),
            seek_at_timestamp,
            &options,
            &mut last_speech,
        );
        assert!(keep);
        assert_eq!(seek, 2730, "after the decode's own last word");
        assert_eq!(
            segments,
            vec![by_chars.clone()],
            "the reported words are kept"
        );
        // Without the decode's times (the single pass: they are the reported ones), openai's
        // rule as it is.
        let (seek, _) = seek_after_words(
            &mut segments,
            None,
            &window(),
            seek_at_timestamp,
            &options,
            &mut last_speech,
        );
        assert_eq!(seek, 2948);
    }
}
