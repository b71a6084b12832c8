//! `whisk._whisk`: the Rust half of the `whisk` Python package. It stays small on purpose:
//! audio in (a path, encoded bytes or raw samples), options and transcripts out as JSON in
//! whisk's own serde shapes; `python/whisk/__init__.py` gives them faster-whisper's API.
//! Every model call releases the GIL, and one [`Model`] serves any number of Python threads.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use whisk::{BackendKind, ComputeType, Device, TranscribeOptions, Transcript};

/// One input as Python handed it over, copied out of Python's objects so the GIL can go.
enum Audio {
    /// An audio file on disk.
    Path(PathBuf),
    /// An encoded file in memory; `name` stands for it in errors and warnings.
    Encoded { name: PathBuf, bytes: Vec<u8> },
    /// 16 kHz mono samples.
    Samples(Vec<f32>),
}

impl Audio {
    /// `kind` is `"path"` (`data` a `str`), `"bytes"` (encoded audio) or `"samples"`
    /// (little-endian `float32` samples at 16 kHz).
    fn from_python(kind: &str, data: &Bound<'_, PyAny>, name: &str) -> PyResult<Self> {
        match kind {
            "path" => Ok(Audio::Path(data.extract::<PathBuf>()?)),
            "bytes" => Ok(Audio::Encoded {
                name: PathBuf::from(name),
                bytes: data.cast::<PyBytes>()?.as_bytes().to_vec(),
            }),
            "samples" => {
                let bytes = data.cast::<PyBytes>()?.as_bytes();
                if bytes.len() % 4 != 0 {
                    return Err(PyValueError::new_err(format!(
                        "{name}: float32 samples take 4 bytes each, got {} bytes",
                        bytes.len()
                    )));
                }
                let samples = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                Ok(Audio::Samples(samples))
            }
            other => Err(PyValueError::new_err(format!(
                "unknown audio kind `{other}`"
            ))),
        }
    }

    /// 16 kHz samples, and a warning if the file was damaged (transcribed up to the damage).
    fn decode(self) -> whisk::Result<(Vec<f32>, Option<String>)> {
        let (samples, damage) = match self {
            Audio::Path(path) => whisk::load_audio_with_damage(&path)?,
            Audio::Encoded { name, bytes } => whisk::load_audio_bytes_with_damage(&name, bytes)?,
            Audio::Samples(samples) => (samples, None),
        };
        Ok((samples, damage.map(|d| d.to_string())))
    }
}

/// Python's exception for a whisk error: bad audio is a `ValueError`, a model that is not
/// there a `FileNotFoundError`, the rest a `RuntimeError`; every message names the file.
fn to_python(error: whisk::Error) -> PyErr {
    let message = error.to_string();
    match error {
        whisk::Error::Audio(_) => PyValueError::new_err(message),
        whisk::Error::ModelNotFound { .. } | whisk::Error::MissingTokenizer(_) => {
            PyFileNotFoundError::new_err(message)
        }
        _ => PyRuntimeError::new_err(message),
    }
}

fn parse<T: std::str::FromStr<Err = String>>(what: &str, value: &str) -> PyResult<T> {
    value
        .parse()
        .map_err(|e: String| PyValueError::new_err(format!("{what}: {e}")))
}

/// What one transcription hands back to Python.
#[derive(IntoPyObject)]
struct Outcome {
    /// The transcript in whisk's JSON shape (`whisk_types::Transcript`).
    transcript: String,
    /// Seconds of audio.
    duration: f64,
    /// Seconds VAD heard speech in, with VAD on.
    duration_after_vad: Option<f64>,
    /// Languages detected on the first 30 s, likeliest first; empty when the language was
    /// given or the model speaks only English.
    language_probs: Vec<(String, f32)>,
}

/// A transcription under way: what is known before decoding, and its segments to come.
#[derive(IntoPyObject)]
struct Started {
    duration: f64,
    duration_after_vad: Option<f64>,
    language: String,
    language_probs: Vec<(String, f32)>,
    /// Damage found while reading the audio (transcribed up to it).
    warnings: Vec<String>,
    segments: SegmentStream,
}

