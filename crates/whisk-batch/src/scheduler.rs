//! Continuous batching: up to `capacity` rows in flight in one decoder; finished rows leave
//! and waiting windows take their slots.

use std::collections::VecDeque;
use std::sync::Arc;

use whisk_backend::{Backend, MelBatch};
use whisk_decode::LogitRules;
use whisk_types::{SpecialTokens, N_FRAMES};

use crate::row::{step_rows, Row, RowRequest, Shared, WindowResult};

/// A window waiting to be decoded. `K` is the caller's name for it.
pub struct Job<K> {
    pub key: K,
    /// `[n_mels, N_FRAMES]` log-mel. Jobs sharing one `Arc` (best-of candidates) are encoded
    /// once.
    pub mel: Arc<[f32]>,
    pub request: RowRequest,
}

/// What all rows of a scheduler share.
pub struct SchedulerConfig<'a> {
    /// Most rows in flight.
    pub capacity: usize,
    /// Most windows per encoder call. The encoder's attention over 1500 frames takes about
    /// 54 MB per window and layer (tiny), so on a CPU, where batching the encoder gains
    /// nothing, small encoder batches keep memory down; GPUs want them larger.
    pub encoder_batch: usize,
    pub rules: &'a LogitRules,
    pub special: &'a SpecialTokens,
    /// Alignment heads, for single-pass attention and for alignment passes.
    pub heads: &'a [(usize, usize)],
}

/// Decodes submitted windows, `capacity` at a time.
pub struct Scheduler<'a, B: Backend, K> {
    backend: &'a B,
    shared: Shared<'a>,
    decoder: B::Decoder,
    encoder_batch: usize,
    slots: Vec<Option<(K, Row)>>,
    waiting: VecDeque<Job<K>>,
}

impl<'a, B: Backend, K> Scheduler<'a, B, K> {
    pub fn new(backend: &'a B, config: SchedulerConfig<'a>) -> whisk_backend::Result<Self> {
        let capacity = config.capacity.max(1);
        let dims = backend.dims();
        Ok(Self {
            shared: Shared {
                rules: config.rules,
                special: config.special,
                heads: config.heads,
                n_vocab: dims.n_vocab,
                n_text_ctx: dims.n_text_ctx,
            },
            decoder: backend.new_decoder(capacity)?,
            encoder_batch: config.encoder_batch.max(1),
            slots: (0..capacity).map(|_| None).collect(),
            waiting: VecDeque::new(),
            backend,
        })
    }

    /// Queues a window; it joins when a slot is free.
    pub fn submit(&mut self, job: Job<K>) {
        self.waiting.push_back(job);
    }

    /// Rows being decoded now.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Windows queued but not yet admitted.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight() == 0
    }

    /// Admits waiting windows into free slots, feeds every row once, and returns the rows
    /// that finished, whose slots are free again.
    pub fn step(&mut self) -> whisk_backend::Result<Vec<(K, WindowResult)>> {
        self.admit()?;
        let mut rows: Vec<(usize, &mut Row)> = self
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(slot, s)| s.as_mut().map(|(_, row)| (slot, row)))
            .collect();
        if !rows.is_empty() {
            step_rows(self.backend, &mut self.decoder, &mut rows, &self.shared)?;
        }
        let mut finished = Vec::new();
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|(_, row)| row.is_done()) {
                let (key, row) = slot.take().expect("checked above");
                finished.push((key, row.into_result()));
            }
        }
        Ok(finished)
    }

    /// Steps until every submitted window is decoded; results in order of finishing.
    pub fn run(&mut self) -> whisk_backend::Result<Vec<(K, WindowResult)>> {
        let mut all = Vec::new();
        while !self.is_idle() {
            all.extend(self.step()?);
        }
        Ok(all)
    }

    /// Moves waiting jobs into free slots, encoding their windows in one batch.
    fn admit(&mut self) -> whisk_backend::Result<()> {
        let free: Vec<usize> = (0..self.slots.len())
            .filter(|&s| self.slots[s].is_none())
            .collect();
        // Take jobs in order while slots are free and their windows fit one encoder batch;
        // jobs sharing a window (best-of candidates) share its encoding.
        let mut mels: Vec<Arc<[f32]>> = Vec::new();
        let mut window_of: Vec<usize> = Vec::new();
        let mut jobs: Vec<Job<K>> = Vec::new();
        while jobs.len() < free.len() {
            let Some(job) = self.waiting.front() else {
                break;
            };
            let w = match mels.iter().position(|m| Arc::ptr_eq(m, &job.mel)) {
                Some(w) => w,
                None if mels.len() < self.encoder_batch => {
                    mels.push(job.mel.clone());
                    mels.len() - 1
                }
                None => break,
            };
            window_of.push(w);
            jobs.push(self.waiting.pop_front().expect("checked above"));
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let n_mels = self.backend.dims().n_mels;
        let data: Vec<f32> = mels.iter().flat_map(|m| m.iter().copied()).collect();
        let encoded = self.backend.encode(MelBatch {
            data: &data,
            windows: mels.len(),
            n_mels,
            frames: N_FRAMES,
        })?;
        let slots = &free[..jobs.len()];
        self.backend
            .attach(&mut self.decoder, slots, &encoded, &window_of)?;
        for (job, &slot) in jobs.into_iter().zip(slots) {
            self.slots[slot] = Some((job.key, Row::new(job.request, &self.shared)));
        }
        Ok(())
    }
}
