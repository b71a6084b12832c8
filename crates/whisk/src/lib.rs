//! whisk: Whisper speech-to-text with word-level timestamps on pluggable backends.
//!
//! ```no_run
//! use whisk::{Model, TranscribeOptions};
//!
//! let model = Model::builder("target/models/tiny.en").build()?;
//! let transcript = model.transcribe_file("speech.flac".as_ref(), &TranscribeOptions::default())?;
//! for segment in &transcript.segments {
//!     println!("[{:.2} -> {:.2}] {}", segment.start, segment.end, segment.text);
//! }
//! # Ok::<(), whisk::Error>(())
//! ```
//!
//! A model directory is either a CTranslate2 export (faster-whisper's `model.bin`) or a
//! Hugging Face one (`model.safetensors`); both hold a `tokenizer.json`.
//!
//! Backends are cargo features: `candle` (default; CPU), `cuda` and `metal` (candle on GPUs),
//! `burn-cpu` (Burn's pure-Rust `flex` CPU backend), `wgpu` (Burn on wgpu; `vulkan` adds
//! SPIR-V shaders). Pick one at run time with [`ModelBuilder::backend`] and
//! [`ModelBuilder::device`]:
//!
//! ```no_run
//! use whisk::{BackendKind, Device, Model};
//!
//! let model = Model::builder("target/models/tiny.en")
//!     .backend(BackendKind::Burn)
//!     .device(Device::Wgpu)
//!     .build()?;
//! # Ok::<(), whisk::Error>(())
//! ```

mod allocator;
mod engine;
#[cfg(feature = "hub")]
pub mod hub;
pub mod output;
mod speech;
#[doc(hidden)]
pub mod synthetic;

use std::path::{Path, PathBuf};

pub use allocator::{keep_freed_memory_for_reuse, return_freed_memory};
pub use speech::Speech;
pub use whisk_audio::{
    load_audio, load_audio_bytes_with_damage, load_audio_with_damage, log_mel_spectrogram, Damage,
};
pub use whisk_backend::{Backend, BackendTimes};
pub use whisk_pipeline::{Arrivals, Progress};
pub use whisk_types::{
    AlignmentHeads, ComputeType, DecodeOptions, HeadsSource, MelPadding, ModelDims, Segment, Task,
    TranscribeOptions, Transcript, VadOptions, Word, WordAlignment, SAMPLE_RATE,
};
pub use whisk_weights::WhisperWeights;

#[cfg(feature = "candle")]
pub use whisk_candle::CandleDevice;

use engine::{with_backend, Engine, MakeEngine};
use whisk_audio::AudioStream;
use whisk_backend::TimeLog;
use whisk_pipeline::{BatchInput, FileWindows, FixedWindows};
use whisk_vad::SileroVad;

/// Everything that can go wrong, each with a message naming the file or setting at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The audio file could not be read or decoded.
    #[error(transparent)]
    Audio(#[from] whisk_audio::AudioError),
    /// The model directory could not be read.
    #[error(transparent)]
    Weights(#[from] whisk_weights::WeightsError),
    /// The tokenizer could not be loaded or used.
    #[error(transparent)]
    Text(#[from] whisk_text::TextError),
    /// Decoding failed.
    #[error(transparent)]
    Pipeline(#[from] whisk_pipeline::PipelineError),
    /// The backend failed or was misused.
    #[error(transparent)]
    Backend(#[from] whisk_backend::BackendError),
    /// The voice activity model could not be loaded.
    #[error(transparent)]
    Vad(#[from] whisk_vad::VadError),
    /// A model directory lacks `tokenizer.json`.
    #[error("{0} has no tokenizer.json")]
    MissingTokenizer(PathBuf),
    /// `--model` names neither a model directory nor a model that could be fetched.
    #[error("model `{name}` not found: {detail}")]
    ModelNotFound { name: String, detail: String },
    /// The requested backend or device was not compiled in.
    #[error("{0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The transcription was stopped by its caller ([`Progress::stop`]).
    pub fn is_stopped(&self) -> bool {
        matches!(
            self,
            Error::Pipeline(whisk_pipeline::PipelineError::Stopped)
        )
    }
}

/// Where to run the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// NVIDIA GPU by ordinal (candle, feature `cuda`).
    Cuda(usize),
    /// Apple GPU (candle, feature `metal`).
    Metal,
    /// The best wgpu adapter (Burn, feature `wgpu`); `CUBECL_WGPU_DEFAULT_DEVICE` picks another.
    Wgpu,
}

impl std::str::FromStr for Device {
    type Err = String;

    /// `cpu`, `cuda`, `cuda:N`, `metal`, `wgpu`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "metal" => Ok(Device::Metal),
            "wgpu" => Ok(Device::Wgpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    format!("unknown device `{s}`: use cpu, cuda, cuda:N, metal or wgpu")
                }),
        }
    }
}

/// Which tensor library runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// candle: CPU (feature `candle`), CUDA (`cuda`), Metal (`metal`).
    Candle,
    /// Burn: CPU through `flex` (feature `burn-cpu`), GPUs through wgpu (`wgpu`).
    Burn,
}

