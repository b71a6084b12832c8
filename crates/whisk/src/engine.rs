//! The backend chosen at run time: one dispatch from (backend, device, compute type) to a
//! concrete [`Backend`], shared by transcription and the synthetic throughput runs.

use whisk_backend::{Backend, TimeLog, Timed};
use whisk_pipeline::{Arrivals, BatchInput, Pipeline, Progress};
use whisk_types::{ComputeType, TranscribeOptions, Transcript};
use whisk_weights::WhisperWeights;

use crate::{BackendKind, Device, Error, Result};

/// A pipeline on some backend, behind one object-safe face. `Send + Sync`, so one model can
/// serve several threads (the Python package's, a server's).
pub(crate) trait Engine: Send + Sync {
    fn device_name(&self) -> String;
    fn transcribe(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Transcript>;
    fn transcribe_batch(
        &self,
        inputs: Vec<BatchInput<'_>>,
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Transcript>>;
    fn transcribe_arrivals(
        &self,
        arrivals: &mut dyn Arrivals,
        options: &TranscribeOptions,
    ) -> Result<()>;
    fn detect_language(&self, samples: &[f32]) -> Result<Vec<(String, f32)>>;
}

impl<B: Backend + Send + Sync> Engine for Pipeline<B> {
    fn device_name(&self) -> String {
        self.backend().device_name()
    }

    fn transcribe(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Transcript> {
        Ok(Pipeline::transcribe(self, samples, options, progress)?)
    }

    fn transcribe_batch(
        &self,
        inputs: Vec<BatchInput<'_>>,
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Transcript>> {
        Ok(Pipeline::transcribe_batch(self, inputs, options, progress)?)
    }

    fn transcribe_arrivals(
        &self,
        arrivals: &mut dyn Arrivals,
        options: &TranscribeOptions,
    ) -> Result<()> {
        Ok(Pipeline::transcribe_arrivals(self, arrivals, options)?)
    }

    fn detect_language(&self, samples: &[f32]) -> Result<Vec<(String, f32)>> {
        Ok(Pipeline::detect_language(self, samples)?)
    }
}

/// Work to do with whichever backend the caller chose ([`with_backend`]).
pub(crate) trait WithBackend {
    type Output;
    fn run<B: Backend + Send + Sync + 'static>(self, backend: B) -> Result<Self::Output>;
}

/// Builds the pipeline of a model; with `timed`, its backend's calls are timed.
pub(crate) struct MakeEngine {
    pub tokenizer: whisk_text::Tokenizer,
    pub heads: Vec<(usize, usize)>,
    pub timed: bool,
}

impl WithBackend for MakeEngine {
    type Output = (Box<dyn Engine>, Option<TimeLog>);

    fn run<B: Backend + Send + Sync + 'static>(self, backend: B) -> Result<Self::Output> {
        if self.timed {
            let backend = Timed::new(backend);
            let log = backend.log();
            let pipeline = Pipeline::new(backend, self.tokenizer, self.heads)?;
            Ok((Box::new(pipeline), Some(log)))
        } else {
            let pipeline = Pipeline::new(backend, self.tokenizer, self.heads)?;
            Ok((Box::new(pipeline), None))
        }
    }
}

#[cfg(not(all(feature = "candle", any(feature = "burn-cpu", feature = "wgpu"))))]
fn unavailable(backend: BackendKind, device: Device, feature: &str) -> Error {
    Error::Unavailable(format!(
        "{backend} on {device:?} is not compiled in: build whisk with `--features {feature}`"
    ))
}

/// Puts `weights` on the chosen backend and device in `compute`'s type and runs `work` there.
#[allow(unused_variables)]
pub(crate) fn with_backend<W: WithBackend>(
    backend: BackendKind,
    device: Device,
    compute: ComputeType,
    weights: &WhisperWeights,
    work: W,
) -> Result<W::Output> {
    match (backend, device) {
        (BackendKind::Candle, Device::Wgpu) => Err(Error::Unavailable(
            "candle has no wgpu device: use `--backend burn` for wgpu".into(),
        )),
        (BackendKind::Burn, Device::Cuda(_) | Device::Metal) => Err(Error::Unavailable(
            "whisk's Burn backend runs on cpu or wgpu: use `--backend candle` for cuda and metal"
                .into(),
        )),
        (BackendKind::Burn, _)
            if !matches!(compute.resolved(), ComputeType::Float32 | ComputeType::Auto) =>
        {
            Err(Error::Unavailable(format!(
                "whisk's Burn backend computes in float32 only, not {compute}: use `--backend candle`"
            )))
        }
        #[cfg(feature = "candle")]
        (BackendKind::Candle, device) => {
            use whisk_candle::CandleDevice;
            let device = match device {
                Device::Cuda(i) => CandleDevice::Cuda(i),
                Device::Metal => CandleDevice::Metal,
                _ => CandleDevice::Cpu,
            };
            work.run(whisk_candle::CandleBackend::new(weights, device, compute)?)
        }
        #[cfg(not(feature = "candle"))]
        (BackendKind::Candle, _) => Err(unavailable(backend, device, "candle")),
        #[cfg(any(feature = "burn-cpu", feature = "wgpu"))]
        (BackendKind::Burn, device) => {
            let device = match device {
                Device::Wgpu => whisk_burn::BurnDevice::Wgpu,
                _ => whisk_burn::BurnDevice::Flex,
            };
            work.run(whisk_burn::BurnBackend::new(weights, device)?)
        }
        #[cfg(not(any(feature = "burn-cpu", feature = "wgpu")))]
        (BackendKind::Burn, _) => Err(unavailable(
            backend,
            device,
            if device == Device::Wgpu {
                "wgpu"
            } else {
                "burn-cpu"
            },
        )),
    }
}
