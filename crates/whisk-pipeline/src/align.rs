//! Word timing for one decoded window: gather the alignment heads' attention rows (from the
//! decode itself, or from a second pass over the text), then DTW and word grouping.

use whisk_align::{
    alignment_matrix, anchor_offsets, anchor_onsets, char_alignment_matrix, char_word_times,
    confine_to_segments, cut_spans_at_digital_silence, dtw, keep_letters_out_of_digital_silence,
    weigh_pauses, word_timings, AlignedWord, CharAlignment, HeadScores, WordTokens,
    FRAMES_PER_SECOND,
};
use whisk_backend::{Backend, BackendError, DecodeStep, RowStep};
use whisk_text::CharSequence;
use whisk_types::{Segment, SpecialTokens};

use crate::Result;
use whisk_batch::{read_alignment_pass, Refeed, WindowResult};

/// openai `find_alignment` defaults.
const MEDFILT_WIDTH: usize = 7;
const QK_SCALE: f32 = 1.0;

/// Attention rows that predicted the text tokens `positions` of a single-pass decode (indices
/// into `result.tokens`), plus the row after the last one, which predicted the end.
pub(crate) fn single_pass_scores(
    result: &WindowResult,
    positions: &[usize],
    heads: usize,
) -> HeadScores {
    let mut rows: Vec<&[f32]> = positions
        .iter()
        .map(|&j| result.qk_rows[j].as_slice())
        .collect();
    let after = positions.last().map_or(0, |&j| j + 1);
    rows.push(&result.qk_rows[after.min(result.qk_rows.len() - 1)]);
    stack_rows(&rows, heads)
}

/// `rows[r]` is `[heads][frames]`; returns `[heads][rows][frames]`.
fn stack_rows(rows: &[&[f32]], heads: usize) -> HeadScores {
    let frames = rows[0].len() / heads;
    let mut data = vec![0.0f32; heads * rows.len() * frames];
    for (r, row) in rows.iter().enumerate() {
        for h in 0..heads {
            data[(h * rows.len() + r) * frames..][..frames]
                .copy_from_slice(&row[h * frames..][..frames]);
        }
    }
    HeadScores {
        heads,
        rows: rows.len(),
        frames,
        data,
    }
}

/// An alignment pass over an encoded window, alone: `input` from
/// [`whisk_batch::alignment_pass_for`] or [`alignment_pass_input`], after a SOT sequence
/// of `sot_len` tokens.
pub(crate) fn refeed<B: Backend>(
    backend: &B,
    encoded: &B::Encoded,
    sot_len: usize,
    input: (Vec<u32>, Vec<usize>),
    special: &SpecialTokens,
    heads: &[(usize, usize)],
) -> Result<Refeed> {
    let (tokens, logits_at) = input;
    let mut decoder = backend.start_decoder(encoded, &[0])?;
    let out = backend.decode_step(
        &mut decoder,
        DecodeStep {
            rows: &[RowStep {
                slot: 0,
                position: 0,
                tokens: &tokens,
                logits_at: &logits_at,
            }],
            cross_qk_heads: heads,
            keep_cache: false,
        },
    )?;
    let qk =
        out.cross_qk.into_iter().next().ok_or_else(|| {
            BackendError::Compute("an alignment pass returned no attention".into())
        })?;
    Ok(read_alignment_pass(
        sot_len,
        &tokens,
        &out.logits[0],
        qk,
        backend.dims().n_vocab,
        special,
    ))
}

/// The decode's tokens up to the text token `positions` names last, and the timestamp that
/// closes it: what the alignment pass feeds for the text that is kept.
pub(crate) fn kept_decode<'a>(
    result: &'a WindowResult,
    positions: &[usize],
    special: &SpecialTokens,
) -> &'a [u32] {
    let tokens = &result.tokens;
    let end = positions.last().map_or(0, |&j| j + 1);
    let closed = tokens.get(end).is_some_and(|&t| special.is_timestamp(t));
    &tokens[..end + usize::from(closed)]
}

