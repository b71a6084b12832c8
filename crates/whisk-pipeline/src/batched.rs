//! Batched long-form transcription: every input is cut into windows up front, the windows of
//! all inputs are decoded together by one [`Scheduler`], and each input's transcript is
//! stitched from its windows' words.
//!
//! Windows do not depend on each other (no seek, no previous-text prompt), so any number can
//! be in flight. A window whose decode fails the thresholds is queued again at the next
//! temperature. Windows overlap; each keeps only the words whose middle lies in the stretch it
//! owns, so a word cut at one window's edge is taken whole from its neighbour.

use std::cell::OnceCell;
use std::ops::Range;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use whisk_audio::loudness_db;
use whisk_backend::Backend;
use whisk_batch::{Job, RowRequest, Scheduler, SchedulerConfig, WindowResult};
use whisk_decode::{build_prompt, compression_ratio, sot_sequence, BeamOptions, LogitRules};
use whisk_types::{
    MelPadding, Segment, TranscribeOptions, Transcript, Word, WordAlignment, HOP_LENGTH,
    INPUT_STRIDE, N_FRAMES, SAMPLE_RATE, TIME_PRECISION,
};

use crate::pack::BatchInput;
use crate::plan::{Window, WindowSource, WindowSpan};
use crate::{
    align, encode_window, fallback, hallucination, padded_mel, Pipeline, PipelineError, Progress,
    Result,
};

/// Windows per encoder call (see [`SchedulerConfig::encoder_batch`]).
const ENCODER_BATCH: usize = 2;

/// A window whose final decode is not known yet.
struct OpenWindow {
    input: usize,
    /// Its place among its input's windows (read windows and follow-ups alike).
    index: usize,
    /// What its candidates' seeds derive from: its place among the input's read windows,
    /// or its parent's key for a follow-up, so seeds never depend on finishing order.
    seed_key: u64,
    span: WindowSpan,
    /// The samples `span.start..span.end`, kept for a follow-up window.
    samples: Vec<f32>,
    mel: Arc<[f32]>,
    /// Mel frames holding audio (the rest is padding).
    content_frames: usize,
    sot: Vec<u32>,
    /// Time the words (needed for stitching, or asked for).
    align: bool,
    temperature_index: usize,
    outstanding: usize,
    best: Option<WindowResult>,
    tried: Vec<WindowResult>,
    /// The chosen decode, waiting for its alignment pass.
    awaiting_pass: Option<WindowResult>,
}

/// What a window does next once a decode of it is back.
enum Next {
    /// Other candidates at this temperature are still decoding.
    Wait,
    /// Every candidate failed the thresholds: decode again one temperature up.
    Retry,
    /// The chosen decode, which needs its alignment pass first.
    AlignPass(WindowResult),
    /// The window's final decode.
    Final(WindowResult),
}

/// One input of a batched run: where its windows come from and what they have given.
pub(crate) struct InputState<'a> {
    /// `None` once its transcript is handed over (or its caller has gone).
    source: Option<Box<dyn WindowSource + 'a>>,
    /// Its source has handed out its last window.
    read_all: bool,
    /// It arrived while others were being decoded.
    late: bool,
    /// Its windows submitted and not final yet.
    open: usize,
    keep_words: bool,
    language: Option<usize>,
    /// Languages by probability, when `language` was detected.
    language_probs: Vec<(usize, f32)>,
    spans: Vec<WindowSpan>,
    outputs: Vec<Vec<Timed>>,
}

/// A window's segment as the batched loop keeps or cuts it. With words from the character
/// pass, `cut_by` is the same segment timed by the decode's own attention, and what the
/// window keeps is decided by it: at a window's edges the character pass can stretch
/// words over speech the decode never wrote (a first word laid over the end of the sentence
/// before, a last line dragged a second past its closing timestamp), and windows cut by
/// those times dropped whole sentences (pause set, tiny.en: 24.97% WER with words, 22.52%
/// without).
struct Timed {
    segment: Segment,
    cut_by: Option<Segment>,
}

impl Timed {
    fn untimed(segment: Segment) -> Self {
        Timed {
            segment,
            cut_by: None,
        }
    }

    /// The segment as timed for deciding what is kept.
    fn deciding(&self) -> &Segment {
        self.cut_by.as_ref().unwrap_or(&self.segment)
    }

    /// The words that decide what is kept.
    fn words(&self) -> &[Word] {
        self.deciding().words.as_deref().unwrap_or(&[])
    }
}

impl<'a> InputState<'a> {
    fn new(source: Box<dyn WindowSource + 'a>, language: Option<usize>) -> Self {
        InputState {
            keep_words: source.needs_words(),
            source: Some(source),
            read_all: false,
            late: false,
            open: 0,
            language,
            language_probs: Vec::new(),
            spans: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn abandon(&mut self) {
        self.source = None;
        self.read_all = true;
        self.open = 0;
        self.spans = Vec::new();
        self.outputs = Vec::new();
    }
}

/// The input to read the next window from: of those with windows left, the one with fewest
/// in flight (the earliest of equals), so an input that arrives while a long one is decoded
/// gets the next free slots.
fn next_reader(inputs: &[InputState<'_>]) -> Option<usize> {
    (0..inputs.len())
        .filter(|&i| inputs[i].source.is_some() && !inputs[i].read_all)
        .min_by_key(|&i| inputs[i].open)
}

/// Where a batched run's inputs come from, and where their transcripts go.
pub(crate) trait SourceFeed<'a> {
    /// The next input, if one is ready. `hungry`: every input so far has handed out all its
    /// windows; `idle`: nothing is being decoded either. `None` when both hold ends the run.
    fn next_source(&mut self, hungry: bool, idle: bool) -> Option<Box<dyn WindowSource + 'a>>;
    /// Seconds of audio the whole run holds, when known up front (for progress).
    fn expected_seconds(&self) -> f64 {
        0.0
    }
    /// Whether input `input`'s caller has gone: its windows are dropped, and it gets no
    /// transcript.
    fn abandoned(&mut self, _input: usize) -> bool {
        false
    }
    /// Input `input`'s transcript (inputs are numbered in the order they were handed out),
    /// as soon as its last window is final.
    fn finished(&mut self, input: usize, transcript: Transcript);
}

/// Sources given up front, read one after another (only one input's windows are read at a
/// time, so a file's memory is freed before the next is opened).
struct InOrder<'a> {
    sources: std::collections::VecDeque<Box<dyn WindowSource + 'a>>,
    expected: f64,
    transcripts: Vec<Option<Transcript>>,
}

impl<'a> InOrder<'a> {
    fn new(sources: Vec<Box<dyn WindowSource + 'a>>) -> Self {
        InOrder {
            expected: sources.iter().filter_map(|s| s.seconds_hint()).sum(),
            transcripts: (0..sources.len()).map(|_| None).collect(),
            sources: sources.into(),
        }
    }

    fn into_transcripts(self) -> Vec<Transcript> {
        self.transcripts
            .into_iter()
            .map(|t| t.expect("every input finishes"))
            .collect()
    }
}

impl<'a> SourceFeed<'a> for InOrder<'a> {
    fn next_source(&mut self, hungry: bool, _idle: bool) -> Option<Box<dyn WindowSource + 'a>> {
        if hungry {
            self.sources.pop_front()
        } else {
            None
        }
    }

    fn expected_seconds(&self) -> f64 {
        self.expected
    }

    fn finished(&mut self, input: usize, transcript: Transcript) {
        self.transcripts[input] = Some(transcript);
    }
}

