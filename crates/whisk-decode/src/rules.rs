use whisk_types::{DecodeOptions, SpecialTokens, TIME_PRECISION};

use crate::stats::logsumexp;

/// The logit filters of one decode, applied to one row at a time.
///
/// Order and behaviour follow openai-whisper: suppress blank at the first sampled position,
/// suppress the configured tokens, then the timestamp rules. State lives in the caller's token
/// history, so one `LogitRules` serves every row of a batch.
#[derive(Debug, Clone)]
pub struct LogitRules {
    special: SpecialTokens,
    /// Sorted ids set to `-inf` at every step.
    suppress: Vec<u32>,
    /// Ids set to `-inf` at the first sampled position (`" "` and end-of-text).
    blank: Vec<u32>,
    timestamps: bool,
    max_initial_timestamp_index: Option<u32>,
}

impl LogitRules {
    /// `non_speech` is the tokenizer's non-speech set (stands for `-1` in the options);
    /// `space` the encoding of `" "`.
    pub fn new(
        special: &SpecialTokens,
        options: &DecodeOptions,
        non_speech: &[u32],
        space: &[u32],
    ) -> Self {
        let mut suppress = Vec::new();
        for &t in &options.suppress_tokens {
            if t == -1 {
                suppress.extend_from_slice(non_speech);
            } else if t >= 0 {
                suppress.push(t as u32);
            }
        }
        // openai `_get_suppress_tokens`: control tokens are never sampled.
        suppress.extend([
            special.transcribe,
            special.translate,
            special.sot,
            special.sot_prev,
            special.sot_lm,
            special.no_speech,
        ]);
        suppress.sort_unstable();
        suppress.dedup();
        let mut blank = space.to_vec();
        blank.push(special.eot);
        Self {
            special: special.clone(),
            suppress,
            blank: if options.suppress_blank {
                blank
            } else {
                Vec::new()
            },
            timestamps: !options.without_timestamps,
            max_initial_timestamp_index: options
                .max_initial_timestamp
                .map(|s| (s / TIME_PRECISION).round() as u32),
        }
    }

    /// Ids suppressed at every step.
    pub fn suppressed(&self) -> &[u32] {
        &self.suppress
    }