/// An alignment pass's attention and probabilities, ready for [`align`].
pub(crate) fn refeed_scores(refeed: Refeed) -> (HeadScores, Vec<f32>) {
    let qk = refeed.qk;
    (
        HeadScores {
            heads: qk.heads,
            rows: qk.tokens,
            frames: qk.frames,
            data: qk.data,
        },
        refeed.probs,
    )
}

/// Words of `text` timed from the attention `scores` over the first `mel_frames` of the window
/// (openai `find_alignment`). `words` is the tokenizer's grouping of `text + [eot]`.
pub(crate) fn align(
    scores: &HeadScores,
    words: &[WordTokens],
    probs: &[f32],
    mel_frames: usize,
) -> Vec<AlignedWord> {
    let audio_frames = (mel_frames / 2).max(1);
    let matrix = alignment_matrix(scores, audio_frames, QK_SCALE, MEDFILT_WIDTH);
    let frames = audio_frames.min(scores.frames);
    let cost: Vec<f32> = matrix.iter().map(|x| -x).collect();
    let (text_idx, time_idx) = dtw(&cost, scores.rows, frames);
    word_timings(&text_idx, &time_idx, words, probs)
}

/// Probability of each text token `positions` (indices into `result.tokens`) from the decode
/// itself; zero where the decode kept none.
pub(crate) fn decode_probs(result: &WindowResult, positions: &[usize]) -> Vec<f32> {
    positions
        .iter()
        .map(|&j| result.token_probs.get(j).copied().unwrap_or(0.0))
        .collect()
}

/// The heads character alignment ranks (see `CharAlignment::top_heads`): every head of the
/// last half of the decoder's layers, as openai's default alignment heads. In the first
/// layers some heads follow the token's position rather than the audio, and on noisy windows
/// their sharp, diagonal attention outranked the real aligners: tiny.en's layer 0 head 2
/// squeezed two sentences of the pause set into 40 ms at the end of their segment.
pub(crate) fn ranked_heads(layers: usize, heads: usize) -> Vec<(usize, usize)> {
    (layers / 2..layers)
        .flat_map(|l| (0..heads).map(move |h| (l, h)))
        .collect()
}

/// What the character pass keeps: the ranked heads, and the model's alignment heads for
/// when the text could not be spelled.
pub(crate) fn char_pass_heads(
    ranked: &[(usize, usize)],
    alignment: &[(usize, usize)],
) -> Vec<(usize, usize)> {
    let mut heads: Vec<(usize, usize)> = ranked.iter().chain(alignment).copied().collect();
    heads.sort();
    heads.dedup();
    heads
}

