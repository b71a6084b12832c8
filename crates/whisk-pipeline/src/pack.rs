//! Short inputs packed into shared windows. A window costs a whole 30 s encoder pass however
//! little audio it holds, so clips of up to 30 s (short inputs whole, or the speech VAD found
//! in long ones) are laid end to end in one window, silence between them, decoded once, and
//! every segment and word is handed back to the clip it lies in, on its input's own timeline.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use whisk_audio::load_audio_with_damage;
use whisk_backend::Backend;
use whisk_types::{
    Segment, TranscribeOptions, Transcript, Word, HOP_LENGTH, N_SAMPLES, SAMPLE_RATE,
};

use crate::plan::{
    plan_clips, FileWindows, FixedWindows, PlannedWindows, Window, WindowSource, WindowSpan,
};
use crate::{clip_ranges, Pipeline, Progress, Result};

/// Silence between packed clips: long enough that the model closes one clip's segment before
/// the next clip begins.
pub const PACK_GAP_SECONDS: f64 = 2.0;

/// Silence between two clips of one input laid out in order (VAD's speech, cut where it
/// paused): their segments need not be told apart, and each clip keeps up to 0.4 s of its own
/// quiet at either end. Pause set with `--vad`, words on: 0.86x the wall time of 2 s gaps
/// (45 windows to 37), WER 21.2% against 20.5% and word starts within 50 ms 72% against 73%
/// (within run-to-run noise of repacking).
pub const PACK_CONTINUATION_GAP_SECONDS: f64 = 0.5;

/// How much of a window packed pieces fill when words are timed. The decoder's attention
/// times words worse the later they lie in a window (TIMIT's utterances alone, moved 10 s into
/// one: starts within 50 ms 79% -> 62%; 20 s: 40%), so pieces stop at 20 s, not 30: packed
/// TIMIT starts 72% -> 77%, for a few more windows.
pub const PACK_FILL_SECONDS_WITH_WORDS: f64 = 20.0;

/// One input of a batched transcription.
pub enum BatchInput<'a> {
    /// Windows handed out by a source of their own.
    Windows(Box<dyn WindowSource + 'a>),
    /// A file: read as its windows are needed; with
    /// [`TranscribeOptions::pack_short_inputs`], one whose header says it lasts at most
    /// [`PACKED_FILE_SECONDS`] is read whole when its turn comes and shares a window.
    File(Box<FileWindows>),
    /// Samples in memory of which only `clips` (`[start, end)` in samples) are heard. With
    /// `pack_short_inputs`, clips of up to 30 s share windows with other clips, of this input
    /// or others; longer ones get windows of their own.
    Clips {
        samples: &'a [f32],
        clips: Vec<(usize, usize)>,
    },
}

/// Share of a segment's time in pieces that one piece must hold for the segment to be its
/// whole.
const MAIN_PIECE_SHARE: f64 = 0.8;

/// Longest file (by its header) packed with others: a little under 30 s, so that a header
/// that misstates the length still leaves the file one window.
pub const PACKED_FILE_SECONDS: f64 = 25.0;

impl<'a> BatchInput<'a> {
    /// The whole of `samples`, or the clips `options.clip_timestamps` names.
    pub fn samples(samples: &'a [f32], options: &TranscribeOptions) -> Self {
        Self::Clips {
            samples,
            clips: clip_ranges(&options.clip_timestamps, samples.len(), SAMPLE_RATE),
        }
    }
}

/// Whether batched transcription with `options` packs short inputs into shared windows:
/// only where the language is known (an English model, or `options.decode.language`), since a
/// window holds one language.
pub fn packs_inputs(options: &TranscribeOptions, multilingual: bool) -> bool {
    options.pack_short_inputs && (!multilingual || options.decode.language.is_some())
}

/// Samples `[start, end)` of input `input`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Piece {
    pub input: usize,
    pub start: usize,
    pub end: usize,
}

impl Piece {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Pieces laid out on one timeline of packed windows: each with the sample it starts at.
/// Window `k` starts at sample `k * N_SAMPLES`; its pieces are `gap` samples apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pack {
    /// In the order they were laid out, so by where they start.
    pub pieces: Vec<(Piece, usize)>,
}

