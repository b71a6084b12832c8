//! The alignment pass: openai's `sot_sequence, <|notimestamps|>, text, <|endoftext|>`, or
//! (character alignment) each line spelled between the decode's own timestamps, fed through
//! the decoder at once, keeping the alignment heads' attention (and, for openai's, each text
//! token's probability). Batched rows and the sequential pipeline both build and read it here.

use whisk_backend::CrossQk;
use whisk_decode::logsumexp;
use whisk_types::SpecialTokens;

use crate::Spell;

/// What an alignment pass yields for word timing.
#[derive(Debug, Clone, Default)]
pub struct Refeed {
    /// The text tokens fed (the row's sampled tokens without timestamps).
    pub text: Vec<u32>,
    /// Attention of the rows from `<|notimestamps|>` to the last text token: `text.len() + 1`
    /// token rows, the first predicting `text[0]`.
    pub qk: CrossQk,
    /// Probability of each text token among text tokens.
    pub probs: Vec<f32>,
}

/// The pass's tokens, and the positions whose logits give the text tokens' probabilities:
/// none unless `with_probs` (character alignment takes its word probabilities from the decode,
/// and skipping the vocabulary projection of every letter is most of the pass's cost).
pub fn alignment_pass_input(
    sot_sequence: &[u32],
    text: &[u32],
    special: &SpecialTokens,
    with_probs: bool,
) -> (Vec<u32>, Vec<usize>) {
    let mut tokens = sot_sequence.to_vec();
    tokens.push(special.no_timestamps);
    let first = tokens.len() - 1;
    tokens.extend_from_slice(text);
    tokens.push(special.eot);
    let logits_at = if with_probs {
        (first..first + text.len()).collect()
    } else {
        Vec::new()
    };
    (tokens, logits_at)
}

/// The alignment pass for the decode `decoded` (its text and timestamp tokens) after
/// `sot_sequence`: its tokens and where its logits are read. With `spell` (character
/// alignment) the timed pass when the decode has timestamps and it fits `n_text_ctx`, else the
/// spelled text after `<|notimestamps|>`; without, openai's pass with the text's
/// probabilities. `None` when there is no text or the pass would overrun the context.
pub fn alignment_pass_for(
    sot_sequence: &[u32],
    decoded: &[u32],
    special: &SpecialTokens,
    spell: Option<&Spell>,
    n_text_ctx: usize,
) -> Option<(Vec<u32>, Vec<usize>)> {
    let text: Vec<u32> = decoded
        .iter()
        .copied()
        .filter(|&t| special.is_text(t))
        .collect();
    if text.is_empty() {
        return None;
    }
    let timed = spell.and_then(|spell| {
        // A line without letters ("...") is fed as its timestamps alone.
        let mut lettered = false;
        let tokens = timed_alignment_pass_input(sot_sequence, decoded, special, |run| {
            let letters = spell(sot_sequence, run).unwrap_or_default();
            lettered |= !letters.is_empty();
            letters
        })?;
        (lettered && tokens.len() <= n_text_ctx).then_some(tokens)
    });
    if let Some(tokens) = timed {
        return Some((tokens, Vec::new()));
    }
    let fed = match spell {
        Some(spell) => spell(sot_sequence, &text).unwrap_or(text),
        None => text,
    };
    let (tokens, logits_at) = alignment_pass_input(sot_sequence, &fed, special, spell.is_none());
    (!fed.is_empty() && tokens.len() <= n_text_ctx).then_some((tokens, logits_at))
}

/// The character pass with the decode's timestamps kept: `sot_sequence`, then `decoded` with
/// each run of text between its timestamps replaced by `spell(run)`, then `<|endoftext|>`.
/// The timestamps tell the decoder where each line's audio starts, which a long run of
/// letters after `<|notimestamps|>` loses: in windows packed with short inputs, words were
/// timed worse the later their input sat in the window. `None` when `decoded` has no
/// timestamps.
pub fn timed_alignment_pass_input(
    sot_sequence: &[u32],
    decoded: &[u32],
    special: &SpecialTokens,
    mut spell: impl FnMut(&[u32]) -> Vec<u32>,
) -> Option<Vec<u32>> {
    if !decoded.iter().any(|&t| special.is_timestamp(t)) {
        return None;
    }
    let mut tokens = sot_sequence.to_vec();
    let mut run = Vec::new();
    for &t in decoded {
        if special.is_text(t) {
            run.push(t);
        } else if special.is_timestamp(t) {
            if !run.is_empty() {
                tokens.extend(spell(&run));
                run.clear();
            }
            tokens.push(t);
        }
    }
    if !run.is_empty() {
        tokens.extend(spell(&run));
    }
    tokens.push(special.eot);
    Some(tokens)
}