/// Seed of one candidate's sampler: a function of the window's place in its own input and the
/// attempt only, so an input's transcript depends neither on batch size, finishing order, nor
/// the other inputs it shares the batch with.
fn candidate_seed(seed: u64, window: u64, temperature_index: usize, candidate: usize) -> u64 {
    let mut x = seed
        ^ window.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ ((temperature_index as u64) << 48)
        ^ ((candidate as u64) << 56);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl<B: Backend> Pipeline<B> {
    /// Transcribes many inputs (16 kHz mono samples) with batched decoding,
    /// `options.batch_size` windows at a time; see [`TranscribeOptions::batch_size`].
    /// `progress` is called after every window, with seconds summed over all inputs.
    pub fn transcribe_many(
        &self,
        inputs: &[&[f32]],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Transcript>> {
        let inputs = inputs
            .iter()
            .map(|s| BatchInput::samples(s, options))
            .collect();
        self.transcribe_batch(inputs, options, progress)
    }

    /// As [`Self::transcribe_many`], with each input's windows read from its source as the
    /// batch has room (see [`crate::FileWindows`] for files too long to hold). The sources'
    /// windows are taken as they come: `options.clip_timestamps` is the sources' business.
    pub fn transcribe_windows<'a>(
        &self,
        sources: Vec<Box<dyn WindowSource + 'a>>,
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Transcript>> {
        let mut feed = InOrder::new(sources);
        self.run_windows(&mut feed, options, progress)?;
        Ok(feed.into_transcripts())
    }

    /// Decodes the windows of the inputs `feed` hands out, `options.batch_size` at a time,
    /// and hands each input's transcript back to `feed` as soon as its last window is final.
    pub(crate) fn run_windows<'a>(
        &self,
        feed: &mut dyn SourceFeed<'a>,
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let dims = self.backend.dims();
        let special = self.tokenizer.special().clone();
        crate::check_options(options)?;
        let given_language = self.given_language(options)?;
        let rules = LogitRules::new(&special, &options.decode, &self.non_speech, &self.space);
        let initial: Vec<u32> = match &options.initial_prompt {
            Some(p) => self.tokenizer.encode(&format!(" {}", p.trim()))?,
            None => Vec::new(),
        };
        let temperatures = if options.temperatures.is_empty() {
            vec![0.0]
        } else {
            options.temperatures.clone()
        };
        // Windows are timed for stitching even without word timestamps asked for; character
        // alignment only when asked, else the cheaper single pass.
        let chars = options.word_timestamps && options.word_alignment == WordAlignment::Chars;
        let refeed =
            chars || options.word_timestamps && options.word_alignment == WordAlignment::Refeed;
        let spell = |sot: &[u32], text: &[u32]| self.spell(sot, text);
        let repetitive = self.repetitive(options);
        let stop = std::cell::Cell::new(false);
        let mut arrived_seconds = 0.0;
        let mut done_seconds = 0.0;
        let mut inputs: Vec<InputState<'a>> = Vec::new();

        let capacity = options.batch_size.max(1);
        let beam = BeamOptions::from_decode(&options.decode);
        // `batch_size` counts windows; a beam search decodes each in one slot per hypothesis.
        let lanes = beam.map_or(1, |b| b.beam_size);
        let mut scheduler = Scheduler::new(
            &self.backend,
            SchedulerConfig {
                capacity: capacity * lanes,
                encoder_batch: ENCODER_BATCH,
                rules: &rules,
                special: &special,
                heads: if chars {
                    &self.char_pass_heads
                } else {
                    &self.alignment_heads
                },
                sampled_heads: &self.alignment_heads,
                spell: chars.then_some(&spell as &whisk_batch::Spell),
                repetitive: repetitive.as_ref().map(|r| r as &whisk_batch::Repetitive),
            },
        )?;
        let mut open: Vec<Option<OpenWindow>> = Vec::new();
        let submit = |scheduler: &mut Scheduler<'_, B, usize>,
                      id: usize,
                      w: &mut OpenWindow,
                      first: bool| {
            let temperature = temperatures[w.temperature_index];
            let candidates = if temperature > 0.0 {
                options.best_of.max(1)
            } else {
                1
            };
            w.outstanding = candidates;
            for c in 0..candidates {
                let seed = candidate_seed(options.seed, w.seed_key, w.temperature_index, c);
                let job = Job {
                    key: id,
                    mel: w.mel.clone(),
                    request: RowRequest {
                        prompt: build_prompt(&special, &initial, &w.sot, dims.n_text_ctx),
                        sample_len: options.decode.sample_len.unwrap_or(dims.n_text_ctx / 2),
                        temperature,
                        rng: StdRng::seed_from_u64(seed),
                        keep_qk: w.align && (chars || !refeed),
                        keep_probs: w.align && chars,
                        // A sole candidate is likely the one kept, so it runs its alignment
                        // pass straight away; of several, only the chosen one gets a pass.
                        refeed_sot: (w.align && refeed && candidates == 1).then(|| w.sot.clone()),
                        beam,
                        decoded: None,
                    },
                };
                if first {
                    scheduler.submit_first(job);
                } else {
                    scheduler.submit(job);
                }
            }
        };
        let arrive = |inputs: &mut Vec<InputState<'a>>,
                      seconds: &mut f64,
                      source: Box<dyn WindowSource + 'a>,
                      late: bool| {
            *seconds += source.seconds_hint().unwrap_or(0.0);
            let mut state = InputState::new(source, given_language);
            state.late = late;
            inputs.push(state);
        };

        loop {
            while let Some(source) = feed.next_source(false, false) {
                arrive(&mut inputs, &mut arrived_seconds, source, true);
            }
            for (input, state) in inputs.iter_mut().enumerate() {
                if state.source.is_some() && feed.abandoned(input) {
                    state.abandon();
                    scheduler
                        .cancel(|&id: &usize| open[id].as_ref().is_some_and(|w| w.input == input));
                    for w in open
                        .iter_mut()
                        .filter(|w| w.as_ref().is_some_and(|w| w.input == input))
                    {
                        *w = None;
                    }
                }
            }
            // Keep a batch's worth of windows waiting, so freed slots refill at once.
            while scheduler.waiting() < capacity {
                let Some(reading) = next_reader(&inputs) else {
                    match feed.next_source(true, scheduler.is_idle()) {
                        Some(source) => {
                            arrive(&mut inputs, &mut arrived_seconds, source, false);
                            continue;
                        }
                        None => break,
                    }
                };
                let state = &mut inputs[reading];
                let source = state.source.as_mut().expect("a reader is not finished");
                let Some(window) = source.next_window()? else {
                    state.read_all = true;
                    if state.open == 0 {
                        let transcript = self.finish_input(state, options)?;
                        feed.finished(reading, transcript);
                    }
                    continue;
                };
                // A late input's first window goes ahead of the windows read ahead for the
                // inputs already in the batch: it takes the next free slot.
                let first = state.late && state.spans.is_empty();
                let (mut window, encoded) = self.open_window(reading, state, window, options)?;
                if let Some(encoded) = encoded {
                    scheduler.add_encoded(window.mel.clone(), encoded);
                }
                submit(&mut scheduler, open.len(), &mut window, first);
                open.push(Some(window));
            }
            if scheduler.is_idle() {
                break;
            }
            for (id, result) in scheduler.step()? {
                let w = open[id].as_mut().expect("results come for open windows");
                let chosen =
                    match self.take_result(w, result, options, temperatures.len(), refeed)? {
                        Next::Wait => continue,
                        Next::Retry => {
                            w.temperature_index += 1;
                            submit(&mut scheduler, id, w, true);
                            continue;
                        }
                        Next::AlignPass(chosen) => {
                            scheduler.submit_first(Job {
                                key: id,
                                mel: w.mel.clone(),
                                request: RowRequest::alignment_pass(
                                    w.sot.clone(),
                                    chosen.tokens.clone(),
                                ),
                            });
                            w.awaiting_pass = Some(chosen);
                            continue;
                        }
                        Next::Final(chosen) => chosen,
                    };
                let w = open[id].take().expect("checked above");
                let state = &mut inputs[w.input];
                let language = state
                    .language
                    .map_or("en", |i| self.tokenizer.languages()[i].as_str());
                let mut segments = self.window_segments(&w, chosen, language, options)?;
                let next_start = next_window_start(&state.spans, &w.span);
                if let Some(mut follow_up) = self.follow_up(&w, next_start, &mut segments, options)
                {
                    // Parent and follow-up share no decoded audio: stitching cuts between them
                    // by time alone, never at a word the two happen to share.
                    let parent = &mut state.spans[w.index];
                    (parent.own_end, parent.end) = (follow_up.span.own_start, follow_up.span.start);
                    follow_up.index = state.spans.len();
                    state.spans.push(follow_up.span);
                    state.outputs.push(Vec::new());
                    state.open += 1;
                    submit(&mut scheduler, open.len(), &mut follow_up, false);
                    open.push(Some(follow_up));
                }
                state.outputs[w.index] = segments;
                state.open -= 1;
                let own = state.spans[w.index];
                done_seconds += own.own_end - own.own_start;
                if state.read_all && state.open == 0 {
                    let transcript = self.finish_input(state, options)?;
                    feed.finished(w.input, transcript);
                }
                progress(Progress {
                    done_seconds,
                    total_seconds: feed
                        .expected_seconds()
                        .max(arrived_seconds)
                        .max(done_seconds),
                    input: w.input,
                    segments: &[],
                    stop: &stop,
                });
                if stop.get() {
                    return Err(PipelineError::Stopped);
                }
            }
        }
        Ok(())
    }

    /// What a window does next now that one of its candidates (or its alignment pass) is
    /// back: of a temperature's candidates the best is kept; once all are in, it is final if it
    /// passes the thresholds (or no temperature is left, or it is hopeless), else the window
    /// is decoded again one temperature up.
    fn take_result(
        &self,
        w: &mut OpenWindow,
        mut result: WindowResult,
        options: &TranscribeOptions,
        temperatures: usize,
        refeed: bool,
    ) -> Result<Next> {
        if let Some(mut chosen) = w.awaiting_pass.take() {
            // This result is the chosen candidate's alignment pass.
            chosen.refeed = result.refeed;
            return Ok(Next::Final(chosen));
        }
        let special = self.tokenizer.special();
        result.compression_ratio = compression_ratio(&self.tokenizer.decode(&result.tokens)?);
        w.outstanding -= 1;
        if w.best
            .as_ref()
            .is_none_or(|b| fallback::score(&result) > fallback::score(b))
        {
            w.best = Some(result);
        }
        if w.outstanding > 0 {
            return Ok(Next::Wait);
        }
        let best = w.best.take().expect("a candidate finished");
        let last = w.temperature_index + 1 == temperatures;
        let chosen = if fallback::passes(&best, options) {
            fallback::cut_loop(best, special)
        } else if last
            || fallback::hopeless(&best, options)
            || w.tried
                .last()
                .is_some_and(|previous| fallback::said_again(previous, &best, options, special))
        {
            w.tried.push(best);
            fallback::least_bad(std::mem::take(&mut w.tried), options, special)
        } else {
            w.tried.push(best);
            return Ok(Next::Retry);
        };
        let needs_pass = w.align
            && refeed
            && chosen.refeed.is_none()
            && !fallback::is_silent(&chosen, options)
            && chosen.tokens.iter().any(|&t| special.is_text(t));
        Ok(if needs_pass {
            Next::AlignPass(chosen)
        } else {
            Next::Final(chosen)
        })
    }

    /// `window`, the next of input `input`, ready to decode: its mel, its start-of-transcript
    /// (the input's language detected on its first window when not given, with the encoding
    /// that took).
    fn open_window(
        &self,
        input: usize,
        state: &mut InputState<'_>,
        window: Window,
        options: &TranscribeOptions,
    ) -> Result<(OpenWindow, Option<B::Encoded>)> {
        let dims = self.backend.dims();
        let special = self.tokenizer.special();
        let multilingual = self.tokenizer.is_multilingual();
        let index = state.spans.len();
        state.spans.push(window.span);
        state.outputs.push(Vec::new());
        state.open += 1;
        // Windows with neighbours are timed for stitching.
        let align = options.word_timestamps || state.keep_words || !(index == 0 && window.last);
        let (mel, content_frames) = window_mel(&window.samples, dims.n_mels, options.mel_padding);
        // Detecting the language encodes the window: the decode reuses that encoding.
        let mut encoded = None;
        if multilingual && state.language.is_none() {
            let window_encoded = encode_window(&self.backend, &mel)?;
            state.language_probs = self.rank_languages(&window_encoded)?;
            state.language = state.language_probs.first().map(|l| l.0);
            encoded = Some(window_encoded);
        }
        let sot = sot_sequence(
            special,
            multilingual,
            state.language,
            options.decode.task,
            options.decode.without_timestamps,
        );
        let window = OpenWindow {
            input,
            index,
            seed_key: index as u64,
            span: window.span,
            samples: window.samples,
            mel: mel.into(),
            content_frames,
            sot,
            align,
            temperature_index: 0,
            outstanding: 0,
            best: None,
            tried: Vec::new(),
            awaiting_pass: None,
        };
        Ok((window, encoded))
    }

    /// An input's transcript once its last window is final: its windows stitched, isolated
    /// hallucinations screened, words kept only when asked for (or needed by its caller).
    fn finish_input(
        &self,
        state: &mut InputState<'_>,
        options: &TranscribeOptions,
    ) -> Result<Transcript> {
        let source = state.source.take().expect("an input finishes once");
        let warnings = source.warnings();
        drop(source);
        let windows = std::mem::take(&mut state.outputs);
        let mut segments = self.stitch(windows, &std::mem::take(&mut state.spans))?;
        let screen = options.word_timestamps;
        if let Some(threshold) = options.hallucination_silence_threshold.filter(|_| screen) {
            segments = hallucination::drop_isolated_anomalies(segments, threshold);
        }
        if !options.word_timestamps && !state.keep_words {
            for s in &mut segments {
                s.words = None;
            }
        }
        let segments: Vec<Segment> = segments
            .into_iter()
            .enumerate()
            .map(|(id, s)| Segment { id, ..s })
            .collect();
        Ok(Transcript {
            text: segments.iter().map(|s| s.text.as_str()).collect(),
            language: match state.language {
                Some(i) => self.tokenizer.languages()[i].clone(),
                None => "en".to_string(),
            },
            segments,
            warnings,
            language_probs: self.language_names(&state.language_probs),
        })
    }

    /// One input's segments from its windows' (timed, uncut) segments: each window keeps
    /// the words between its cuts with its neighbours.
    fn stitch(&self, windows: Vec<Vec<Timed>>, plan: &[WindowSpan]) -> Result<Vec<Segment>> {
        // Follow-up windows were read last; in time they sit right after their parent.
        let mut order: Vec<usize> = (0..plan.len()).collect();
        order.sort_by(|&a, &b| plan[a].own_start.total_cmp(&plan[b].own_start));
        let plan: Vec<WindowSpan> = order.iter().map(|&k| plan[k]).collect();
        let mut windows: Vec<Option<Vec<Timed>>> = windows.into_iter().map(Some).collect();
        let windows: Vec<Vec<Timed>> = order
            .iter()
            .map(|&k| windows[k].take().expect("each window once"))
            .collect();
        let words: Vec<Vec<Word>> = windows
            .iter()
            .map(|segs| {
                segs.iter()
                    .flat_map(|s| s.words().iter().cloned())
                    .collect()
            })
            .collect();
        // keep[k] = range of window k's word indices it contributes.
        let mut keep: Vec<std::ops::Range<usize>> = words.iter().map(|w| 0..w.len()).collect();
        for k in 1..windows.len() {
            let boundary = plan[k].own_start;
            let overlap = (
                plan[k].start as f64 / SAMPLE_RATE as f64,
                plan[k - 1].end as f64 / SAMPLE_RATE as f64,
            );
            let (left_end, right_start) = cut(&words[k - 1], &words[k], overlap, boundary);
            keep[k - 1].end = left_end.max(keep[k - 1].start);
            keep[k].start = right_start;
        }
        let mut out = Vec::new();
        for (k, segments) in windows.into_iter().enumerate() {
            let mut index = 0;
            for timed in segments {
                let n = timed.words().len();
                let segment = timed.segment;
                let range = index..index + n;
                index += n;
                let kept = if n == 0 {
                    // No words to cut by: the segment stays if its middle is owned.
                    let mid = (segment.start + segment.end) / 2.0;
                    (plan[k].own_start <= mid && mid < plan[k].own_end).then_some(segment)
                } else {
                    self.cut_segment(segment, range, &keep[k])?
                };
                if let Some(s) = kept {
                    if s.start < s.end && !s.text.trim().is_empty() {
                        out.push(s);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The language fixed by the options, if any (checked against the model).
    pub(crate) fn given_language(&self, options: &TranscribeOptions) -> Result<Option<usize>> {
        match &options.decode.language {
            Some(code) if !self.tokenizer.is_multilingual() => {
                if code != "en" {
                    return Err(PipelineError::LanguageOnEnglishModel(code.clone()));
                }
                Ok(None)
            }
            Some(code) => Ok(Some(self.tokenizer.language_index(code)?)),
            None => Ok(None),
        }
    }

    /// A finished window's segments, with their words timed (when the window is aligned).
    fn window_segments(
        &self,
        w: &OpenWindow,
        mut result: WindowResult,
        language: &str,
        options: &TranscribeOptions,
    ) -> Result<Vec<Timed>> {
        if fallback::is_silent(&result, options) {
            return Ok(Vec::new());
        }
        let special = self.tokenizer.special();
        let time_offset = w.span.start as f64 / SAMPLE_RATE as f64;
        let duration = (w.content_frames * HOP_LENGTH) as f64 / SAMPLE_RATE as f64;
        let mut segments: Vec<Segment> = split_segments(&result.tokens, special, duration)
            .into_iter()
            .map(|(start, end, range)| {
                let tokens = result.tokens[range].to_vec();
                let times = (time_offset + start, time_offset + end);
                self.segment(&result, tokens, times, w.span.start / HOP_LENGTH)
            })
            .collect::<Result<_>>()?;
        if !w.align {
            return Ok(segments.into_iter().map(Timed::untimed).collect());
        }
        let chars = options.word_timestamps && options.word_alignment == WordAlignment::Chars;
        let cut_by =
            self.time_words(w, &mut result, language, chars, time_offset, &mut segments)?;
        let mut timed: Vec<Timed> = match cut_by {
            Some(cut_by) => segments
                .into_iter()
                .zip(cut_by)
                .map(|(segment, decided)| {
                    let count = |s: &Segment| s.words.as_ref().map(Vec::len);
                    let same_words = count(&segment) == count(&decided);
                    Timed {
                        segment,
                        cut_by: same_words.then_some(decided),
                    }
                })
                .collect(),
            None => segments.into_iter().map(Timed::untimed).collect(),
        };
        let loudness = loudness_db(&w.mel, self.backend.dims().n_mels, w.content_frames);
        if let Some(level) = silence_level(&loudness) {
            let frame = |t: f64| ((t - time_offset) / TIME_PRECISION).max(0.0) as usize;
            let heard = |w: &Word| {
                let frames = loudness.get(frame(w.start)..=frame(w.end));
                frames.is_none_or(|f| f.iter().any(|&db| db > level))
            };
            timed = timed
                .into_iter()
                .filter_map(|t| self.heard_part(t, &heard).transpose())
                .collect::<Result<_>>()?;
        }
        Ok(timed)
    }

    /// `segment` without the words at its ends that lie in silence (`heard` says which do
    /// not) and far from the words that are heard; none when no word is heard. Such words
    /// were written by the model, not heard: tiny.en writes "I'm not sure if I'm going to go
    /// to the next one." into 12 s of digital silence after jfk, and starts a line on
    /// laughter with an "I'm" 12 s before it. Silent words next to heard ones stay: they are
    /// more often real words timed a little into a gap.
    fn heard_part(&self, timed: Timed, heard: &dyn Fn(&Word) -> bool) -> Result<Option<Timed>> {
        // Whether a word lies in silence is for the finer times to say.
        let words = timed.segment.words.as_deref().unwrap_or_default();
        if words.is_empty() {
            return Ok(Some(timed));
        }
        let Some(range) = heard_range(words, heard) else {
            return Ok(None);
        };
        if range == (0..words.len()) {
            return Ok(Some(timed));
        }
        let text: String = words[range.clone()]
            .iter()
            .map(|w| w.word.as_str())
            .collect();
        let tokens = self.tokenizer.encode(&text)?;
        let Timed { segment, cut_by } = timed;
        // The words `range` of a segment, as a segment of their own.
        let part = |segment: Segment| {
            let kept = segment.words.as_deref().unwrap_or_default()[range.clone()].to_vec();
            Segment {
                start: kept[0].start,
                end: kept[kept.len() - 1].end,
                tokens: tokens.clone(),
                text: text.clone(),
                words: Some(kept),
                ..segment
            }
        };
        Ok(Some(Timed {
            segment: part(segment),
            cut_by: cut_by.map(part),
        }))
    }

    /// The window that decodes on where `w`'s decode left its stretch unheard (see
    /// [`unheard_stretch`]), owning the rest of `w`'s stretch; the segments from there on are
    /// taken from `segments`, since the follow-up decodes them again.
    fn follow_up(
        &self,
        w: &OpenWindow,
        next_start: Option<f64>,
        segments: &mut Vec<Timed>,
        options: &TranscribeOptions,
    ) -> Option<OpenWindow> {
        let n_mels = self.backend.dims().n_mels;
        let loudness = OnceCell::new();
        let window_start = w.span.start as f64 / SAMPLE_RATE as f64;
        let frame = |t: f64| ((t - window_start) / TIME_PRECISION).max(0.0) as usize;
        let sounding = |from: f64, to: f64| {
            let loudness = loudness.get_or_init(|| loudness_db(&w.mel, n_mels, w.content_frames));
            sound_frames(loudness, frame(from), frame(to))
        };
        let special = self.tokenizer.special();
        let deciding: Vec<Segment> = segments.iter().map(|t| t.deciding().clone()).collect();
        let resume = unheard_stretch(
            &deciding,
            &w.span,
            next_start,
            w.samples.len(),
            special,
            sounding,
        )?;
        segments.truncate(resume.keep);
        let samples = w.samples[resume.from..].to_vec();
        let (mel, content_frames) = window_mel(&samples, n_mels, options.mel_padding);
        let start = w.span.start + resume.from;
        Some(OpenWindow {
            input: w.input,
            index: 0,
            seed_key: w.seed_key.rotate_left(17) ^ 0xF011_0000_0000_0001,
            span: WindowSpan {
                start,
                end: w.span.end,
                own_start: resume.owns_from,
                own_end: w.span.own_end,
            },
            samples,
            mel: mel.into(),
            content_frames,
            sot: w.sot.clone(),
            align: w.align,
            temperature_index: 0,
            outstanding: 0,
            best: None,
            tried: Vec::new(),
            awaiting_pass: None,
        })
    }

    /// Times the words of a window's segments from its decode's attention, or from its
    /// alignment pass (`chars`: a character alignment pass). With the character pass, also
    /// returns each segment's words timed by the decode's attention, which decide what the
    /// window keeps (see [`Timed`]).
    fn time_words(
        &self,
        w: &OpenWindow,
        result: &mut WindowResult,
        language: &str,
        chars: bool,
        time_offset: f64,
        segments: &mut [Segment],
    ) -> Result<Option<Vec<Segment>>> {
        let special = self.tokenizer.special();
        let positions: Vec<usize> = (0..result.tokens.len())
            .filter(|&j| special.is_text(result.tokens[j]))
            .collect();
        let text: Vec<u32> = positions.iter().map(|&j| result.tokens[j]).collect();
        let pass = result.refeed.take();
        if text.is_empty() || pass.is_none() && result.qk_rows.is_empty() {
            for s in segments.iter_mut() {
                s.words = Some(Vec::new());
            }
            return Ok(None);
        }
        let words = self.word_tokens(&text, language)?;
        let decode_probs = align::decode_probs(result, &positions);
        let frames = w.content_frames;
        let mut cut_by = None;
        let aligned = match pass {
            Some(pass) if chars => {
                cut_by =
                    self.decode_timed(result, &positions, &words, segments, time_offset, frames);
                let spelled = self.spelled(&words, language, w.sot.len());
                self.align_pass_chars(
                    pass,
                    &words,
                    spelled.as_ref(),
                    &decode_probs,
                    segments,
                    time_offset,
                    &w.mel,
                    frames,
                )
            }
            Some(pass) => {
                let (scores, probs) = align::refeed_scores(pass);
                align::align(&scores, &words, &probs, frames)
            }
            None => {
                // The decode's own attention, kept for the alignment heads.
                let scores =
                    align::single_pass_scores(result, &positions, self.alignment_heads.len());
                align::align(&scores, &words, &decode_probs, frames)
            }
        };
        let mut last_speech = time_offset;
        self.place_aligned(aligned, segments, time_offset, &mut last_speech);
        if let Some(decode_timed) = &cut_by {
            align::keep_decode_times_where_far(segments, decode_timed);
        }
        Ok(cut_by)
    }

    /// The part of `segment` (whose words are the window's words `range`) that falls in
    /// the window's kept words `keep`; `None` if none does.
    fn cut_segment(
        &self,
        mut segment: Segment,
        range: std::ops::Range<usize>,
        keep: &std::ops::Range<usize>,
    ) -> Result<Option<Segment>> {
        let words = segment.words.take().unwrap_or_default();
        let from = keep.start.clamp(range.start, range.end) - range.start;
        let to = keep.end.clamp(range.start, range.end) - range.start;
        if from >= to {
            return Ok(None);
        }
        let kept = words[from..to].to_vec();
        if kept.len() < words.len() {
            if from > 0 {
                segment.start = kept[0].start;
            }
            if to < words.len() {
                segment.end = kept[kept.len() - 1].end;
            }
            segment.text = kept.iter().map(|w| w.word.as_str()).collect();
            // The cut segment's tokens are its text's; its timestamp tokens no longer apply.
            segment.tokens = self.tokenizer.encode(&segment.text)?;
        }
        segment.words = Some(kept);
        Ok(Some(segment))
    }
}

/// Where two overlapping windows hand over: `(left_end, right_start)` such that the left
/// window keeps its words `..left_end` and the right one its words `right_start..`.
///
/// The words both windows heard in the overlap are paired (same spelling, in order); the pair
/// nearest the `boundary` is kept once, from the left, and every word is cut at it. Cutting at
/// a shared word rather than at a time means a word timed a little differently by the two
/// windows is neither lost nor doubled. Without a shared word the cut is by time
/// ([`cut_by_time`]).
fn cut(left: &[Word], right: &[Word], overlap: (f64, f64), boundary: f64) -> (usize, usize) {
    let mid = |w: &Word| (w.start + w.end) / 2.0;
    let left_from = left
        .iter()
        .position(|w| mid(w) >= overlap.0)
        .unwrap_or(left.len());
    let right_to = right
        .iter()
        .position(|w| mid(w) >= overlap.1)
        .unwrap_or(right.len());
    let pairs = shared_words(&left[left_from..], &right[..right_to]);
    let best = pairs.into_iter().min_by(|&(i, j), &(k, l)| {
        let d = |i: usize, j: usize| {
            ((mid(&left[left_from + i]) + mid(&right[j])) / 2.0 - boundary).abs()
        };
        d(i, j).total_cmp(&d(k, l))
    });
    match best {
        Some((i, j)) => (left_from + i + 1, j + 1),
        None => cut_by_time(left, right, overlap, boundary),
    }
}

/// [`cut`] without a shared word: each side keeps the words whose middle is on its side of
/// `boundary`, and also the words it alone heard on the other side: those past where the
/// other side's last kept word ends. A window at times misses a line near its edge that its
/// neighbour heard. A word starting within [`SAME_WORD_GAP_SECONDS`] of the other side's
/// last one is taken to be that word heard differently, and not kept twice.
fn cut_by_time(
    left: &[Word],
    right: &[Word],
    overlap: (f64, f64),
    boundary: f64,
) -> (usize, usize) {
    let mid = |w: &Word| (w.start + w.end) / 2.0;
    let first_from = |words: &[Word], t: f64| {
        words
            .iter()
            .position(|w| mid(w) >= t)
            .unwrap_or(words.len())
    };
    let left_end = first_from(left, boundary);
    let right_start = first_from(right, boundary);
    if overlap.0 >= overlap.1 {
        // A follow-up shares no audio with its parent: only time decides.
        return (left_end, right_start);
    }
    // Each side's words from where the other stops hearing (its last kept word, or its
    // window's edge), less the gap within which a word may be the same one.
    let left_heard_to = left[..left_end].last().map_or(overlap.0, |w| {
        (w.end + SAME_WORD_GAP_SECONDS).max(overlap.0)
    });
    let right_heard_from = right.get(right_start).map_or(overlap.1, |w| {
        (w.start - SAME_WORD_GAP_SECONDS).min(overlap.1)
    });
    (
        first_from(left, boundary.max(right_heard_from)),
        first_from(right, boundary.min(left_heard_to)),
    )
}

/// See [`cut_by_time`].
const SAME_WORD_GAP_SECONDS: f64 = 0.2;

/// Pairs `(i, j)` of equal words (ignoring case and punctuation) on a longest common
/// subsequence of `a` and `b`.
fn shared_words(a: &[Word], b: &[Word]) -> Vec<(usize, usize)> {
    let norm = |w: &Word| -> String {
        w.word
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let (a, b): (Vec<String>, Vec<String>) =
        (a.iter().map(norm).collect(), b.iter().map(norm).collect());
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] && !a[i].is_empty() {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut pairs = Vec::new();
    while i < n && j < m {
        if a[i] == b[j] && !a[i].is_empty() {
            pairs.push((i, j));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    pairs
}

/// Where the window after `span` (overlapping it) starts, in seconds, if it is planned.
fn next_window_start(spans: &[WindowSpan], span: &WindowSpan) -> Option<f64> {
    spans
        .iter()
        .filter(|s| s.start > span.start && s.start < span.end)
        .map(|s| s.start as f64 / SAMPLE_RATE as f64)
        .min_by(f64::total_cmp)
}

/// Progress a follow-up window must make past the start of its parent's stretch.
const FOLLOW_UP_MIN_ADVANCE_SECONDS: f64 = 1.0;
/// Audio left unheard in a window's stretch after its last word that counts as stopping short.
const STOPPED_SHORT_SECONDS: f64 = 1.0;
/// Audio passed over before a window's last line, when that line ends where the window
/// does, that counts as skipped speech if [`SKIPPED_SOUND_FRAMES`] of it sound: on
/// back-to-back speech tiny.en at times jumps from mid-window speech to a made-up line at the
/// end ("THE BIRTH" 25 s on in a fixed window, "R-R" 25 s on in a VAD clip), and nothing else
/// decodes what it jumped over. The sound needed keeps packed windows' 2 s of digital silence
/// between clips from counting. Jumps between other lines are left alone: over laughter and
/// noise they are right, and follow-ups there wrote noise as words (pause set without VAD:
/// 27.6% WER against 25.0%).
const SKIPPED_SECONDS: f64 = 4.0;
const SKIPPED_SOUND_FRAMES: usize = 100;

/// Where a follow-up window starts: `from` samples into its parent, keeping the parent's
/// first `keep` segments, and owning the input from `owns_from` seconds (the end of the kept
/// words, or where the dropped open segment began).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Resume {
    keep: usize,
    from: usize,
    owns_from: f64,
}

/// Where a follow-up window should start, if `w`'s decode left part of its stretch unheard,
/// at the first of two places: more than [`SKIPPED_SECONDS`] lie before a last line at the
/// window's end, or its last word ends more than [`STOPPED_SHORT_SECONDS`] before the stretch
/// `w` owns does (end-of-text mid-sentence, out of tokens). Only stretches where
/// `sound_frames(from, to)` finds sound count. A last segment left open (no closing
/// timestamp) is decoded again from its start, as the sequential loop seeks; a closed one,
/// from its end. Text that runs to the window's end, as when speech goes on past it, is not
/// stopping short: the next window overlaps it. Nor is a stretch the next window, starting at
/// `next_start` seconds, hears from its beginning: a follow-up there costs a whole window
/// (16 of them on the pause set, all but a few in the 4 s its parent shares with the next).
fn unheard_stretch(
    segments: &[Segment],
    span: &WindowSpan,
    next_start: Option<f64>,
    samples: usize,
    special: &whisk_types::SpecialTokens,
    sound_frames: impl Fn(f64, f64) -> usize,
) -> Option<Resume> {
    let n = segments.len();
    let window_end = span.end as f64 / SAMPLE_RATE as f64;
    let last_at_end = n >= 2 && segments[n - 1].end >= window_end - STOPPED_SHORT_SECONDS;
    let jump = last_at_end.then(|| {
        let next = segments[n - 1].start.min(span.own_end);
        (n - 2, next, SKIPPED_SECONDS, SKIPPED_SOUND_FRAMES)
    });
    let end = n.checked_sub(1).map(|k| {
        (
            k,
            span.own_end,
            STOPPED_SHORT_SECONDS,
            FOLLOW_UP_SOUND_FRAMES,
        )
    });
    for (k, next, limit, sound_needed) in jump.into_iter().chain(end) {
        let segment = &segments[k];
        let (&first, &end) = (segment.tokens.first()?, segment.tokens.last()?);
        let (from, keep) = match (special.is_timestamp(first), special.is_timestamp(end)) {
            (_, true) => (end, k + 1),
            (true, false) => (first, k),
            (false, false) => return None,
        };
        let from = (from - special.timestamp_begin) as usize * SAMPLES_PER_TIMESTAMP;
        let begins = (span.start + from) as f64 / SAMPLE_RATE as f64;
        let heard_until = segment
            .words
            .as_ref()
            .and_then(|words| words.last())
            .map_or(segment.end, |word| word.end.max(begins));
        let unheard = next - heard_until > limit;
        let advances = begins >= span.own_start + FOLLOW_UP_MIN_ADVANCE_SECONDS;
        // The next window hears it: the stitch hands over to it where this one stops.
        let next_hears_it = next_start.is_some_and(|t| heard_until >= t);
        let sounds = || sound_frames(heard_until, next) >= sound_needed;
        if unheard && advances && !next_hears_it && from < samples && sounds() {
            // Past the closing timestamp by the aligned words, unless they are far off (words
            // put 19 s after a "<|0.00|> She has a <|1.00|>").
            let owns_from = match keep > k {
                true => heard_until.min(begins + STOPPED_SHORT_SECONDS),
                false => begins,
            };
            return Some(Resume {
                keep,
                from,
                owns_from,
            });
        }
    }
    None
}

/// 20 ms frames of sound that a window's unheard stretch must hold for a follow-up, and how
/// near the window's loud level (its 95th percentile) they must be.
/// Silence after the last word (a pause, a clip's padding) is not worth a window, and a
/// follow-up fed only the edge of a cut-off word writes a word that is not there ("seconds."
/// after jfk's "Americans." in a clip ending at 3.3 s).
const FOLLOW_UP_SOUND_FRAMES: usize = 10;
const FOLLOW_UP_SOUND_DB: f32 = 25.0;

/// How many of frames `from..to` of a window's loudness (dB per 20 ms) are within
/// [`FOLLOW_UP_SOUND_DB`] of the window's loud level.
fn sound_frames(loudness_db: &[f32], from: usize, to: usize) -> usize {
    let to = to.min(loudness_db.len());
    if from >= to {
        return 0;
    }
    let (_, loud) = floor_and_loud(loudness_db).expect("not empty");
    loudness_db[from..to]
        .iter()
        .filter(|&&db| db >= loud - FOLLOW_UP_SOUND_DB)
        .count()
}

/// A 20 ms frame within this many dB of a window's quietest is silence that no word can be
/// heard in (digital silence sits at the mel's floor), where the window's loud level (its
/// 95th percentile) is at least [`SILENCE_DEPTH_DB`] above it.
const SILENCE_FLOOR_DB: f32 = 1.0;
const SILENCE_DEPTH_DB: f32 = 20.0;

/// The words of a segment to keep (see `Pipeline::heard_part`), none if none is heard.
fn heard_range(words: &[Word], heard: &dyn Fn(&Word) -> bool) -> Option<Range<usize>> {
    let first_heard = words.iter().position(heard)?;
    let last_heard = words.iter().rposition(heard)?;
    let far = |a: &Word, b: &Word| b.start - a.end > UNHEARD_GAP_SECONDS;
    let first = match first_heard {
        k if k > 0 && far(&words[k - 1], &words[k]) => k,
        _ => 0,
    };
    let end = match last_heard + 1 {
        n if n < words.len() && far(&words[n - 1], &words[n]) => n,
        _ => words.len(),
    };
    Some(first..end)
}

/// Silence between a segment's words in silence at its start or end and its heard words
/// beyond which the silent ones are dropped (see `heard_part`).
const UNHEARD_GAP_SECONDS: f64 = 2.0;

/// The loudness (dB per 20 ms) at or below which a window's frames are silence, if it has
/// any: within [`SILENCE_FLOOR_DB`] of its quietest frame, where that lies at least
/// [`SILENCE_DEPTH_DB`] below its loud level.
fn silence_level(loudness_db: &[f32]) -> Option<f32> {
    let (floor, loud) = floor_and_loud(loudness_db)?;
    (loud - floor >= SILENCE_DEPTH_DB).then_some(floor + SILENCE_FLOOR_DB)
}

/// A window's quietest frame and its loud level (95th percentile), in dB; none if empty.
fn floor_and_loud(loudness_db: &[f32]) -> Option<(f32, f32)> {
    let mut sorted = loudness_db.to_vec();
    sorted.sort_by(f32::total_cmp);
    Some((*sorted.first()?, sorted[(sorted.len() - 1) * 95 / 100]))
}

/// Samples per timestamp token step (20 ms).
const SAMPLES_PER_TIMESTAMP: usize = INPUT_STRIDE * HOP_LENGTH;

/// Log-mel of one window's samples, padded to 30 s as `padding` says, and the frames that
/// hold audio.
fn window_mel(samples: &[f32], n_mels: usize, padding: MelPadding) -> (Vec<f32>, usize) {
    let (mel, content) = padded_mel(samples, n_mels, padding);
    (mel.window(0, N_FRAMES), content.min(N_FRAMES))
}

/// Segments of one window's tokens: (start, end in seconds from the window start, token
/// range). Unlike the sequential loop, which re-decodes from the last timestamp, the text
/// after the last closed pair is kept as a segment running to the end of the audio.
fn split_segments(
    tokens: &[u32],
    special: &whisk_types::SpecialTokens,
    duration: f64,
) -> Vec<(f64, f64, std::ops::Range<usize>)> {
    let is_ts = |t: u32| special.is_timestamp(t);
    let time = |t: u32| (t - special.timestamp_begin) as f64 * TIME_PRECISION;
    let consecutive: Vec<usize> = (1..tokens.len())
        .filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i]))
        .collect();
    let mut segments = Vec::new();
    if consecutive.is_empty() {
        let end = match tokens.iter().rev().find(|&&t| is_ts(t)) {
            Some(&t) if t != special.timestamp_begin => time(t),
            _ => duration,
        };
        segments.push((0.0, end, 0..tokens.len()));
        return segments;
    }
    let mut last = 0;
    for &cur in &consecutive {
        let piece = &tokens[last..cur];
        segments.push((time(piece[0]), time(piece[piece.len() - 1]), last..cur));
        last = cur;
    }
    let tail = &tokens[last..];
    if tail.iter().any(|&t| special.is_text(t)) {
        let start = if is_ts(tail[0]) {
            time(tail[0])
        } else {
            segments.last().map_or(0.0, |s| s.1)
        };
        let end = match tail.last() {
            Some(&t) if is_ts(t) && tail.len() > 1 => time(t),
            _ => duration,
        };
        segments.push((start, end.max(start), last..tokens.len()));
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tiny.en's layout.
    fn special() -> whisk_types::SpecialTokens {
        whisk_types::SpecialTokens {
            eot: 50256,
            sot: 50257,
            language_begin: 50258,
            num_languages: 0,
            translate: 50357,
            transcribe: 50358,
            sot_lm: 50359,
            sot_prev: 50360,
            no_speech: 50361,
            no_timestamps: 50362,
            timestamp_begin: 50363,
        }
    }

    fn words(spec: &[(&str, f64)]) -> Vec<Word> {
        spec.iter()
            .map(|&(w, t)| Word {
                word: format!(" {w}"),
                start: t,
                end: t + 0.3,
                probability: 1.0,
            })
            .collect()
    }

    #[test]
    fn overlapping_windows_hand_over_at_a_shared_word() {
        // Overlap 26..30 s, boundary 28 s. "think" is timed 27.9 by the left window and 28.1
        // by the right: a cut by time alone would drop it on both sides.
        let left = words(&[
            ("a", 20.0),
            ("b", 26.5),
            ("i", 27.2),
            ("think", 27.9),
            ("so", 29.5),
        ]);
        let right = words(&[
            ("b", 26.6),
            ("i", 27.4),
            ("think", 28.1),
            ("so", 29.4),
            ("c", 31.0),
        ]);
        let (left_end, right_start) = cut(&left, &right, (26.0, 30.0), 28.0);
        let kept: Vec<&str> = left[..left_end]
            .iter()
            .chain(&right[right_start..])
            .map(|w| w.word.trim())
            .collect();
        assert_eq!(kept, ["a", "b", "i", "think", "so", "c"]);
        // Nothing shared (a word heard differently): each side keeps its half by time.
        let left = words(&[("lambswool", 27.5), ("x", 28.5)]);
        let right = words(&[("lambs", 27.4), ("wool", 27.8), ("x2", 28.6)]);
        let (left_end, right_start) = cut(&left, &right, (26.0, 30.0), 28.0);
        assert_eq!((left_end, right_start), (1, 2));
    }

    #[test]
    fn a_line_only_one_window_heard_in_the_overlap_is_kept() {
        // Overlap 26..30 s, boundary 28 s. The left window missed its last line, which the
        // right one heard from 26.5 s: a cut at 28 s would lose "don't ask me".
        let left = words(&[("a", 20.0), ("b", 24.0)]);
        let right = words(&[("don't", 26.5), ("ask", 27.0), ("me", 27.5), ("to", 28.2)]);
        assert_eq!(cut(&left, &right, (26.0, 30.0), 28.0), (2, 0));
        // The right window missed the words after the boundary that the left one heard.
        let left = words(&[("a", 27.0), ("b", 28.5), ("c", 29.2)]);
        let right = words(&[("d", 31.0)]);
        assert_eq!(cut(&left, &right, (26.0, 30.0), 28.0), (3, 0));
        // A word the right window heard before the left's last word ended is not doubled.
        let left = words(&[("a", 20.0), ("b", 25.8)]);
        let right = words(&[("b2", 25.9), ("c", 27.0)]);
        assert_eq!(cut(&left, &right, (26.0, 30.0), 28.0), (2, 1));
    }

    fn last_segment(tokens: Vec<u32>, start: f64, end: f64, last_word_end: f64) -> Segment {
        Segment {
            id: 0,
            seek: 0,
            start,
            end,
            text: String::new(),
            tokens,
            temperature: 0.0,
            avg_logprob: 0.0,
            compression_ratio: 1.0,
            no_speech_prob: 0.0,
            words: Some(words(&[("w", last_word_end - 0.3)])),
        }
    }

    #[test]
    fn a_decode_that_ends_early_or_jumps_ahead_is_followed_up() {
        let s = special();
        let ts = |k: u32| s.timestamp_begin + k;
        let at = |seconds: f64| (seconds * SAMPLE_RATE as f64) as usize;
        // A 28 s clip at 100 s of its input, owning all of it.
        let span = WindowSpan {
            start: at(100.0),
            end: at(128.0),
            own_start: 100.0,
            own_end: 128.0,
        };
        let samples = at(28.0);
        let resume = |segment: &Segment, span: &WindowSpan, samples: usize| {
            unheard_stretch(
                std::slice::from_ref(segment),
                span,
                None,
                samples,
                &s,
                |_, _| 1500,
            )
            .map(|r| r.from)
        };
        // "She had your dog." closed at 1.2 s, then end of text: 26.8 s unheard. The follow-up
        // starts where the segment closed.
        let closed = last_segment(vec![ts(0), 10, 11, ts(60)], 100.0, 101.2, 101.2);
        assert_eq!(resume(&closed, &span, samples), Some(at(1.2)));
        // Closed at 0.8 s: too little progress for a follow-up (it could repeat forever).
        let closed = last_segment(vec![ts(0), 10, 11, ts(40)], 100.0, 100.8, 100.8);
        assert_eq!(resume(&closed, &span, samples), None);
        // Left open ("A-" and nothing after): decoded again from where it opened.
        let open = last_segment(vec![ts(60), 12, 13], 101.2, 128.0, 101.3);
        assert_eq!(resume(&open, &span, samples), Some(at(1.2)));
        // Open text heard to the end of the stretch: the window ran its course.
        let open = last_segment(vec![ts(60), 12, 13], 101.2, 128.0, 127.5);
        assert_eq!(resume(&open, &span, samples), None);
        // A middle window of fixed windows (owning 2..28 s of its 30): text running past the
        // owned end is not cut short, and a follow-up must move past the owned start.
        let middle = WindowSpan {
            start: at(26.0),
            end: at(56.0),
            own_start: 28.0,
            own_end: 54.0,
        };
        let running = last_segment(vec![ts(1200), 12, 13], 50.0, 56.0, 55.8);
        assert_eq!(resume(&running, &middle, at(30.0)), None);
        let early = last_segment(vec![ts(40), 12, ts(100)], 26.8, 28.0, 28.0);
        assert_eq!(resume(&early, &middle, at(30.0)), None);
        let early = last_segment(vec![ts(40), 12, ts(200)], 26.8, 30.0, 30.0);
        assert_eq!(resume(&early, &middle, at(30.0)), Some(at(4.0)));
        // Unless the next window hears the stretch from its start (its last word ends at
        // 30 s): a next window from 29 s does, one from 31 s does not.
        let heard_from = |next: f64| {
            unheard_stretch(
                std::slice::from_ref(&early),
                &middle,
                Some(next),
                at(30.0),
                &s,
                |_, _| 1500,
            )
            .map(|r| r.from)
        };
        assert_eq!(heard_from(29.0), None);
        assert_eq!(heard_from(31.0), Some(at(4.0)));
        // An open last segment is dropped and decoded again; a closed one is kept.
        let first = last_segment(vec![ts(0), 10, ts(60)], 100.0, 101.2, 101.2);
        let open = last_segment(vec![ts(60), 12, 13], 101.2, 128.0, 101.3);
        let both = [first.clone(), open];
        // A stretch that sounds throughout: one frame per 20 ms.
        let all_sound = |from: f64, to: f64| ((to - from) / TIME_PRECISION).max(0.0) as usize;
        let keep = |segments: &[Segment]| {
            unheard_stretch(segments, &span, None, samples, &s, all_sound).map(|r| r.keep)
        };
        assert_eq!(keep(&both), Some(1));
        // A jump over more than `SKIPPED_SECONDS` (2 s of it sound) to a last line at the
        // window's end is unheard audio: the follow-up decodes again from the first segment's
        // end, dropping the rest. A shorter pause is not (here the stretch after the pause is),
        // nor a jump to a line before the end, nor one over mostly silence (packed clips lie
        // 2 s of digital silence apart).
        let late = |at: f64| {
            let k = ((at - 100.0) / TIME_PRECISION).round() as u32;
            last_segment(vec![ts(k), 14, ts(k + 40)], at, at + 0.8, at + 0.8)
        };
        let jumped = [first.clone(), late(127.0)];
        assert_eq!(keep(&jumped), Some(1));
        let paused = [first.clone(), late(104.0)];
        assert_eq!(keep(&paused), Some(2));
        let mid = [first.clone(), late(110.0), late(127.0)];
        assert_eq!(keep(&mid), Some(2));
        let quiet = unheard_stretch(&jumped, &span, None, samples, &s, |from, to| {
            if to - from > 20.0 {
                75
            } else {
                all_sound(from, to)
            }
        });
        assert_eq!(quiet, None);
        // No timestamp to restart from.
        let untimed = last_segment(vec![12, 13], 100.0, 101.0, 101.0);
        assert_eq!(resume(&untimed, &span, samples), None);
    }

    #[test]
    fn a_follow_up_is_cut_from_its_parent_by_time_not_by_a_shared_word() {
        // The parent heard "She has a" and stopped; its follow-up, from 1.0 s, decoded the
        // rest, "has" among it 13 s on. They share no audio, so the span update leaves an
        // empty overlap: the cut keeps all the parent's words and all the follow-up's.
        let parent = words(&[("She", 0.8), ("has", 1.0), ("a", 1.2)]);
        let follow_up = words(&[("Don't", 3.3), ("ask", 3.6), ("No", 13.4), ("has", 13.9)]);
        assert_eq!(cut(&parent, &follow_up, (1.0, 1.0), 1.5), (3, 0));
        // With the follow-up's whole window taken as overlap, "has" would have cut away
        // everything up to 13.9 s.
        assert_eq!(cut(&parent, &follow_up, (1.0, 30.0), 1.5), (2, 4));
    }

    #[test]
    fn words_in_silence_far_from_heard_ones_are_dropped() {
        // "I'm" in the silence 12 s before a line on laughter; "so" in silence next to heard
        // words (a real word timed into a gap) stays.
        let ws = words(&[("I'm", 11.0), ("going", 23.0), ("to", 25.7), ("so", 26.5)]);
        let heard = |w: &Word| (23.0..26.0).contains(&w.start);
        assert_eq!(heard_range(&ws, &heard), Some(1..4));
        let late = words(&[("going", 23.0), ("to", 25.7), ("one", 29.0)]);
        assert_eq!(heard_range(&late, &heard), Some(0..2));
        assert_eq!(heard_range(&ws, &|_: &Word| false), None);
    }

    #[test]
    fn silence_is_the_floor_of_a_window_with_sound_in_it() {
        // Speech at 0 dB, digital silence at -40 dB, one quiet breath at -30 dB.
        let mut loudness = vec![0.0f32; 50];
        loudness.extend([-40.0; 49]);
        loudness.push(-30.0);
        assert_eq!(silence_level(&loudness), Some(-39.0));
        // Steady noise with speech barely above it: nothing counts as silence.
        let noisy: Vec<f32> = (0..100).map(|k| -(k % 15) as f32).collect();
        assert_eq!(silence_level(&noisy), None);
        assert_eq!(silence_level(&[]), None);
    }

    #[test]
    fn a_follow_up_needs_sound_in_the_unheard_stretch() {
        // Speech at -20 dB for 5 s, then 3 s at -70 dB with a 100 ms click at -20 dB.
        let mut loudness = vec![-20.0f32; 250];
        loudness.extend(vec![-70.0f32; 150]);
        loudness[300..305].fill(-20.0);
        let has_sound = |l: &[f32], from, to| sound_frames(l, from, to) >= FOLLOW_UP_SOUND_FRAMES;
        assert!(!has_sound(&loudness, 250, 400));
        // 200 ms of speech in it is enough; a stretch past the audio holds nothing.
        loudness[350..360].fill(-30.0);
        assert!(has_sound(&loudness, 250, 400));
        assert!(!has_sound(&loudness, 400, 500));
        assert!(!has_sound(&[], 0, 10));
    }

    #[test]
    fn the_open_tail_is_kept() {
        let s = special();
        let ts = |k: u32| s.timestamp_begin + k;
        // <0.00> a b <1.00><1.00> c d <2.00><2.00> e f   (cut off by the window end)
        let tokens = [
            ts(0),
            10,
            11,
            ts(50),
            ts(50),
            12,
            13,
            ts(100),
            ts(100),
            14,
            15,
        ];
        let segs = split_segments(&tokens, &s, 30.0);
        let got: Vec<(f64, f64, std::ops::Range<usize>)> = segs;
        assert_eq!(
            got,
            vec![(0.0, 1.0, 0..4), (1.0, 2.0, 4..8), (2.0, 30.0, 8..11)]
        );
        // A closed last segment (single timestamp ending) adds nothing open.
        let tokens = [ts(0), 10, ts(50), ts(50), 12, ts(80)];
        let segs = split_segments(&tokens, &s, 30.0);
        assert_eq!(segs, vec![(0.0, 1.0, 0..3), (1.0, 1.6, 3..6)]);
        // No pairs: one segment to the last timestamp.
        let tokens = [ts(0), 10, 11, ts(75)];
        assert_eq!(split_segments(&tokens, &s, 30.0), vec![(0.0, 1.5, 0..4)]);
    }
}
