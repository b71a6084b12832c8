use std::fs::File;
use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use whisk_types::SAMPLE_RATE;

use crate::{AudioError, Result};

/// Samples of a file as decoded, before resampling.
#[derive(Debug, Clone)]
pub struct DecodedAudio {
    /// Mono samples in [-1, 1] (channels averaged).
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: usize,
}

/// Decodes `path` and averages its channels, at the file's own sample rate.
pub fn decode_file(path: &Path) -> Result<DecodedAudio> {
    let file = File::open(path).map_err(|source| AudioError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: String| AudioError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: "no audio track".into(),
        })?;
    let track_id = track.id;
    let expected_frames = track.num_frames;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: "the track is not audio".into(),
        })?
        .clone();
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::Unsupported {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;

    let mut mono = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut channels = 0;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // Some demuxers report the end of a stream as an unexpected EOF; a truncated file
            // is caught below by comparing against the frame count in the header.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(corrupt(e.to_string())),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // A damaged packet is skipped, as players do; the frame count check still applies.
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(corrupt(e.to_string())),
        };
        let spec = buf.spec();
        rate = spec.rate();
        channels = spec.channels().count().max(1);
        interleaved.resize(buf.samples_interleaved(), 0.0);
        buf.copy_to_slice_interleaved(&mut interleaved);
        mono.extend(
            interleaved
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
    }
    if mono.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    if let Some(expected) = expected_frames {
        // Allow one packet of slack: encoders pad the last packet differently.
        if (mono.len() as u64) + 8192 < expected {
            return Err(corrupt(format!(
                "decoded {} of the {expected} samples the header announces (truncated file?)",
                mono.len()
            )));
        }
    }
    if rate == 0 {
        return Err(corrupt("no sample rate".into()));
    }
    Ok(DecodedAudio {
        samples: mono,
        sample_rate: rate,
        channels,
    })
}

/// Resamples mono `samples` from `from` Hz to 16 kHz (FFT resampler, delay trimmed).
pub fn resample(samples: &[f32], from: u32) -> Result<Vec<f32>> {
    if from as usize == SAMPLE_RATE {
        return Ok(samples.to_vec());
    }
    let err = |reason: String| AudioError::Resample { from, reason };
    let mut resampler = Fft::<f32>::new(from as usize, SAMPLE_RATE, 1024, 1, FixedSync::Input)
        .map_err(|e| err(e.to_string()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| err(e.to_string()))?;
    let out = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| err(e.to_string()))?;
    Ok(out.take_data())
}

/// Reads any supported audio file as 16 kHz mono `f32` samples, what Whisper expects.
pub fn load_audio(path: &Path) -> Result<Vec<f32>> {
    let decoded = decode_file(path)?;
    resample(&decoded.samples, decoded.sample_rate)
}
