//! Continuous batching: rows in flight in the slots of one decoder (one slot each, one per
//! hypothesis for a beam search); finished rows leave and waiting windows take their slots.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use whisk_backend::{Backend, BackendError, MelBatch};
use whisk_decode::LogitRules;
use whisk_types::{SpecialTokens, N_FRAMES};

use crate::row::{step_rows, Repetitive, Row, RowRequest, Shared, Spell, WindowResult};

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
    /// Decoder slots: rows in flight, a beam-search row taking one slot per beam.
    pub capacity: usize,
    /// Most windows per encoder call. The encoder's attention over 1500 frames takes about
    /// 54 MB per window and layer (tiny), so on a CPU, where batching the encoder gains
    /// nothing, small encoder batches keep memory down; GPUs want them larger.
    pub encoder_batch: usize,
    pub rules: &'a LogitRules,
    pub special: &'a SpecialTokens,
    /// Heads whose attention alignment passes keep.
    pub heads: &'a [(usize, usize)],
    /// Those of `heads` whose attention sampling rows keep, for single-pass word timing.
    pub sampled_heads: &'a [(usize, usize)],
    /// How alignment passes write the text; `None` feeds the text tokens (openai's pass).
    pub spell: Option<&'a Spell<'a>>,
    /// Stops a row once its text is this; `None` stops at loops only.
    pub repetitive: Option<&'a Repetitive<'a>>,
}

/// Where an admitted row's first slot gets its window's cross-attention K/V.
enum CrossSource {
    /// The slot still holds them from an earlier row of the same window.
    Held,
    /// Another slot holds them: copying is cheaper than computing them.
    Copy(usize),
    /// Computed from the window's encoding.
    Attach,
}

/// A window's mel, the encoder batch it went through, and its index there.
type EncodedWindow<B> = (Arc<[f32]>, Rc<<B as Backend>::Encoded>, usize);

/// Decodes submitted windows, `capacity` at a time.
pub struct Scheduler<'a, B: Backend, K> {
    backend: &'a B,
    shared: Shared<'a>,
    decoder: B::Decoder,
    encoder_batch: usize,
    /// Encoded windows (mel, encoder batch, index in it) that rows in flight or waiting
    /// windows decode, newest last: a window queued again (temperature fallback, alignment
    /// pass) is queued as its row finishes, so it is not encoded twice.
    encoded: VecDeque<EncodedWindow<B>>,
    /// Rows in flight, in order of admission, with their window's mel.
    rows: Vec<(K, Row, Arc<[f32]>)>,
    /// Whether each decoder slot is free.
    free: Vec<bool>,
    /// The window whose cross K/V each slot holds, as far as admissions know (a row's first
    /// slot), kept while a row or a waiting job still reads it: a fallback or alignment pass
    /// of a finished row reuses it instead of computing it again.
    holds: Vec<Option<Arc<[f32]>>>,
    /// Whether each slot may hold something in the decoder (a row used it since it was last
    /// released).
    loaded: Vec<bool>,
    waiting: VecDeque<Job<K>>,
}

impl<'a, B: Backend, K> Scheduler<'a, B, K> {
    pub fn new(backend: &'a B, config: SchedulerConfig<'a>) -> whisk_backend::Result<Self> {
        let capacity = config.capacity.max(1);
        let dims = backend.dims();
        debug_assert!(
            config
                .sampled_heads
                .iter()
                .all(|h| config.heads.contains(h)),
            "the sampled heads are some of the heads"
        );
        Ok(Self {
            shared: Shared {
                rules: config.rules,
                special: config.special,
                heads: config.heads,
                sampled_heads: config.sampled_heads,
                spell: config.spell,
                repetitive: config.repetitive,
                n_vocab: dims.n_vocab,
                n_text_ctx: dims.n_text_ctx,
            },
            decoder: backend.new_decoder(capacity)?,
            encoder_batch: config.encoder_batch.max(1),
            encoded: VecDeque::new(),
            rows: Vec::new(),
            free: vec![true; capacity],
            holds: vec![None; capacity],
            loaded: vec![false; capacity],
            waiting: VecDeque::new(),
            backend,
        })
    }

    /// Keeps a window's encoding made elsewhere (for language detection), so that a job for
    /// `mel` submitted next is not encoded again.
    pub fn add_encoded(&mut self, mel: Arc<[f32]>, encoded: B::Encoded) {
        self.encoded.push_back((mel, Rc::new(encoded), 0));
    }

    /// Queues a window; it joins when a slot is free.
    pub fn submit(&mut self, job: Job<K>) {
        self.waiting.push_back(job);
    }

    /// Queues a window ahead of those waiting (one whose caller should not wait for them).
    pub fn submit_first(&mut self, job: Job<K>) {
        self.waiting.push_front(job);
    }

    /// Drops the waiting windows and the rows in flight that `cancelled` names (their
    /// callers have gone), freeing their slots.
    pub fn cancel(&mut self, cancelled: impl Fn(&K) -> bool) {
        self.waiting.retain(|job| !cancelled(&job.key));
        let free = &mut self.free;
        self.rows.retain(|(key, row, _)| {
            let keep = !cancelled(key);
            if !keep {
                for &slot in row.slots() {
                    free[slot] = true;
                }
            }
            keep
        });
    }

