//! Character-level alignment ("Whisper Has an Internal Word Aligner", Yeh, Meng & Tang 2025):
//! the decoder is teacher-forced with the transcript spelled one character per token, the
//! attention of many heads is cleaned and averaged, and DTW places every character. Letters
//! are short, so the path has about five times as many rows to land on as with word pieces.

use std::ops::Range;

use crate::{median_filter, softmax, HeadScores, FRAMES_PER_SECOND};

/// How the character pass's attention becomes one matrix, and the path word times.
///
/// Defaults tuned on TIMIT speakers of the odd dialect regions with tiny.en and checked on
/// the even ones (`cargo xtask eval-words`); numbers in the README's "Word timestamps".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CharAlignment {
    /// Median filter width along time, applied to the raw scores before the softmax.
    pub medfilt_width: usize,
    /// Keep only the heads whose attention is most concentrated (largest summed L2 norms of
    /// rows and columns), chosen per window without labels; `None` averages every head.
    /// On tiny.en the two kept are nearly always layer 2's heads 1 and 4.
    pub top_heads: Option<usize>,
    /// Seconds a word may start before the path enters its first letter's row, inside its
    /// space's row: the letter row is entered late (the decoder is sure of a letter only
    /// once it has heard some of it), but never before the word's space.
    pub lead: f64,
    /// The same for the first word of a window, whose space holds the leading silence.
    pub first_lead: f64,
    /// Seconds a word's letters may stray outside the segment the decoder's timestamp
    /// tokens put it in (see [`confine_to_segments`]); `None` leaves the path free.
    pub segment_margin: Option<f64>,
    /// Move starts that fall inside a pause to the pause's end (see [`anchor_onsets`]);
    /// `None` keeps the path's times.
    pub onsets: Option<OnsetAnchoring>,
    /// Move ends that fall inside a pause to the pause's start (see [`anchor_offsets`]).
    pub offsets: Option<OnsetAnchoring>,
    /// Letters kept out of pauses and spaces out of speech (see [`weigh_pauses`]); `None`
    /// leaves the matrix as the attention made it.
    pub pauses: Option<PauseWeights>,
}

/// What [`weigh_pauses`] adds to the DTW cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PauseWeights {
    /// Added to every letter row in every frame of a pause.
    pub letter_in_pause: f32,
    /// Added to the space row between two words in every frame outside a pause.
    pub space_in_speech: f32,
}

impl Default for PauseWeights {
    fn default() -> Self {
        Self {
            letter_in_pause: 0.5,
            space_in_speech: 0.2,
        }
    }
}

/// Which quiet stretches count as pauses for [`anchor_onsets`] and [`anchor_offsets`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnsetAnchoring {
    /// A 20 ms frame is quiet when its loudness is within this many dB of the window's
    /// floor (its 10th percentile).
    pub margin_db: f32,
    /// Shortest run of quiet frames, in seconds, that is a pause: longer than the closure
    /// of a stop consonant, so starts inside words' own silences stay where the path put
    /// them.
    pub min_pause: f64,
}

impl Default for OnsetAnchoring {
    fn default() -> Self {
        Self {
            margin_db: 10.0,
            min_pause: 0.2,
        }
    }
}

impl Default for CharAlignment {
    fn default() -> Self {
        Self {
            medfilt_width: 3,
            top_heads: Some(2),
            lead: 0.05,
            first_lead: 0.02,
            segment_margin: Some(1.0),
            onsets: Some(OnsetAnchoring::default()),
            offsets: Some(OnsetAnchoring::default()),
            pauses: Some(PauseWeights::default()),
        }
    }
}

/// `[rows][audio_frames]` matrix for DTW: per head, the raw scores of each row median-filtered
/// along time and softmaxed over the first `audio_frames` frames; heads ranked and kept as
/// `options` says; every frame's column scaled to unit L2 norm over rows; heads averaged.
pub fn char_alignment_matrix(
    scores: &HeadScores,
    audio_frames: usize,
    options: &CharAlignment,
) -> Vec<f32> {
    let (h, n) = (scores.heads, scores.rows);
    let (mut w, f) = scores.audio_rows(audio_frames);
    for row in w.chunks_mut(f) {
        median_filter(row, options.medfilt_width);
        softmax(row);
    }
    let mut heads: Vec<usize> = (0..h).collect();
    if let Some(k) = options.top_heads.filter(|&k| k < h) {
        let concentration: Vec<f32> = (0..h).map(|head| norm_score(&w, head, n, f)).collect();
        heads.sort_by(|&a, &b| concentration[b].total_cmp(&concentration[a]));
        heads.truncate(k.max(1));
    }
    let mut matrix = vec![0.0f32; n * f];
    for &head in &heads {
        let hw = &w[head * n * f..][..n * f];
        for frame in 0..f {
            let norm = (0..n)
                .map(|r| hw[r * f + frame].powi(2))
                .sum::<f32>()
                .sqrt();
            if norm > 0.0 {
                for r in 0..n {
                    matrix[r * f + frame] += hw[r * f + frame] / norm / heads.len() as f32;
                }
            }
        }
    }
    matrix
}

