use std::io::Write;

use whisk_types::SpecialTokens;
use wide::f32x8;

/// `Σ e^(x - shift)`, for `shift >= max(x)`, eight lanes at a time: over the vocabulary
/// this is most of the per-token cost outside the model. Each lane sums a block of 32 terms
/// in `f32` (each at most 1, so the rounding stays near `f32`'s own); blocks add up in `f64`.
fn sum_exp(x: &[f32], shift: f32) -> f64 {
    let shift8 = f32x8::splat(shift);
    let mut total = 0f64;
    for block in x.chunks(32 * 8) {
        let chunks = block.chunks_exact(8);
        let rest = chunks.remainder();
        let mut lanes = f32x8::ZERO;
        for c in chunks {
            let c: [f32; 8] = c.try_into().expect("chunks of 8");
            lanes += (f32x8::from(c) - shift8).exp();
        }
        total += lanes.to_array().iter().map(|&l| l as f64).sum::<f64>()
            + rest
                .iter()
                .map(|&v| ((v - shift) as f64).exp())
                .sum::<f64>();
    }
    total
}

/// The largest entry (`-inf` for none).
fn max_of(x: &[f32]) -> f32 {
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    let mut lanes = f32x8::splat(f32::NEG_INFINITY);
    for c in chunks {
        let c: [f32; 8] = c.try_into().expect("chunks of 8");
        lanes = lanes.max(f32x8::from(c));
    }
    lanes
        .to_array()
        .iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `log Σ exp(x)` over the finite entries of `x`; `-inf` when there are none.
pub fn logsumexp(x: &[f32]) -> f32 {
    let max = max_of(x);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + sum_exp(x, max).ln() as f32
}

/// Log-probability of entry `i` under a softmax of `logits`.
pub fn log_softmax_at(logits: &[f32], i: usize) -> f32 {
    logits[i] - logsumexp(logits)
}

/// Greedy choice (temperature 0): the arg-max token and its log-probability.
pub fn greedy_pick(logits: &[f32]) -> (u32, f32) {
    let (best, _) = logits
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
        );
    (best as u32, log_softmax_at(logits, best))
}

/// Probability of each language given the logits at the `<|startoftranscript|>` position,
/// every other token masked out (openai `detect_language`).
pub fn language_probs(logits: &[f32], special: &SpecialTokens) -> Vec<f32> {
    let start = special.language_begin as usize;
    let langs = &logits[start..start + special.num_languages as usize];
    let lse = logsumexp(langs);
    langs.iter().map(|l| (l - lse).exp()).collect()
}

/// Text length over its zlib-compressed length; high values mean repetitive text
/// (openai `utils.compression_ratio`).
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes())
        .expect("writing to a Vec cannot fail");
    let compressed = enc.finish().expect("writing to a Vec cannot fail");
    text.len() as f64 / compressed.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logsumexp_matches_a_plain_sum() {
        let x: Vec<f32> = (0..51_865)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 20.0)
            .collect();
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let plain = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        assert!(plain.is_finite());
        assert!((logsumexp(&x) as f64 - plain).abs() < 1e-5);
    }

    #[test]
    fn logsumexp_is_stable_and_skips_neg_inf() {
        let x = [1000.0, 1000.0, f32::NEG_INFINITY];
        assert!((logsumexp(&x) - (1000.0 + 2f32.ln())).abs() < 1e-3);
        assert_eq!(logsumexp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
    }

    #[test]
    fn greedy_picks_argmax_with_its_logprob() {
        let (t, lp) = greedy_pick(&[0.0, 2.0, 1.0]);
        assert_eq!(t, 1);
        let expected = 2.0 - (1f32.exp() + 2f32.exp() + 1.0).ln();
        assert!((lp - expected).abs() < 1e-6);
    }

    #[test]
    fn repetitive_text_compresses_well() {
        let varied = "The quick brown fox jumps over the lazy dog.";
        let repeated = "la ".repeat(100);
        assert!(compression_ratio(&repeated) > 2.4);
        assert!(compression_ratio(varied) < 2.4);
    }
}

/// Draws a token from `softmax(logits / temperature)`; returns it with its log-probability
/// under the unscaled logits (what openai sums into `sum_logprobs`).
pub fn sample_pick(logits: &[f32], temperature: f32, rng: &mut impl rand::Rng) -> (u32, f32) {
    let max = max_of(logits);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - max) / temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    let mut chosen = weights.len() - 1;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 && u < *w {
            chosen = i;
            break;
        }
        u -= w;
    }
    // Never return a masked token, even through rounding at the end of the loop.
    if logits[chosen] == f32::NEG_INFINITY {
        return greedy_pick(logits);
    }
    (chosen as u32, log_softmax_at(logits, chosen))
}

#[cfg(test)]
mod sampling_tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn sampling_follows_the_distribution_and_skips_masked_tokens() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let logits = [0.0, (3.0f32).ln(), f32::NEG_INFINITY];
        let mut counts = [0usize; 3];
        for _ in 0..4000 {
            counts[sample_pick(&logits, 1.0, &mut rng).0 as usize] += 1;
        }
        assert_eq!(counts[2], 0);
        let share = counts[1] as f64 / 4000.0;
        assert!((share - 0.75).abs() < 0.03, "share {share}");
    }

    #[test]
    fn low_temperature_approaches_greedy() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let logits = [0.0, 1.0, 0.5];
        for _ in 0..100 {
            assert_eq!(sample_pick(&logits, 0.01, &mut rng).0, 1);
        }
    }
}
