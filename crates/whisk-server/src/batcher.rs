//! Cross-request batching: transcriptions that wait for the decoder are taken together, so
//! the windows of every request that arrived while the last batch ran share one decoder
//! batch; with packing, short requests also share windows (and encoder passes).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use tokio::sync::oneshot;
use whisk::{Model, TranscribeOptions, Transcript};

struct Job {
    samples: Vec<f32>,
    options: TranscribeOptions,
    reply: oneshot::Sender<whisk::Result<Transcript>>,
}

/// The decoder's queue; a thread of its own works through it.
pub struct Batcher {
    jobs: Sender<Job>,
}

impl Batcher {
    /// Takes up to `max_inputs` waiting requests per batch (1: one request at a time).
    pub fn start(model: Arc<Model>, max_inputs: usize) -> Self {
        let (jobs, queue) = channel();
        std::thread::Builder::new()
            .name("whisk-batcher".into())
            .spawn(move || work(&model, &queue, max_inputs.max(1)))
            .expect("a thread can be started");
        Batcher { jobs }
    }

    /// Transcribes `samples` in the next batch; `None` if the batcher has stopped.
    pub async fn transcribe(
        &self,
        samples: Vec<f32>,
        options: TranscribeOptions,
    ) -> Option<whisk::Result<Transcript>> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            samples,
            options,
            reply,
        };
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }
}

fn work(model: &Model, queue: &Receiver<Job>, max_inputs: usize) {
    while let Ok(first) = queue.recv() {
        let mut waiting = vec![first];
        while waiting.len() < max_inputs {
            match queue.try_recv() {
                Ok(job) => waiting.push(job),
                Err(_) => break,
            }
        }
        for (options, jobs) in by_options(waiting) {
            run(model, &options, jobs);
        }
    }
}

/// Jobs grouped by their options (one batch runs with one set), in arrival order.
fn by_options(jobs: Vec<Job>) -> Vec<(TranscribeOptions, Vec<Job>)> {
    let mut groups: Vec<(TranscribeOptions, Vec<Job>)> = Vec::new();
    for job in jobs {
        match groups
            .iter_mut()
            .find(|(options, _)| *options == job.options)
        {
            Some((_, group)) => group.push(job),
            None => groups.push((job.options.clone(), vec![job])),
        }
    }
    groups
}

fn run(model: &Model, options: &TranscribeOptions, jobs: Vec<Job>) {
    // A client that left (or timed out) frees its place before any work.
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    if jobs.is_empty() {
        return;
    }
    let inputs: Vec<&[f32]> = jobs.iter().map(|j| j.samples.as_slice()).collect();
    match model.transcribe_many(&inputs, options, &mut |_| {}) {
        Ok(transcripts) => {
            for (job, transcript) in jobs.into_iter().zip(transcripts) {
                let _ = job.reply.send(Ok(transcript));
            }
        }
        // Errors are not shared between requests: each is tried alone, to answer its own.
        Err(_) => {
            for job in jobs {
                let _ = job.reply.send(model.transcribe(&job.samples, options));
            }
        }
    }
}
