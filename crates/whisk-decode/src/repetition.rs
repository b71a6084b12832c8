//! Repetition loops caught while they happen: a phrase said back to back again and again at
//! the end of a decode ("A- A- A- A-", "the redwoods are not the same the redwoods ..."), so
//! the decode can stop and fall back at once instead of running to the length limit.

/// Longest phrase, in text tokens, looked for.
const MAX_PHRASE: usize = 16;
/// Occurrences back to back that make a loop...
const MIN_OCCURRENCES: usize = 4;
/// ...and text tokens they must span at least, so that "no, no, no" is speech, not a loop.
const MIN_LOOP_TOKENS: usize = 16;

/// A phrase repeated back to back at the end of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repetition {
    /// Tokens in the phrase.
    pub phrase: usize,
    /// Times it occurs back to back.
    pub occurrences: usize,
    /// Text tokens up to the end of its first occurrence: what to keep of a loop.
    pub keep: usize,
}

/// The loop `text` (text tokens only, no timestamps) ends in, if any: the shortest phrase
/// that occurs [`MIN_OCCURRENCES`] times back to back at its end, spanning at least
/// [`MIN_LOOP_TOKENS`] tokens.
pub fn trailing_repetition(text: &[u32]) -> Option<Repetition> {
    let n = text.len();
    (1..=MAX_PHRASE.min(n / MIN_OCCURRENCES)).find_map(|phrase| {
        let last = &text[n - phrase..];
        let occurrences = 1
            + (1..n / phrase)
                .take_while(|&k| &text[n - (k + 1) * phrase..n - k * phrase] == last)
                .count();
        (occurrences >= MIN_OCCURRENCES && occurrences * phrase >= MIN_LOOP_TOKENS).then_some(
            Repetition {
                phrase,
                occurrences,
                keep: n - (occurrences - 1) * phrase,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_caught_and_speech_is_not() {
        // "A- A- A- ..." as two tokens a phrase: eight times is 16 tokens.
        let mut text = vec![5, 6, 7];
        text.extend([1, 2].repeat(7));
        assert_eq!(trailing_repetition(&text), None);
        text.extend([1, 2]);
        let r = trailing_repetition(&text).unwrap();
        assert_eq!((r.phrase, r.occurrences, r.keep), (2, 8, 5));
        assert_eq!(&text[..r.keep], [5, 6, 7, 1, 2]);
        // A six-token phrase four times.
        let mut text = vec![9];
        text.extend([1, 2, 3, 4, 5, 6].repeat(4));
        let r = trailing_repetition(&text).unwrap();
        assert_eq!((r.phrase, r.occurrences, r.keep), (6, 4, 7));
        // Three times, or a short word said over and over, is speech.
        assert_eq!(trailing_repetition(&[1, 2, 3, 4, 5, 6].repeat(3)), None);
        assert_eq!(trailing_repetition(&[3; 12]), None);
        // A loop not at the end is over: not caught.
        let mut text = [1, 2].repeat(10);
        text.extend([7, 8, 9]);
        assert_eq!(trailing_repetition(&text), None);
        assert_eq!(trailing_repetition(&[]), None);
        // The same token sixteen times is a loop too.
        assert_eq!(trailing_repetition(&[3; 16]).unwrap().keep, 1);
    }
}