impl Pack {
    /// The piece that time `t` (seconds on the packed timeline) lies in, or the nearest one
    /// in the same window.
    fn piece_at(&self, t: f64) -> usize {
        let window = |at: usize| at / N_SAMPLES;
        let t_window = (t.max(0.0) * SAMPLE_RATE as f64) as usize / N_SAMPLES;
        let distance = |k: usize| {
            let (p, at) = self.pieces[k];
            let d = (seconds(at) - t).max(t - seconds(at + p.len())).max(0.0);
            (window(at) != t_window, d)
        };
        // The first piece ending after `t`: `t` lies in it, in the gap before it, or after
        // the piece before it.
        let after = self
            .pieces
            .partition_point(|&(p, at)| seconds(at + p.len()) <= t);
        let candidates = [after.saturating_sub(1), after.min(self.pieces.len() - 1)];
        candidates
            .into_iter()
            .min_by(|&i, &j| distance(i).partial_cmp(&distance(j)).expect("finite times"))
            .expect("two candidates")
    }

    /// The piece holding most of `[start, end)` (seconds on the packed timeline), if it holds
    /// nearly all that any piece does. The model's segment times wander more than its
    /// segments' bounds do, so a segment mostly in one piece is that piece's whole.
    fn main_piece(&self, start: f64, end: f64) -> Option<usize> {
        let first = self
            .pieces
            .partition_point(|&(p, at)| seconds(at + p.len()) <= start);
        let overlaps: Vec<(usize, f64)> = (first..self.pieces.len())
            .take_while(|&k| seconds(self.pieces[k].1) < end)
            .map(|k| {
                let (p, at) = self.pieces[k];
                (k, end.min(seconds(at + p.len())) - start.max(seconds(at)))
            })
            .collect();
        let total: f64 = overlaps.iter().map(|o| o.1).sum();
        let (k, most) = overlaps.into_iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
        (most > 0.0 && most >= MAIN_PIECE_SHARE * total).then_some(k)
    }

    /// Whether `[start, end)` lies wholly in the silence between pieces (or after the last).
    fn in_gap(&self, start: f64, end: f64) -> bool {
        let first = self
            .pieces
            .partition_point(|&(p, at)| seconds(at + p.len()) <= start);
        self.pieces
            .get(first)
            .is_none_or(|&(_, at)| seconds(at) >= end)
    }

    /// Window time `t` on piece `k`'s input timeline, kept inside the piece.
    fn to_input(&self, k: usize, t: f64) -> f64 {
        let (p, at) = self.pieces[k];
        seconds(p.start) + (t - seconds(at)).clamp(0.0, seconds(p.len()))
    }

    fn word_to_input(&self, k: usize, w: &Word) -> Word {
        Word {
            start: self.to_input(k, w.start),
            end: self.to_input(k, w.end),
            ..w.clone()
        }
    }

