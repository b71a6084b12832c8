//! Cross-request batching. One thread owns the decoder: a request that arrives while others
//! are being decoded joins their batch at the next free slots (`Model::transcribe_arrivals`)
//! and is answered as soon as its own windows are done, so a short request never waits for a
//! long one to finish. A batch runs with one set of options; a request with other options
//! waits until the batch drains (no new requests join it meanwhile). With packing, short
//! requests waiting together share windows instead, as one `transcribe_many`.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use whisk::{Arrivals, Model, TranscribeOptions, Transcript};

type Reply = oneshot::Sender<whisk::Result<Transcript>>;

/// Requests one batch takes before it drains and a fresh one starts: a batch's bookkeeping
/// (a few words per request and per window, scanned every decoder step) is freed only when
/// it ends, and under steady load it might never be idle.
const REQUESTS_PER_BATCH: usize = 1024;

const IDLE_BEFORE_RETURNING_MEMORY: Duration = Duration::from_secs(1);

struct Job {
    samples: Arc<[f32]>,
    options: TranscribeOptions,
    reply: Reply,
}

/// The decoder's queue; a thread of its own works through it.
pub struct Batcher {
    jobs: Sender<Job>,
}

impl Batcher {
    /// Decodes up to `max_inputs` requests at once (1: one request at a time).
    pub fn start(model: Arc<Model>, max_inputs: usize) -> Self {
        let (jobs, queue) = channel();
        std::thread::Builder::new()
            .name("whisk-batcher".into())
            .spawn(move || work(&model, &queue, max_inputs.max(1)))
            .expect("a thread can be started");
        Batcher { jobs }
    }

    /// Transcribes `samples` in the running batch; `None` if the batcher has stopped.
    /// Dropping the future (a client that left, a timeout) takes the request out of the batch.
    pub async fn transcribe(
        &self,
        samples: Vec<f32>,
        options: TranscribeOptions,
    ) -> Option<whisk::Result<Transcript>> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            samples: samples.into(),
            options,
            reply,
        };
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }
}

fn work(model: &Model, queue: &Receiver<Job>, max_inputs: usize) {
    let mut deferred = VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(job) => job,
            None => match next_job(queue) {
                Some(job) => job,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let options = first.options.clone();
        if options.batch_size > 1 && !options.pack_short_inputs && options.vad.is_none() {
            let mut batch = Batch {
                queue,
                options: &options,
                first: Some(first),
                deferred: &mut deferred,
                inputs: Vec::new(),
                in_flight: 0,
                max_inputs,
            };
            if model.transcribe_arrivals(&mut batch, &options).is_err() {
                // Errors are not shared between requests: each is tried alone, to answer
                // its own.
                for (samples, reply) in batch.inputs.into_iter().flatten() {
                    let _ = reply.send(model.transcribe(&samples, &options));
                }
            }
        } else {
            let mut jobs = vec![first];
            while jobs.len() < max_inputs {
                match queue.try_recv() {
                    Ok(job) if job.options == options => jobs.push(job),
                    Ok(job) => deferred.push_back(job),
                    Err(_) => break,
                }
            }
            decode_together(model, &options, jobs);
        }
    }
}

/// The next request. After a second with none, the memory the last batch freed goes back to
/// the system, so an idle server does not keep the peak of its busiest burst; a client
/// sending requests one after another keeps it, as each would fault it in again.
fn next_job(queue: &Receiver<Job>) -> Option<Job> {
    match queue.recv_timeout(IDLE_BEFORE_RETURNING_MEMORY) {
        Ok(job) => Some(job),
        Err(RecvTimeoutError::Disconnected) => None,
        Err(RecvTimeoutError::Timeout) => {
            whisk::return_freed_memory();
            queue.recv().ok()
        }
    }
}

/// The requests of one running batch, as [`Arrivals`].
struct Batch<'q> {
    queue: &'q Receiver<Job>,
    options: &'q TranscribeOptions,
    first: Option<Job>,
    /// Requests with other options, for the batches after this one.
    deferred: &'q mut VecDeque<Job>,
    /// Each input's samples (to try it alone after an error) and where its answer goes;
    /// `None` once answered or abandoned.
    inputs: Vec<Option<(Arc<[f32]>, Reply)>>,
    in_flight: usize,
    max_inputs: usize,
}

impl Batch<'_> {
    fn take_waiting(&mut self) -> Option<Job> {
        // Once a request with other options waits, this batch takes no more: it drains.
        if self.in_flight >= self.max_inputs
            || !self.deferred.is_empty()
            || self.inputs.len() >= REQUESTS_PER_BATCH
        {
            return None;
        }
        loop {
            let job = self.queue.try_recv().ok()?;
            if job.reply.is_closed() {
                continue;
            }
            if job.options != *self.options {
                self.deferred.push_back(job);
                return None;
            }
            return Some(job);
        }
    }
}

impl Arrivals for Batch<'_> {
    fn next_input(&mut self, idle: bool) -> Option<Arc<[f32]>> {
        // An idle batch ends, so that its decoder's memory is freed while no one asks.
        let job = match self.first.take() {
            Some(job) => job,
            None if idle => return None,
            None => self.take_waiting()?,
        };
        self.in_flight += 1;
        let samples = job.samples.clone();
        self.inputs.push(Some((job.samples, job.reply)));
        Some(samples)
    }

    fn abandoned(&mut self, input: usize) -> bool {
        let gone = self.inputs[input]
            .as_ref()
            .is_some_and(|(_, reply)| reply.is_closed());
        if gone {
            self.inputs[input] = None;
            self.in_flight -= 1;
            eprintln!("whisk: a client left; its request's windows were dropped from the batch");
        }
        gone
    }

    fn finished(&mut self, input: usize, transcript: Transcript) {
        if let Some((_, reply)) = self.inputs[input].take() {
            self.in_flight -= 1;
            let _ = reply.send(Ok(transcript));
        }
    }
}

/// Packed requests: decoded together in one `transcribe_many`.
fn decode_together(model: &Model, options: &TranscribeOptions, jobs: Vec<Job>) {
    // A client that left (or timed out) frees its place before any work.
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    if jobs.is_empty() {
        return;
    }
    let inputs: Vec<&[f32]> = jobs.iter().map(|j| &j.samples[..]).collect();
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
