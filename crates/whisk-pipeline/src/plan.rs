//! Where an input is cut into windows for batched decoding.

use whisk_types::{N_SAMPLES, SAMPLE_RATE, WINDOW_OVERLAP_SECONDS};

/// One window of an input: the samples it decodes and the stretch of time whose words it
/// contributes. Owned stretches of one input tile it without gaps or overlap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpan {
    /// Samples `[start, end)`, at most 30 s.
    pub start: usize,
    pub end: usize,
    /// Seconds `[own_start, own_end)` from the start of the input.
    pub own_start: f64,
    pub own_end: f64,
}

/// Cuts an input into windows decoded independently. Fixed 30 s windows now; a voice-activity
/// planner fits behind the same interface (its windows would own exactly what they cover).
pub trait WindowPlanner {
    fn plan(&self, samples: &[f32]) -> Vec<WindowSpan>;
}

/// 30 s windows overlapping by `overlap` samples; each owns up to the middle of its overlaps.
#[derive(Debug, Clone, Copy)]
pub struct FixedWindows {
    pub overlap: usize,
}

impl Default for FixedWindows {
    fn default() -> Self {
        Self {
            overlap: (WINDOW_OVERLAP_SECONDS * SAMPLE_RATE as f64) as usize,
        }
    }
}

impl WindowPlanner for FixedWindows {
    fn plan(&self, samples: &[f32]) -> Vec<WindowSpan> {
        let len = samples.len();
        let stride = N_SAMPLES - self.overlap.min(N_SAMPLES / 2);
        let mut starts = vec![0];
        while starts.last().expect("non-empty") + N_SAMPLES < len {
            starts.push(starts.last().expect("non-empty") + stride);
        }
        let seconds = |s: usize| s as f64 / SAMPLE_RATE as f64;
        let end_of = |start: usize| (start + N_SAMPLES).min(len);
        (0..starts.len())
            .filter(|_| len > 0)
            .map(|k| WindowSpan {
                start: starts[k],
                end: end_of(starts[k]),
                own_start: if k == 0 {
                    0.0
                } else {
                    seconds(starts[k] + end_of(starts[k - 1])) / 2.0
                },
                own_end: match starts.get(k + 1) {
                    Some(&next) => seconds(next + end_of(starts[k])) / 2.0,
                    None => seconds(len),
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tile_the_input() {
        let plan = FixedWindows::default();
        assert!(plan.plan(&[]).is_empty());
        let short = plan.plan(&vec![0.0; 5 * SAMPLE_RATE]);
        assert_eq!(short.len(), 1);
        assert_eq!((short[0].start, short[0].end), (0, 5 * SAMPLE_RATE));
        assert_eq!((short[0].own_start, short[0].own_end), (0.0, 5.0));

        let exactly = plan.plan(&vec![0.0; N_SAMPLES]);
        assert_eq!(exactly.len(), 1);

        let long = plan.plan(&vec![0.0; 75 * SAMPLE_RATE]);
        // 0-30, 26-56, 52-75.
        let spans: Vec<(usize, usize)> = long.iter().map(|w| (w.start, w.end)).collect();
        let s = SAMPLE_RATE;
        assert_eq!(spans, [(0, 30 * s), (26 * s, 56 * s), (52 * s, 75 * s)]);
        let owned: Vec<(f64, f64)> = long.iter().map(|w| (w.own_start, w.own_end)).collect();
        assert_eq!(owned, [(0.0, 28.0), (28.0, 54.0), (54.0, 75.0)]);
        for w in &long {
            assert!(w.end - w.start <= N_SAMPLES);
            assert!(w.own_start >= w.start as f64 / s as f64);
            assert!(w.own_end <= w.end as f64 / s as f64);
        }
    }
}