    /// The window's segments handed back to the pieces they lie in, as `(piece, segment)` on
    /// the piece's input's timeline. A segment is given to a piece by its words' middles (by its own
    /// middle when it has no words); one whose words lie in several pieces is cut between
    /// them, each part's text its words (tokens from `encode`).
    pub fn unpack(
        &self,
        segments: Vec<Segment>,
        encode: &dyn Fn(&str) -> Result<Vec<u32>>,
    ) -> Result<Vec<(usize, Segment)>> {
        let mut out = Vec::new();
        for mut segment in segments {
            // Only the model's fancy can put text in the silence it was given between pieces
            // ("Bang!", "Thank you."), and it would land in the wrong input.
            if self.in_gap(segment.start, segment.end) {
                continue;
            }
            let timed = segment.words.is_some();
            let words = segment.words.take().unwrap_or_default();
            let mid = |a: f64, b: f64| (a + b) / 2.0;
            let main = self.main_piece(segment.start, segment.end);
            let mut runs: Vec<(usize, std::ops::Range<usize>)> =
                main.map(|k| (k, 0..words.len())).into_iter().collect();
            if main.is_none() {
                for (i, w) in words.iter().enumerate() {
                    let k = self.piece_at(mid(w.start, w.end));
                    match runs.last_mut() {
                        Some((last, range)) if *last == k => range.end = i + 1,
                        _ => runs.push((k, i..i + 1)),
                    }
                }
            }
            if runs.len() <= 1 {
                let k = runs
                    .first()
                    .map_or_else(|| self.piece_at(mid(segment.start, segment.end)), |r| r.0);
                let moved = Segment {
                    seek: self.pieces[k].0.start / HOP_LENGTH,
                    start: self.to_input(k, segment.start),
                    end: self.to_input(k, segment.end),
                    words: timed.then(|| words.iter().map(|w| self.word_to_input(k, w)).collect()),
                    ..segment
                };
                out.push((k, moved));
                continue;
            }
            let last = runs.len() - 1;
            for (r, (k, range)) in runs.into_iter().enumerate() {
                let part: Vec<Word> = words[range]
                    .iter()
                    .map(|w| self.word_to_input(k, w))
                    .collect();
                let text: String = part.iter().map(|w| w.word.as_str()).collect();
                let start = match r {
                    0 => self.to_input(k, segment.start).min(part[0].start),
                    _ => part[0].start,
                };
                let end = match r == last {
                    true => self.to_input(k, segment.end).max(part[part.len() - 1].end),
                    false => part[part.len() - 1].end,
                };
                out.push((
                    k,
                    Segment {
                        seek: self.pieces[k].0.start / HOP_LENGTH,
                        start,
                        end,
                        tokens: encode(&text)?,
                        text,
                        words: Some(part),
                        ..segment.clone()
                    },
                ));
            }
        }
        Ok(out)
    }
}

fn seconds(samples: usize) -> f64 {
    samples as f64 / SAMPLE_RATE as f64
}

/// Where a piece's samples come from.
#[derive(Clone)]
enum PieceAudio<'a> {
    /// A clip of samples in memory, starting at sample `start` of its input.
    Memory { samples: &'a [f32], start: usize },
    /// A whole file, read when its window is built.
    File(PathBuf),
}

/// A piece read and waiting to be laid out.
struct ReadPiece<'a> {
    input: usize,
    start: usize,
    samples: Cow<'a, [f32]>,
    /// Where to read it again, unless it is part of a file split between windows.
    origin: Option<PieceAudio<'a>>,
}

/// The layout so far and what went wrong reading files, shared by a [`PackedWindows`] and
/// whoever hands its transcript back to the inputs.
#[derive(Default)]
struct Packed<'a> {
    layout: Pack,
    /// Per piece of the layout, where its samples came from.
    origins: Vec<Option<PieceAudio<'a>>>,
    warnings: Vec<(usize, String)>,
}

/// All packed pieces as one input: windows of pieces laid end to end, `gap` samples apart
/// (`continuation_gap` before a clip that follows the one before it on the same input), built
/// as the batch asks for them (a file is read only then), window `k` at sample `k * N_SAMPLES`
/// of a timeline of its own. Windows do not overlap, so nothing is stitched.
/// A gap of a whole window gives every piece a window of its own. A window takes pieces
/// while they end within its first `fill` samples (a piece alone, up to a whole window).
struct PackedWindows<'a> {
    queue: VecDeque<(usize, PieceAudio<'a>)>,
    ready: Option<ReadPiece<'a>>,
    gap: usize,
    /// Silence before a clip that goes on from where the one before it in the window ended,
    /// on the same input: the model need not close a segment there.
    continuation_gap: usize,
    /// Input and end (in samples) of the last piece laid out in the current window.
    last_laid: Option<(usize, usize)>,
    fill: usize,
    windows: usize,
    seconds: f64,
    shared: Arc<Mutex<Packed<'a>>>,
}

impl<'a> PackedWindows<'a> {
    fn new(gap: usize, fill: usize, shared: Arc<Mutex<Packed<'a>>>) -> Self {
        Self {
            queue: VecDeque::new(),
            ready: None,
            gap,
            continuation_gap: gap,
            last_laid: None,
            fill: fill.min(N_SAMPLES),
            windows: 0,
            seconds: 0.0,
            shared,
        }
    }

    fn with_continuation_gap(self, continuation_gap: usize) -> Self {
        Self {
            continuation_gap,
            ..self
        }
    }

    fn push(&mut self, input: usize, audio: PieceAudio<'a>, seconds: f64) {
        self.queue.push_back((input, audio));
        self.seconds += seconds;
    }

