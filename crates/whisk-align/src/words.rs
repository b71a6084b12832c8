//! From a token-to-frame path to timed words (openai `find_alignment` tail and
//! `add_word_timestamps`).

use whisk_types::{Segment, Word};

use crate::FRAMES_PER_SECOND;

/// Punctuation attached to the word that follows it.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
/// Punctuation attached to the word before it.
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";

/// A word and the tokens it is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTokens {
    pub word: String,
    pub tokens: Vec<u32>,
}

/// A word with times in seconds from the start of its window.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignedWord {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

/// Times of `words` from a DTW path over rows `0..=n` (row `k` predicts text token `k`; the
/// last row predicts the end). `words` ends with the end-of-text pseudo-word, as openai's
/// `split_to_word_tokens(text_tokens + [eot])` does; `token_probs` has one entry per text
/// token. A word starts where the path first enters the row that predicts its first token.
pub fn word_timings(
    text_indices: &[usize],
    time_indices: &[usize],
    words: &[WordTokens],
    token_probs: &[f32],
) -> Vec<AlignedWord> {
    if words.len() <= 1 || text_indices.is_empty() {
        return Vec::new();
    }
    // Time at which the path first enters each row.
    let mut jump_times = Vec::new();
    for k in 0..text_indices.len() {
        if k == 0 || text_indices[k] != text_indices[k - 1] {
            jump_times.push(time_indices[k] as f64 / FRAMES_PER_SECOND);
        }
    }
    let mut boundaries = vec![0usize];
    for w in &words[..words.len() - 1] {
        boundaries.push(boundaries.last().unwrap() + w.tokens.len());
    }
    let at = |i: usize| jump_times[i.min(jump_times.len() - 1)];
    words[..words.len() - 1]
        .iter()
        .enumerate()
        .map(|(w, word)| {
            let (a, b) = (boundaries[w], boundaries[w + 1]);
            let probs = &token_probs[a.min(token_probs.len())..b.min(token_probs.len())];
            let probability = if probs.is_empty() {
                0.0
            } else {
                probs.iter().map(|&p| p as f64).sum::<f64>() / probs.len() as f64
            };
            AlignedWord {
                word: word.word.clone(),
                tokens: word.tokens.clone(),
                start: at(a),
                end: at(b),
                probability,
            }
        })
        .collect()
}

