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
}

impl Default for CharAlignment {
    fn default() -> Self {
        Self {
            medfilt_width: 3,
            top_heads: Some(2),
            lead: 0.05,
            first_lead: 0.02,
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
    let (h, n, f) = (
        scores.heads,
        scores.rows,
        audio_frames.min(scores.frames).max(1),
    );
    let mut w = vec![0.0f32; h * n * f];
    for head in 0..h {
        for row in 0..n {
            let dst = &mut w[(head * n + row) * f..][..f];
            dst.copy_from_slice(&scores.data[(head * n + row) * scores.frames..][..f]);
            median_filter(dst, options.medfilt_width);
            softmax(dst);
        }
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
