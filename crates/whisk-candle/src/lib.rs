//! Candle backend for whisk.
//!
//! Our own Whisper forward pass (candle-transformers' model hides attention weights): the
//! decoder returns the pre-softmax cross-attention scores of the heads a caller asks for, in
//! the same pass that produces the logits. Computes in `f32`, `f16` or `bf16`
//! ([`ComputeType`]) on the CPU, or with int8 linear layers (`whisk-int8`); `cuda` and `metal` features add candle's GPU devices. Logits
//! and attention scores cross the trait as `f32` whatever the compute type.

mod cpu_ops;
mod cross_attention;
mod encoder_attention;
mod entries;
mod f16c;
mod int8;
mod model;

use candle_core::{DType, Device, Tensor};
use whisk_backend::{check_mel, Backend, BackendError, DecodeStep, MelBatch, Result, StepOutput};
use whisk_types::{ComputeType, ModelDims};
use whisk_weights::WhisperWeights;

pub use model::Whisper;

fn err(e: candle_core::Error) -> BackendError {
    BackendError::Compute(e.to_string())
}

/// Which candle device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CandleDevice {
    #[default]
    Cpu,
    /// NVIDIA GPU by ordinal; needs the `cuda` feature.
    Cuda(usize),
    /// Apple GPU; needs the `metal` feature.
    Metal,
}

/// A Whisper model loaded onto a candle device.
pub struct CandleBackend {
    model: Whisper,
    device: Device,
    dtype: DType,
}

/// candle's element type for a compute type.
pub fn dtype_of(compute: ComputeType) -> DType {
    match compute.resolved() {
        ComputeType::Float16 => DType::F16,
        ComputeType::BFloat16 => DType::BF16,
        _ => DType::F32,
    }
}

impl CandleBackend {
    /// Builds the model from loaded weights on `device`, its weights and activations in
    /// `compute`'s type.
    pub fn new(
        weights: &WhisperWeights,
        device: CandleDevice,
        compute: ComputeType,
    ) -> Result<Self> {
        let missing = |feature: &str| {
            BackendError::InvalidRequest(format!(
                "{feature} support is not compiled in: build whisk with `--features {feature}`"
            ))
        };
        if matches!(device, CandleDevice::Cuda(_)) && !cfg!(feature = "cuda") {
            return Err(missing("cuda"));
        }
        if device == CandleDevice::Metal && !cfg!(feature = "metal") {
            return Err(missing("metal"));
        }
        let device = match device {
            CandleDevice::Cpu => Device::Cpu,
            CandleDevice::Cuda(i) => Device::new_cuda(i).map_err(err)?,
            CandleDevice::Metal => Device::new_metal(0).map_err(err)?,
        };
        let compute = match compute {
            ComputeType::Auto if device.is_cpu() && whisk_int8::has_fast_exact_kernel() => {
                ComputeType::Int8
            }
            ComputeType::Auto => ComputeType::Float32,
            other => other.resolved(),
        };
        let int8 = compute == ComputeType::Int8;
        if int8 && !device.is_cpu() {
            return Err(BackendError::InvalidRequest(
                "int8 runs on the CPU only: use float16 or float32 on a GPU".into(),
            ));
        }
        let dtype = dtype_of(compute);
        let model = Whisper::load(weights, &device, dtype, int8).map_err(err)?;
        Ok(Self {
            model,
            device,
            dtype,
        })
    }
}

impl CandleBackend {
    /// Runs `op` on a thread of rayon's pool when computing on the CPU, where candle's, the
    /// GEMMs' and our own parallel loops run. Called from outside the pool, each of a decoder
    /// step's dozens of loops would wake the pool and wait for it (a third of a step on 2
    /// cores went to that); from inside, the loops split their work among the pool's threads
    /// directly. GPU work stays on the caller's thread.
    fn in_pool<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        if self.device.is_cpu() {
            rayon::scope(|_| op())
        } else {
            op()
        }
    }
}

/// Encoder output: `[windows, n_audio_ctx, n_audio_state]`.
pub struct Encoded(Tensor);

/// KV caches of one decode.
pub struct Decoder(model::DecoderState);

impl Backend for CandleBackend {
    type Encoded = Encoded;
    type Decoder = Decoder;

    fn dims(&self) -> &ModelDims {
        &self.model.dims
    }

    fn device_name(&self) -> String {
        match &self.device {
            Device::Cpu => "candle cpu".into(),
            Device::Cuda(_) => "candle cuda".into(),
            Device::Metal(_) => "candle metal".into(),
        }
    }

    fn encode(&self, mel: MelBatch<'_>) -> Result<Encoded> {
        check_mel(&self.model.dims, &mel)?;
        let x = Tensor::from_slice(
            mel.data,
            (mel.windows, mel.n_mels, mel.frames),
            &self.device,
        )
        .and_then(|x| x.to_dtype(self.dtype))
        .map_err(err)?;
        self.in_pool(|| self.model.encode(&x))
            .map(Encoded)
            .map_err(err)
    }

    fn synchronize(&self) -> Result<()> {
        self.device.synchronize().map_err(err)
    }

    fn new_decoder(&self, slots: usize) -> Result<Decoder> {
        let table = whisk_backend::SlotTable::new(slots)?;
        self.model
            .new_decoder(table, &self.device)
            .map(Decoder)
            .map_err(err)
    }

    fn attach(
        &self,
        decoder: &mut Decoder,
        slots: &[usize],
        encoded: &Encoded,
        windows: &[usize],
    ) -> Result<()> {
        let n = encoded.0.dim(0).map_err(err)?;
        decoder.0.table.check_attach(slots, windows, n)?;
        self.in_pool(|| {
            self.model
                .attach(&mut decoder.0, slots, &encoded.0, windows)
        })
        .map_err(err)
    }

    fn copy_slots(&self, decoder: &mut Decoder, moves: &[(usize, usize)]) -> Result<()> {
        decoder.0.table.check_copy(moves)?;
        self.in_pool(|| self.model.copy_slots(&mut decoder.0, moves))
            .map_err(err)
    }

    fn release(&self, decoder: &mut Decoder, slots: &[usize]) -> Result<()> {
        decoder.0.table.check_release(slots)?;
        self.model.release(&mut decoder.0, slots);
        Ok(())
    }

    fn decode_step(&self, decoder: &mut Decoder, step: DecodeStep<'_>) -> Result<StepOutput> {
        decoder.0.table.check_step(&self.model.dims, &step)?;
        if step.rows.is_empty() {
            return Ok(StepOutput::default());
        }
        self.in_pool(|| self.model.decode_step(&mut decoder.0, step, &self.device))
            .map_err(err)
    }
}
