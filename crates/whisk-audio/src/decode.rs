use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use whisk_types::SAMPLE_RATE;

use crate::stream::Damage;
use crate::stream::{AudioStream, SampleSource};
use crate::{AudioError, Result};

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

/// Reads any supported audio file as 16 kHz mono `f32` samples, what Whisper expects. A
/// damaged file gives what decodes before the damage ([`load_audio_with_damage`] says where
/// it stopped); a file with nothing decodable is an error.
pub fn load_audio(path: &Path) -> Result<Vec<f32>> {
    load_audio_with_damage(path).map(|(samples, _)| samples)
}

/// [`load_audio`], and where decoding stopped if the file is damaged.
pub fn load_audio_with_damage(path: &Path) -> Result<(Vec<f32>, Option<Damage>)> {
    let mut stream = AudioStream::open(path)?;
    let mut samples = Vec::new();
    while stream.read(&mut samples, 1 << 20)? > 0 {}
    Ok((samples, stream.damage().cloned()))
}