/// Keeps each word near the segment the decode's timestamp tokens put it in, by making every
/// other frame of its rows far dearer than any frame inside. Every column has unit norm, so a
/// silent frame weighs as much as a spoken one and nothing in the matrix alone keeps the path
/// from spreading a few words over seconds of silence; the timestamps are coarse, but they
/// know where the silence is. `cost` is the `[rows][frames]` DTW cost (negated similarity,
/// in `[-1, 0]`), `letters` each word's letter rows (as in [`char_word_times`]), `spans` each
/// word's segment in seconds of the window, widened by `margin` on both sides. A space row
/// may go from the start of the word before it to the end of its own word, so a gap between
/// segments falls to the next segment's first space; the rows after the last word (end of
/// text) are free to take the rest of the window.
pub fn confine_to_segments(
    cost: &mut [f32],
    frames: usize,
    letters: &[Option<Range<usize>>],
    spans: &[(f64, f64)],
    margin: f64,
) {
    // Far above any path's whole cost (at most rows + frames cells of magnitude <= 1), yet
    // finite, so a band that leaves no path still yields one.
    let outside = 4.0 * (cost.len() / frames.max(1) + frames) as f32;
    let to_frame = |t: f64| (t * FRAMES_PER_SECOND).round().clamp(0.0, frames as f64) as usize;
    let mut confine = |row: usize, band: Range<usize>| {
        if let Some(row_cost) = cost.get_mut(row * frames..(row + 1) * frames) {
            for (frame, c) in row_cost.iter_mut().enumerate() {
                if !band.contains(&frame) {
                    *c += outside;
                }
            }
        }
    };
    let mut previous_from: Option<usize> = None;
    for (rows, &(start, end)) in letters.iter().zip(spans) {
        let Some(rows) = rows else { continue };
        let band = to_frame(start - margin)..to_frame(end + margin).max(1);
        if let (Some(space), Some(from)) = (rows.start.checked_sub(1), previous_from) {
            // The row before the first letter; its own space unless the language has none.
            confine(space, from.min(band.start)..band.end);
        }
        for row in rows.clone() {
            confine(row, band.clone());
        }
        previous_from = Some(band.start);
    }
}

/// Digital silence at least this long (packed windows put 2 s between their pieces) is taken
/// to hold no speech.
const LONG_DIGITAL_SILENCE_SECONDS: f64 = 0.5;

/// How far past a long digital silence a segment may go on, in quiet alone, and still be taken
/// to end where the silence starts: the decoder's timestamps are that coarse.
const TIMESTAMP_SLOP_SECONDS: f64 = 0.5;

/// Segment spans (`spans`, one per word, in seconds of the window, as for
/// [`confine_to_segments`]) trimmed where long digital silence shows them wrong. Nothing is
/// spoken in it: a span that begins or ends inside one begins after or ends before it. And the
/// decoder often ends a segment where the next speech begins: a span that crosses such a
/// silence and goes on past it only a little, in quiet, ends where it starts (the mirror for
/// starts). In a packed window the 2 s between two inputs are such a silence; a sentence's
/// last word, free to go a margin past a span that reached into the next input's leading
/// quiet, was timed in that input's speech and handed to it. `loudness_db` is one value per
/// frame of the window's audio (digital silence sits at its lowest value); quiet is
/// [`anchor_onsets`]' (`anchoring`).
pub fn cut_spans_at_digital_silence(
    spans: &[(f64, f64)],
    loudness_db: &[f32],
    anchoring: &OnsetAnchoring,
) -> Vec<(f64, f64)> {
    let silences = digital_silences(loudness_db);
    if silences.is_empty() {
        return spans.to_vec();
    }
    let frame = |t: f64| ((t * FRAMES_PER_SECOND).round().max(0.0) as usize).min(loudness_db.len());
    let speech_start = spans.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    let speech_end = spans.iter().map(|s| s.1).fold(0.0, f64::max);
    let speech = frame(speech_start)..frame(speech_end);
    let pauses = Pauses::new(loudness_db, speech, anchoring, Floor::OfTheRecording);
    let only_quiet = |a: f64, b: f64| (frame(a)..frame(b)).all(|f| pauses.quiet(f));
    spans
        .iter()
        .map(|&span| cut_span(span, &silences, &only_quiet))
        .collect()
}