    /// Filters one row of logits in place. `sampled` are the tokens this row has sampled since
    /// its SOT sequence (prompt excluded).
    pub fn apply(&self, sampled: &[u32], logits: &mut [f32]) {
        let ninf = f32::NEG_INFINITY;
        if sampled.is_empty() {
            for &t in &self.blank {
                logits[t as usize] = ninf;
            }
        }
        for &t in &self.suppress {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = ninf;
            }
        }
        if self.timestamps {
            self.apply_timestamp_rules(sampled, logits);
        }
    }

    /// Filters a `[rows, vocab]` block: row `r` with its own history `sampled[r]`. Rows share
    /// nothing, so the timestamp rule's log-sum-exp is taken over each row's vocabulary alone
    /// (a batch-wide one without a kept axis is a known bug elsewhere).
    pub fn apply_rows(&self, sampled: &[&[u32]], logits: &mut [f32]) {
        let vocab = logits.len() / sampled.len().max(1);
        for (history, row) in sampled.iter().zip(logits.chunks_mut(vocab)) {
            self.apply(history, row);
        }
    }

    /// openai `ApplyTimestampRules`, for one row.
    fn apply_timestamp_rules(&self, sampled: &[u32], logits: &mut [f32]) {
        let ninf = f32::NEG_INFINITY;
        let ts = self.special.timestamp_begin as usize;
        let eot = self.special.eot as usize;
        let is_ts = |t: u32| t as usize >= ts;
        logits[self.special.no_timestamps as usize] = ninf;

        // Timestamps come in pairs, except directly before end-of-text.
        let last_was_ts = sampled.last().is_some_and(|&t| is_ts(t));
        let penultimate_was_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        if last_was_ts {
            if penultimate_was_ts {
                logits[ts..].fill(ninf);
            } else {
                logits[..eot].fill(ninf);
            }
        }

        // Timestamps never decrease, and a segment has non-zero length.
        if let Some(&last_ts) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            let limit = if last_was_ts && !penultimate_was_ts {
                last_ts
            } else {
                last_ts + 1
            };
            let limit = (limit as usize).min(logits.len());
            logits[ts..limit].fill(ninf);
        }

        if sampled.is_empty() {
            // The first sampled token is a timestamp, no later than max_initial_timestamp.
            logits[..ts].fill(ninf);
            if let Some(max) = self.max_initial_timestamp_index {
                let last_allowed = ts + max as usize;
                if last_allowed + 1 < logits.len() {
                    logits[last_allowed + 1..].fill(ninf);
                }
            }
        }

        // If all timestamps together are likelier than any single text token, take a timestamp.
        // Both sides are log-probabilities of the same row, so the common normaliser cancels.
        let timestamp_mass = logsumexp(&logits[ts..]);
        let max_text = logits[..ts].iter().copied().fold(ninf, f32::max);
        if timestamp_mass > max_text {
            logits[..ts].fill(ninf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special() -> SpecialTokens {
        SpecialTokens::small_for_tests()
    }
    const VOCAB: usize = 30;

    fn rules(options: DecodeOptions) -> LogitRules {
        LogitRules::new(&special(), &options, &[3], &[4])
    }

    /// Tokens left sampleable. The language token (12) is left out: openai's rules never
    /// suppress language tokens either, the model just does not emit them mid-text.
    fn allowed(logits: &[f32]) -> Vec<usize> {
        (0..logits.len())
            .filter(|&i| i != 12 && logits[i] > f32::NEG_INFINITY)
            .collect()
    }

    #[test]
    fn first_step_allows_only_early_timestamps() {
        let opts = DecodeOptions {
            max_initial_timestamp: Some(0.06), // three steps of 20 ms
            ..DecodeOptions::default()
        };
        let mut logits = vec![0.0; VOCAB];
        rules(opts).apply(&[], &mut logits);
        assert_eq!(allowed(&logits), vec![19, 20, 21, 22]);
    }

    #[test]
    fn after_a_lone_timestamp_text_or_timestamp_may_follow_but_not_earlier_ones() {
        let mut logits = vec![0.0; VOCAB];
        // One timestamp sampled: penultimate counts as timestamp (len < 2), so text must follow.
        rules(DecodeOptions::default()).apply(&[22], &mut logits);
        let a = allowed(&logits);
        assert!(a.iter().all(|&t| t <= 10 && t != 3), "{a:?}");
    }

    #[test]
    fn text_then_timestamp_forces_closing_pair_or_eot() {
        let mut logits = vec![0.0; VOCAB];
        logits[10] = 5.0; // eot likelier than all timestamps together, so it stays allowed
                          // <|ts 3|> text <|ts 5|>: next is a timestamp >= 5 (the pair's opening) or eot.
        rules(DecodeOptions::default()).apply(&[22, 5, 24], &mut logits);
        assert_eq!(allowed(&logits), [vec![10], (24..30).collect()].concat());

        // With a flat distribution the timestamp mass wins and eot goes too.
        let mut logits = vec![0.0; VOCAB];
        rules(DecodeOptions::default()).apply(&[22, 5, 24], &mut logits);
        assert_eq!(allowed(&logits), (24..30).collect::<Vec<_>>());
    }

    #[test]
    fn after_a_pair_only_text_may_follow_and_later_timestamps_stay_monotonic() {
        let mut logits = vec![0.0; VOCAB];
        logits[25] = 1.0; // a text token that beats the timestamp mass keeps text allowed
        logits[5] = 10.0;
        rules(DecodeOptions::default()).apply(&[22, 5, 24, 24], &mut logits);
        // Pair closed: no timestamp right now.
        assert!(allowed(&logits).iter().all(|&t| t <= 10 && t != 3));

        let mut logits = vec![0.0; VOCAB];
        logits[5] = 10.0;
        rules(DecodeOptions::default()).apply(&[22, 5, 24, 24, 6], &mut logits);
        // After text, timestamps must be > 24 (strictly, to keep segments non-empty).
        let ts: Vec<usize> = allowed(&logits).into_iter().filter(|&t| t >= 19).collect();
        assert_eq!(ts, (25..30).collect::<Vec<_>>());
    }

    #[test]
    fn timestamp_mass_beats_best_text_token() {
        let mut logits = vec![f32::NEG_INFINITY; VOCAB];
        logits[5] = 0.0;
        // each alone loses, together they win: ln(11) - 1 > 0
        logits[19..30].fill(-1.0);
        rules(DecodeOptions::default()).apply(&[22, 5], &mut logits);
        assert!(allowed(&logits).iter().all(|&t| t >= 19));
    }

    #[test]
    fn a_block_of_rows_at_different_positions() {
        let r = rules(DecodeOptions::default());
        // Row 0: first step. Row 1: after text, timestamps jointly likelier than any text.
        // Row 2: after text, one text token dominates. Row 3: a closed timestamp pair.
        let histories: [&[u32]; 4] = [&[], &[22, 5], &[22, 5], &[22, 5, 24, 24]];
        let mut block = vec![0.0f32; 4 * VOCAB];
        for t in 19..30 {
            block[VOCAB + t] = -1.0;
        }
        block[VOCAB..VOCAB + 19]
            .iter_mut()
            .for_each(|l| *l = f32::NEG_INFINITY);
        block[VOCAB + 5] = 0.0;
        block[2 * VOCAB + 6] = 10.0;
        let mut expected = block.clone();
        for (i, h) in histories.iter().enumerate() {
            r.apply(h, &mut expected[i * VOCAB..(i + 1) * VOCAB]);
        }
        r.apply_rows(&histories, &mut block);
        assert_eq!(block, expected);
        let row = |i: usize| allowed(&block[i * VOCAB..(i + 1) * VOCAB]);
        assert!(row(0).iter().all(|&t| (19..=69).contains(&t)));
        // Row 1's timestamp mass wins: only timestamps after 22 remain.
        assert_eq!(row(1), (23..30).collect::<Vec<_>>());
        // Row 2 keeps text: its strong text token beats the timestamp mass.
        assert!(row(2).contains(&6) && row(2).contains(&23));
        // Row 3 just closed a pair: text (or end) only.
        assert!(row(3).iter().all(|&t| t <= 10));
    }

    #[test]
    fn suppression_and_blank() {
        let mut logits = vec![0.0; VOCAB];
        let opts = DecodeOptions {
            without_timestamps: true,
            suppress_tokens: vec![-1, 7],
            ..DecodeOptions::default()
        };
        rules(opts.clone()).apply(&[], &mut logits);
        // 3 (non-speech), 7 (listed), 4 (blank), 10 (eot at start) and control tokens suppressed.
        let a = allowed(&logits);
        for t in [3, 4, 7, 10, 11, 13, 14, 15, 16, 17] {
            assert!(!a.contains(&t), "{t} allowed");
        }
        assert!(a.contains(&0) && a.contains(&20));
        // Later steps: blank and eot allowed again.
        let mut logits = vec![0.0; VOCAB];
        rules(opts).apply(&[5], &mut logits);
        let a = allowed(&logits);
        assert!(a.contains(&4) && a.contains(&10));
    }
}