    /// The silence to lay before `piece` in a window that already holds some.
    fn gap_before(&self, piece: &ReadPiece) -> usize {
        match self.last_laid {
            Some((input, end)) if input == piece.input && piece.start >= end => {
                self.continuation_gap
            }
            _ => self.gap,
        }
    }

    /// Reads pieces until one holds audio (files may be empty).
    fn read_next(&mut self) -> Result<Option<ReadPiece<'a>>> {
        while let Some((input, audio)) = self.queue.pop_front() {
            let (start, samples) = match &audio {
                PieceAudio::Memory { samples, start } => (*start, Cow::Borrowed(*samples)),
                PieceAudio::File(path) => {
                    let (samples, damage) = load_audio_with_damage(path)?;
                    if let Some(d) = damage {
                        let mut shared = self.shared.lock().expect("not poisoned");
                        shared.warnings.push((input, d.to_string()));
                    }
                    (0, Cow::Owned(samples))
                }
            };
            if !samples.is_empty() {
                return Ok(Some(ReadPiece {
                    input,
                    start,
                    samples,
                    origin: Some(audio),
                }));
            }
        }
        Ok(None)
    }

    /// Lays `piece` out at `at` in `window`, or up to a window's worth of it when a header
    /// understated a file's length (the rest goes on in the next window).
    fn lay_out(&mut self, mut piece: ReadPiece<'a>, window: &mut Vec<f32>, at: usize) {
        let take = piece.samples.len().min(N_SAMPLES);
        window.resize(at, 0.0);
        window.extend_from_slice(&piece.samples[..take]);
        let placed = Piece {
            input: piece.input,
            start: piece.start,
            end: piece.start + take,
        };
        if take < piece.samples.len() {
            piece.origin = None;
            self.ready = Some(ReadPiece {
                input: piece.input,
                start: piece.start + take,
                samples: Cow::Owned(piece.samples[take..].to_vec()),
                origin: None,
            });
        }
        self.last_laid = Some((placed.input, placed.end));
        let mut shared = self.shared.lock().expect("not poisoned");
        shared
            .layout
            .pieces
            .push((placed, self.windows * N_SAMPLES + at));
        shared.origins.push(piece.origin);
    }
}

impl WindowSource for PackedWindows<'_> {
    fn next_window(&mut self) -> Result<Option<Window>> {
        let origin = self.windows * N_SAMPLES;
        self.last_laid = None;
        let mut samples: Vec<f32> = Vec::new();
        while self.ready.is_none() || samples.is_empty() {
            let piece = match self.ready.take() {
                Some(piece) => piece,
                None => match self.read_next()? {
                    Some(piece) => piece,
                    None => break,
                },
            };
            let at = if samples.is_empty() {
                0
            } else {
                samples.len() + self.gap_before(&piece)
            };
            if !samples.is_empty() && at + piece.samples.len() > self.fill {
                self.ready = Some(piece);
                break;
            }
            self.lay_out(piece, &mut samples, at);
        }
        if samples.is_empty() {
            return Ok(None);
        }
        if self.ready.is_none() {
            self.ready = self.read_next()?;
        }
        self.windows += 1;
        Ok(Some(Window {
            span: WindowSpan {
                start: origin,
                end: origin + samples.len(),
                own_start: seconds(origin),
                own_end: seconds(origin + samples.len()),
            },
            samples,
            last: self.ready.is_none(),
        }))
    }

    fn seconds_hint(&self) -> Option<f64> {
        Some(self.seconds)
    }

    fn needs_words(&self) -> bool {
        true
    }
}

/// Whose transcript a source's is.
enum Owner<'a> {
    Input(usize),
    Packed(Arc<Mutex<Packed<'a>>>),
}

/// A transcript's language and, when it was detected, every language's probability.
type Language = (String, Vec<(String, f32)>);

/// Segments and warnings of each input, and the pieces that got no text (with where to read
/// them again).
struct HandedBack<'a> {
    segments: Vec<Vec<Segment>>,
    languages: Vec<Option<Language>>,
    warnings: Vec<Vec<String>>,
    unheard: Vec<(usize, PieceAudio<'a>)>,
}

