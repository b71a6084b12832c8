//! Beam search over one window, pinned to openai-whisper's `BeamSearchDecoder` and
//! `MaximumLikelihoodRanker`.
//!
//! Only the search lives here: which hypotheses survive a step and where each comes from. The
//! caller feeds the decoder, applies the logit rules to each hypothesis's own row, and moves
//! cache slots as [`BeamStep`] says, so a batch of windows each keeps its beams to itself.

use whisk_types::DecodeOptions;

use crate::stats::logsumexp;

/// Beam search settings (openai `DecodingOptions.beam_size/patience/length_penalty`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamOptions {
    /// Hypotheses kept per step.
    pub beam_size: usize,
    /// Finished hypotheses to collect before stopping, as a multiple of `beam_size`
    /// (openai's patience; 1.0 stops at `beam_size`).
    pub patience: f64,
    /// `None` ranks by log-probability over length; `Some(a)` uses Google NMT's penalty
    /// `((5 + length) / 6)^a`.
    pub length_penalty: Option<f64>,
}

impl BeamOptions {
    /// The beam search `options` ask for; `None` when they decode greedily.
    pub fn from_decode(options: &DecodeOptions) -> Option<Self> {
        let beam_size = options.beam_size.filter(|&b| b > 1)?;
        Some(Self {
            beam_size,
            patience: options.patience.unwrap_or(1.0),
            length_penalty: options.length_penalty,
        })
    }

    /// Finished hypotheses that end the search.
    pub fn max_candidates(&self) -> usize {
        ((self.beam_size as f64 * self.patience).round() as usize).max(1)
    }

    /// openai's `MaximumLikelihoodRanker` score of a finished hypothesis of `length` tokens
    /// (end-of-text excluded).
    pub fn score(&self, sum_logprob: f64, length: usize) -> f64 {
        let length = length as f64;
        let penalty = match self.length_penalty {
            None => length,
            Some(a) => ((5.0 + length) / 6.0).powf(a),
        };
        sum_logprob / penalty
    }
}

/// A hypothesis kept for the next step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Continuation {
    /// Index of the live hypothesis it extends.
    pub source: usize,
    pub token: u32,
    /// Log-probability of the whole hypothesis.
    pub sum_logprob: f64,
}

/// What one step of the search decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BeamStep {
    /// The next live hypotheses, likeliest first (at most `beam_size`).
    pub live: Vec<Continuation>,
    /// Hypotheses that ended with end-of-text in this step, likeliest first; `token` is
    /// end-of-text and `sum_logprob` includes it.
    pub finished: Vec<Continuation>,
}