/// Reads the pass's output: `logits` at the positions [`alignment_pass_input`] gave (none:
/// no probabilities), `qk` over every token of `fed`; `sot_len` is the SOT sequence's length.
/// Keeps the rows that predicted each text token and the row after the last one.
pub fn read_alignment_pass(
    sot_len: usize,
    fed: &[u32],
    logits: &[f32],
    mut qk: CrossQk,
    n_vocab: usize,
    special: &SpecialTokens,
) -> Refeed {
    let after_sot = &fed[sot_len.min(fed.len())..];
    let text: Vec<u32> = after_sot
        .iter()
        .copied()
        .filter(|&t| special.is_text(t))
        .collect();
    let mut kept: Vec<usize> = (1..after_sot.len())
        .filter(|&i| special.is_text(after_sot[i]))
        .map(|i| sot_len + i - 1)
        .collect();
    if let Some(&last) = kept.last() {
        kept.push(last + 1);
    }
    let eot = special.eot as usize;
    let with_probs = !logits.is_empty();
    let probs = text
        .iter()
        .take_while(|_| with_probs)
        .enumerate()
        .map(|(i, &t)| {
            let row = &logits[i * n_vocab..][..eot];
            (row[t as usize] - logsumexp(row)).exp()
        })
        .collect();
    // The kept rows moved to the front, head by head, in the step's own buffer: a copy
    // beside it would be held with every other row's scores at the decoder's peak.
    // Rows move to the same or an earlier place, and in order, so none is overwritten before
    // it is read.
    let frames = qk.frames;
    for h in 0..qk.heads {
        for (r, &from) in kept.iter().enumerate() {
            let from = (h * qk.tokens + from) * frames;
            qk.data
                .copy_within(from..from + frames, (h * kept.len() + r) * frames);
        }
    }
    qk.data.truncate(qk.heads * kept.len() * frames);
    qk.tokens = kept.len();
    Refeed { text, qk, probs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special() -> SpecialTokens {
        SpecialTokens::small_for_tests()
    }

    /// Spells text token `t` as `t` letters `t`; token 0 has no letters.
    fn spell(_sot: &[u32], run: &[u32]) -> Option<Vec<u32>> {
        let letters: Vec<u32> = run.iter().flat_map(|&t| vec![t; t as usize]).collect();
        (!letters.is_empty()).then_some(letters)
    }

    /// Attention whose every row holds its own position, one frame wide.
    fn positions(tokens: usize) -> CrossQk {
        CrossQk {
            heads: 1,
            tokens,
            frames: 1,
            data: (0..tokens).map(|p| p as f32).collect(),
        }
    }

    #[test]
    fn the_timed_pass_spells_each_line_between_its_own_timestamps() {
        let (s, sot) = (special(), [11, 12, 14]);
        // <|0.00|> 2 3 <|1.00|><|1.00|> 1 <|2.00|>
        let decoded = [19, 2, 3, 21, 21, 1, 23];
        let spell: &Spell = &spell;
        let (tokens, logits_at) = alignment_pass_for(&sot, &decoded, &s, Some(spell), 448).unwrap();
        assert_eq!(tokens, [11, 12, 14, 19, 2, 2, 3, 3, 3, 21, 21, 1, 23, 10]);
        assert!(logits_at.is_empty());
        // Kept: each row that predicts a letter, and the one after the last letter; never
        // the rows that predict a timestamp.
        let pass = read_alignment_pass(3, &tokens, &[], positions(tokens.len()), 30, &s);
        assert_eq!(pass.text, [2, 2, 3, 3, 3, 1]);
        assert_eq!(pass.qk.tokens, 7);
        assert_eq!(pass.qk.data, [3.0, 4.0, 5.0, 6.0, 7.0, 10.0, 11.0]);
    }

    #[test]
    fn a_line_without_letters_is_fed_as_its_timestamps() {
        let (s, sot) = (special(), [11, 12, 14]);
        let spell: &Spell = &spell;
        // <|0.00|> 2 <|1.00|><|1.00|> 0 <|2.00|>: the second line has no letters.
        let decoded = [19, 2, 21, 21, 0, 23];
        let (tokens, _) = alignment_pass_for(&sot, &decoded, &s, Some(spell), 448).unwrap();
        assert_eq!(tokens, [11, 12, 14, 19, 2, 2, 21, 21, 23, 10]);
        let pass = read_alignment_pass(3, &tokens, &[], positions(tokens.len()), 30, &s);
        assert_eq!(pass.text, [2, 2]);
        // No line has letters: the untimed pass feeds the text as it is.
        let (tokens, _) = alignment_pass_for(&sot, &[19, 0, 21], &s, Some(spell), 448).unwrap();
        assert_eq!(tokens, [11, 12, 14, 18, 0, 10]);
    }

    #[test]
    fn without_timestamps_or_room_the_pass_follows_notimestamps() {
        let (s, sot) = (special(), [11, 12, 14]);
        let spell: &Spell = &spell;
        let untimed = [11, 12, 14, 18, 2, 2, 1, 10];
        let (tokens, _) = alignment_pass_for(&sot, &[2, 1], &s, Some(spell), 448).unwrap();
        assert_eq!(tokens, untimed);
        // Timed, it would take 9 tokens.
        let (tokens, _) = alignment_pass_for(&sot, &[19, 2, 1, 21], &s, Some(spell), 8).unwrap();
        assert_eq!(tokens, untimed);
        let pass = read_alignment_pass(3, &tokens, &[], positions(tokens.len()), 30, &s);
        assert_eq!(pass.qk.data, [3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            alignment_pass_for(&sot, &[19, 21], &s, Some(spell), 448),
            None
        );
    }
}
