//! Word timing for one decoded window: gather the alignment heads' attention rows (from the
//! decode itself, or from a second pass over the text), then DTW and word grouping.

use whisk_align::{alignment_matrix, dtw, word_timings, AlignedWord, HeadScores, WordTokens};
use whisk_backend::{Backend, DecodeStep, RowStep};
use whisk_types::SpecialTokens;

use crate::Result;
use whisk_batch::{alignment_pass_input, read_alignment_pass, Refeed, WindowResult};

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

/// openai's second pass over `text` of an encoded window, alone.
pub(crate) fn refeed<B: Backend>(
    backend: &B,
    encoded: &B::Encoded,
    sot_sequence: &[u32],
    special: &SpecialTokens,
    text: &[u32],
    heads: &[(usize, usize)],
) -> Result<Refeed> {
    let (tokens, logits_at) = alignment_pass_input(sot_sequence, text, special);
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
        },
    )?;
    Ok(read_alignment_pass(
        sot_sequence.len(),
        text.to_vec(),
        &out.logits[0],
        &out.cross_qk[0],
        backend.dims().n_vocab,
        special,
    ))
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