/// Words timed by character-level alignment. `words` is the tokenizer's grouping of the text
/// plus the end-of-text pseudo-word, `spelled` the same words spelled out (what the pass fed,
/// `refeed.text`), `probs` the text tokens' probabilities from the decode, `spans` each
/// word's segment in seconds of the window, `loudness_db` the window's audio per 20 ms
/// (for starts after pauses). A word without letters or digits fills the gap around it
/// (`place_letterless`).
pub(crate) fn align_chars(
    scores: HeadScores,
    spelled: &CharSequence,
    words: &[WordTokens],
    probs: &[f32],
    spans: &[(f64, f64)],
    loudness_db: &[f32],
    mel_frames: usize,
) -> Vec<AlignedWord> {
    let audio_frames = (mel_frames / 2).max(1);
    let options = CharAlignment::default();
    let matrix = char_alignment_matrix(&scores, audio_frames, &options);
    let frames = audio_frames.min(scores.frames);
    let mut cost: Vec<f32> = matrix.iter().map(|x| -x).collect();
    let spans = &options.onsets.as_ref().map_or_else(
        || spans.to_vec(),
        |quiet| cut_spans_at_digital_silence(spans, loudness_db, quiet),
    );
    if let Some(margin) = options.segment_margin {
        confine_to_segments(&mut cost, frames, &spelled.words, spans, margin);
    }
    keep_letters_out_of_digital_silence(&mut cost, frames, &spelled.words, loudness_db);
    let speech_start = spans.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    let speech_end = spans.iter().map(|s| s.1).fold(0.0, f64::max);
    let frame = |t: f64| (t.max(0.0) * FRAMES_PER_SECOND).round() as usize;
    let speech = frame(speech_start)..frame(speech_end).min(loudness_db.len());
    if let (Some(weights), Some(pauses)) = (&options.pauses, &options.onsets) {
        let letters = &spelled.words;
        weigh_pauses(
            &mut cost,
            frames,
            letters,
            loudness_db,
            speech.clone(),
            pauses,
            weights,
        );
    }
    let (text_idx, time_idx) = dtw(&cost, scores.rows, frames);
    let mut times = char_word_times(&text_idx, &time_idx, &spelled.words, &options);
    if let Some(onsets) = &options.onsets {
        anchor_onsets(&mut times, loudness_db, speech.clone(), onsets);
    }
    if let Some(offsets) = &options.offsets {
        anchor_offsets(&mut times, loudness_db, speech, offsets);
    }
    let times = place_letterless(&times, spans);
    let mut aligned = Vec::with_capacity(words.len().saturating_sub(1));
    let mut offset = 0;
    for (word, (start, end)) in words[..words.len().saturating_sub(1)].iter().zip(times) {
        let p = &probs[offset.min(probs.len())..(offset + word.tokens.len()).min(probs.len())];
        offset += word.tokens.len();
        aligned.push(AlignedWord {
            word: word.word.clone(),
            tokens: word.tokens.clone(),
            start,
            end,
            probability: if p.is_empty() {
                0.0
            } else {
                p.iter().map(|&x| x as f64).sum::<f64>() / p.len() as f64
            },
        });
    }
    aligned
}

/// Every word's times, where `times` has none for the words without letters or digits (the
/// DTW path never visits them): such a word fills the gap between its neighbours in its
/// segment (`spans`, one per word), from the end of the word before it, or its segment's start
/// when it opens the segment, to the start of the word after it, or the segment's end. So a
/// segment of such words alone ("...", "♪") keeps the decode's own times, not a zero length.
fn place_letterless(times: &[Option<(f64, f64)>], spans: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let span = |i: usize| spans.get(i).copied().unwrap_or((0.0, 0.0));
    let mut placed: Vec<(f64, f64)> = Vec::with_capacity(times.len());
    for (i, time) in times.iter().enumerate() {
        if let Some(time) = time {
            placed.push(*time);
            continue;
        }
        let last_end = placed.last().map_or(0.0, |w| w.1);
        let opens_segment = i == 0 || span(i - 1) != span(i);
        // Opening a segment after a word that ran past all of it: the segment's own start,
        // so that the segment keeps a length.
        let after_last = span(i).0.max(last_end);
        let start = match opens_segment {
            true if after_last < span(i).1 => after_last,
            true => span(i).0,
            false => last_end,
        };
        let next_start = (i + 1..times.len())
            .take_while(|&j| span(j) == span(i))
            .find_map(|j| times[j].map(|t| t.0));
        let end = next_start.unwrap_or(span(i).1);
        placed.push((start, end.max(start)));
    }
    placed
}

/// The attention of `wanted` heads out of a pass that kept `kept` heads.
pub(crate) fn select_heads(
    pass: Refeed,
    kept: &[(usize, usize)],
    wanted: &[(usize, usize)],
) -> HeadScores {
    let (all, _) = refeed_scores(pass);
    let per_head = all.rows * all.frames;
    let mut data = Vec::with_capacity(wanted.len() * per_head);
    for head in wanted {
        let i = kept.iter().position(|k| k == head).unwrap_or(0);
        data.extend_from_slice(&all.data[i * per_head..][..per_head]);
    }
    HeadScores {
        heads: wanted.len(),
        data,
        ..all
    }
}

