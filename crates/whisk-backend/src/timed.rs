//! A backend wrapper that times its calls: how much of a run the device work takes, and so
//! how much is left on the host between decoder steps.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use whisk_types::ModelDims;

use crate::{Backend, DecodeStep, MelBatch, Result, StepOutput};

/// Time spent in each kind of backend call, device work included.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackendTimes {
    pub encode: Duration,
    /// Windows encoded, over `encode_calls` calls.
    pub windows_encoded: usize,
    pub encode_calls: usize,
    /// Cross-attention K/V of attached windows, and slot copies of the beam search.
    pub attach: Duration,
    pub copy: Duration,
    pub decode: Duration,
    pub decode_steps: usize,
    /// Rows fed over all decoder steps (a row is one slot in one step).
    pub rows_stepped: usize,
}

impl BackendTimes {
    /// All time inside the backend.
    pub fn total(&self) -> Duration {
        self.encode + self.attach + self.copy + self.decode
    }
}

/// A shared view of a [`Timed`] backend's times, readable after the backend has moved.
#[derive(Debug, Clone, Default)]
pub struct TimeLog(Arc<Mutex<BackendTimes>>);

impl TimeLog {
    pub fn snapshot(&self) -> BackendTimes {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, f: impl FnOnce(&mut BackendTimes)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Runs `B` and times every call. After each call it waits for the device
/// ([`Backend::synchronize`]), so that a GPU's queued work is charged to the call that queued
/// it rather than to the next one that reads a result back.
pub struct Timed<B> {
    inner: B,
    log: TimeLog,
}

impl<B: Backend> Timed<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            log: TimeLog::default(),
        }
    }

    pub fn log(&self) -> TimeLog {
        self.log.clone()
    }

    fn timed<T>(
        &self,
        call: impl FnOnce(&B) -> Result<T>,
        record: impl FnOnce(&mut BackendTimes, Duration),
    ) -> Result<T> {
        let start = Instant::now();
        let out = call(&self.inner)?;
        self.inner.synchronize()?;
        let spent = start.elapsed();
        self.log.add(|t| record(t, spent));
        Ok(out)
    }
}

impl<B: Backend> Backend for Timed<B> {
    type Encoded = B::Encoded;
    type Decoder = B::Decoder;

    fn dims(&self) -> &ModelDims {
        self.inner.dims()
    }

    fn device_name(&self) -> String {
        self.inner.device_name()
    }

    fn encode(&self, mel: MelBatch<'_>) -> Result<B::Encoded> {
        self.timed(
            |b| b.encode(mel),
            |t, d| {
                t.encode += d;
                t.encode_calls += 1;
                t.windows_encoded += mel.windows;
            },
        )
    }

    fn new_decoder(&self, slots: usize) -> Result<B::Decoder> {
        self.inner.new_decoder(slots)
    }

    fn attach(
        &self,
        decoder: &mut B::Decoder,
        slots: &[usize],
        encoded: &B::Encoded,
        windows: &[usize],
    ) -> Result<()> {
        self.timed(
            |b| b.attach(decoder, slots, encoded, windows),
            |t, d| t.attach += d,
        )
    }

    fn copy_slots(&self, decoder: &mut B::Decoder, moves: &[(usize, usize)]) -> Result<()> {
        self.timed(|b| b.copy_slots(decoder, moves), |t, d| t.copy += d)
    }

    fn release(&self, decoder: &mut B::Decoder, slots: &[usize]) -> Result<()> {
        self.inner.release(decoder, slots)
    }

    fn decode_step(&self, decoder: &mut B::Decoder, step: DecodeStep<'_>) -> Result<StepOutput> {
        let rows = step.rows.len();
        self.timed(
            |b| b.decode_step(decoder, step),
            |t, d| {
                t.decode += d;
                t.decode_steps += 1;
                t.rows_stepped += rows;
            },
        )
    }

    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RowStep, SlotTable};

    /// Does nothing but check its requests.
    struct Idle(ModelDims);

    impl Backend for Idle {
        type Encoded = usize;
        type Decoder = SlotTable;

        fn dims(&self) -> &ModelDims {
            &self.0
        }
        fn device_name(&self) -> String {
            "idle".into()
        }
        fn encode(&self, mel: MelBatch<'_>) -> Result<usize> {
            Ok(mel.windows)
        }
        fn new_decoder(&self, slots: usize) -> Result<SlotTable> {
            SlotTable::new(slots)
        }
        fn attach(&self, d: &mut SlotTable, slots: &[usize], n: &usize, w: &[usize]) -> Result<()> {
            d.check_attach(slots, w, *n)?;
            d.attached(slots);
            Ok(())
        }
        fn copy_slots(&self, d: &mut SlotTable, moves: &[(usize, usize)]) -> Result<()> {
            d.check_copy(moves)?;
            d.copied(moves);
            Ok(())
        }
        fn release(&self, d: &mut SlotTable, slots: &[usize]) -> Result<()> {
            d.check_release(slots)?;
            d.released(slots);
            Ok(())
        }
        fn decode_step(&self, d: &mut SlotTable, step: DecodeStep<'_>) -> Result<StepOutput> {
            d.check_step(&self.0, &step)?;
            d.stepped(&step);
            Ok(StepOutput::default())
        }
    }

    #[test]
    fn counts_and_times_every_kind_of_call_and_passes_errors_through() {
        let dims = ModelDims::official("tiny.en").expect("a known shape");
        let timed = Timed::new(Idle(dims));
        let log = timed.log();
        let mel = vec![0.0; 2 * 80 * 3000];
        let encoded = timed
            .encode(MelBatch {
                data: &mel,
                windows: 2,
                n_mels: 80,
                frames: 3000,
            })
            .unwrap();
        let mut decoder = timed.start_decoder(&encoded, &[0, 1]).unwrap();
        let rows = [0, 1].map(|slot| RowStep {
            slot,
            position: 0,
            tokens: &[1, 2],
            logits_at: &[1],
        });
        for _ in 0..3 {
            let step = DecodeStep {
                rows: &rows,
                cross_qk_heads: &[],
                keep_cache: true,
            };
            timed.decode_step(&mut decoder, step).unwrap();
        }
        timed.copy_slots(&mut decoder, &[(0, 1)]).unwrap();
        let t = log.snapshot();
        assert_eq!((t.encode_calls, t.windows_encoded), (1, 2));
        assert_eq!((t.decode_steps, t.rows_stepped), (3, 6));
        assert_eq!(t.total(), t.encode + t.attach + t.copy + t.decode);

        // A refused request is the inner backend's error, and is not counted.
        let bad = [RowStep {
            slot: 5,
            position: 0,
            tokens: &[1],
            logits_at: &[0],
        }];
        let step = DecodeStep {
            rows: &bad,
            cross_qk_heads: &[],
            keep_cache: true,
        };
        assert!(timed.decode_step(&mut decoder, step).is_err());
        assert_eq!(log.snapshot().decode_steps, 3);
    }
}
