use std::path::Path;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use whisk_types::SAMPLE_RATE;

use crate::stream::Damage;
use crate::stream::{AudioStream, SampleSource};
use crate::{AudioError, Result};

/// Sample rates read as audio; outside them a header is taken to be damaged (a rate of a few
/// Hz would turn a small file into hours of audio).
pub(crate) const MIN_RATE: u32 = 2_000;
pub(crate) const MAX_RATE: u32 = 768_000;

/// Largest magnitude a sample keeps, in full scales: beyond it, values no recording holds
/// would overflow the FFTs downstream.
const SAMPLE_LIMIT: f32 = 1000.0;

/// A decoded sample made safe for every FFT after it: NaN and infinities (a damaged float
/// file) become silence, absurd magnitudes are clamped.
pub(crate) fn sane(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(-SAMPLE_LIMIT, SAMPLE_LIMIT)
    } else {
        0.0
    }
}

/// Resamples mono `samples` from `from` Hz to 16 kHz (FFT resampler, delay trimmed). NaN
/// and infinite samples are read as silence (the FFT would otherwise fail); rates outside
/// 2-768 kHz are refused.
pub fn resample(samples: &[f32], from: u32) -> Result<Vec<f32>> {
    if from as usize == SAMPLE_RATE {
        return Ok(samples.to_vec());
    }
    let err = |reason: String| AudioError::Resample { from, reason };
    if !(MIN_RATE..=MAX_RATE).contains(&from) {
        return Err(err(format!("outside {MIN_RATE}-{MAX_RATE} Hz")));
    }
    let samples: Vec<f32> = samples.iter().map(|&x| sane(x)).collect();
    let samples = samples.as_slice();
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
    read_to_end(AudioStream::open(path)?)
}

/// [`load_audio_with_damage`] for an encoded file held in memory; `name` stands for it in
/// errors and warnings.
pub fn load_audio_bytes_with_damage(
    name: &Path,
    bytes: Vec<u8>,
) -> Result<(Vec<f32>, Option<Damage>)> {
    read_to_end(AudioStream::from_bytes(name, bytes)?)
}

fn read_to_end(mut stream: AudioStream) -> Result<(Vec<f32>, Option<Damage>)> {
    let mut samples = Vec::new();
    while stream.read(&mut samples, 1 << 20)? > 0 {}
    Ok((samples, stream.damage().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cargo xtask fuzz`: NaN made rubato's FFT panic, and a rate of 1 Hz turned
    /// 8 s of samples into a day and a half of audio.
    #[test]
    fn samples_no_recording_holds_neither_panic_nor_explode() {
        let mut samples: Vec<f32> = (0..48_000).map(|i| (i as f32 * 0.01).sin()).collect();
        samples[100] = f32::NAN;
        samples[200] = f32::INFINITY;
        samples[300] = f32::MAX;
        let out = resample(&samples, 48_000).unwrap();
        assert!(out.iter().all(|x| x.is_finite()));
        assert!(out.len().abs_diff(16_000) < 10, "{}", out.len());
        for rate in [0, 1, 1_999, 768_001] {
            let err = resample(&samples, rate).unwrap_err().to_string();
            assert!(err.contains(&format!("{rate} Hz")), "{err}");
        }
    }
}