/// One step: every live hypothesis `i` (log-probability so far `sum_logprobs[i]`) proposes
/// its `beam_size + 1` likeliest next tokens from `logits[i]` (rules already applied); the
/// `beam_size` likeliest proposals that do not end the text live on, and those that end it
/// before the beam is full are finished.
pub fn beam_step(sum_logprobs: &[f64], logits: &[&[f32]], beam_size: usize, eot: u32) -> BeamStep {
    let mut proposals: Vec<Continuation> = Vec::new();
    for (source, (&sum, row)) in sum_logprobs.iter().zip(logits).enumerate() {
        let lse = logsumexp(row);
        for token in top_k(row, beam_size + 1) {
            let logprob = row[token as usize] - lse;
            if logprob.is_finite() {
                proposals.push(Continuation {
                    source,
                    token,
                    sum_logprob: sum + logprob as f64,
                });
            }
        }
    }
    // Stable: equal scores keep hypothesis order, then token rank, as openai's dict does.
    proposals.sort_by(|a, b| b.sum_logprob.total_cmp(&a.sum_logprob));
    let mut step = BeamStep::default();
    for p in proposals {
        if step.live.len() == beam_size {
            break;
        }
        if p.token == eot {
            step.finished.push(p);
        } else {
            step.live.push(p);
        }
    }
    step
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &v) in row.iter().enumerate() {
        if best.len() == k && best.last().is_some_and(|&(w, _)| v <= w) {
            continue;
        }
        let at = best.partition_point(|&(w, _)| w >= v);
        best.insert(at, (v, i as u32));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// Index of the best of `finished` hypotheses, given as (sum log-probability, length), by
/// [`BeamOptions::score`]; the first wins ties.
pub fn best_hypothesis(options: &BeamOptions, finished: &[(f64, usize)]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &(sum, len)) in finished.iter().enumerate() {
        let s = options.score(sum, len);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOT: u32 = 3;

    fn logits(probs: &[f32]) -> Vec<f32> {
        probs.iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.3, 0.5, 0.0], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
    }

    #[test]
    fn first_step_keeps_the_likeliest_tokens_and_finishes_early_eot() {
        // One live hypothesis; beam 2 sees 3 proposals: 0 (0.5), eot (0.3), 1 (0.15).
        let row = logits(&[0.5, 0.15, 0.05, 0.3]);
        let step = beam_step(&[0.0], &[&row], 2, EOT);
        let live: Vec<(usize, u32)> = step.live.iter().map(|c| (c.source, c.token)).collect();
        assert_eq!(live, vec![(0, 0), (0, 1)]);
        assert_eq!(step.finished.len(), 1);
        assert_eq!(step.finished[0].token, EOT);
        assert!((step.finished[0].sum_logprob - 0.3f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn proposals_compete_across_hypotheses() {
        // Hypothesis 1 is less likely so far but very sure of its next token.
        let a = logits(&[0.4, 0.3, 0.2, 0.1]);
        let b = logits(&[0.01, 0.01, 0.97, 0.01]);
        let sums = [0.5f64.ln(), 0.4f64.ln()];
        let step = beam_step(&sums, &[&a, &b], 2, EOT);
        let live: Vec<(usize, u32)> = step.live.iter().map(|c| (c.source, c.token)).collect();
        // 0.4*0.97=0.388 > 0.5*0.4=0.2 > 0.5*0.3=0.15.
        assert_eq!(live, vec![(1, 2), (0, 0)]);
        assert!(step.finished.is_empty());
        let expected = (0.4f64 * 0.97).ln();
        assert!((step.live[0].sum_logprob - expected).abs() < 1e-6);
    }

    #[test]
    fn eot_after_the_beam_is_full_is_not_kept() {
        let row = logits(&[0.45, 0.45, 0.0001, 0.0999]);
        let step = beam_step(&[0.0], &[&row], 2, EOT);
        assert_eq!(step.live.len(), 2);
        assert!(step.finished.is_empty());
    }

    #[test]
    fn suppressed_tokens_are_never_proposed() {
        let row = [0.0, f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
        let step = beam_step(&[0.0], &[&row], 3, EOT);
        assert_eq!(step.live.len(), 1);
        assert_eq!(step.live[0].token, 0);
    }

    /// Brute force: over every 2-token continuation of a tiny model, the search with a beam
    /// as wide as the vocabulary keeps exactly the likeliest ones.
    #[test]
    fn a_full_width_beam_matches_exhaustive_search() {
        let first = logits(&[0.1, 0.2, 0.3, 0.4]);
        let second: Vec<Vec<f32>> = (0..3)
            .map(|t| {
                let mut p = [0.1f32, 0.2, 0.3, 0.4];
                p.rotate_left(t + 1);
                logits(&p)
            })
            .collect();
        let beam = 3;
        let s1 = beam_step(&[0.0], &[&first], beam, EOT);
        let sums: Vec<f64> = s1.live.iter().map(|c| c.sum_logprob).collect();
        let rows: Vec<&[f32]> = s1
            .live
            .iter()
            .map(|c| second[c.token as usize].as_slice())
            .collect();
        let s2 = beam_step(&sums, &rows, beam, EOT);
        let mut all: Vec<f64> = Vec::new();
        for t1 in 0..3u32 {
            for &l2 in &second[t1 as usize] {
                all.push(first[t1 as usize] as f64 + l2 as f64);
            }
        }
        all.sort_by(|a, b| b.total_cmp(a));
        let mut got: Vec<f64> = s2
            .live
            .iter()
            .chain(&s2.finished)
            .map(|c| c.sum_logprob)
            .collect();
        got.sort_by(|a, b| b.total_cmp(a));
        for (g, e) in got.iter().zip(&all) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {all:?}");
        }
    }

    #[test]
    fn ranking_divides_by_length_or_the_nmt_penalty() {
        let plain = BeamOptions {
            beam_size: 5,
            patience: 1.0,
            length_penalty: None,
        };
        // -3 over 3 tokens beats -2.5 over 2.
        assert_eq!(best_hypothesis(&plain, &[(-2.5, 2), (-3.0, 3)]), Some(1));
        let nmt = BeamOptions {
            length_penalty: Some(0.0),
            ..plain
        };
        // Penalty 1: raw log-probability.
        assert_eq!(best_hypothesis(&nmt, &[(-2.5, 2), (-3.0, 3)]), Some(0));
        assert_eq!(plain.max_candidates(), 5);
        assert_eq!(
            BeamOptions {
                patience: 2.0,
                ..plain
            }
            .max_candidates(),
            10
        );
        assert_eq!(best_hypothesis(&plain, &[]), None);
    }
}
