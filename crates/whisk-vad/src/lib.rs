//! Voice activity detection for whisk: which stretches of a recording hold speech.
//!
//! [`SileroVad`] is Silero VAD v6 written out in plain Rust over the weights of its ONNX file
//! (`cargo xtask fetch-models` takes the file from faster-whisper's wheel into
//! `target/models/silero-vad-v6/`); it gives one speech probability per 32 ms frame of 16 kHz
//! audio, matching onnxruntime within 1e-4. [`speech_segments`] turns them into segments in
//! samples, exactly as faster-whisper's `get_speech_timestamps` does.
//!
//! ```no_run
//! use whisk_vad::{speech_segments, SileroVad, VadOptions};
//!
//! let vad = SileroVad::from_file("target/models/silero-vad-v6/silero_vad_v6.onnx".as_ref())?;
//! let samples = vec![0.0f32; 16_000 * 5]; // 16 kHz mono
//! let probabilities = vad.speech_probabilities(&samples);
//! for s in speech_segments(&probabilities, samples.len(), &VadOptions::default()) {
//!     println!("speech from {:.2} s to {:.2} s", s.start as f64 / 16e3, s.end as f64 / 16e3);
//! }
//! # Ok::<(), whisk_vad::VadError>(())
//! ```

mod onnx;
mod segments;
mod silero;

use std::path::{Path, PathBuf};

pub use segments::{speech_segments, SpeechSegment};
pub use silero::{SileroVad, FRAME_SAMPLES};
pub use whisk_types::VadOptions;

/// Why a VAD model could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("cannot read VAD model {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("VAD model {path}: {message}")]
    Format { path: PathBuf, message: String },
}

impl SileroVad {
    /// Loads Silero VAD v6 from its ONNX file.
    pub fn from_file(path: &Path) -> Result<Self, VadError> {
        let bytes = std::fs::read(path).map_err(|source| VadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_onnx(&bytes).map_err(|message| VadError::Format {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Loads Silero VAD v6 from the bytes of its ONNX file.
    pub fn from_onnx(bytes: &[u8]) -> Result<Self, String> {
        let inits = onnx::float_initializers(bytes)?;
        let lstm = match onnx::node_inputs(bytes, "LSTM")?.as_slice() {
            [inputs] if inputs.len() >= 4 => silero::LstmNames {
                w: inputs[1].clone(),
                r: inputs[2].clone(),
                b: inputs[3].clone(),
            },
            _ => return Err("expected one LSTM with weights and biases: not Silero VAD v6".into()),
        };
        Self::from_initializers(inits, &lstm)
    }
}