/// Keeps every letter out of long digital silence (at least
/// `LONG_DIGITAL_SILENCE_SECONDS` at the window's lowest loudness): nothing is spoken there,
/// yet a sentence's last letters often attend to the silence after it. In a packed window the
/// band of [`confine_to_segments`] reaches a margin into the 2 s between two inputs, and the
/// path laid a file's last word there, to be clamped to the file's end with no length. Spaces
/// stay free, so the silence goes to the space between the inputs. `cost` is the
/// `[rows][frames]` DTW cost, `letters` each word's letter rows, `loudness_db` one value per
/// frame of the window's audio.
pub fn keep_letters_out_of_digital_silence(
    cost: &mut [f32],
    frames: usize,
    letters: &[Option<Range<usize>>],
    loudness_db: &[f32],
) {
    let silences = digital_silences(loudness_db);
    // As far outside as `confine_to_segments`' bands: the path avoids these frames whenever
    // it can, yet one is found where it cannot.
    let outside = 4.0 * (cost.len() / frames.max(1) + frames) as f32;
    let to_frame = |t: f64| ((t * FRAMES_PER_SECOND).round() as usize).min(frames);
    for row in letters.iter().flatten().flat_map(Range::clone) {
        let Some(row_cost) = cost.get_mut(row * frames..(row + 1) * frames) else {
            continue;
        };
        for &(from, to) in &silences {
            for c in &mut row_cost[to_frame(from)..to_frame(to)] {
                *c += outside;
            }
        }
    }
}

/// One span of [`cut_spans_at_digital_silence`].
fn cut_span(
    span: (f64, f64),
    silences: &[(f64, f64)],
    only_quiet: &dyn Fn(f64, f64) -> bool,
) -> (f64, f64) {
    let (mut start, mut end) = span;
    for &(from, to) in silences {
        if (from..to).contains(&start) {
            start = to;
        }
        if from < end && end <= to {
            end = from;
        }
        if start < from && to < end {
            if end - to <= TIMESTAMP_SLOP_SECONDS && only_quiet(to, end) {
                end = from;
            } else if from - start <= TIMESTAMP_SLOP_SECONDS && only_quiet(start, from) {
                start = to;
            }
        }
    }
    if start < end {
        (start, end)
    } else {
        span
    }
}

/// Runs of long digital silence in seconds: frames within a hundredth of a dB of the lowest.
fn digital_silences(loudness_db: &[f32]) -> Vec<(f64, f64)> {
    let lowest = loudness_db.iter().copied().fold(f32::INFINITY, f32::min) + 0.01;
    let min_frames = (LONG_DIGITAL_SILENCE_SECONDS * FRAMES_PER_SECOND) as usize;
    let mut runs = Vec::new();
    let mut run_start = 0;
    for f in 0..=loudness_db.len() {
        if f < loudness_db.len() && loudness_db[f] <= lowest {
            continue;
        }
        if f - run_start >= min_frames.max(1) {
            let seconds = |f: usize| f as f64 / FRAMES_PER_SECOND;
            runs.push((seconds(run_start), seconds(f)));
        }
        run_start = f + 1;
    }
    runs
}

/// Gives pauses to the spaces between words and speech to their letters: every letter row
/// (`letters`, as in [`char_word_times`]) costs `weights.letter_in_pause` more in the frames
/// of a pause, and every space row between two words `weights.space_in_speech` more in the
/// other frames. Every column of the matrix has unit norm, so a pause weighs as much as
/// speech: the letters after a pause reached back into it (words after a pause started a
/// median 79 ms early on `cargo xtask eval-words`' pause set), and a sentence's last words,
/// where the decoder's own clock ran early, were squeezed into its last frames while the
/// space after them took the rest of their audio (long recordings: half of the ends before a
/// gap more than 50 ms off). The first space (leading silence) and the rows after the last
/// word stay free. The pauses are those of [`anchor_onsets`]: quiet runs of at least
/// `min_pause` against the floor of the recording over `speech`. `cost` is the
/// `[rows][frames]` DTW cost, `loudness_db` one value per frame of the window's audio.
pub fn weigh_pauses(
    cost: &mut [f32],
    frames: usize,
    letters: &[Option<Range<usize>>],
    loudness_db: &[f32],
    speech: Range<usize>,
    anchoring: &OnsetAnchoring,
    weights: &PauseWeights,
) {
    if loudness_db.is_empty() || frames == 0 {
        return;
    }
    let pauses = Pauses::new(loudness_db, speech, anchoring, Floor::OfTheRecording);
    let mut in_pause = pauses.frames_in_pauses();
    // Frames past the loudness (padding) count as neither.
    in_pause.resize(frames, false);
    let mut add = |row: usize, penalty: f32, where_paused: bool| {
        if let Some(row_cost) = cost.get_mut(row * frames..(row + 1) * frames) {
            for (c, &paused) in row_cost.iter_mut().zip(&in_pause) {
                if paused == where_paused {
                    *c += penalty;
                }
            }
        }
    };
    let lettered: Vec<&Range<usize>> = letters.iter().flatten().collect();
    for &rows in &lettered {
        for row in rows.clone() {
            add(row, weights.letter_in_pause, true);
        }
    }
    for pair in lettered.windows(2) {
        // The row before a word's first letter is its space, unless it is the letter before
        // (languages written without spaces).
        match pair[1].start.checked_sub(1) {
            Some(space) if space >= pair[0].end => add(space, weights.space_in_speech, false),
            _ => {}
        }
    }
}