impl<B: Backend> Pipeline<B> {
    /// Transcribes inputs with batched decoding (see [`TranscribeOptions::batch_size`]),
    /// packing short inputs and clips into shared windows when `options.pack_short_inputs`
    /// is set and the language is known (an English model, or `options.decode.language`):
    /// a window holds one language. A packed piece that gets no text is decoded again alone.
    pub fn transcribe_batch<'a>(
        &self,
        inputs: Vec<BatchInput<'a>>,
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Transcript>> {
        let pack = packs_inputs(options, self.tokenizer.is_multilingual());
        let n_inputs = inputs.len();
        let shared = Arc::new(Mutex::new(Packed::default()));
        let gap = (PACK_GAP_SECONDS * SAMPLE_RATE as f64) as usize;
        let fill = match options.word_timestamps {
            true => (PACK_FILL_SECONDS_WITH_WORDS * SAMPLE_RATE as f64) as usize,
            false => N_SAMPLES,
        };
        let continuation_gap = (PACK_CONTINUATION_GAP_SECONDS * SAMPLE_RATE as f64) as usize;
        let mut packed =
            PackedWindows::new(gap, fill, shared.clone()).with_continuation_gap(continuation_gap);
        let mut sources: Vec<Box<dyn WindowSource + 'a>> = Vec::new();
        let mut owners = Vec::new();
        for (input, batch_input) in inputs.into_iter().enumerate() {
            if let Some(source) = own_source(batch_input, input, pack, &mut packed) {
                sources.push(source);
                owners.push(Owner::Input(input));
            }
        }
        if !packed.queue.is_empty() {
            sources.push(Box::new(packed));
            owners.push(Owner::Packed(shared));
        }
        let first_seconds: f64 = sources.iter().filter_map(|s| s.seconds_hint()).sum();
        let transcripts = self.transcribe_windows(sources, options, progress)?;
        let mut out = self.hand_back(n_inputs, owners, transcripts)?;
        let unheard = std::mem::take(&mut out.unheard);
        if !unheard.is_empty() {
            // The model now and then passes over an utterance among others that it hears
            // when it is alone.
            let shared = Arc::new(Mutex::new(Packed::default()));
            let mut alone = PackedWindows::new(N_SAMPLES, N_SAMPLES, shared.clone());
            for (input, audio) in unheard {
                alone.push(input, audio, 0.0);
            }
            let transcripts =
                self.transcribe_windows(vec![Box::new(alone)], options, &mut |p| {
                    progress(Progress {
                        done_seconds: first_seconds + p.done_seconds,
                        total_seconds: first_seconds + p.total_seconds,
                        ..p
                    })
                })?;
            let again = self.hand_back(n_inputs, vec![Owner::Packed(shared)], transcripts)?;
            for (mine, more) in out.segments.iter_mut().zip(again.segments) {
                mine.extend(more);
            }
        }
        Ok(finish(out, options))
    }

    /// Each input's segments from the transcripts of the sources it had windows or pieces in.
    fn hand_back<'a>(
        &self,
        inputs: usize,
        owners: Vec<Owner<'a>>,
        transcripts: Vec<Transcript>,
    ) -> Result<HandedBack<'a>> {
        let mut out = HandedBack {
            segments: vec![Vec::new(); inputs],
            languages: vec![None; inputs],
            warnings: vec![Vec::new(); inputs],
            unheard: Vec::new(),
        };
        let encode = |text: &str| Ok(self.tokenizer.encode(text)?);
        for (owner, transcript) in owners.into_iter().zip(transcripts) {
            let given: Vec<(usize, Segment)> = match owner {
                Owner::Input(i) => {
                    out.warnings[i].extend(transcript.warnings);
                    // Detected on the input's own window: told even when nothing was heard.
                    if !transcript.language_probs.is_empty() {
                        let detected = (
                            transcript.language.clone(),
                            transcript.language_probs.clone(),
                        );
                        out.languages[i] = Some(detected);
                    }
                    transcript.segments.into_iter().map(|s| (i, s)).collect()
                }
                Owner::Packed(shared) => {
                    let mut shared = shared.lock().expect("not poisoned");
                    for (i, warning) in shared.warnings.drain(..) {
                        out.warnings[i].push(warning);
                    }
                    let given = shared.layout.unpack(transcript.segments, &encode)?;
                    let mut heard = vec![false; shared.layout.pieces.len()];
                    for (k, s) in &given {
                        heard[*k] |= !s.text.trim().is_empty();
                    }
                    for (k, origin) in shared.origins.iter().enumerate() {
                        if let (false, Some(origin)) = (heard[k], origin) {
                            let input = shared.layout.pieces[k].0.input;
                            out.unheard.push((input, origin.clone()));
                        }
                    }
                    let input_of = |k: usize| shared.layout.pieces[k].0.input;
                    given.into_iter().map(|(k, s)| (input_of(k), s)).collect()
                }
            };
            for (i, segment) in given {
                out.languages[i].get_or_insert_with(|| {
                    (
                        transcript.language.clone(),
                        transcript.language_probs.clone(),
                    )
                });
                out.segments[i].push(segment);
            }
        }
        Ok(out)
    }
}