impl BackendKind {
    /// The backends compiled into this build, the default first.
    pub fn compiled() -> Vec<BackendKind> {
        let mut all = Vec::new();
        if cfg!(feature = "candle") {
            all.push(BackendKind::Candle);
        }
        if cfg!(any(feature = "burn-cpu", feature = "wgpu")) {
            all.push(BackendKind::Burn);
        }
        all
    }

    /// The device a backend uses when none is given: the CPU, or wgpu for a Burn build
    /// without `burn-cpu`.
    pub fn default_device(self) -> Device {
        match self {
            BackendKind::Burn if !cfg!(feature = "burn-cpu") && cfg!(feature = "wgpu") => {
                Device::Wgpu
            }
            _ => Device::Cpu,
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "candle" => Ok(BackendKind::Candle),
            "burn" => Ok(BackendKind::Burn),
            _ => Err(format!("unknown backend `{s}`: use candle or burn")),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Candle => "candle",
            BackendKind::Burn => "burn",
        })
    }
}

/// Finds a model: an existing directory, or (feature `hub`) a Hugging Face repository id or
/// OpenAI model name (`tiny.en`, `openai/whisper-base`) fetched into the hub cache.
pub fn resolve_model(name: &str) -> Result<PathBuf> {
    #[cfg(feature = "hub")]
    {
        hub::resolve_model(name)
    }
    #[cfg(not(feature = "hub"))]
    {
        let path = Path::new(name);
        if path.is_dir() {
            Ok(path.to_path_buf())
        } else {
            Err(Error::ModelNotFound {
                name: name.to_string(),
                detail: "not a directory (build with the `hub` feature to download models by name)"
                    .into(),
            })
        }
    }
}

/// Configures and loads a [`Model`].
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    dir: PathBuf,
    backend: Option<BackendKind>,
    device: Option<Device>,
    compute_type: ComputeType,
    time_backend: bool,
    vad_model: Option<PathBuf>,
}

impl ModelBuilder {
    /// The tensor library (default: candle when compiled in, else Burn).
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The device (default: the backend's [`BackendKind::default_device`]).
    pub fn device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// The number type the model computes in (default: [`ComputeType::Default`]). The Burn
    /// backend computes in float32 only.
    pub fn compute_type(mut self, compute_type: ComputeType) -> Self {
        self.compute_type = compute_type;
        self
    }

    /// Times every backend call ([`Model::backend_times`]), waiting for the device after
    /// each: for profiling, since on a GPU it costs the overlap of host and device work.
    pub fn time_backend(mut self, on: bool) -> Self {
        self.time_backend = on;
        self
    }

    /// Silero VAD v6's ONNX file (or a directory holding it), for [`TranscribeOptions::vad`].
    /// Default: `WHISK_VAD_MODEL`, then `silero_vad_v6.onnx` in the model's directory, then
    /// where `cargo xtask fetch-models` puts it; loaded on first use.
    pub fn vad_model(mut self, path: impl Into<PathBuf>) -> Self {
        self.vad_model = Some(path.into());
        self
    }

    /// Reads the weights and tokenizer and puts the model on its device.
    pub fn build(self) -> Result<Model> {
        let weights = WhisperWeights::from_dir(&self.dir)?;
        let tokenizer_path = self.dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(Error::MissingTokenizer(self.dir.clone()));
        }
        let tokenizer = whisk_text::Tokenizer::from_file(&tokenizer_path, &weights.dims)?;
        let heads = AlignmentHeads::resolve(weights.alignment_heads.clone(), &weights.dims);
        let backend = match self.backend {
            Some(b) => b,
            None => *BackendKind::compiled().first().ok_or_else(|| {
                Error::Unavailable(
                    "no backend compiled in: enable the `candle`, `burn-cpu` or `wgpu` feature"
                        .into(),
                )
            })?,
        };
        let device = self.device.unwrap_or(backend.default_device());
        let make = MakeEngine {
            tokenizer,
            heads: heads.pairs.clone(),
            timed: self.time_backend,
        };
        let (engine, times) = with_backend(backend, device, self.compute_type, &weights, make)?;
        Ok(Model {
            engine,
            times,
            vad_path: self.vad_model,
            vad: std::sync::OnceLock::new(),
            dims: weights.dims.clone(),
            dir: self.dir,
            alignment_heads: heads,
        })
    }
}

