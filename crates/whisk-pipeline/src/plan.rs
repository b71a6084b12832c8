//! Where an input is cut into windows for batched decoding.

use std::path::{Path, PathBuf};

use whisk_audio::{AudioStream, SampleSource};
use whisk_types::{N_SAMPLES, SAMPLE_RATE, WINDOW_OVERLAP_SECONDS};

use crate::Result;

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

impl FixedWindows {
    fn stride(&self) -> usize {
        N_SAMPLES - self.overlap.min(N_SAMPLES / 2)
    }

    /// Window `k` of an input of which the first `known` samples are read (`ended`: that is
    /// all of it), and whether it is the last. Unless `ended`, `known` must reach past the
    /// window's end, so that the next window's start is certain to exist.
    fn window(&self, k: usize, known: usize, ended: bool) -> (WindowSpan, bool) {
        let stride = self.stride();
        let seconds = |s: usize| s as f64 / SAMPLE_RATE as f64;
        let end_of = |start: usize| (start + N_SAMPLES).min(known);
        let start = k * stride;
        let last = ended && start + N_SAMPLES >= known;
        let span = WindowSpan {
            start,
            end: end_of(start),
            own_start: if k == 0 {
                0.0
            } else {
                seconds(start + end_of(start - stride)) / 2.0
            },
            own_end: if last {
                seconds(known)
            } else {
                seconds(start + stride + end_of(start)) / 2.0
            },
        };
        (span, last)
    }
}

impl WindowPlanner for FixedWindows {
    fn plan(&self, samples: &[f32]) -> Vec<WindowSpan> {
        let mut spans = Vec::new();
        if samples.is_empty() {
            return spans;
        }
        for k in 0.. {
            let (span, last) = self.window(k, samples.len(), true);
            spans.push(span);
            if last {
                break;
            }
        }
        spans
    }
}

/// One window handed out by a [`WindowSource`].
#[derive(Debug, Clone)]
pub struct Window {
    pub span: WindowSpan,
    /// The samples `span.start..span.end`.
    pub samples: Vec<f32>,
    /// No window of this input follows.
    pub last: bool,
}

/// The windows of one input, handed out in order as the batch has room for them, so that
/// only the windows in flight need to be in memory.
pub trait WindowSource {
    fn next_window(&mut self) -> Result<Option<Window>>;
    /// Seconds of audio the input holds, when known before reading it (for progress).
    fn seconds_hint(&self) -> Option<f64>;
    /// What went wrong with the input without stopping it (a damaged file read up to where
    /// decoding stopped), once its last window has been handed out.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Its words are needed after decoding (a window of packed inputs is cut between them
    /// by word times), so its windows are timed even without word timestamps asked for.
    fn needs_words(&self) -> bool {
        false
    }
}

/// Windows of samples already in memory (borrowed, or owned as `Arc<[f32]>`), by any plan
/// (clips included).
pub struct PlannedWindows<S> {
    samples: S,
    plan: Vec<WindowSpan>,
    next: usize,
}

impl<S: AsRef<[f32]>> PlannedWindows<S> {
    pub fn new(samples: S, plan: Vec<WindowSpan>) -> Self {
        Self {
            samples,
            plan,
            next: 0,
        }
    }
}

impl<S: AsRef<[f32]>> WindowSource for PlannedWindows<S> {
    fn next_window(&mut self) -> Result<Option<Window>> {
        let Some(&span) = self.plan.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        Ok(Some(Window {
            span,
            samples: self.samples.as_ref()[span.start..span.end].to_vec(),
            last: self.next == self.plan.len(),
        }))
    }

    fn seconds_hint(&self) -> Option<f64> {
        Some(self.plan.iter().map(|w| w.own_end - w.own_start).sum())
    }
}

/// [`FixedWindows`] over samples read as they are needed: the same windows as planning the
/// whole input, holding at most one window and a little more.
pub struct StreamedWindows<S> {
    source: S,
    planner: FixedWindows,
    /// Samples from `buf_start` on (earlier ones are no longer needed).
    buf: Vec<f32>,
    buf_start: usize,
    next: usize,
    ended: bool,
    done: bool,
    seconds: Option<f64>,
}

impl<S: SampleSource> StreamedWindows<S> {
    /// `seconds`: the input's length if known ahead (for progress).
    pub fn new(source: S, planner: FixedWindows, seconds: Option<f64>) -> Self {
        Self {
            source,
            planner,
            buf: Vec::new(),
            buf_start: 0,
            next: 0,
            ended: false,
            done: false,
            seconds,
        }
    }
}

