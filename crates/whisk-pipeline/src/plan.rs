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

/// `planner`'s windows inside each clip `[start, end)` (samples) of `samples` only: each clip
/// is planned on its own, so its windows own exactly the clip and hear nothing outside it.
pub fn plan_clips(
    planner: &dyn WindowPlanner,
    samples: &[f32],
    clips: &[(usize, usize)],
) -> Vec<WindowSpan> {
    let seconds = |s: usize| s as f64 / SAMPLE_RATE as f64;
    clips
        .iter()
        .filter(|(start, end)| start < end && *end <= samples.len())
        .flat_map(|&(start, end)| {
            planner
                .plan(&samples[start..end])
                .into_iter()
                .map(move |w| WindowSpan {
                    start: w.start + start,
                    end: w.end + start,
                    own_start: w.own_start + seconds(start),
                    own_end: w.own_end + seconds(start),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_are_planned_alone_and_own_only_themselves() {
        let samples = vec![0.0; 100 * SAMPLE_RATE];
        let planner = FixedWindows::default();
        let clips = [
            (10 * SAMPLE_RATE, 20 * SAMPLE_RATE),
            (40 * SAMPLE_RATE, 100 * SAMPLE_RATE),
        ];
        let plan = plan_clips(&planner, &samples, &clips);
        // One window for the 10 s clip, three (30 s, stride 26 s) for the 60 s one.
        assert_eq!(plan.len(), 4);
        assert_eq!((plan[0].start, plan[0].end), clips[0]);
        assert_eq!((plan[0].own_start, plan[0].own_end), (10.0, 20.0));
        assert_eq!(plan[1].start, clips[1].0);
        assert_eq!(plan[1].own_start, 40.0);
        assert_eq!(plan[3].end, clips[1].1);
        assert_eq!(plan[3].own_end, 100.0);
        for w in plan.windows(2).skip(1) {
            assert_eq!(w[0].own_end, w[1].own_start);
        }
        // The whole input as one clip is the plain plan.
        assert_eq!(
            plan_clips(&planner, &samples, &[(0, samples.len())]),
            planner.plan(&samples)
        );
        assert!(plan_clips(&planner, &samples, &[(5, 5)]).is_empty());
    }

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