/// A transcript with its input's damage, if any, among its warnings.
fn warn((mut transcript, damage): (Transcript, Option<Damage>)) -> Transcript {
    transcript.warnings.extend(damage.map(|d| d.to_string()));
    transcript
}

/// Opens `path` as audio without decoding it: checks that it holds a decodable track, and
/// returns its length in seconds if its header tells.
pub fn probe_audio(path: &Path) -> Result<Option<f64>> {
    Ok(AudioStream::open(path)?.duration_hint())
}

/// A loaded Whisper model with its tokenizer, ready to transcribe. One model serves any
/// number of threads at once; each call decodes with state of its own.
pub struct Model {
    engine: Box<dyn Engine>,
    times: Option<TimeLog>,
    vad_path: Option<PathBuf>,
    vad: std::sync::OnceLock<SileroVad>,
    dims: ModelDims,
    dir: PathBuf,
    alignment_heads: AlignmentHeads,
}

// The Python package and the server share one model between threads.
const _: () = {
    const fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<Model>();
};

impl Model {
    /// Starts configuring a model from a directory (CTranslate2 or Hugging Face layout).
    pub fn builder(dir: impl Into<PathBuf>) -> ModelBuilder {
        ModelBuilder {
            dir: dir.into(),
            backend: None,
            device: None,
            compute_type: ComputeType::Default,
            time_backend: false,
            vad_model: None,
        }
    }

    /// Silero VAD, loaded on first use.
    fn vad(&self) -> Result<&SileroVad> {
        if let Some(vad) = self.vad.get() {
            return Ok(vad);
        }
        let path = match &self.vad_path {
            // A directory, as `cargo xtask fetch-models` makes it, holds the file.
            Some(path) if path.is_dir() => path.join(speech::VAD_FILE),
            Some(path) => path.clone(),
            None => speech::find_vad_model(&self.dir)?,
        };
        let _ = self.vad.set(SileroVad::from_file(&path)?);
        Ok(self.vad.get().expect("set above"))
    }

    /// What Silero VAD hears in `samples` with `options.vad`, in one pass: the clips that
    /// [`Self::transcribe_speech`] transcribes with these options, and the seconds of speech.
    /// `None` when `options` turn VAD off (or give clips of their own).
    pub fn speech(&self, samples: &[f32], options: &TranscribeOptions) -> Result<Option<Speech>> {
        let Some(vad) = options.vad.as_ref() else {
            return Ok(None);
        };
        if !options.clip_timestamps.is_empty() {
            return Ok(None);
        }
        let packed = options.batch_size > 1
            && whisk_pipeline::packs_inputs(options, self.dims.is_multilingual());
        Ok(Some(speech::speech_of(self.vad()?, samples, vad, packed)))
    }

