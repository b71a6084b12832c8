//! Word error rate: Levenshtein distance over words, summed over a corpus (as jiwer does for
//! lists of sentences).

/// Edits needed to turn `hyp` into `reference` (substitutions + deletions + insertions).
pub fn word_errors(reference: &[&str], hyp: &[&str]) -> usize {
    let mut prev: Vec<usize> = (0..=hyp.len()).collect();
    let mut cur = vec![0; hyp.len() + 1];
    for (i, r) in reference.iter().enumerate() {
        cur[0] = i + 1;
        for (j, h) in hyp.iter().enumerate() {
            let sub = prev[j] + usize::from(r != h);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[hyp.len()]
}

/// Running totals over a corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WerTotals {
    pub errors: usize,
    pub reference_words: usize,
}

impl WerTotals {
    /// Adds one utterance (already normalised, whitespace-separated).
    pub fn add(&mut self, reference: &str, hyp: &str) {
        let r: Vec<&str> = reference.split_whitespace().collect();
        let h: Vec<&str> = hyp.split_whitespace().collect();
        self.errors += word_errors(&r, &h);
        self.reference_words += r.len();
    }

    pub fn wer(&self) -> f64 {
        if self.reference_words == 0 {
            0.0
        } else {
            self.errors as f64 / self.reference_words as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_cases() {
        assert_eq!(word_errors(&["a", "b", "c"], &["a", "b", "c"]), 0);
        assert_eq!(word_errors(&["a", "b", "c"], &["a", "x", "c"]), 1);
        assert_eq!(word_errors(&["a", "b", "c"], &["a", "c"]), 1);
        assert_eq!(word_errors(&["a", "b"], &["a", "b", "c", "d"]), 2);
        assert_eq!(word_errors(&[], &["a"]), 1);
        assert_eq!(word_errors(&["a"], &[]), 1);
    }

    #[test]
    fn corpus_wer_sums_edits() {
        let mut t = WerTotals::default();
        t.add("the cat sat", "the cat sat");
        t.add("on the mat", "on a mat");
        assert_eq!(t.errors, 1);
        assert!((t.wer() - 1.0 / 6.0).abs() < 1e-12);
    }
}