impl<S: SampleSource> WindowSource for StreamedWindows<S> {
    fn next_window(&mut self) -> Result<Option<Window>> {
        if self.done {
            return Ok(None);
        }
        let start = self.next * self.planner.stride();
        // One sample past the window tells whether another follows.
        let needed = start + N_SAMPLES + 1;
        while !self.ended && self.buf_start + self.buf.len() < needed {
            let want = needed - self.buf_start - self.buf.len();
            if self.source.read(&mut self.buf, want)? == 0 {
                self.ended = true;
            }
        }
        let known = self.buf_start + self.buf.len();
        if known == 0 {
            self.done = true;
            return Ok(None);
        }
        let (span, last) = self.planner.window(self.next, known, self.ended);
        let samples = self.buf[span.start - self.buf_start..span.end - self.buf_start].to_vec();
        self.next += 1;
        self.done = last;
        let next_start = self.next * self.planner.stride();
        self.buf
            .drain(..(next_start - self.buf_start).min(self.buf.len()));
        self.buf_start = next_start;
        Ok(Some(Window {
            span,
            samples,
            last,
        }))
    }

    fn seconds_hint(&self) -> Option<f64> {
        self.seconds
    }
}

/// An audio file's [`StreamedWindows`], opened only when its first window is asked for (so
/// that many files in one batch do not all hold a decoder) and closed after its last.
pub struct FileWindows {
    path: PathBuf,
    planner: FixedWindows,
    seconds: Option<f64>,
    open: Option<StreamedWindows<AudioStream>>,
    finished: bool,
    warnings: Vec<String>,
}

impl FileWindows {
    /// Checks that `path` opens as audio (so a bad file fails before any work) and reads its
    /// length from the header.
    pub fn probe(path: &Path, planner: FixedWindows) -> Result<Self> {
        let seconds = AudioStream::open(path)?.duration_hint();
        Ok(Self {
            path: path.to_path_buf(),
            planner,
            seconds,
            open: None,
            finished: false,
            warnings: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl WindowSource for FileWindows {
    fn next_window(&mut self) -> Result<Option<Window>> {
        if self.finished {
            return Ok(None);
        }
        if self.open.is_none() {
            let stream = AudioStream::open(&self.path)?;
            self.open = Some(StreamedWindows::new(stream, self.planner, self.seconds));
        }
        let window = self.open.as_mut().expect("opened above").next_window()?;
        if window.as_ref().is_none_or(|w| w.last) {
            let stream = self.open.take().expect("opened above").source;
            self.warnings.extend(stream.damage().map(|d| d.to_string()));
            self.finished = true;
        }
        Ok(window)
    }

    fn seconds_hint(&self) -> Option<f64> {
        self.seconds
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
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

    /// Reads at most `chunk` samples a call, as a decoder hands out packets.
    struct Trickle<'a> {
        rest: &'a [f32],
        chunk: usize,
    }

    impl SampleSource for Trickle<'_> {
        fn read(&mut self, buf: &mut Vec<f32>, max: usize) -> whisk_audio::Result<usize> {
            let mut head: &[f32] = self.rest;
            let n = head.read(buf, max.min(self.chunk))?;
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    #[test]
    fn streamed_windows_are_the_planned_windows() {
        let planner = FixedWindows::default();
        let stride = planner.stride();
        let lengths = [
            0,
            1,
            N_SAMPLES - 1,
            N_SAMPLES,
            N_SAMPLES + 1,
            stride + N_SAMPLES,
            stride + N_SAMPLES + 1,
            5 * stride + 12_345,
        ];
        for len in lengths {
            let samples: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let plan = planner.plan(&samples);
            for chunk in [1000, 4096, N_SAMPLES + 7] {
                let source = Trickle {
                    rest: &samples,
                    chunk,
                };
                let mut streamed = StreamedWindows::new(source, planner, None);
                let mut windows = Vec::new();
                while let Some(w) = streamed.next_window().unwrap() {
                    windows.push(w);
                }
                assert!(streamed.next_window().unwrap().is_none());
                let spans: Vec<WindowSpan> = windows.iter().map(|w| w.span).collect();
                assert_eq!(spans, plan, "{len} samples read {chunk} at a time");
                for (k, w) in windows.iter().enumerate() {
                    assert_eq!(w.samples, &samples[w.span.start..w.span.end]);
                    assert_eq!(w.last, k + 1 == windows.len());
                }
                // Only about a window is ever held.
                assert!(streamed.buf.capacity() <= 3 * N_SAMPLES);
            }
            let mut planned = PlannedWindows::new(&samples, plan.clone());
            let mut spans = Vec::new();
            while let Some(w) = planned.next_window().unwrap() {
                assert_eq!(w.last, spans.len() + 1 == plan.len());
                spans.push(w.span);
            }
            assert_eq!(spans, plan);
        }
    }
}
