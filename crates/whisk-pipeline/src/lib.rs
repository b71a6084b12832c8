//! Long-form transcription over any [`Backend`], following openai-whisper's `transcribe`:
//! the whole file becomes one log-mel spectrogram, a 30 s window is decoded, and the next
//! window starts at the last timestamp the model emitted (or after the window when it ended
//! on a lone timestamp). Segments come from timestamp pairs; each window is prompted with the
//! text before it unless that is switched off.

mod align;
mod arrivals;
mod batched;
mod fallback;
mod hallucination;
mod pack;
mod plan;
mod sequential;
mod window;

use rand::rngs::StdRng;
use whisk_align::{add_word_timestamps, AlignedWord, WordTokens};
use whisk_audio::{log_mel_spectrogram, loudness_db, Mel};
use whisk_backend::{Backend, BackendError};
use whisk_batch::{alignment_pass_for, alignment_pass_input, Refeed};
use whisk_decode::compression_ratio;
use whisk_text::{CharSequence, TextError, Tokenizer};
use whisk_types::{
    MelPadding, Segment, TranscribeOptions, WordAlignment, HOP_LENGTH, N_FRAMES, N_SAMPLES,
};

pub use arrivals::Arrivals;
pub use pack::{packs_inputs, BatchInput, Pack, Piece, PACKED_FILE_SECONDS, PACK_GAP_SECONDS};
pub use plan::{
    plan_clips, FileWindows, FixedWindows, PlannedWindows, StreamedWindows, Window, WindowPlanner,
    WindowSource, WindowSpan,
};
pub use whisk_batch::{decode_window, WindowRequest, WindowResult};
pub use window::{detect_language, encode_window};

/// Why a transcription failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("language `{0}` given, but this model is English-only")]
    LanguageOnEnglishModel(String),
    #[error("the model's mel bins ({0}) are not supported (80 or 128)")]
    MelBins(usize),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error(transparent)]
    Audio(#[from] whisk_audio::AudioError),
    #[error("stopped by its caller")]
    Stopped,
}

pub type Result<T> = std::result::Result<T, PipelineError>;

/// How far a transcription has got, in seconds of audio, and the segments it has finished
/// since the last report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress<'a> {
    pub done_seconds: f64,
    pub total_seconds: f64,
    /// Which input `segments` belong to (the position among the inputs given).
    pub input: usize,
    /// Segments final since the last report, in order, exactly as the transcript will hold
    /// them: the sequential loop hands them over window by window, so a caller can show
    /// (or stream) them early. Batched mode hands none; its windows are stitched at the end.
    pub segments: &'a [Segment],
    /// Set it to stop the transcription after this report (a reader that has gone): it
    /// then returns [`PipelineError::Stopped`].
    pub stop: &'a std::cell::Cell<bool>,
}

/// A backend with its tokenizer: everything needed to turn samples into a [`Transcript`].
pub struct Pipeline<B: Backend> {
    backend: B,
    tokenizer: Tokenizer,
    non_speech: Vec<u32>,
    space: Vec<u32>,
    alignment_heads: Vec<(usize, usize)>,
    /// Heads character alignment ranks, and those its pass keeps (see `align`).
    ranked_heads: Vec<(usize, usize)>,
    char_pass_heads: Vec<(usize, usize)>,
}