/// Starts a word that the path begins inside a pause where the pause ends. The letter rows
/// after a pause reach back into it (on TIMIT such words start a median 100-150 ms early; on
/// jfk, words after second-long pauses start a second early); the audio itself says where
/// the sound comes back. Only quiet runs of at least `min_pause` move a start, and never past
/// the word's end: inner boundaries are left alone. `loudness_db` holds one value per 20 ms
/// frame of the window's audio (`whisk_audio::loudness_db`); the floor is taken over the
/// frames `speech` (where the decoder put its segments), so that digital silence elsewhere in
/// the window does not sink it below the speech's own pauses.
pub fn anchor_onsets(
    times: &mut [Option<(f64, f64)>],
    loudness_db: &[f32],
    speech: Range<usize>,
    anchoring: &OnsetAnchoring,
) {
    if loudness_db.is_empty() {
        return;
    }
    let pauses = Pauses::new(loudness_db, speech, anchoring, Floor::OfTheRecording);
    for (start, end) in times.iter_mut().flatten() {
        let frame = (*start * FRAMES_PER_SECOND).round() as usize;
        if let Some(pause) = pauses.around(frame) {
            let onset = pause.end as f64 / FRAMES_PER_SECOND;
            if onset < *end {
                *start = onset;
            }
        }
    }
}

/// Ends a word that the path ends inside a pause where the pause begins: the last letter's
/// row runs on into the quiet after a word until the next word's rows take over, so ends
/// before pauses come late. The mirror of [`anchor_onsets`], with the same pauses: only
/// quiet runs of at least `min_pause` move an end, and never to or before the word's start.
pub fn anchor_offsets(
    times: &mut [Option<(f64, f64)>],
    loudness_db: &[f32],
    speech: Range<usize>,
    anchoring: &OnsetAnchoring,
) {
    if loudness_db.is_empty() {
        return;
    }
    let pauses = Pauses::new(loudness_db, speech, anchoring, Floor::WithDigitalSilence);
    for (start, end) in times.iter_mut().flatten() {
        // The frame the word's last 20 ms fall in.
        let Some(last) = ((*end * FRAMES_PER_SECOND).round() as usize).checked_sub(1) else {
            continue;
        };
        if let Some(pause) = pauses.around(last) {
            let offset = pause.start as f64 / FRAMES_PER_SECOND;
            if offset > *start {
                *end = offset;
            }
        }
    }
}

/// The pauses of a window's audio: runs of quiet 20 ms frames at least `min_pause` long.
struct Pauses<'a> {
    loudness_db: &'a [f32],
    threshold: f32,
    min_run: usize,
}

impl<'a> Pauses<'a> {
    fn new(
        loudness_db: &'a [f32],
        speech: Range<usize>,
        anchoring: &OnsetAnchoring,
        floor: Floor,
    ) -> Self {
        Self {
            loudness_db,
            threshold: quiet_threshold(loudness_db, speech, anchoring, floor),
            min_run: (anchoring.min_pause * FRAMES_PER_SECOND).round() as usize,
        }
    }

    fn quiet(&self, frame: usize) -> bool {
        self.loudness_db[frame] < self.threshold
    }

    /// Whether each frame lies in a pause.
    fn frames_in_pauses(&self) -> Vec<bool> {
        let mut in_pause = vec![false; self.loudness_db.len()];
        let mut run_start = 0;
        for f in 0..=self.loudness_db.len() {
            if f < self.loudness_db.len() && self.quiet(f) {
                continue;
            }
            if f - run_start >= self.min_run.max(1) {
                in_pause[run_start..f].fill(true);
            }
            run_start = f + 1;
        }
        in_pause
    }

    /// The frames of the pause that holds `frame`, if it lies in one.
    fn around(&self, frame: usize) -> Option<Range<usize>> {
        if frame >= self.loudness_db.len() || !self.quiet(frame) {
            return None;
        }
        let before = (0..frame).rev().take_while(|&f| self.quiet(f)).count();
        let after = (frame..self.loudness_db.len())
            .take_while(|&f| self.quiet(f))
            .count();
        (before + after >= self.min_run).then_some(frame - before..frame + after)
    }
}

/// What the floor of [`quiet_threshold`] is taken over.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Floor {
    /// Every frame of the speech.
    WithDigitalSilence,
    /// The speech's frames less its digital silence (five or more frames at exactly the
    /// window's lowest loudness: the log-mel's clamp, 80 dB below its loudest bin). Digital
    /// silence says nothing of the recording's own noise; with it as the floor, a pause of
    /// faint noise was never quiet, and a word after it started a median 128 ms early
    /// (`cargo xtask eval-words`' pause set; 77 ms with this floor). Ends keep the other
    /// floor: with this one, ends before a pause moved back into the words' fading tails.
    OfTheRecording,
}

/// Frames at the window's lowest loudness that make it digital silence rather than a quiet
/// moment of the recording.
const DIGITAL_SILENCE_FRAMES: usize = 5;

