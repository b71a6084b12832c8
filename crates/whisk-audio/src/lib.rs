//! Audio for Whisper: from a file on disk to the log-mel spectrogram the encoder reads.
//!
//! [`load_audio`] decodes WAV, FLAC, MP3, OGG/Vorbis and M4A/AAC with symphonia, downmixes to
//! mono and resamples to 16 kHz with rubato. [`log_mel_spectrogram`] follows openai-whisper's
//! `log_mel_spectrogram` (Hann window, reflect-padded STFT, Slaney mel filters, log10 clamped
//! to 8 below the peak). [`AudioStream`] reads a file the same way a little at a time, for
//! inputs too long to hold.

mod decode;
mod loudness;
mod mel;
mod stream;

pub use decode::{load_audio, load_audio_bytes_with_damage, load_audio_with_damage, resample};
pub use loudness::loudness_db;
pub use mel::{log_mel_spectrogram, mel_filters, Mel};
pub use stream::{AudioStream, Damage, SampleSource};

use std::path::PathBuf;

/// Why audio could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a supported audio file ({reason})")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: the file holds no audio samples")]
    Empty { path: PathBuf },
    #[error("{path}: corrupt or truncated audio: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot resample from {from} Hz: {reason}")]
    Resample { from: u32, reason: String },
}

pub type Result<T> = std::result::Result<T, AudioError>;