/// An input's own source of windows; a short file or clip is queued in `packed` instead.
fn own_source<'a>(
    input: BatchInput<'a>,
    index: usize,
    pack: bool,
    packed: &mut PackedWindows<'a>,
) -> Option<Box<dyn WindowSource + 'a>> {
    match input {
        BatchInput::Windows(source) => Some(source),
        BatchInput::File(file) => match file.seconds_hint() {
            Some(s) if pack && s <= PACKED_FILE_SECONDS => {
                packed.push(index, PieceAudio::File(file.path().to_path_buf()), s);
                None
            }
            _ => Some(file),
        },
        BatchInput::Clips { samples, clips } => {
            let (short, long): (Vec<_>, Vec<_>) = clips
                .into_iter()
                .filter(|&(a, b)| a < b && b <= samples.len())
                .partition(|c| pack && c.1 - c.0 <= N_SAMPLES);
            for (start, end) in short {
                let audio = PieceAudio::Memory {
                    samples: &samples[start..end],
                    start,
                };
                packed.push(index, audio, seconds(end - start));
            }
            let plan = plan_clips(&FixedWindows::default(), samples, &long);
            (!plan.is_empty())
                .then(|| Box::new(PlannedWindows::new(samples, plan)) as Box<dyn WindowSource>)
        }
    }
}

/// Transcripts from what was handed back: segments in time order, numbered, words dropped
/// unless asked for.
fn finish(out: HandedBack<'_>, options: &TranscribeOptions) -> Vec<Transcript> {
    out.segments
        .into_iter()
        .zip(out.languages)
        .zip(out.warnings)
        .map(|((segments, language), warnings)| {
            tidy_segments(segments, language, warnings, options)
        })
        .collect()
}

/// One unpacked input's transcript as [`finish`] makes it.
pub(crate) fn tidy(transcript: Transcript, options: &TranscribeOptions) -> Transcript {
    let detected = !transcript.language_probs.is_empty();
    let language = (detected || !transcript.segments.is_empty())
        .then_some((transcript.language, transcript.language_probs));
    tidy_segments(transcript.segments, language, transcript.warnings, options)
}

