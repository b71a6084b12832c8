//! Burn backend for whisk.
//!
//! The same Whisper forward pass as the candle backend, written against Burn's tensors: the
//! decoder returns the pre-softmax cross-attention scores of the heads a caller asks for in
//! the pass that produces the logits. Devices: Burn's pure-Rust CPU backend `flex` (feature
//! `flex`) and wgpu (feature `wgpu`, WGSL shaders; `vulkan` adds SPIR-V). Weights come from
//! [`WhisperWeights`], the loader the candle backend uses, so both read CTranslate2 and
//! safetensors directories alike.

mod model;

use burn::tensor::{Device, Tensor, TensorData};
use whisk_backend::{
    check_mel, Backend, BackendError, DecodeStep, MelBatch, Result, SlotTable, StepOutput,
};
use whisk_types::ModelDims;
use whisk_weights::WhisperWeights;

pub use model::Whisper;

/// Which Burn device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurnDevice {
    /// Burn's pure-Rust CPU backend (feature `flex`).
    Flex,
    /// The best wgpu adapter, or the one `CUBECL_WGPU_DEFAULT_DEVICE` names (feature `wgpu`).
    Wgpu,
}

impl BurnDevice {
    /// The devices compiled in, best first.
    pub fn available() -> Vec<BurnDevice> {
        let mut all = Vec::new();
        if cfg!(feature = "wgpu") {
            all.push(BurnDevice::Wgpu);
        }
        if cfg!(feature = "flex") {
            all.push(BurnDevice::Flex);
        }
        all
    }

    fn feature(self) -> &'static str {
        match self {
            BurnDevice::Flex => "burn-cpu",
            BurnDevice::Wgpu => "wgpu",
        }
    }

    fn open(self) -> Result<Device> {
        match self {
            #[cfg(feature = "flex")]
            BurnDevice::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            BurnDevice::Wgpu => {
                // Burn opens devices lazily and panics on the first tensor when there is no
                // adapter; asking first turns that into an error.
                if Device::enumerate(burn::tensor::DeviceType::Wgpu).is_empty() {
                    return Err(BackendError::InvalidRequest(
                        "no wgpu adapter found: install a Vulkan, Metal or DirectX driver \
                         (on a machine without a GPU, Mesa's lavapipe)"
                            .into(),
                    ));
                }
                Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
            }
            #[allow(unreachable_patterns)]
            other => Err(BackendError::InvalidRequest(format!(
                "burn {} support is not compiled in: build whisk with `--features {}`",
                other.name(),
                other.feature()
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            BurnDevice::Flex => "cpu (flex)",
            BurnDevice::Wgpu => "wgpu",
        }
    }
}

/// A Whisper model loaded onto a Burn device, in `f32`.
pub struct BurnBackend {
    model: Whisper,
    device: BurnDevice,
}

impl BurnBackend {
    pub fn new(weights: &WhisperWeights, device: BurnDevice) -> Result<Self> {
        let burn_device = device.open()?;
        let model = guarded(device, || Whisper::load(weights, &burn_device))?;
        Ok(Self { model, device })
    }
}

/// Runs Burn work, turning a panic into an error. Burn reports a failed allocation, kernel
/// compilation or a lost device by panicking, where whisk promises an error; a decoder whose
/// step failed this way is left half-updated and should be dropped.
fn guarded<T>(device: BurnDevice, work: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(BackendError::Compute(format!(
            "burn {} failed: {message}",
            device.name()
        )))
    })
}

/// Encoder output: `[windows, n_audio_ctx, n_audio_state]`.
pub struct Encoded(Tensor<3>);

/// KV caches of one decode.
pub struct Decoder(model::DecoderState);

impl Backend for BurnBackend {
    type Encoded = Encoded;
    type Decoder = Decoder;

    fn dims(&self) -> &ModelDims {
        &self.model.dims
    }

    fn device_name(&self) -> String {
        format!("burn {}", self.device.name())
    }

    fn encode(&self, mel: MelBatch<'_>) -> Result<Encoded> {
        check_mel(&self.model.dims, &mel)?;
        guarded(self.device, || {
            let x = Tensor::<3>::from_data(
                TensorData::new(mel.data.to_vec(), [mel.windows, mel.n_mels, mel.frames]),
                self.model.device(),
            );
            Ok(Encoded(self.model.encode(x)))
        })
    }

    fn new_decoder(&self, slots: usize) -> Result<Decoder> {
        let table = SlotTable::new(slots)?;
        guarded(self.device, || Ok(Decoder(self.model.new_decoder(table))))
    }

    fn attach(
        &self,
        decoder: &mut Decoder,
        slots: &[usize],
        encoded: &Encoded,
        windows: &[usize],
    ) -> Result<()> {
        decoder
            .0
            .table
            .check_attach(slots, windows, encoded.0.dims()[0])?;
        guarded(self.device, || {
            self.model
                .attach(&mut decoder.0, slots, &encoded.0, windows);
            Ok(())
        })
    }

    fn copy_slots(&self, decoder: &mut Decoder, moves: &[(usize, usize)]) -> Result<()> {
        decoder.0.table.check_copy(moves)?;
        guarded(self.device, || {
            self.model.copy_slots(&mut decoder.0, moves);
            Ok(())
        })
    }

    fn release(&self, decoder: &mut Decoder, slots: &[usize]) -> Result<()> {
        // Every slot's tensors are allocated up front: there is nothing to free.
        decoder.0.table.check_release(slots)?;
        decoder.0.table.released(slots);
        Ok(())
    }

    fn decode_step(&self, decoder: &mut Decoder, step: DecodeStep<'_>) -> Result<StepOutput> {
        decoder.0.table.check_step(&self.model.dims, &step)?;
        if step.rows.is_empty() {
            return Ok(StepOutput::default());
        }
        guarded(self.device, || self.model.decode_step(&mut decoder.0, step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_burn_becomes_an_error_naming_the_device() {
        let err = guarded(BurnDevice::Wgpu, || -> Result<()> {
            panic!("Unable to allocate buffer of size 4294967296")
        })
        .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, BackendError::Compute(_)), "{err:?}");
        assert!(message.contains("burn wgpu failed"), "{message}");
        assert!(message.contains("Unable to allocate buffer"), "{message}");

        let formatted = guarded(BurnDevice::Flex, || -> Result<()> { panic!("lost {}", 7) });
        assert!(formatted.unwrap_err().to_string().contains("lost 7"));
    }

    #[test]
    fn errors_and_values_pass_through() {
        assert_eq!(guarded(BurnDevice::Flex, || Ok(3)).unwrap(), 3);
        let err = guarded(BurnDevice::Flex, || -> Result<()> {
            Err(BackendError::InvalidRequest("x".into()))
        });
        assert!(matches!(err, Err(BackendError::InvalidRequest(_))));
    }
}