/// Gives each segment whose character-pass word times lie far from its decode's
/// (`Pipeline::decode_timed`: a median start more than [`FAR_FROM_DECODE_SECONDS`] off)
/// the decode's times. Where the text is wrong the character pass can sit on one word for
/// seconds and pile the rest at the edge of the segment's band ("Nuclear rockets can destroy
/// the water." for "...airfields with ease": "rockets" 5.7 s long, four words at one
/// instant, the segment laid over the next speaker's line); the decode's attention still
/// follows the audio there.
pub(crate) fn keep_decode_times_where_far(segments: &mut [Segment], decode_timed: &[Segment]) {
    for (segment, decoded) in segments.iter_mut().zip(decode_timed) {
        let (Some(words), Some(decoded_words)) = (&segment.words, &decoded.words) else {
            continue;
        };
        if words.is_empty() || words.len() != decoded_words.len() {
            continue;
        }
        let mut gaps: Vec<f64> = words
            .iter()
            .zip(decoded_words)
            .map(|(w, d)| (w.start - d.start).abs())
            .collect();
        gaps.sort_by(f64::total_cmp);
        if gaps[gaps.len() / 2] > FAR_FROM_DECODE_SECONDS {
            segment.words = decoded.words.clone();
            (segment.start, segment.end) = (decoded.start, decoded.end);
        }
    }
}

/// See [`keep_decode_times_where_far`].
const FAR_FROM_DECODE_SECONDS: f64 = 1.0;

#[cfg(test)]
mod tests {
    use super::*;
    use whisk_types::Word;

    fn segment(starts: &[f64]) -> Segment {
        let words: Vec<Word> = starts
            .iter()
            .map(|&start| Word {
                word: " w".into(),
                start,
                end: start + 0.3,
                probability: 1.0,
            })
            .collect();
        Segment {
            id: 0,
            seek: 0,
            start: starts[0],
            end: starts[starts.len() - 1] + 0.3,
            text: String::new(),
            tokens: Vec::new(),
            temperature: 0.0,
            avg_logprob: 0.0,
            compression_ratio: 0.0,
            no_speech_prob: 0.0,
            words: Some(words),
        }
    }

    #[test]
    fn words_without_letters_fill_the_gap_between_their_neighbours_in_their_segment() {
        let (a, b) = ((1.0, 4.0), (4.0, 6.0));
        // "Hi - there ..." in segment a, then a segment of "♪" alone.
        let times = [Some((1.2, 1.5)), None, Some((1.9, 2.4)), None, None];
        let spans = [a, a, a, a, b];
        let placed = place_letterless(&times, &spans);
        assert_eq!(
            placed,
            [(1.2, 1.5), (1.5, 1.9), (1.9, 2.4), (2.4, 4.0), (4.0, 6.0)]
        );
        // Opening a segment: from its start to the next word's start, never before the word
        // before it.
        let placed = place_letterless(&[Some((0.5, 4.3)), None, Some((4.6, 5.0))], &[a, b, b]);
        assert_eq!(placed[1], (4.3, 4.6));
        // A segment that the word before it ran past keeps its own times.
        let placed = place_letterless(&[Some((0.5, 6.5)), None], &[a, b]);
        assert_eq!(placed[1], (4.0, 6.0));
    }

    #[test]
    fn segments_timed_far_from_the_decode_take_its_times() {
        // The first segment's words a few tens of ms off the decode's: kept. The second's
        // piled up 5 s late: the decode's times instead.
        let chars = [
            segment(&[1.0, 1.5, 2.0]),
            segment(&[27.0, 27.9, 27.9, 27.9]),
        ];
        let decoded = [
            segment(&[1.05, 1.4, 2.1]),
            segment(&[21.7, 22.0, 22.5, 22.8]),
        ];
        let mut segments = chars.clone();
        keep_decode_times_where_far(&mut segments, &decoded);
        assert_eq!(segments[0], chars[0]);
        assert_eq!(segments[1], decoded[1]);
    }
}
