//! Word timing for one decoded window: gather the alignment heads' attention rows (from the
//! decode itself, or from a second pass over the text), then DTW and word grouping.

use whisk_align::{alignment_matrix, dtw, word_timings, AlignedWord, HeadScores, WordTokens};
use whisk_backend::{Backend, DecodeStep, RowStep};
use whisk_types::SpecialTokens;

use crate::Result;
use whisk_batch::WindowResult;

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

/// openai's second pass: `sot_sequence, <|notimestamps|>, text, <|endoftext|>` through the
/// decoder, keeping the attention of the rows from `<|notimestamps|>` to the last text token
/// and the text-vocabulary probability of each text token.
pub(crate) fn refeed_scores<B: Backend>(
    backend: &B,
    encoded: &B::Encoded,
    sot_sequence: &[u32],
    special: &SpecialTokens,
    text: &[u32],
    heads: &[(usize, usize)],
) -> Result<(HeadScores, Vec<f32>)> {
    let mut tokens = sot_sequence.to_vec();
    tokens.push(special.no_timestamps);
    let first = tokens.len() - 1;
    tokens.extend_from_slice(text);
    tokens.push(special.eot);
    let mut decoder = backend.start_decoder(encoded, &[0])?;
    let positions: Vec<usize> = (first..first + text.len()).collect();
    let out = backend.decode_step(
        &mut decoder,
        DecodeStep {
            rows: &[RowStep {
                slot: 0,
                position: 0,
                tokens: &tokens,
                logits_at: &positions,
            }],
            cross_qk_heads: heads,
        },
    )?;
    let vocab = backend.dims().n_vocab;
    let eot = special.eot as usize;
    let probs = text
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let row = &out.logits[0][i * vocab..][..eot];
            (row[t as usize] - whisk_decode::logsumexp(row)).exp()
        })
        .collect();
    let qk = &out.cross_qk[0];
    let rows = text.len() + 1;
    let mut data = Vec::with_capacity(qk.heads * rows * qk.frames);
    for h in 0..qk.heads {
        for r in first..first + rows {
            data.extend_from_slice(qk.row(h, r));
        }
    }
    Ok((
        HeadScores {
            heads: qk.heads,
            rows,
            frames: qk.frames,
            data,
        },
        probs,
    ))
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