enum Message {
    /// Segments now final, and the seconds of audio done when they were.
    Segments(Vec<whisk::Segment>, f64),
    Done(whisk::Result<Transcript>),
}

/// The segments of a transcription running on a thread of its own, as JSON strings, each
/// handed over as soon as it is final (window by window in the sequential loop; batched mode
/// gives them all at the end). Iterating waits without the GIL.
#[pyclass(frozen, module = "whisk._whisk")]
struct SegmentStream {
    sender: Mutex<Option<Sender<Message>>>,
    state: Mutex<StreamState>,
}

struct StreamState {
    /// Taken out while waiting, so that no lock is held inside it.
    receiver: Option<Receiver<Message>>,
    ready: VecDeque<String>,
    handed_over: usize,
    done_seconds: f64,
    finished: bool,
}

impl SegmentStream {
    fn new() -> Self {
        let (sender, receiver) = channel();
        SegmentStream {
            sender: Mutex::new(Some(sender)),
            state: Mutex::new(StreamState {
                receiver: Some(receiver),
                ready: VecDeque::new(),
                handed_over: 0,
                done_seconds: 0.0,
                finished: false,
            }),
        }
    }

    /// The transcribing thread's end of the channel (there is one).
    fn sender(&self) -> Sender<Message> {
        self.sender
            .lock()
            .expect("never poisoned")
            .take()
            .expect("one transcription per stream")
    }
}

#[pymethods]
impl SegmentStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let Ok(mut state) = self.state.try_lock() else {
            return Err(PyRuntimeError::new_err(
                "a transcription's segments were iterated from two threads at once",
            ));
        };
        loop {
            if let Some(segment) = state.ready.pop_front() {
                return Ok(Some(segment));
            }
            if state.finished {
                return Ok(None);
            }
            let receiver = state.receiver.take().expect("put back after every wait");
            let (message, receiver) = py.detach(move || (receiver.recv(), receiver));
            state.receiver = Some(receiver);
            match message {
                Ok(Message::Segments(segments, done_seconds)) => {
                    state.handed_over += segments.len();
                    state.done_seconds = done_seconds;
                    state.ready.extend(segments.iter().map(to_json));
                }
                Ok(Message::Done(Ok(transcript))) => {
                    state.finished = true;
                    state.done_seconds = f64::INFINITY;
                    let rest = transcript.segments.iter().skip(state.handed_over);
                    state.ready.extend(rest.map(to_json));
                }
                Ok(Message::Done(Err(error))) => {
                    state.finished = true;
                    return Err(to_python(error));
                }
                Err(_) => {
                    state.finished = true;
                    return Err(PyRuntimeError::new_err(
                        "the transcribing thread ended without a result",
                    ));
                }
            }
        }
    }

    /// Seconds of audio the transcription had done when the segments handed over so far were
    /// final (infinite once it has finished).
    #[getter]
    fn done_seconds(&self) -> f64 {
        self.state.lock().map_or(0.0, |s| s.done_seconds)
    }
}