/// Loudness below which a frame is quiet: `margin_db` above the floor, the 10th percentile of
/// the frames `speech` (where the decoder put its segments), so that digital silence
/// elsewhere in the window does not sink it below the speech's own pauses.
fn quiet_threshold(
    loudness_db: &[f32],
    speech: Range<usize>,
    anchoring: &OnsetAnchoring,
    floor: Floor,
) -> f32 {
    let speech_frames = loudness_db
        .get(speech)
        .filter(|f| !f.is_empty())
        .unwrap_or(loudness_db);
    // Within a hundredth of a dB: the clamp gives every bin of those frames one value.
    let silence_level = speech_frames.iter().copied().fold(f32::INFINITY, f32::min) + 0.01;
    let recorded: Vec<f32> = speech_frames
        .iter()
        .copied()
        .filter(|&d| d > silence_level)
        .collect();
    let silent = speech_frames.len() - recorded.len();
    // Where digital silence is over three quarters of the speech's frames, the rest are too
    // few for a floor.
    let skip_silence = floor == Floor::OfTheRecording
        && silent >= DIGITAL_SILENCE_FRAMES
        && 4 * recorded.len() >= speech_frames.len();
    let floor_frames = if skip_silence {
        &recorded
    } else {
        speech_frames
    };
    percentile(floor_frames, 0.1) + anchoring.margin_db
}

/// Linearly interpolated `q` quantile (as numpy's default).
fn percentile(values: &[f32], q: f64) -> f32 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = (pos - lo as f64) as f32;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Sum of the L2 norms of a head's rows and of its columns: sharp, diagonal attention scores
/// high, attention smeared over the whole window low.
fn norm_score(w: &[f32], head: usize, n: usize, f: usize) -> f32 {
    let hw = &w[head * n * f..][..n * f];
    let rows: f32 = hw
        .chunks(f)
        .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt())
        .sum();
    let cols: f32 = (0..f)
        .map(|c| (0..n).map(|r| hw[r * f + c].powi(2)).sum::<f32>().sqrt())
        .sum();
    rows + cols
}

