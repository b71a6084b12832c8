//! One weight-loading layer for every backend.
//!
//! Whisper checkpoints come in several layouts: CTranslate2 directories (what faster-whisper
//! uses: `model.bin` with fused QKV, float16/float32/int8+scale) and Hugging Face directories
//! (`model.safetensors` with `transformers` names). Each reader maps its layout onto OpenAI's
//! state-dict names (`encoder.blocks.0.attn.query.weight`, ...), splits fused projections and
//! dequantises int8, so a backend only ever sees [`WhisperWeights`].

mod ct2;
mod hf;
mod names;
mod random;
mod tensor;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use names::{block_prefix, Side};
pub use tensor::{DType, Tensor, TensorData};
use whisk_types::ModelDims;
pub use write::{write_ct2, write_hf, Ct2Quantization};

/// Why a model directory could not be read. Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("model directory {0} does not exist")]
    MissingDir(PathBuf),
    #[error("{dir} is not a Whisper model directory: found neither model.bin (CTranslate2) nor model.safetensors (Hugging Face)")]
    UnknownLayout { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
}

pub type Result<T> = std::result::Result<T, WeightsError>;

/// The on-disk layout a model was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    CTranslate2,
    HuggingFace,
    /// [`WhisperWeights::random`]: no file, for throughput measurements only.
    Random,
}

/// A Whisper checkpoint in OpenAI's naming, ready for a backend to turn into its tensors.
#[derive(Debug, Clone)]
pub struct WhisperWeights {
    pub dims: ModelDims,
    pub format: WeightFormat,
    /// The file the tensors came from, for error messages.
    pub source: PathBuf,
    /// Alignment heads listed by the checkpoint's configuration, if any.
    pub alignment_heads: Option<Vec<(usize, usize)>>,
    tensors: BTreeMap<String, Tensor>,
}

impl WhisperWeights {
    /// Reads a model directory, recognising its layout by the files in it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(WeightsError::MissingDir(dir.to_path_buf()));
        }
        if dir.join("model.bin").is_file() {
            ct2::read_dir(dir)
        } else if dir.join("model.safetensors").is_file() {
            hf::read_dir(dir)
        } else {
            Err(WeightsError::UnknownLayout {
                dir: dir.to_path_buf(),
            })
        }
    }

    /// The tensor called `name` (OpenAI naming).
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| WeightsError::MissingTensor {
                path: self.source.clone(),
                name: name.to_string(),
            })
    }

    /// The tensor called `name`, if the checkpoint has it (biases that some layouts omit).
    pub fn get_optional(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Assembles weights and checks that every tensor a Whisper model needs is there with the
    /// shape the dimensions imply.
    fn new(
        dims: ModelDims,
        format: WeightFormat,
        source: PathBuf,
        alignment_heads: Option<Vec<(usize, usize)>>,
        tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self> {
        let weights = Self {
            dims,
            format,
            source,
            alignment_heads,
            tensors,
        };
        for (name, shape) in names::expected_shapes(&weights.dims) {
            let tensor = weights.get(&name)?;
            if tensor.shape != shape {
                return Err(WeightsError::Format {
                    path: weights.source.clone(),
                    message: format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        tensor.shape
                    ),
                });
            }
        }
        Ok(weights)
    }
}
