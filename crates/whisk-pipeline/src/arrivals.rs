//! Inputs that arrive while a batched transcription runs (a server's requests): each joins
//! the decoder batch as soon as a slot is free, and is answered as soon as its own windows
//! are final, never after the others'.

use std::sync::Arc;

use whisk_backend::Backend;
use whisk_types::{TranscribeOptions, Transcript, SAMPLE_RATE};

use crate::batched::SourceFeed;
use crate::pack::tidy;
use crate::plan::{plan_clips, FixedWindows, PlannedWindows, WindowSource};
use crate::{clip_ranges, Pipeline, Result};

/// Where the inputs of [`Pipeline::transcribe_arrivals`] come from and their transcripts go.
/// Inputs are numbered from 0 in the order `next_input` hands them out.
pub trait Arrivals {
    /// The next input (16 kHz mono samples), if one has arrived. `idle`: nothing is left
    /// to decode, so `None` ends the run.
    fn next_input(&mut self, idle: bool) -> Option<Arc<[f32]>>;
    /// Whether input `input`'s caller has gone: its windows are dropped from the batch, and
    /// it gets no transcript.
    fn abandoned(&mut self, input: usize) -> bool;
    /// Input `input`'s transcript, as soon as its last window is final.
    fn finished(&mut self, input: usize, transcript: Transcript);
}

impl<B: Backend> Pipeline<B> {
    /// Batched transcription of inputs that arrive while it runs: each new input's windows
    /// take the next free slots (before more windows of inputs already in the batch), and
    /// each transcript is handed over once its own windows are done. Every input gets the
    /// transcript [`Self::transcribe_batch`] gives it without packing. Returns when
    /// `arrivals` has nothing more while the batch is idle.
    pub fn transcribe_arrivals(
        &self,
        arrivals: &mut dyn Arrivals,
        options: &TranscribeOptions,
    ) -> Result<()> {
        let mut feed = Feed { arrivals, options };
        self.run_windows(&mut feed, options, &mut |_| {})
    }
}

struct Feed<'f> {
    arrivals: &'f mut dyn Arrivals,
    options: &'f TranscribeOptions,
}

impl<'a> SourceFeed<'a> for Feed<'_> {
    fn next_source(&mut self, hungry: bool, idle: bool) -> Option<Box<dyn WindowSource + 'a>> {
        let samples = self.arrivals.next_input(hungry && idle)?;
        let clips: Vec<(usize, usize)> =
            clip_ranges(&self.options.clip_timestamps, samples.len(), SAMPLE_RATE)
                .into_iter()
                .filter(|&(a, b)| a < b && b <= samples.len())
                .collect();
        let plan = plan_clips(&FixedWindows::default(), &samples, &clips);
        Some(Box::new(PlannedWindows::new(samples, plan)))
    }

    fn abandoned(&mut self, input: usize) -> bool {
        self.arrivals.abandoned(input)
    }

    fn finished(&mut self, input: usize, transcript: Transcript) {
        self.arrivals
            .finished(input, tidy(transcript, self.options));
    }
}