/// Start and end in seconds of each word from a DTW path over the character rows (row `k`
/// predicts character token `k`; the last row predicts the end of text). A word starts
/// `options.lead` (`first_lead` for the first word) before the path enters the row predicting
/// its first character, but not before it enters the row before that (the word's space); it
/// ends where the path enters the row predicting what follows its last character. Words
/// without characters get `None`.
///
/// A row is entered at the first frame it holds alone: on positive similarities DTW likes to
/// step down a row one frame early (a vertical step still collects a little), so the frame
/// where the path turns down still belongs to the row above.
pub fn char_word_times(
    text_indices: &[usize],
    time_indices: &[usize],
    words: &[Option<Range<usize>>],
    options: &CharAlignment,
) -> Vec<Option<(f64, f64)>> {
    let rows = text_indices.last().map_or(0, |&r| r + 1);
    let mut entered: Vec<Option<usize>> = vec![None; rows];
    let mut first: Vec<Option<usize>> = vec![None; rows];
    for (k, (&row, &frame)) in text_indices.iter().zip(time_indices).enumerate() {
        first[row].get_or_insert(frame);
        let shared = k > 0 && time_indices[k - 1] == frame
            || k + 1 < text_indices.len() && time_indices[k + 1] == frame;
        if !shared {
            entered[row].get_or_insert(frame);
        }
    }
    let at = |row: usize| {
        let row = row.min(rows.saturating_sub(1));
        entered
            .get(row)
            .copied()
            .flatten()
            .or(first.get(row).copied().flatten())
            .map_or(0.0, |f| f as f64 / FRAMES_PER_SECOND)
    };
    let mut previous_end: Option<usize> = None;
    words
        .iter()
        .map(|w| {
            w.as_ref().map(|r| {
                let lead = if previous_end.is_none() {
                    options.first_lead
                } else {
                    options.lead
                };
                let letter = at(r.start);
                // Only a space row (absent between the characters of unspaced languages) is
                // the word's own to start in.
                let start = match r.start.checked_sub(1) {
                    Some(space) if previous_end != Some(r.start) => (letter - lead).max(at(space)),
                    _ => letter,
                };
                previous_end = Some(r.end);
                (start, at(r.end))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtw;

    #[test]
    fn starts_inside_long_pauses_move_to_the_onset() {
        // 20 ms frames: speech, a 300 ms pause (frames 10..25), speech, a 100 ms closure
        // (frames 35..40), speech.
        // The quiet frames are recorded noise, each a little different (digital silence
        // would be one value, see the test below).
        let mut db = vec![-10.0f32; 50];
        for f in (0..2).chain(10..25).chain(35..40) {
            db[f] = -60.0 - (f as f32 * 0.7).sin();
        }
        let mut times = vec![
            Some((0.10, 0.18)), // in a 40 ms quiet run: stays
            Some((0.24, 0.60)), // inside the pause: moves to its end, 0.50
            Some((0.72, 0.90)), // inside the closure, too short a pause: stays
            Some((0.30, 0.40)), // inside the pause but ends before the onset: stays
            None,
            Some((0.60, 0.70)), // loud: stays
        ];
        anchor_onsets(&mut times, &db, 0..db.len(), &OnsetAnchoring::default());
        // The floor comes from the speech frames only: with digital silence after them, the
        // same pause still counts.
        let mut longer = db.clone();
        longer.extend(vec![-200.0f32; 100]);
        let mut again = vec![Some((0.24, 0.60))];
        anchor_onsets(&mut again, &longer, 0..50, &OnsetAnchoring::default());
        assert_eq!(again[0], Some((0.50, 0.60)));
        // Inside the speech's span, digital silence is left out of the floor as well.
        let mut within = vec![Some((0.24, 0.60))];
        anchor_onsets(&mut within, &longer, 0..150, &OnsetAnchoring::default());
        assert_eq!(within[0], Some((0.50, 0.60)));
        assert_eq!(times[0], Some((0.10, 0.18)));
        assert_eq!(times[1], Some((0.50, 0.60)));
        assert_eq!(times[2], Some((0.72, 0.90)));
        assert_eq!(times[3], Some((0.30, 0.40)));
        assert_eq!(times[4], None);
        assert_eq!(times[5], Some((0.60, 0.70)));
    }

    #[test]
    fn spans_stop_at_long_digital_silence_they_barely_cross() {
        // A packed window in 20 ms frames: speech at -20 dB with quiet stretches of recorded
        // noise (about -60 dB) at 0-0.6, 2.8-3.0 and 5.0-5.3 s; 2 s of digital silence
        // (3-5 s) and 0.4 s of it (8-8.4 s) at the log-mel's clamp.
        let mut db = vec![-20.0f32; 500];
        for f in (0..30).chain(140..150).chain(250..265) {
            db[f] = -60.0 - (f as f32 * 0.7).sin();
        }
        db[150..250].fill(-90.0);
        db[400..420].fill(-90.0);
        let cut = |spans: &[(f64, f64)]| {
            cut_spans_at_digital_silence(spans, &db, &OnsetAnchoring::default())
        };
        // Past the silence only into the next input's leading quiet: ends where it starts.
        let a = (0.2, 5.2);
        let b = (5.2, 9.0); // crosses a silence too short to count: kept
        assert_eq!(cut(&[a, a, b]), [(0.2, 3.0), (0.2, 3.0), b]);
        // A word spoken after the silence (5.3-5.4 s is loud): kept.
        assert_eq!(cut(&[(0.2, 5.4)]), [(0.2, 5.4)]);
        // Spoken far on both sides: the decoder heard one sentence across it.
        assert_eq!(cut(&[(0.2, 7.0)]), [(0.2, 7.0)]);
        // Beginning or ending inside the silence, or beginning in the quiet just before it.
        assert_eq!(cut(&[(0.2, 3.1), (4.0, 7.0)]), [(0.2, 3.0), (5.0, 7.0)]);
        assert_eq!(cut(&[(2.9, 7.0)]), [(5.0, 7.0)]);
        // No digital silence: nothing moves.
        let recorded: Vec<f32> = (0..500).map(|f| -20.0 - (f % 7) as f32).collect();
        let spans = [(0.2, 5.2), (5.2, 9.0)];
        let kept = cut_spans_at_digital_silence(&spans, &recorded, &OnsetAnchoring::default());
        assert_eq!(kept, spans);
    }

    #[test]
    fn letters_stay_out_of_long_digital_silence() {
        // 20 ms frames: speech, then 0.6 s of digital silence (frames 20..50), then speech;
        // and 0.2 s of it (frames 60..70), too short to count.
        let mut db = vec![-20.0f32; 80];
        db[20..50].fill(-90.0);
        db[60..70].fill(-90.0);
        // Rows: a space, two letters of one word, a space, one letter of the next, the end.
        let letters = [Some(1..3), Some(4..5)];
        let (rows, frames) = (6, db.len());
        // Each letter's attention lies in the silence: the path would put it there.
        let mut cost = vec![0.0f32; rows * frames];
        for row in [1, 2, 4] {
            cost[row * frames + 30] = -1.0;
        }
        let before = cost.clone();
        keep_letters_out_of_digital_silence(&mut cost, frames, &letters, &db);
        for row in 0..rows {
            for f in 0..frames {
                let added = cost[row * frames + f] - before[row * frames + f];
                let letter = [1, 2, 4].contains(&row);
                assert_eq!(
                    added > 0.0,
                    letter && (20..50).contains(&f),
                    "row {row} frame {f}"
                );
            }
        }
        let (text_idx, time_idx) = crate::dtw(&cost, rows, frames);
        for (&r, &f) in text_idx.iter().zip(&time_idx) {
            assert!(![1, 2, 4].contains(&r) || !(20..50).contains(&f));
        }
    }

    #[test]
    fn a_pause_of_faint_noise_is_quiet_beside_digital_silence() {
        // 20 ms frames: speech at -10 dB; a 300 ms pause of faint noise (-55 dB) at frames
        // 10..25; 200 ms of digital silence (-90 dB, the log-mel's clamp) at 35..45.
        let mut db = vec![-10.0f32; 60];
        db[10..25].fill(-55.0);
        db[35..45].fill(-90.0);
        let mut times = vec![Some((0.24, 0.60)), Some((0.76, 1.0))];
        anchor_onsets(&mut times, &db, 0..db.len(), &OnsetAnchoring::default());
        assert_eq!(times, vec![Some((0.50, 0.60)), Some((0.90, 1.0))]);
        // Ends keep the floor of every frame, the silence's: the noise is not quiet there.
        let mut ends = vec![Some((0.02, 0.40)), Some((0.50, 0.80))];
        anchor_offsets(&mut ends, &db, 0..db.len(), &OnsetAnchoring::default());
        assert_eq!(ends, vec![Some((0.02, 0.40)), Some((0.50, 0.70))]);
    }

    #[test]
    fn ends_inside_long_pauses_move_to_the_offset() {
        // The same frames as above: a 300 ms pause at frames 10..25, a 100 ms closure at
        // 35..40.
        let mut db = vec![-10.0f32; 50];
        db[10..25].fill(-60.0);
        db[35..40].fill(-60.0);
        let mut times = vec![
            Some((0.02, 0.40)), // ends inside the pause: moves back to its start, 0.20
            Some((0.60, 0.76)), // ends inside the closure, too short a pause: stays
            Some((0.22, 0.44)), // starts inside the pause too: the offset is not after it
            Some((0.50, 0.70)), // ends in speech: stays
            Some((0.0, 0.0)),   // no frame: stays
        ];
        anchor_offsets(&mut times, &db, 0..db.len(), &OnsetAnchoring::default());
        assert_eq!(
            times,
            vec![
                Some((0.02, 0.20)),
                Some((0.60, 0.76)),
                Some((0.22, 0.44)),
                Some((0.50, 0.70)),
                Some((0.0, 0.0)),
            ]
        );
    }

    #[test]
    fn segments_keep_their_letters_but_spaces_and_the_end_take_the_gaps() {
        // Rows: space, "a", space, "b", end of text; 100 frames (2 s). Word "a" is in the
        // segment 0-0.4 s, "b" in 1.4-2 s; margin 0.2 s.
        let (rows, frames) = (5, 100);
        let mut cost = vec![-0.5f32; rows * frames];
        let letters = vec![Some(1..2), Some(3..4)];
        confine_to_segments(&mut cost, frames, &letters, &[(0.0, 0.4), (1.4, 2.0)], 0.2);
        let outside = |r: usize, f: usize| cost[r * frames + f] > 0.0;
        assert!(!outside(1, 0) && !outside(1, 29) && outside(1, 30));
        assert!(outside(3, 59) && !outside(3, 60) && !outside(3, 99));
        // The space before "b" may span from the start of "a"'s band to the end of its own.
        assert!(!outside(2, 0) && !outside(2, 99));
        // The first space and the end of text are free.
        assert!((0..frames).all(|f| !outside(0, f) && !outside(4, f)));
        // Even with attention pulling "b" into the gap, the path keeps it in its band.
        for f in 30..60 {
            cost[3 * frames + f] -= 0.5;
        }
        let (text, time) = dtw(&cost, rows, frames);
        let b_frames: Vec<usize> = text
            .iter()
            .zip(&time)
            .filter(|(&r, _)| r == 3)
            .map(|(_, &f)| f)
            .collect();
        assert!(b_frames.iter().all(|&f| f >= 60), "{b_frames:?}");
    }

    #[test]
    fn letters_leave_pauses_to_the_spaces_and_spaces_leave_speech_to_the_letters() {
        // Rows: space, "a", space, "b", end of text; 50 frames (1 s). Speech, then a 300 ms
        // pause at frames 20..35 (recorded noise), then speech with a 100 ms closure at 40..45.
        let (rows, frames) = (5, 50);
        let mut db = vec![-10.0f32; frames];
        for f in (20..35).chain(40..45) {
            db[f] = -60.0 - (f as f32 * 0.7).sin();
        }
        // Attention pulls "a" into the pause and gives the frames before it to nobody.
        let mut cost = vec![0.0f32; rows * frames];
        for f in 10..35 {
            cost[frames + f] = -0.6;
        }
        for f in 35..frames {
            cost[3 * frames + f] = -0.6;
        }
        for f in 20..35 {
            cost[2 * frames + f] = -0.3;
        }
        let letters = vec![Some(1..2), Some(3..4)];
        let rows_frames = |cost: &[f32], row: usize| {
            let (text, time) = dtw(cost, rows, frames);
            let held: Vec<usize> = text
                .iter()
                .zip(&time)
                .filter(|(&r, _)| r == row)
                .map(|(_, &f)| f)
                .collect();
            (held[0], *held.last().unwrap())
        };
        assert!(
            rows_frames(&cost, 1).1 >= 30,
            "without weights \"a\" runs into the pause"
        );
        let before = cost.clone();
        let weights = PauseWeights {
            letter_in_pause: 0.5,
            space_in_speech: 0.2,
        };
        let anchoring = OnsetAnchoring::default();
        weigh_pauses(
            &mut cost,
            frames,
            &letters,
            &db,
            0..frames,
            &anchoring,
            &weights,
        );
        assert!(
            rows_frames(&cost, 1).1 < 21,
            "\"a\" ends where the pause starts"
        );
        // Letter rows pay in the pause, the space between the words outside it; the first
        // space and the end of text are free, and the closure is too short to be a pause.
        for r in 0..rows {
            for f in 0..frames {
                let added = cost[r * frames + f] - before[r * frames + f];
                let paused = (20..35).contains(&f);
                let expected = match r {
                    1 | 3 if paused => 0.5,
                    2 if !paused => 0.2,
                    _ => 0.0,
                };
                assert!(
                    (added - expected).abs() < 1e-6,
                    "row {r} frame {f}: {added}"
                );
            }
        }
    }

    fn scores(
        heads: usize,
        rows: usize,
        frames: usize,
        f: impl Fn(usize, usize, usize) -> f32,
    ) -> HeadScores {
        let mut data = Vec::new();
        for h in 0..heads {
            for r in 0..rows {
                for c in 0..frames {
                    data.push(f(h, r, c));
                }
            }
        }
        HeadScores {
            heads,
            rows,
            frames,
            data,
        }
    }

    /// No filtering, every head, no lead: the plain method.
    const PLAIN: CharAlignment = CharAlignment {
        medfilt_width: 1,
        top_heads: None,
        lead: 0.0,
        first_lead: 0.0,
        segment_margin: None,
        onsets: None,
        offsets: None,
        pauses: None,
    };

    #[test]
    fn columns_have_unit_norm_for_one_head() {
        let s = scores(1, 3, 5, |_, r, c| ((r * 7 + c * 3) % 5) as f32);
        let m = char_alignment_matrix(&s, 5, &CharAlignment::default());
        for c in 0..5 {
            let norm: f32 = (0..3).map(|r| m[r * 5 + c].powi(2)).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "column {c} norm {norm}");
        }
    }

    #[test]
    fn only_frames_inside_the_audio_count() {
        // Frames past `audio_frames` hold huge scores that must not leak into the softmax.
        let s = scores(1, 2, 6, |_, r, c| {
            if c >= 4 {
                50.0
            } else {
                (r == c / 2) as u8 as f32 * 4.0
            }
        });
        let m = char_alignment_matrix(&s, 4, &PLAIN);
        assert_eq!(m.len(), 2 * 4);
        assert!(m[0] > m[4] && m[4 + 3] > m[3], "{m:?}");
    }

    #[test]
    fn top_heads_keep_the_sharp_head() {
        // Head 0 attends diagonally and sharply, head 1 uniformly: keeping one head must give
        // head 0's matrix alone.
        let sharp = |r: usize, c: usize| if r == c { 10.0 } else { 0.0 };
        let s = scores(2, 4, 4, |h, r, c| if h == 0 { sharp(r, c) } else { 0.0 });
        let one = CharAlignment {
            top_heads: Some(1),
            ..PLAIN
        };
        let both = char_alignment_matrix(&s, 4, &PLAIN);
        let kept = char_alignment_matrix(&s, 4, &one);
        let alone = char_alignment_matrix(&scores(1, 4, 4, |_, r, c| sharp(r, c)), 4, &one);
        assert_eq!(kept, alone);
        assert_ne!(kept, both);
    }

    #[test]
    fn words_start_at_their_first_character_and_end_at_what_follows() {
        // Rows: "a" "b" " " "c" <eot>; each row held for two frames.
        let rows = 5;
        let s = scores(1, rows, 10, |_, r, c| if c / 2 == r { 8.0 } else { 0.0 });
        let m = char_alignment_matrix(&s, 10, &PLAIN);
        let cost: Vec<f32> = m.iter().map(|x| -x).collect();
        let (text, time) = dtw(&cost, rows, 10);
        let words = [Some(0..2), None, Some(3..4)];
        let sec = |frame: f64| frame / FRAMES_PER_SECOND;
        let times = char_word_times(&text, &time, &words, &PLAIN);
        assert_eq!(
            times,
            vec![Some((0.0, sec(4.0))), None, Some((sec(6.0), sec(8.0)))]
        );
        // A lead moves a start back, but not before its space row (entered at frame 4).
        let long = CharAlignment { lead: 0.1, ..PLAIN };
        let times = char_word_times(&text, &time, &words, &long);
        assert_eq!(times[2], Some((sec(4.0), sec(8.0))));
        let short = CharAlignment {
            lead: 0.02,
            ..PLAIN
        };
        let times = char_word_times(&text, &time, &words, &short);
        let (start, end) = times[2].unwrap();
        assert!(
            (start - sec(5.0)).abs() < 1e-9 && end == sec(8.0),
            "{times:?}"
        );
        // Without a space row between two words (unspaced languages) there is no lead.
        let adjacent = [Some(0..2), Some(2..4)];
        let times = char_word_times(&text, &time, &adjacent, &long);
        assert_eq!(times[1], Some((sec(4.0), sec(8.0))));
    }
}