/// `language`: the one heard or detected, with its probabilities when detected (a packed
/// piece heard as nothing has none of its own).
fn tidy_segments(
    mut segments: Vec<Segment>,
    language: Option<Language>,
    warnings: Vec<String>,
    options: &TranscribeOptions,
) -> Transcript {
    segments.retain(|s| !s.text.trim().is_empty());
    segments.sort_by(|a, b| a.start.total_cmp(&b.start));
    for (id, s) in segments.iter_mut().enumerate() {
        s.id = id;
        if !options.word_timestamps {
            s.words = None;
        }
    }
    let (language, language_probs) = language.unwrap_or_else(|| {
        let given = options.decode.language.clone();
        (given.unwrap_or("en".into()), Vec::new())
    });
    Transcript {
        text: segments.iter().map(|s| s.text.as_str()).collect(),
        language,
        segments,
        warnings,
        language_probs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(input: usize, start: usize, end: usize) -> Piece {
        Piece { input, start, end }
    }

    fn windows_of(packed: &mut PackedWindows) -> Vec<Window> {
        let mut out = Vec::new();
        while let Some(w) = packed.next_window().unwrap() {
            out.push(w);
        }
        out
    }

    #[test]
    fn pieces_stop_at_the_fill_but_a_long_one_keeps_its_window() {
        let s = SAMPLE_RATE;
        let b: &'static [f32] = vec![2.0; 30 * s].leak();
        let mut packed = PackedWindows::new(s, 20 * s, Arc::default());
        let memory = |start: usize, end: usize| PieceAudio::Memory {
            samples: &b[start * s..end * s],
            start: start * s,
        };
        // 12 + 1 + 10 = 23 s is past the fill; 10 + 1 + 8 = 19 s is not.
        for (start, end) in [(0, 12), (0, 10), (10, 18), (0, 25)] {
            packed.push(0, memory(start, end), (end - start) as f64);
        }
        let lengths: Vec<usize> = windows_of(&mut packed)
            .iter()
            .map(|w| w.samples.len() / s)
            .collect();
        assert_eq!(lengths, [12, 19, 25]);
    }

    #[test]
    fn clips_that_go_on_from_the_one_before_get_the_shorter_gap() {
        let s = SAMPLE_RATE;
        let b: &'static [f32] = vec![1.0; 30 * s].leak();
        let shared = Arc::new(Mutex::new(Packed::default()));
        let mut packed =
            PackedWindows::new(2 * s, N_SAMPLES, shared.clone()).with_continuation_gap(s / 2);
        let memory = |start: usize, end: usize| PieceAudio::Memory {
            samples: &b[start * s..end * s],
            start: start * s,
        };
        // Input 0 in order, then from an earlier time, then input 1 in order; the last clip
        // goes on in the next window, with no gap before it.
        let clips = [
            (0, 0, 3),
            (0, 5, 8),
            (0, 1, 2),
            (1, 10, 12),
            (1, 13, 14),
            (1, 14, 16),
        ];
        for (input, start, end) in clips {
            packed.push(input, memory(start, end), (end - start) as f64);
        }
        packed.fill = 15 * s;
        windows_of(&mut packed);
        let at: Vec<usize> = shared
            .lock()
            .unwrap()
            .layout
            .pieces
            .iter()
            .map(|&(_, at)| at)
            .collect();
        let half = s / 2;
        assert_eq!(
            at,
            [
                0,
                3 * s + half,
                8 * s + half,
                11 * s + half,
                14 * s,
                N_SAMPLES
            ]
        );
    }

    #[test]
    fn pieces_fill_windows_in_order_with_gaps() {
        let s = SAMPLE_RATE;
        let a: Vec<f32> = vec![1.0; 12 * s];
        let b: Vec<f32> = vec![2.0; 40 * s];
        let shared = Arc::new(Mutex::new(Packed::default()));
        let mut packed = PackedWindows::new(s, N_SAMPLES, shared.clone());
        let memory = |samples: &'static [f32], start| PieceAudio::Memory { samples, start };
        let (a, b): (&'static [f32], &'static [f32]) = (a.leak(), b.leak());
        // 12 + 1 + 10 = 23 s fit; + 1 + 8 would be 32 s. The empty piece is skipped.
        packed.push(0, memory(a, 0), 12.0);
        packed.push(1, memory(&b[5 * s..15 * s], 5 * s), 10.0);
        packed.push(2, memory(&b[..0], 0), 0.0);
        packed.push(1, memory(&b[20 * s..28 * s], 20 * s), 8.0);
        packed.push(3, memory(&b[..30 * s], 0), 30.0);
        let windows = windows_of(&mut packed);
        let spans: Vec<(usize, usize, bool)> = windows
            .iter()
            .map(|w| (w.span.start, w.span.end, w.last))
            .collect();
        let n = N_SAMPLES;
        assert_eq!(
            spans,
            [
                (0, 23 * s, false),
                (n, n + 8 * s, false),
                (2 * n, 3 * n, true)
            ]
        );
        // Silence in the gap, each piece's own samples where it lies.
        let first = &windows[0].samples;
        assert!(first[..12 * s].iter().all(|&x| x == 1.0));
        assert!(first[12 * s..13 * s].iter().all(|&x| x == 0.0));
        assert!(first[13 * s..].iter().all(|&x| x == 2.0));
        let layout = shared.lock().unwrap().layout.clone();
        let placed: Vec<(usize, usize, usize, usize)> = layout
            .pieces
            .iter()
            .map(|&(p, at)| (p.input, p.start, p.end, at))
            .collect();
        assert_eq!(
            placed,
            [
                (0, 0, 12 * s, 0),
                (1, 5 * s, 15 * s, 13 * s),
                (1, 20 * s, 28 * s, n),
                (3, 0, 30 * s, 2 * n),
            ]
        );
        let mut nothing = PackedWindows::new(s, N_SAMPLES, Arc::default());
        assert!(nothing.next_window().unwrap().is_none());
    }

    #[test]
    fn a_time_in_a_gap_belongs_to_the_nearest_piece() {
        let s = SAMPLE_RATE;
        let pack = Pack {
            pieces: vec![
                (piece(0, 0, 2 * s), 0),
                (piece(1, 0, 2 * s), 3 * s),
                (piece(2, 0, s), N_SAMPLES),
            ],
        };
        let at = |t: f64| pack.piece_at(t);
        assert_eq!(
            [at(0.0), at(1.9), at(2.4), at(2.6), at(4.0)],
            [0, 0, 0, 1, 1]
        );
        // Past a window's last piece: still that piece, however near the next window is.
        assert_eq!([at(5.1), at(20.0), at(29.9), at(31.5)], [1, 1, 1, 2]);
    }

    fn word(w: &str, start: f64, end: f64) -> Word {
        Word {
            word: format!(" {w}"),
            start,
            end,
            probability: 0.9,
        }
    }

    /// A segment of `words` with its own tokens (to tell them from re-encoded ones).
    fn segment(start: f64, end: f64, words: Vec<Word>) -> Segment {
        Segment {
            tokens: vec![1, 2, 3],
            ..crate::hallucination::tests::segment(start, end, words)
        }
    }

    #[test]
    fn segments_go_back_to_their_pieces_and_are_cut_between_them() {
        let s = SAMPLE_RATE;
        // Input 0's 2-4 s at window 0-2 s; input 1's 10-13 s at window 3-6 s.
        let pack = Pack {
            pieces: vec![
                (piece(0, 2 * s, 4 * s), 0),
                (piece(1, 10 * s, 13 * s), 3 * s),
            ],
        };
        let encode = |t: &str| Ok(vec![t.len() as u32]);
        let segments = vec![
            // All in piece 0, its end in the gap: clamped to the piece's end.
            segment(0.2, 2.5, vec![word("a", 0.2, 0.6), word("b", 0.7, 1.9)]),
            // Across the gap: cut into one part per piece.
            segment(
                1.0,
                5.0,
                vec![
                    word("c", 1.0, 1.5),
                    word("d", 1.9, 2.4),
                    word("e", 3.2, 3.6),
                    word("f", 4.0, 5.0),
                ],
            ),
            // No words: by its middle.
            segment(3.5, 4.5, vec![]),
        ];
        let out = pack.unpack(segments, &encode).unwrap();
        let got: Vec<(usize, f64, f64, &str)> = out
            .iter()
            .map(|(i, s)| (*i, s.start, s.end, s.text.as_str()))
            .collect();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        let want = [
            (0, 2.2, 4.0, " a b"),
            (0, 3.0, 4.0, " c d"),
            (1, 10.2, 12.0, " e f"),
            (1, 10.5, 11.5, ""),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                g.0 == w.0 && close(g.1, w.1) && close(g.2, w.2) && g.3 == w.3,
                "{g:?} != {w:?}"
            );
        }
        // Every word inside its input's piece; the cut parts' tokens are their own text's.
        let words = |k: usize| out[k].1.words.clone().unwrap();
        assert!(close(words(1)[1].start, 3.9) && close(words(1)[1].end, 4.0));
        assert!(close(words(2)[0].start, 10.2) && close(words(2)[1].end, 12.0));
        assert_eq!(out[1].1.tokens, [4]);
        assert_eq!(out[0].1.tokens, [1, 2, 3]);
        assert_eq!(
            (out[0].1.seek, out[2].1.seek),
            (2 * s / HOP_LENGTH, 10 * s / HOP_LENGTH)
        );
    }
}
