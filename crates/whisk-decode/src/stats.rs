use std::io::Write;

use whisk_types::lanes::{exp, fold_lanes};
use whisk_types::widest_lanes;
use whisk_types::SpecialTokens;

widest_lanes!(sum_exp => sum_exp_lanes(x: &[f32], shift: f32) -> f64);
widest_lanes!(max_of => max_lanes(x: &[f32]) -> f32);
widest_lanes!(exp_scaled => exp_scaled_lanes(x: &[f32], shift: f32, temperature: f32, out: &mut [f32]));
widest_lanes!(block_sums => block_sums_lanes(x: &[f32], out: &mut Vec<f64>));

const LANES: usize = 8;
/// Terms summed in `f32` before the sum goes on in `f64`: 32 per lane, each at most 1, so
/// the rounding stays near `f32`'s own.
const BLOCK: usize = 32 * LANES;

/// `Σ e^(x - shift)`, for `shift >= max(x)`: over the vocabulary this is most of the
/// per-token cost outside the model.
#[inline(always)]
fn sum_exp_lanes(x: &[f32], shift: f32) -> f64 {
    // The exponentials go through a buffer: a loop that stores them vectorises, where one
    // that adds them into eight lanes stayed scalar.
    let mut buf = [0f32; BLOCK];
    let mut total = 0f64;
    for block in x.chunks(BLOCK) {
        let buf = &mut buf[..block.len()];
        for (b, &v) in buf.iter_mut().zip(block) {
            *b = exp(v - shift);
        }
        total += sum_block(buf);
    }
    total
}

/// The sum of up to a [`BLOCK`] of values, in eight `f32` lanes, then in `f64`.
#[inline(always)]
fn sum_block(x: &[f32]) -> f64 {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    let mut sum = 0f64;
    for &l in lanes.iter().chain(rest) {
        sum += f64::from(l);
    }
    sum
}

/// The largest entry (`-inf` for none).
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    // A compare and select, which vectorises (`f32::max` minds NaN and does not).
    fold_lanes(x, f32::NEG_INFINITY, |a, b| if b > a { b } else { a })
}

/// `out[i] = e^((x[i] - shift) / temperature)`.
#[inline(always)]
fn exp_scaled_lanes(x: &[f32], shift: f32, temperature: f32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp((v - shift) / temperature);
    }
}

/// The sum of each [`BLOCK`] of `x`, appended to `out`.
#[inline(always)]
fn block_sums_lanes(x: &[f32], out: &mut Vec<f64>) {
    for block in x.chunks(BLOCK) {
        out.push(sum_block(block));
    }
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
    let mut weights = vec![0f32; logits.len()];
    exp_scaled(logits, max, temperature, &mut weights);
    let mut sums = Vec::with_capacity(logits.len().div_ceil(BLOCK));
    block_sums(&weights, &mut sums);
    let mut u = rng.random::<f64>() * sums.iter().sum::<f64>();
    let mut chosen = weights.len() - 1;
    // The block the draw falls in, by the blocks' sums; then the token within it.
    'blocks: for (b, &sum) in sums.iter().enumerate() {
        if u >= sum {
            u -= sum;
            continue;
        }
        for (i, &w) in weights.iter().enumerate().skip(b * BLOCK).take(BLOCK) {
            let w = f64::from(w);
            if w > 0.0 && u < w {
                chosen = i;
                break 'blocks;
            }
            u -= w;
        }
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
    fn sampling_finds_tokens_across_blocks_of_the_vocabulary() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut logits = vec![f32::NEG_INFINITY; 1_000];
        // Shares 0.2, 0.3 and 0.5, in the first, second and last block (256 apiece).
        for (i, p) in [(5, 0.2f32), (300, 0.3), (999, 0.5)] {
            logits[i] = p.ln();
        }
        let mut counts = std::collections::HashMap::new();
        for _ in 0..6000 {
            *counts
                .entry(sample_pick(&logits, 1.0, &mut rng).0)
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        for (i, p) in [(5, 0.2), (300, 0.3), (999, 0.5)] {
            let share = counts[&i] as f64 / 6000.0;
            assert!((share - p).abs() < 0.03, "token {i}: share {share}");
        }
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
