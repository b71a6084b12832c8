//! Word timestamps from the cross-attention of a Whisper decoder's alignment heads.
//!
//! Pinned to openai-whisper's `timing.py`: the attention scores of each alignment head are
//! softmaxed over the window's audio frames, standardised over tokens, median-filtered along
//! time (width 7), averaged over heads; dynamic time warping on the negated matrix gives a
//! monotonic path from tokens to frames, and a word starts where the path enters the row that
//! predicts its first token. Heuristics then trim implausibly long words and attach
//! punctuation to its neighbours. Everything here is plain `f32` arithmetic on slices.

mod chars;
mod dtw;
mod filter;
mod words;

pub use chars::{
    anchor_offsets, anchor_onsets, char_alignment_matrix, char_word_times, confine_to_segments,
    cut_spans_at_digital_silence, keep_letters_out_of_digital_silence, weigh_pauses, CharAlignment,
    OnsetAnchoring, PauseWeights,
};
pub use dtw::dtw;
pub use filter::median_filter;
pub use words::{
    add_word_timestamps, merge_punctuations, word_timings, AlignedWord, WordTokens,
    APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS,
};

/// Encoder frames per second (one every 20 ms).
pub const FRAMES_PER_SECOND: f64 = 50.0;

/// Attention of the alignment heads for a run of decoder rows, ready for [`alignment_matrix`]:
/// `data[head][row][frame]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    pub heads: usize,
    pub rows: usize,
    pub frames: usize,
    pub data: Vec<f32>,
}

impl HeadScores {
    /// Every head's rows cut to the first `audio_frames` frames (the audio, not the padding):
    /// `[heads][rows][f]` and `f`, at least 1.
    pub(crate) fn audio_rows(&self, audio_frames: usize) -> (Vec<f32>, usize) {
        let f = audio_frames.min(self.frames).max(1);
        if self.frames == 0 {
            return (vec![0.0; self.heads * self.rows], f);
        }
        let data = self
            .data
            .chunks(self.frames)
            .flat_map(|row| &row[..f])
            .copied()
            .collect();
        (data, f)
    }
}

/// openai `find_alignment`'s matrix: softmax over the first `audio_frames` frames of each
/// head's row (scores scaled by `qk_scale`), standardised per head and frame across rows,
/// median-filtered along time with `medfilt_width`, averaged over heads. Returns
/// `[rows][audio_frames]`.
pub fn alignment_matrix(
    scores: &HeadScores,
    audio_frames: usize,
    qk_scale: f32,
    medfilt_width: usize,
) -> Vec<f32> {
    let (h, n) = (scores.heads, scores.rows);
    let (mut w, f) = scores.audio_rows(audio_frames);
    for head in 0..h {
        for row in 0..n {
            let dst = &mut w[(head * n + row) * f..][..f];
            dst.iter_mut().for_each(|x| *x *= qk_scale);
            softmax(dst);
        }
        // Standardise each frame across rows (torch.std_mean over dim -2, unbiased=False).
        for frame in 0..f {
            let col = |row: usize| (head * n + row) * f + frame;
            let mean = (0..n).map(|r| w[col(r)]).sum::<f32>() / n as f32;
            let var = (0..n).map(|r| (w[col(r)] - mean).powi(2)).sum::<f32>() / n as f32;
            let std = var.sqrt();
            for r in 0..n {
                // A constant column (one row) has std 0; openai divides by zero there, we
                // leave the centred values, which are zero.
                w[col(r)] = if std > 0.0 {
                    (w[col(r)] - mean) / std
                } else {
                    0.0
                };
            }
        }
        for row in 0..n {
            median_filter(&mut w[(head * n + row) * f..][..f], medfilt_width);
        }
    }
    let mut matrix = vec![0.0f32; n * f];
    for head in 0..h {
        for (m, x) in matrix.iter_mut().zip(&w[head * n * f..(head + 1) * n * f]) {
            *m += x / h as f32;
        }
    }
    matrix
}

/// Softmax in place.
pub(crate) fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagonal_attention_gives_a_diagonal_path() {
        // Three rows attending to frames 0-1, 2-3 and 4-5 of six.
        let (rows, frames) = (3, 6);
        let mut data = vec![0.0f32; rows * frames];
        for r in 0..rows {
            data[r * frames + 2 * r] = 5.0;
            data[r * frames + 2 * r + 1] = 5.0;
        }
        let scores = HeadScores {
            heads: 1,
            rows,
            frames,
            data,
        };
        let m = alignment_matrix(&scores, frames, 1.0, 1);
        let cost: Vec<f32> = m.iter().map(|x| -x).collect();
        let (text, time) = dtw(&cost, rows, frames);
        // Each row's frames are visited while on that row.
        for (t, f) in text.iter().zip(&time) {
            assert_eq!(*t, f / 2, "path {text:?} {time:?}");
        }
    }
}