/// Moves leading punctuation onto the next word and trailing punctuation onto the previous
/// one; emptied entries keep their place with no text and no tokens (openai
/// `merge_punctuations`).
pub fn merge_punctuations(alignment: &mut [AlignedWord], prepended: &str, appended: &str) {
    if alignment.len() < 2 {
        return;
    }
    let mut j = alignment.len() - 1;
    for i in (0..alignment.len() - 1).rev() {
        let previous = &alignment[i];
        let trimmed = previous.word.trim();
        // Substring tests, as Python's `in` on strings.
        if previous.word.starts_with(' ') && prepended.contains(trimmed) {
            let (word, tokens) = (
                std::mem::take(&mut alignment[i].word),
                std::mem::take(&mut alignment[i].tokens),
            );
            let following = &mut alignment[j];
            following.word = word + &following.word;
            following.tokens.splice(0..0, tokens);
        } else {
            j = i;
        }
    }
    let mut i = 0;
    for j in 1..alignment.len() {
        let following = &alignment[j].word;
        let is_punct = appended.contains(following.as_str());
        if !alignment[i].word.ends_with(' ') && is_punct {
            let (word, tokens) = (
                std::mem::take(&mut alignment[j].word),
                std::mem::take(&mut alignment[j].tokens),
            );
            alignment[i].word.push_str(&word);
            alignment[i].tokens.extend(tokens);
        } else {
            i = j;
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Gives each segment its words (openai `add_word_timestamps`): trims words that run past
/// sentence ends or start long after a pause, merges punctuation, then hands words to
/// segments in token order and lets segment bounds and word bounds correct each other.
/// `time_offset` is the window start in seconds; `last_speech_timestamp` carries over between
/// windows.
pub fn add_word_timestamps(
    mut alignment: Vec<AlignedWord>,
    segments: &mut [Segment],
    text_tokens_per_segment: &[usize],
    time_offset: f64,
    last_speech_timestamp: &mut f64,
) {
    let durations: Vec<f64> = alignment
        .iter()
        .map(|w| w.end - w.start)
        .filter(|d| *d != 0.0)
        .collect();
    let median_duration = median(durations.clone()).min(0.7);
    let max_duration = median_duration * 2.0;
    if !durations.is_empty() {
        let sentence_end = |w: &str| ".。!！?？".contains(w);
        for i in 1..alignment.len() {
            if alignment[i].end - alignment[i].start > max_duration {
                if sentence_end(&alignment[i].word) {
                    alignment[i].end = alignment[i].start + max_duration;
                } else if sentence_end(&alignment[i - 1].word) {
                    alignment[i].start = alignment[i].end - max_duration;
                }
            }
        }
    }
    merge_punctuations(&mut alignment, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);

    let mut word_index = 0;
    for (segment, &n_text) in segments.iter_mut().zip(text_tokens_per_segment) {
        let mut saved = 0;
        let mut words: Vec<Word> = Vec::new();
        while word_index < alignment.len() && saved < n_text {
            let timing = &alignment[word_index];
            if !timing.word.is_empty() {
                words.push(Word {
                    word: timing.word.clone(),
                    start: round2(time_offset + timing.start),
                    end: round2(time_offset + timing.end),
                    probability: timing.probability,
                });
            }
            saved += timing.tokens.len();
            word_index += 1;
        }
        if let Some(first) = words.first().cloned() {
            // The first word after a pause is not longer than twice the median word.
            let long_first = first.end - first.start > max_duration
                || (words.len() > 1 && words[1].end - first.start > max_duration * 2.0);
            if first.end - *last_speech_timestamp > median_duration * 4.0 && long_first {
                if words.len() > 1 && words[1].end - words[1].start > max_duration {
                    let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
                    words[0].end = boundary;
                    words[1].start = boundary;
                }
                words[0].start = (words[0].end - max_duration).max(0.0);
            }
            // Prefer the segment's start when the first word is implausibly long.
            if segment.start < words[0].end && segment.start - 0.5 > words[0].start {
                words[0].start = (words[0].end - median_duration).min(segment.start).max(0.0);
                // Unlike openai, the segment always covers its words.
                segment.start = segment.start.min(words[0].start);
            } else {
                segment.start = words[0].start;
            }
            let last = words.len() - 1;
            if segment.end > words[last].start && segment.end + 0.5 < words[last].end {
                words[last].end = (words[last].start + median_duration).max(segment.end);
                segment.end = segment.end.max(words[last].end);
            } else {
                segment.end = words[last].end;
            }
            *last_speech_timestamp = segment.end;
        }
        segment.words = Some(words);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(word: &str, n: usize) -> WordTokens {
        WordTokens {
            word: word.into(),
            tokens: (0..n as u32).collect(),
        }
    }

    fn aligned(word: &str, start: f64, end: f64) -> AlignedWord {
        AlignedWord {
            word: word.into(),
            tokens: vec![1],
            start,
            end,
            probability: 1.0,
        }
    }

    #[test]
    fn words_start_where_the_path_enters_their_first_row() {
        // Rows 0..=3: " hello" (2 tokens), " world" (1 token), then the end row.
        let text = [0, 0, 1, 1, 2, 2, 2, 3];
        let time = [0, 1, 2, 3, 4, 5, 6, 7];
        let words = [w(" hello", 2), w(" world", 1), w("<|endoftext|>", 1)];
        let probs = [0.5, 1.0, 0.25];
        let out = word_timings(&text, &time, &words, &probs);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].start, out[0].end), (0.0, 4.0 / 50.0));
        assert_eq!((out[1].start, out[1].end), (4.0 / 50.0, 7.0 / 50.0));
        assert!((out[0].probability - 0.75).abs() < 1e-9);
        assert!((out[1].probability - 0.25).abs() < 1e-9);
    }

    #[test]
    fn punctuation_joins_its_neighbours() {
        let mut a = vec![
            aligned(" \"", 0.0, 0.1),
            aligned(" Hello", 0.1, 0.5),
            aligned(",", 0.5, 0.6),
            aligned(" world", 0.6, 1.0),
            aligned(".", 1.0, 1.1),
        ];
        merge_punctuations(&mut a, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS);
        let words: Vec<&str> = a.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, vec!["", " \" Hello,", "", " world.", ""]);
        assert_eq!(a[1].tokens.len(), 3);
        assert_eq!(a[3].tokens.len(), 2);
    }
}