impl<B: Backend> Pipeline<B> {
    /// `alignment_heads` are the (decoder layer, head) pairs used for word timestamps.
    pub fn new(
        backend: B,
        tokenizer: Tokenizer,
        alignment_heads: Vec<(usize, usize)>,
    ) -> Result<Self> {
        let n_mels = backend.dims().n_mels;
        if n_mels != 80 && n_mels != 128 {
            return Err(PipelineError::MelBins(n_mels));
        }
        let non_speech = tokenizer.non_speech_tokens()?;
        let space = tokenizer.encode(" ")?;
        let dims = backend.dims();
        let ranked_heads = align::ranked_heads(dims.n_text_layer, dims.n_text_head);
        let char_pass_heads = align::char_pass_heads(&ranked_heads, &alignment_heads);
        Ok(Self {
            backend,
            tokenizer,
            non_speech,
            space,
            alignment_heads,
            ranked_heads,
            char_pass_heads,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

impl<B: Backend> Pipeline<B> {
    /// Times the words of one window's segments and stores them in the segments. With the
    /// character pass and the decode's attention kept, also returns the segments timed by
    /// that attention ([`Self::decode_timed`]), which decide where the next window starts.
    #[allow(clippy::too_many_arguments)]
    fn add_words(
        &self,
        encoded: &B::Encoded,
        result: &WindowResult,
        positions: &[usize],
        sot: &[u32],
        language: &str,
        window: &[f32],
        mel_frames: usize,
        time_offset: f64,
        segments: &mut [Segment],
        last_speech_timestamp: &mut f64,
        options: &TranscribeOptions,
    ) -> Result<Option<Vec<Segment>>> {
        let special = self.tokenizer.special();
        let text: Vec<u32> = positions.iter().map(|&j| result.tokens[j]).collect();
        if text.is_empty() {
            for s in segments.iter_mut() {
                s.words = Some(Vec::new());
            }
            return Ok(None);
        }
        let words = self.word_tokens(&text, language)?;
        let mut decode_timed = None;
        let aligned = match options.word_alignment {
            WordAlignment::SinglePass => align::align(
                &align::single_pass_scores(result, positions, self.alignment_heads.len()),
                &words,
                &align::decode_probs(result, positions),
                mel_frames,
            ),
            WordAlignment::Refeed => {
                let pass = align::refeed(
                    &self.backend,
                    encoded,
                    sot.len(),
                    alignment_pass_input(sot, &text, special, true),
                    special,
                    &self.alignment_heads,
                )?;
                let (scores, probs) = align::refeed_scores(pass);
                align::align(&scores, &words, &probs, mel_frames)
            }
            WordAlignment::Chars => {
                decode_timed =
                    self.decode_timed(result, positions, &words, segments, time_offset, mel_frames);
                let spelled = self.spelled(&words, language, sot.len());
                let spell = |sot: &[u32], run: &[u32]| self.spell(sot, run);
                let decoded = align::kept_decode(result, positions, special);
                let n_text_ctx = self.backend.dims().n_text_ctx;
                let input = alignment_pass_for(sot, decoded, special, Some(&spell), n_text_ctx)
                    .unwrap_or_else(|| alignment_pass_input(sot, &text, special, false));
                let pass = align::refeed(
                    &self.backend,
                    encoded,
                    sot.len(),
                    input,
                    special,
                    &self.char_pass_heads,
                )?;
                let probs = align::decode_probs(result, positions);
                self.align_pass_chars(
                    pass,
                    &words,
                    spelled.as_ref(),
                    &probs,
                    segments,
                    time_offset,
                    window,
                    mel_frames,
                )
            }
        };
        self.place_aligned(aligned, segments, time_offset, last_speech_timestamp);
        if let Some(decode_timed) = &decode_timed {
            align::keep_decode_times_where_far(segments, decode_timed);
        }
        Ok(decode_timed)
    }

    /// `segments` timed by the decode's own attention over the alignment heads (openai's
    /// single pass); `None` where the decode kept no attention. The character pass times
    /// words better, but it can lay a window's last words over speech the decode never
    /// wrote (squeezed to the edge of the band their segment allows), so where a window is
    /// cut or the next one starts is decided by these.
    pub(crate) fn decode_timed(
        &self,
        result: &WindowResult,
        positions: &[usize],
        words: &[WordTokens],
        segments: &[Segment],
        time_offset: f64,
        mel_frames: usize,
    ) -> Option<Vec<Segment>> {
        if result.qk_rows.is_empty() {
            return None;
        }
        let aligned = align::align(
            &align::single_pass_scores(result, positions, self.alignment_heads.len()),
            words,
            &align::decode_probs(result, positions),
            mel_frames,
        );
        let mut timed = segments.to_vec();
        self.place_aligned(aligned, &mut timed, time_offset, &mut time_offset.clone());
        Some(timed)
    }

    /// The tokenizer's words of a window's text tokens, ending with the end-of-text
    /// pseudo-word (openai `split_to_word_tokens(text + [eot])`).
    pub(crate) fn word_tokens(&self, text: &[u32], language: &str) -> Result<Vec<WordTokens>> {
        let mut tokens = text.to_vec();
        tokens.push(self.tokenizer.special().eot);
        Ok(self
            .tokenizer
            .split_to_word_tokens(&tokens, language)?
            .into_iter()
            .map(|(word, tokens)| WordTokens { word, tokens })
            .collect())
    }

    /// What character alignment feeds for `text`: its letters, spelled from its words; `None`
    /// when there are no letters or they would overrun the text context (openai's pass then
    /// times that window). For batch rows, which know only their SOT sequence and text.
    pub(crate) fn spell(&self, sot: &[u32], text: &[u32]) -> Option<Vec<u32>> {
        let language = self.language_of_sot(sot);
        self.word_tokens(text, language)
            .ok()
            .and_then(|words| self.spelled(&words, language, sot.len()))
            .map(|s| s.tokens)
    }

    /// `words` (with the end-of-text pseudo-word) spelled for character alignment, if there
    /// are letters and they fit the text context after a SOT sequence of `sot_len`.
    pub(crate) fn spelled(
        &self,
        words: &[WordTokens],
        language: &str,
        sot_len: usize,
    ) -> Option<CharSequence> {
        let strings: Vec<&str> = words[..words.len().saturating_sub(1)]
            .iter()
            .map(|w| w.word.as_str())
            .collect();
        let seq = self.tokenizer.char_sequence(&strings, language).ok()?;
        let fits = sot_len + seq.tokens.len() + 2 <= self.backend.dims().n_text_ctx;
        (!seq.tokens.is_empty() && fits).then_some(seq)
    }

    /// The language a SOT sequence names (English for English-only models).
    fn language_of_sot(&self, sot: &[u32]) -> &str {
        let special = self.tokenizer.special();
        sot.iter()
            .find_map(|&t| special.language_index(t))
            .and_then(|i| self.tokenizer.languages().get(i))
            .map_or("en", String::as_str)
    }

    /// Words timed from an alignment pass run with every head's attention: character
    /// alignment when it fed `spelled` (each word kept near its segment of `segments`, whose
    /// times are `time_offset` after the window's start; starts after pauses placed from the
    /// loudness of the window's mel `window`), else (it fed the plain text) openai's method
    /// on the alignment heads.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn align_pass_chars(
        &self,
        pass: Refeed,
        words: &[WordTokens],
        spelled: Option<&CharSequence>,
        decode_probs: &[f32],
        segments: &[Segment],
        time_offset: f64,
        window: &[f32],
        mel_frames: usize,
    ) -> Vec<AlignedWord> {
        match spelled {
            Some(spelled) if pass.text == spelled.tokens => {
                let spans = self.word_spans(words, segments, time_offset);
                let loudness = loudness_db(window, self.backend.dims().n_mels, mel_frames);
                let scores = align::select_heads(pass, &self.char_pass_heads, &self.ranked_heads);
                align::align_chars(
                    scores,
                    spelled,
                    words,
                    decode_probs,
                    &spans,
                    &loudness,
                    mel_frames,
                )
            }
            _ => {
                let scores =
                    align::select_heads(pass, &self.char_pass_heads, &self.alignment_heads);
                align::align(&scores, words, decode_probs, mel_frames)
            }
        }
    }

    /// Each word's segment, in seconds of its window: the segment that holds its first token.
    fn word_spans(
        &self,
        words: &[WordTokens],
        segments: &[Segment],
        time_offset: f64,
    ) -> Vec<(f64, f64)> {
        let special = self.tokenizer.special();
        let mut ends = Vec::with_capacity(segments.len());
        let mut total = 0;
        for s in segments {
            total += s.tokens.iter().filter(|&&t| special.is_text(t)).count();
            ends.push((total, (s.start - time_offset, s.end - time_offset)));
        }
        let mut first_token = 0;
        words
            .iter()
            .map(|w| {
                let span = ends
                    .iter()
                    .find(|(end, _)| first_token < *end)
                    .or(ends.last())
                    .map_or((0.0, f64::INFINITY), |&(_, span)| span);
                first_token += w.tokens.len();
                span
            })
            .collect()
    }

    /// Hands timed words to the window's segments (openai `add_word_timestamps`).
    pub(crate) fn place_aligned(
        &self,
        aligned: Vec<AlignedWord>,
        segments: &mut [Segment],
        time_offset: f64,
        last_speech_timestamp: &mut f64,
    ) {
        let special = self.tokenizer.special();
        let per_segment: Vec<usize> = segments
            .iter()
            .map(|s| s.tokens.iter().filter(|&&t| special.is_text(t)).count())
            .collect();
        add_word_timestamps(
            aligned,
            segments,
            &per_segment,
            time_offset,
            last_speech_timestamp,
        );
    }

    /// A segment of `tokens` from a window's decode, `start`/`end` in seconds of the input.
    pub(crate) fn segment(
        &self,
        result: &WindowResult,
        tokens: Vec<u32>,
        (start, end): (f64, f64),
        seek: usize,
    ) -> Result<Segment> {
        Ok(Segment {
            id: 0,
            seek,
            start: round3(start),
            end: round3(end),
            compression_ratio: result.compression_ratio,
            text: self.tokenizer.decode(&tokens)?,
            tokens,
            temperature: result.temperature,
            avg_logprob: result.avg_logprob,
            no_speech_prob: result.no_speech_prob,
            words: None,
        })
    }

    /// Languages of a window, likeliest first, as (index into the tokenizer's languages,
    /// probability).
    fn detect_language_of(&self, window: &[f32]) -> Result<Vec<(usize, f32)>> {
        self.rank_languages(&encode_window(&self.backend, window)?)
    }

    /// Languages of an encoded window, as [`Self::detect_language_of`].
    pub(crate) fn rank_languages(&self, encoded: &B::Encoded) -> Result<Vec<(usize, f32)>> {
        let probs = detect_language(&self.backend, encoded, self.tokenizer.special())?;
        let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(ranked)
    }

    /// Ranked language indices as `(code, probability)`.
    pub(crate) fn language_names(&self, ranked: &[(usize, f32)]) -> Vec<(String, f32)> {
        let languages = self.tokenizer.languages();
        ranked
            .iter()
            .map(|&(i, p)| (languages[i].clone(), p))
            .collect()
    }

    /// Tells a decode whose text already compresses past the threshold, so that it stops
    /// there and goes to the fallback rather than run on to the token limit (`None` without a
    /// threshold).
    pub(crate) fn repetitive(
        &self,
        options: &TranscribeOptions,
    ) -> Option<impl Fn(&[u32]) -> bool + '_> {
        let threshold = options.compression_ratio_threshold?;
        Some(move |text: &[u32]| {
            self.tokenizer
                .decode(text)
                .is_ok_and(|t| compression_ratio(&t) > threshold)
        })
    }

    /// Decodes a window at rising temperatures until the result passes the thresholds
    /// (openai `decode_with_fallback`). When none passes, keeps the likeliest result among
    /// those that are not repetitive, as faster-whisper does.
    fn decode_with_fallback(
        &self,
        encoded: &B::Encoded,
        request: &WindowRequest<'_>,
        options: &TranscribeOptions,
        rng: &mut StdRng,
    ) -> Result<WindowResult> {
        let temperatures = if options.temperatures.is_empty() {
            &[0.0][..]
        } else {
            &options.temperatures[..]
        };
        let mut tried: Vec<WindowResult> = Vec::new();
        for &t in temperatures {
            let candidates = if t > 0.0 { options.best_of.max(1) } else { 1 };
            let mut best: Option<WindowResult> = None;
            for _ in 0..candidates {
                let mut r = decode_window(&self.backend, encoded, request, t, rng)?;
                r.compression_ratio = compression_ratio(&self.tokenizer.decode(&r.tokens)?);
                if best
                    .as_ref()
                    .is_none_or(|b| fallback::score(&r) > fallback::score(b))
                {
                    best = Some(r);
                }
            }
            let result = best.expect("at least one candidate");
            if fallback::passes(&result, options) {
                return Ok(fallback::cut_loop(result, self.tokenizer.special()));
            }
            // After earlier text, a poor decode may be the prompt's doing (a sentence
            // repeated, a window of "the"): hotter tries break it, and a hot result resets
            // the prompt. Pause set, tiny.en, --batch-size 1: 37.7% WER stopping early here,
            // 25.5% trying every temperature.
            let special = self.tokenizer.special();
            let stop = request.previous.is_empty()
                && (fallback::hopeless(&result, options)
                    || tried
                        .last()
                        .is_some_and(|p| fallback::said_again(p, &result, options, special)));
            tried.push(result);
            if stop {
                break;
            }
        }
        Ok(fallback::least_bad(
            tried,
            options,
            self.tokenizer.special(),
        ))
    }

    /// Languages spoken in the first 30 s of `samples`, likeliest first, with probabilities.
    /// English-only models answer `[("en", 1.0)]`.
    pub fn detect_language(&self, samples: &[f32]) -> Result<Vec<(String, f32)>> {
        if !self.tokenizer.is_multilingual() {
            return Ok(vec![("en".to_string(), 1.0)]);
        }
        let mel = log_mel_spectrogram(samples, self.backend.dims().n_mels, N_SAMPLES);
        let ranked = self.detect_language_of(&mel.window(0, N_FRAMES))?;
        let langs = self.tokenizer.languages();
        Ok(ranked
            .into_iter()
            .map(|(i, p)| (langs[i].clone(), p))
            .collect())
    }
}

/// Rejects option values no decode can honour, before any work.
pub(crate) fn check_options(options: &TranscribeOptions) -> Result<()> {
    let invalid = |why: String| Err(PipelineError::InvalidOption(why));
    if let Some(t) = options
        .clip_timestamps
        .iter()
        .find(|t| !t.is_finite() || **t < 0.0)
    {
        return invalid(format!("clip timestamp {t} is not a time from 0 up"));
    }
    if let Some(t) = options
        .hallucination_silence_threshold
        .filter(|t| !t.is_finite() || *t <= 0.0)
    {
        return invalid(format!(
            "hallucination silence threshold {t} is not a positive number of seconds"
        ));
    }
    if options.decode.beam_size == Some(0) {
        return invalid("a beam of 0 hypotheses".into());
    }
    if let Some(p) = options
        .decode
        .patience
        .filter(|p| !p.is_finite() || *p <= 0.0)
    {
        return invalid(format!("patience {p} is not positive"));
    }
    Ok(())
}

/// `clip_timestamps` (seconds: start, end, start, ...) as ranges of units (mel frames,
/// samples) within an input of `len` units, as openai reads them: none is the whole input; a
/// missing last end is the input's end.
pub(crate) fn clip_ranges(
    clip_timestamps: &[f64],
    len: usize,
    units_per_second: usize,
) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = clip_timestamps
        .iter()
        .map(|&t| ((t * units_per_second as f64).round() as usize).min(len))
        .collect();
    if points.is_empty() {
        points.push(0);
    }
    if points.len() % 2 == 1 {
        points.push(len);
    }
    points.chunks(2).map(|c| (c[0], c[1])).collect()
}

/// The log-mel of `samples` padded as `padding` says, and how many of its frames hold audio.
pub(crate) fn padded_mel(samples: &[f32], n_mels: usize, padding: MelPadding) -> (Mel, usize) {
    match padding {
        MelPadding::Silence => {
            let mel = log_mel_spectrogram(samples, n_mels, N_SAMPLES);
            let content = mel.frames - N_FRAMES;
            (mel, content)
        }
        MelPadding::ZeroFeatures => {
            let mel = log_mel_spectrogram(samples, n_mels, HOP_LENGTH);
            let content = mel.frames.saturating_sub(1);
            (mel, content)
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
