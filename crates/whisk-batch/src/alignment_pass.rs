//! openai's alignment pass: `sot_sequence, <|notimestamps|>, text, <|endoftext|>` fed through
//! the decoder at once, keeping the alignment heads' attention and each text token's
//! probability. Batched rows and the sequential pipeline both build and read it here.

use whisk_backend::CrossQk;
use whisk_decode::logsumexp;
use whisk_types::SpecialTokens;

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

/// Reads the pass's output: `logits` at the positions [`alignment_pass_input`] gave (none:
/// no probabilities), `qk` over every fed token; `sot_len` is the SOT sequence's length.
pub fn read_alignment_pass(
    sot_len: usize,
    text: Vec<u32>,
    logits: &[f32],
    mut qk: CrossQk,
    n_vocab: usize,
    special: &SpecialTokens,
) -> Refeed {
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
    let rows = text.len() + 1;
    let block = rows * qk.frames;
    for h in 0..qk.heads {
        let from = (h * qk.tokens + sot_len) * qk.frames;
        qk.data.copy_within(from..from + block, h * block);
    }
    qk.data.truncate(qk.heads * block);
    qk.tokens = rows;
    Refeed { text, qk, probs }
}
