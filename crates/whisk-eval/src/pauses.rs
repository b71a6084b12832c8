//! Real speech with controlled pauses: a TIMIT utterance cut at its labelled word boundaries,
//! silence or faint noise put into some of the cuts, and the labels after each cut moved by
//! the pause before them, so the hand labels stay exact. Word timing after pauses and before
//! them is measured on these, beside plain TIMIT; and on the utterances joined into one long
//! recording, the same way.

use crate::timing::TimedWord;

/// Pause lengths drawn from, in seconds: from a hesitation to a dictation gap.
pub const PAUSE_LENGTHS: [f64; 6] = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5];

/// Standard deviation of the faint noise some pauses hold (about -50 dBFS, as the bench's
/// pause set).
const NOISE_LEVEL: f32 = 0.003;

const SAMPLE_RATE: f64 = 16_000.0;

/// One utterance with pauses put in: its samples and its moved labels.
#[derive(Debug, Clone)]
pub struct PausedUtterance {
    pub samples: Vec<f32>,
    pub labels: Vec<TimedWord>,
}

/// splitmix64: a seeded generator, so the set is the same on every machine.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `samples` with a pause put into about half of the boundaries between labelled words.
/// A boundary is cut in the middle of the labelled gap between the two words (at the
/// boundary itself where they touch); the pause is digital silence or faint noise, its
/// length one of [`PAUSE_LENGTHS`]. `seed` picks the boundaries, lengths and noise.
pub fn insert_pauses(samples: &[f32], labels: &[TimedWord], seed: u64) -> PausedUtterance {
    let mut draw = Draw(seed);
    let mut out = Vec::with_capacity(samples.len() + labels.len() * 8000);
    let mut moved = Vec::with_capacity(labels.len());
    let (mut copied, mut shift) = (0usize, 0.0f64);
    for (i, word) in labels.iter().enumerate() {
        moved.push(TimedWord {
            start: word.start + shift,
            end: word.end + shift,
            word: word.word.clone(),
        });
        let Some(next) = labels.get(i + 1) else {
            break;
        };
        if draw.unit() < 0.5 {
            continue;
        }
        let cut_at = 0.5 * (word.end + next.start.max(word.end));
        let cut = ((cut_at * SAMPLE_RATE).round() as usize).clamp(copied, samples.len());
        out.extend_from_slice(&samples[copied..cut]);
        copied = cut;
        let length = PAUSE_LENGTHS[draw.below(PAUSE_LENGTHS.len())];
        let n = (length * SAMPLE_RATE).round() as usize;
        let noisy = draw.unit() < 0.5;
        out.extend((0..n).map(|_| {
            if noisy {
                NOISE_LEVEL * draw.normal() as f32
            } else {
                0.0
            }
        }));
        shift += n as f64 / SAMPLE_RATE;
    }
    out.extend_from_slice(&samples[copied..]);
    PausedUtterance {
        samples: out,
        labels: moved,
    }
}

/// Gaps between utterances joined into one recording, in seconds: a breath to a long pause,
/// as in the bench's pause set.
pub const JOIN_GAPS: [f64; 5] = [0.3, 0.6, 1.0, 1.5, 2.5];