    /// Rows being decoded now.
    pub fn in_flight(&self) -> usize {
        self.rows.len()
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
        let mut rows: Vec<&mut Row> = self.rows.iter_mut().map(|(_, row, _)| row).collect();
        if !rows.is_empty() {
            step_rows(self.backend, &mut self.decoder, &mut rows, &self.shared)?;
        }
        let mut finished = Vec::new();
        let mut i = 0;
        while i < self.rows.len() {
            if self.rows[i].1.is_done() {
                let (key, row, _) = self.rows.remove(i);
                for &slot in row.slots() {
                    self.free[slot] = true;
                }
                finished.push((key, row.into_result()));
            } else {
                i += 1;
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

    /// Moves waiting jobs into free slots (a slot still holding the job's window, else the
    /// lowest holding none, so rows sit close together), encoding the windows that no slot holds
    /// and none encoded recently, in one batch; then lets go of what no one needs any more.
    fn admit(&mut self) -> whisk_backend::Result<()> {
        let mut free: VecDeque<usize> = (0..self.free.len()).filter(|&s| self.free[s]).collect();
        let cached = |mel: &Arc<[f32]>, cache: &VecDeque<EncodedWindow<B>>| {
            cache.iter().position(|(m, _, _)| Arc::ptr_eq(m, mel))
        };
        // Take jobs in order while slots are free and their new windows fit one encoder
        // batch; jobs sharing a window (best-of candidates) share its encoding.
        let mut fresh: Vec<Arc<[f32]>> = Vec::new();
        let mut jobs: Vec<(Job<K>, Vec<usize>, CrossSource)> = Vec::new();
        while let Some(job) = self.waiting.front() {
            let lanes = job.request.lanes();
            if lanes > self.free.len() {
                return Err(BackendError::InvalidRequest(format!(
                    "a window needs {lanes} decoder slots (one per beam); the batch has {}",
                    self.free.len()
                )));
            }
            if lanes > free.len() {
                break;
            }
            let holds = |s: &usize| {
                self.holds[*s]
                    .as_ref()
                    .is_some_and(|m| Arc::ptr_eq(m, &job.mel))
            };
            let held_free = free.iter().position(holds);
            let held = (0..self.holds.len()).find(holds);
            let known = held.is_some()
                || cached(&job.mel, &self.encoded).is_some()
                || fresh.iter().any(|m| Arc::ptr_eq(m, &job.mel));
            if !known {
                if fresh.len() == self.encoder_batch {
                    break;
                }
                fresh.push(job.mel.clone());
            }
            let mut slots = Vec::with_capacity(lanes);
            let source = match (held_free, held) {
                (Some(i), _) => {
                    slots.extend(free.remove(i));
                    CrossSource::Held
                }
                (None, Some(from)) => CrossSource::Copy(from),
                (None, None) => CrossSource::Attach,
            };
            // Slots still holding a window another job may want go last.
            free.make_contiguous()
                .sort_by_key(|&s| (self.holds[s].is_some(), s));
            slots.extend(free.drain(..lanes - slots.len()));
            // Other hypotheses' slots get the window when the search forks into them.
            for &slot in &slots[1..] {
                self.holds[slot] = None;
            }
            self.holds[slots[0]] = Some(job.mel.clone());
            jobs.push((
                self.waiting.pop_front().expect("checked above"),
                slots,
                source,
            ));
        }
        if !fresh.is_empty() {
            let n_mels = self.backend.dims().n_mels;
            let data: Vec<f32> = fresh.iter().flat_map(|m| m.iter().copied()).collect();
            let encoded = Rc::new(self.backend.encode(MelBatch {
                data: &data,
                windows: fresh.len(),
                n_mels,
                frames: N_FRAMES,
            })?);
            for (w, mel) in fresh.into_iter().enumerate() {
                self.encoded.push_back((mel, encoded.clone(), w));
            }
        }
        // In admission order, so a copy reads a slot attached for an earlier job before a
        // later job's attach can overwrite it.
        for (job, slots, source) in jobs {
            let first = slots[0];
            match source {
                CrossSource::Held => {}
                CrossSource::Copy(from) => {
                    self.backend
                        .copy_slots(&mut self.decoder, &[(from, first)])?;
                }
                CrossSource::Attach => {
                    let i = cached(&job.mel, &self.encoded).expect("encoded above or before");
                    let (_, encoded, window) = &self.encoded[i];
                    self.backend
                        .attach(&mut self.decoder, &[first], encoded, &[*window])?;
                }
            }
            for &slot in &slots {
                self.free[slot] = false;
                self.loaded[slot] = true;
            }
            let row = Row::new(job.request, slots, &self.shared);
            self.rows.push((job.key, row, job.mel));
        }
        self.forget_unneeded()
    }

    /// Lets go of the windows no row decodes and none waits for: their encodings (each held
    /// 2.3 MB for tiny; keeping two per slot held 190 MB at beam 5), and what free slots
    /// hold of them in the decoder (a window's cross-attention K/V, 9 MB for tiny).
    fn forget_unneeded(&mut self) -> whisk_backend::Result<()> {
        let rows = &self.rows;
        let waiting = &self.waiting;
        let needed = |mel: &Arc<[f32]>| {
            rows.iter().any(|(_, _, m)| Arc::ptr_eq(m, mel))
                || waiting.iter().any(|job| Arc::ptr_eq(&job.mel, mel))
        };
        self.encoded.retain(|(mel, _, _)| needed(mel));
        for held in &mut self.holds {
            if held.as_ref().is_some_and(|mel| !needed(mel)) {
                *held = None;
            }
        }
        let idle: Vec<usize> = (0..self.free.len())
            .filter(|&s| self.free[s] && self.loaded[s] && self.holds[s].is_none())
            .collect();
        if !idle.is_empty() {
            self.backend.release(&mut self.decoder, &idle)?;
            for &slot in &idle {
                self.loaded[slot] = false;
            }
        }
        Ok(())
    }
}