    /// Transcribes only the speech [`Self::speech`] found in each input, with the options it
    /// was found with (a caller that reports the seconds of speech need not run VAD twice).
    pub fn transcribe_speech(
        &self,
        inputs: &[(&[f32], &Speech)],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Transcript>> {
        if options.batch_size > 1 {
            let inputs = inputs
                .iter()
                .map(|&(samples, speech)| BatchInput::Clips {
                    samples,
                    clips: speech.clips.clone(),
                })
                .collect();
            return self.engine.transcribe_batch(inputs, options, progress);
        }
        let total: f64 = inputs.iter().map(|s| s.0.len() as f64 / 16_000.0).sum();
        let mut done = 0.0;
        let mut out = Vec::with_capacity(inputs.len());
        for (input, &(samples, speech)) in inputs.iter().enumerate() {
            let start = done;
            done += samples.len() as f64 / 16_000.0;
            if speech.clips.is_empty() {
                out.push(Transcript {
                    text: String::new(),
                    language: options.decode.language.clone().unwrap_or("en".into()),
                    segments: Vec::new(),
                    warnings: Vec::new(),
                    language_probs: Vec::new(),
                });
                continue;
            }
            let clipped = TranscribeOptions {
                clip_timestamps: speech::clip_seconds(&speech.clips),
                ..options.clone()
            };
            out.push(self.engine.transcribe(samples, &clipped, &mut |p| {
                progress(Progress {
                    done_seconds: start + p.done_seconds,
                    total_seconds: total,
                    input,
                    ..p
                })
            })?);
        }
        Ok(out)
    }

    /// Time spent in the backend since the model was built, when it was built with
    /// [`ModelBuilder::time_backend`].
    pub fn backend_times(&self) -> Option<BackendTimes> {
        self.times.as_ref().map(TimeLog::snapshot)
    }

    pub fn dims(&self) -> &ModelDims {
        &self.dims
    }

    /// The heads used for word timestamps, and where they came from. With
    /// [`HeadsSource::LastHalfFallback`] word times are less reliable.
    pub fn alignment_heads(&self) -> &AlignmentHeads {
        &self.alignment_heads
    }

    /// The directory the model was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Backend and device, e.g. `"candle cpu"`.
    pub fn device_name(&self) -> String {
        self.engine.device_name()
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe(&self, samples: &[f32], options: &TranscribeOptions) -> Result<Transcript> {
        self.transcribe_with_progress(samples, options, &mut |_| {})
    }

    /// Transcribes 16 kHz mono samples, reporting progress after each 30 s window. With
    /// `options.batch_size` above 1 the windows are decoded in batches (see
    /// [`TranscribeOptions::batch_size`]).
    pub fn transcribe_with_progress(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Transcript> {
        if options.batch_size > 1 || options.vad.is_some() {
            let mut all = self.transcribe_many(&[samples], options, progress)?;
            return Ok(all.remove(0));
        }
        self.engine.transcribe(samples, options, progress)
    }

    /// Transcribes inputs as they arrive (a server's requests): a new input's windows join
    /// the batch already running at its next free slots, and each transcript is handed to
    /// `arrivals` as soon as its own windows are done. Each input gets the transcript
    /// [`Self::transcribe_many`] gives it with `options` (batched, `batch_size` windows in
    /// flight). Returns once `arrivals` has no input while nothing is left to decode.
    /// Packing and VAD need all inputs up front: with them set, this is an error.
    pub fn transcribe_arrivals(
        &self,
        arrivals: &mut dyn Arrivals,
        options: &TranscribeOptions,
    ) -> Result<()> {
        if options.batch_size < 2 || options.pack_short_inputs || options.vad.is_some() {
            return Err(whisk_pipeline::PipelineError::InvalidOption(
                "inputs transcribed as they arrive need batch_size of 2 or more, \
                 without pack_short_inputs or vad"
                    .into(),
            )
            .into());
        }
        self.engine.transcribe_arrivals(arrivals, options)
    }

    /// Transcribes several inputs. With `options.batch_size` above 1 their windows share one
    /// batch; otherwise each is transcribed in turn by the sequential loop. Progress counts
    /// seconds over all inputs.
    ///
    /// ```no_run
    /// # fn main() -> whisk::Result<()> {
    /// let model = whisk::Model::builder("target/models/tiny.en").build()?;
    /// let a = whisk::load_audio("a.flac".as_ref())?;
    /// let b = whisk::load_audio("b.flac".as_ref())?;
    /// let options = whisk::TranscribeOptions { batch_size: 8, ..Default::default() };
    /// let transcripts = model.transcribe_many(&[&a, &b], &options, &mut |_| {})?;
    /// assert_eq!(transcripts.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn transcribe_many(
        &self,
        inputs: &[&[f32]],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Transcript>> {
        if options.vad.is_some() && options.clip_timestamps.is_empty() {
            let speech = inputs
                .iter()
                .map(|s| Ok(self.speech(s, options)?.expect("VAD is on")))
                .collect::<Result<Vec<_>>>()?;
            let inputs: Vec<(&[f32], &Speech)> = inputs.iter().copied().zip(&speech).collect();
            return self.transcribe_speech(&inputs, options, progress);
        }
        if options.batch_size > 1 {
            let inputs = inputs
                .iter()
                .map(|s| BatchInput::samples(s, options))
                .collect();
            return self.engine.transcribe_batch(inputs, options, progress);
        }
        let total: f64 = inputs.iter().map(|s| s.len() as f64 / 16_000.0).sum();
        let mut before = 0.0;
        let mut out = Vec::with_capacity(inputs.len());
        for (input, samples) in inputs.iter().enumerate() {
            out.push(self.engine.transcribe(samples, options, &mut |pr| {
                progress(Progress {
                    done_seconds: before + pr.done_seconds,
                    total_seconds: total,
                    input,
                    ..pr
                })
            })?);
            before += samples.len() as f64 / 16_000.0;
        }
        Ok(out)
    }

    /// Decodes, resamples and transcribes an audio file.
    pub fn transcribe_file(&self, path: &Path, options: &TranscribeOptions) -> Result<Transcript> {
        let mut all = self.transcribe_files(&[path], options, &mut |_| {})?;
        Ok(all.remove(0))
    }

    /// Transcribes audio files; every file is opened and checked before any work, so a bad one
    /// fails first. With `options.batch_size` above 1 the files share one batch and each is read
    /// as its windows are needed, so memory does not grow with the audio's length (unless
    /// `options.clip_timestamps` or `options.vad` is set, which read each file whole). With
    /// `options.vad`, only what Silero VAD hears speech in is transcribed. Otherwise each file is
    /// read and transcribed in turn by the sequential loop. Progress counts seconds over all
    /// files, as far as their headers tell.
    ///
    /// ```no_run
    /// # fn main() -> whisk::Result<()> {
    /// let model = whisk::Model::builder("target/models/tiny.en").build()?;
    /// let files = ["a.flac".as_ref(), "b.mp3".as_ref()];
    /// let options = whisk::TranscribeOptions::default();
    /// let transcripts = model.transcribe_files(&files, &options, &mut |p| {
    ///     eprintln!("{:.0} of {:.0} s", p.done_seconds, p.total_seconds)
    /// })?;
    /// assert_eq!(transcripts.len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn transcribe_files(
        &self,
        paths: &[&Path],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Transcript>> {
        let streamed =
            options.batch_size > 1 && options.clip_timestamps.is_empty() && options.vad.is_none();
        if streamed {
            let inputs = paths
                .iter()
                .map(|p| {
                    FileWindows::probe(p, FixedWindows::default())
                        .map(|f| BatchInput::File(Box::new(f)))
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            return self.engine.transcribe_batch(inputs, options, progress);
        }
        let seconds = paths
            .iter()
            .map(|p| Ok(probe_audio(p)?.unwrap_or(0.0)))
            .collect::<Result<Vec<f64>>>()?;
        if options.batch_size > 1 || options.vad.is_some() {
            let loaded = paths
                .iter()
                .map(|p| load_audio_with_damage(p))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let inputs: Vec<&[f32]> = loaded.iter().map(|(s, _)| s.as_slice()).collect();
            let transcripts = self.transcribe_many(&inputs, options, progress)?;
            let damage = loaded.iter().map(|(_, d)| d.clone());
            return Ok(transcripts.into_iter().zip(damage).map(warn).collect());
        }
        let total: f64 = seconds.iter().sum();
        let mut before = 0.0;
        let mut out = Vec::with_capacity(paths.len());
        for (input, path) in paths.iter().enumerate() {
            let (samples, damage) = load_audio_with_damage(path)?;
            let transcript = self.engine.transcribe(&samples, options, &mut |pr| {
                progress(Progress {
                    done_seconds: before + pr.done_seconds,
                    total_seconds: total.max(before + pr.total_seconds),
                    input,
                    ..pr
                })
            })?;
            out.push(warn((transcript, damage)));
            before += samples.len() as f64 / 16_000.0;
        }
        Ok(out)
    }

    /// Languages spoken in the first 30 s, likeliest first, with probabilities.
    pub fn detect_language(&self, samples: &[f32]) -> Result<Vec<(String, f32)>> {
        self.engine.detect_language(samples)
    }
}