/// A loaded Whisper model.
#[pyclass(frozen, module = "whisk._whisk")]
struct Model {
    /// Shared with the threads that transcribe in the background.
    inner: Arc<whisk::Model>,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, device = "cpu", compute_type = "default", backend = None, cpu_threads = 0, vad_model = None))]
    fn new(
        py: Python<'_>,
        path: &str,
        device: &str,
        compute_type: &str,
        backend: Option<&str>,
        cpu_threads: usize,
        vad_model: Option<PathBuf>,
    ) -> PyResult<Self> {
        let device: Device = parse("device", device)?;
        let compute_type: ComputeType = parse("compute_type", compute_type)?;
        let backend: Option<BackendKind> = backend.map(|b| parse("backend", b)).transpose()?;
        if cpu_threads > 0 {
            // The global pool can be sized once per process; a later model keeps the first size.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(cpu_threads)
                .build_global();
        }
        let path = path.to_string();
        py.detach(|| {
            whisk::keep_freed_memory_for_reuse();
            let dir = whisk::resolve_model(&path)?;
            let mut builder = whisk::Model::builder(dir)
                .device(device)
                .compute_type(compute_type);
            if let Some(backend) = backend {
                builder = builder.backend(backend);
            }
            if let Some(vad) = vad_model {
                builder = builder.vad_model(vad);
            }
            builder.build()
        })
        .map(|inner| Model {
            inner: Arc::new(inner),
        })
        .map_err(to_python)
    }

    /// Whether the model speaks more than English.
    #[getter]
    fn is_multilingual(&self) -> bool {
        self.inner.dims().is_multilingual()
    }

    /// Backend and device, e.g. `"candle cpu"`.
    #[getter]
    fn device_name(&self) -> String {
        self.inner.device_name()
    }

    /// The model's directory.
    #[getter]
    fn model_dir(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    /// Starts transcribing one input on a thread of its own; `options` is whisk's
    /// `TranscribeOptions` as JSON. The audio is decoded (and on a multilingual model without
    /// a language, the language detected) before this returns; the segments follow through
    /// the returned stream as they are final.
    fn transcribe(
        &self,
        py: Python<'_>,
        kind: &str,
        data: &Bound<'_, PyAny>,
        name: &str,
        options: &str,
    ) -> PyResult<Started> {
        let audio = Audio::from_python(kind, data, name)?;
        let mut options = parse_options(options)?;
        let (samples, damage, language_probs, speech) = py
            .detach(|| {
                let (samples, damage) = audio.decode()?;
                let probs = self.detect_if_needed(&samples, &mut options)?;
                let speech = self.inner.speech(&samples, &options)?;
                whisk::Result::Ok((samples, damage, probs, speech))
            })
            .map_err(to_python)?;
        let started = Started {
            duration: samples.len() as f64 / whisk::SAMPLE_RATE as f64,
            duration_after_vad: speech.as_ref().map(|s| s.seconds),
            language: options.decode.language.clone().unwrap_or("en".into()),
            language_probs,
            warnings: damage.into_iter().collect(),
            segments: SegmentStream::new(),
        };
        let model = Arc::clone(&self.inner);
        let sender = started.segments.sender();
        std::thread::spawn(move || {
            let mut progress = |p: whisk::Progress| {
                let message = Message::Segments(p.segments.to_vec(), p.done_seconds);
                // The iterator was dropped: no one reads on, so the decode stops.
                if sender.send(message).is_err() {
                    p.stop.set(true);
                }
            };
            // VAD's clips as found above: the transcription does not run it again.
            let done = match &speech {
                Some(speech) => model
                    .transcribe_speech(&[(&samples, speech)], &options, &mut progress)
                    .map(|mut all| all.remove(0)),
                None => model.transcribe_with_progress(&samples, &options, &mut progress),
            };
            let _ = sender.send(Message::Done(done));
        });
        Ok(started)
    }

    /// Transcribes several inputs in one batch (`options.batch_size` above 1: windows of all
    /// inputs share the decoder, short ones packed together). Every input is decoded first,
    /// so a bad one fails the call before any work.
    fn transcribe_many(
        &self,
        py: Python<'_>,
        inputs: Vec<(String, Bound<'_, PyAny>, String)>,
        options: &str,
    ) -> PyResult<Vec<Outcome>> {
        let audio = inputs
            .iter()
            .map(|(kind, data, name)| Audio::from_python(kind, data, name))
            .collect::<PyResult<Vec<_>>>()?;
        let options = parse_options(options)?;
        py.detach(|| {
            let decoded = audio
                .into_iter()
                .map(Audio::decode)
                .collect::<whisk::Result<Vec<_>>>()?;
            self.transcribe_samples(&decoded, options)
        })
        .map_err(to_python)
    }

    /// Languages spoken in the first 30 s, likeliest first, with probabilities.
    fn detect_language(
        &self,
        py: Python<'_>,
        kind: &str,
        data: &Bound<'_, PyAny>,
        name: &str,
    ) -> PyResult<Vec<(String, f32)>> {
        let audio = Audio::from_python(kind, data, name)?;
        py.detach(|| self.inner.detect_language(&audio.decode()?.0))
            .map_err(to_python)
    }
}

impl Model {
    /// On a multilingual model without a language, the language of the first 30 s, set in
    /// `options` as faster-whisper does; the probabilities, likeliest first (else empty).
    fn detect_if_needed(
        &self,
        samples: &[f32],
        options: &mut TranscribeOptions,
    ) -> whisk::Result<Vec<(String, f32)>> {
        if options.decode.language.is_some() || !self.is_multilingual() {
            return Ok(Vec::new());
        }
        let probs = self.inner.detect_language(samples)?;
        options.decode.language = probs.first().map(|(code, _)| code.clone());
        Ok(probs)
    }

    /// Transcribes decoded inputs in one call. On a multilingual model without a language, a
    /// lone input's language is detected first, as faster-whisper does (so VAD may pack its
    /// clips, which needs one language); several inputs, each on its own first window.
    fn transcribe_samples(
        &self,
        inputs: &[(Vec<f32>, Option<String>)],
        options: TranscribeOptions,
    ) -> whisk::Result<Vec<Outcome>> {
        let mut options = options;
        let detected = match inputs {
            [(samples, _)] => self.detect_if_needed(samples, &mut options)?,
            _ => Vec::new(),
        };
        let samples: Vec<&[f32]> = inputs.iter().map(|(s, _)| s.as_slice()).collect();
        let speech = samples
            .iter()
            .map(|s| self.inner.speech(s, &options))
            .collect::<whisk::Result<Vec<_>>>()?;
        let transcripts = match speech
            .iter()
            .map(Option::as_ref)
            .collect::<Option<Vec<_>>>()
        {
            // VAD's clips as found here: the transcription does not run it again.
            Some(speech) => {
                let inputs: Vec<(&[f32], &whisk::Speech)> =
                    samples.iter().copied().zip(speech).collect();
                self.inner
                    .transcribe_speech(&inputs, &options, &mut |_| {})?
            }
            None => self
                .inner
                .transcribe_many(&samples, &options, &mut |_| {})?,
        };
        transcripts
            .into_iter()
            .zip(inputs)
            .zip(speech)
            .map(|((mut transcript, (samples, damage)), speech)| {
                transcript.warnings.extend(damage.clone());
                Ok(Outcome {
                    language_probs: if detected.is_empty() {
                        std::mem::take(&mut transcript.language_probs)
                    } else {
                        detected.clone()
                    },
                    transcript: to_json(&transcript),
                    duration: samples.len() as f64 / whisk::SAMPLE_RATE as f64,
                    duration_after_vad: speech.map(|s| s.seconds),
                })
            })
            .collect()
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("transcripts are plain data")
}

fn parse_options(json: &str) -> PyResult<TranscribeOptions> {
    serde_json::from_str(json).map_err(|e| PyValueError::new_err(format!("options: {e}")))
}

/// whisk's default `TranscribeOptions` as JSON: the Python layer changes what it is given.
#[pyfunction]
fn default_options() -> String {
    serde_json::to_string(&TranscribeOptions::default()).expect("options are plain data")
}

/// Decodes an audio file (a path, or encoded bytes named `name`) to 16 kHz mono float32
/// samples, returned as little-endian bytes.
#[pyfunction]
fn decode_audio<'py>(
    py: Python<'py>,
    kind: &str,
    data: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let audio = Audio::from_python(kind, data, name)?;
    let (samples, _) = py.detach(|| audio.decode()).map_err(to_python)?;
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    Ok(PyBytes::new(py, &bytes))
}

#[pymodule]
fn _whisk(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<SegmentStream>()?;
    m.add_function(wrap_pyfunction!(default_options, m)?)?;
    m.add_function(wrap_pyfunction!(decode_audio, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