/// `utterances` (samples and labels) joined into one recording, each after a gap of one of
/// [`JOIN_GAPS`] (digital silence or faint noise, drawn with `seed`), their labels moved to
/// where they now lie: long-form transcription, batched or sequential, timed against exact
/// labels.
pub fn join_utterances(utterances: &[(&[f32], &[TimedWord])], seed: u64) -> PausedUtterance {
    let mut draw = Draw(seed);
    let mut joined = PausedUtterance {
        samples: Vec::new(),
        labels: Vec::new(),
    };
    for (samples, labels) in utterances {
        let n = (JOIN_GAPS[draw.below(JOIN_GAPS.len())] * SAMPLE_RATE).round() as usize;
        let noisy = draw.unit() < 0.5;
        joined.samples.extend((0..n).map(|_| match noisy {
            true => NOISE_LEVEL * draw.normal() as f32,
            false => 0.0,
        }));
        let offset = joined.samples.len() as f64 / SAMPLE_RATE;
        joined.samples.extend_from_slice(samples);
        joined.labels.extend(labels.iter().map(|w| TimedWord {
            start: w.start + offset,
            end: w.end + offset,
            word: w.word.clone(),
        }));
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tw(word: &str, start: f64, end: f64) -> TimedWord {
        TimedWord {
            start,
            end,
            word: word.into(),
        }
    }

    #[test]
    fn labels_move_with_the_audio_they_label() {
        // Each word a distinct constant level, so where it landed can be read back.
        let labels = [
            tw("a", 0.1, 0.4),
            tw("b", 0.4, 0.7),
            tw("c", 0.75, 1.0),
            tw("d", 1.0, 1.3),
        ];
        let mut samples = vec![0.9f32; 22_400];
        for (k, w) in labels.iter().enumerate() {
            let (s, e) = (
                (w.start * SAMPLE_RATE) as usize,
                (w.end * SAMPLE_RATE) as usize,
            );
            samples[s..e].fill(0.1 * (k + 1) as f32);
        }
        let mut pauses_seen = 0;
        for seed in 0..20 {
            let paused = insert_pauses(&samples, &labels, seed);
            let added = paused.samples.len() - samples.len();
            let last_moved = paused.labels[3].end - labels[3].end;
            assert!(
                (added as f64 / SAMPLE_RATE - last_moved).abs() < 1e-9,
                "the last label moved by all the pauses"
            );
            for (k, w) in paused.labels.iter().enumerate() {
                // 10 ms inside each moved word, its own level.
                let s = ((w.start + 0.01) * SAMPLE_RATE) as usize;
                let e = ((w.end - 0.01) * SAMPLE_RATE) as usize;
                let level = 0.1 * (k + 1) as f32;
                assert!(
                    paused.samples[s..e].iter().all(|&x| x == level),
                    "seed {seed}"
                );
            }
            let gap = |l: &[TimedWord], k: usize| l[k + 1].start - l[k].end;
            pauses_seen += (0..3)
                .filter(|&k| gap(&paused.labels, k) - gap(&labels, k) >= 0.05 - 1e-9)
                .count();
        }
        // 60 boundaries in all: about half get a pause.
        assert!((20..=40).contains(&pauses_seen), "{pauses_seen} pauses");
    }

    #[test]
    fn joined_utterances_keep_their_labels_on_their_own_audio() {
        let one = vec![0.5f32; 16_000];
        let two = vec![0.7f32; 8_000];
        let labels_one = [tw("a", 0.2, 0.8)];
        let labels_two = [tw("b", 0.1, 0.4)];
        let joined = join_utterances(&[(&one, &labels_one), (&two, &labels_two)], 3);
        assert_eq!(joined.labels.len(), 2);
        for (w, level) in joined.labels.iter().zip([0.5, 0.7]) {
            let s = ((w.start + 0.01) * SAMPLE_RATE) as usize;
            let e = ((w.end - 0.01) * SAMPLE_RATE) as usize;
            assert!(joined.samples[s..e].iter().all(|&x| x == level), "{w:?}");
        }
        // Each utterance after a gap of one of the lengths allowed.
        let gap_before_two = joined.labels[1].start - 0.1 - (joined.labels[0].start - 0.2 + 1.0);
        assert!(
            JOIN_GAPS.iter().any(|g| (g - gap_before_two).abs() < 1e-6),
            "{gap_before_two}"
        );
        let ends_at = joined.labels[1].start - 0.1 + 0.5;
        assert!((joined.samples.len() as f64 / SAMPLE_RATE - ends_at).abs() < 1e-6);
    }
}
