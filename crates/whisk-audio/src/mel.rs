//! Log-mel spectrogram, pinned to openai-whisper's `audio.log_mel_spectrogram`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use whisk_types::{HOP_LENGTH, N_FFT, SAMPLE_RATE};

/// A log-mel spectrogram, `data[mel][frame]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mel {
    pub n_mels: usize,
    pub frames: usize,
    pub data: Vec<f32>,
}

impl Mel {
    /// Frames `[start, start + len)` of every bin, zero-padded past the end: one encoder window.
    pub fn window(&self, start: usize, len: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.n_mels * len];
        let avail = self.frames.saturating_sub(start).min(len);
        for m in 0..self.n_mels {
            let src = &self.data[m * self.frames + start..m * self.frames + start + avail];
            out[m * len..m * len + avail].copy_from_slice(src);
        }
        out
    }
}

// Slaney mel scale (librosa, htk=False): linear below 1 kHz, logarithmic above.
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// Slaney-normalised triangular mel filters, `[n_mels][N_FFT / 2 + 1]`, as librosa's
/// `filters.mel(sr=16000, n_fft=400, n_mels)` (which openai-whisper ships precomputed).
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let n_freqs = N_FFT / 2 + 1;
    let nyquist = SAMPLE_RATE as f64 / 2.0;
    let fft_freqs: Vec<f64> = (0..n_freqs)
        .map(|i| i as f64 * nyquist / (n_freqs - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let mel_points: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0.0f32; n_mels * n_freqs];
    for m in 0..n_mels {
        let (left, center, right) = (mel_points[m], mel_points[m + 1], mel_points[m + 2]);
        let enorm = 2.0 / (right - left);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - left) / (center - left);
            let upper = (right - f) / (right - center);
            out[m * n_freqs + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    out
}

/// Periodic Hann window (`torch.hann_window(N_FFT)`).
/// Each mel filter (a row of `n_freqs` weights) as its first nonzero bin and the weights from
/// there to its last nonzero one. A filter is a narrow triangle: summing the whole row took
/// 16 k products a frame, nearly all by zero (which add nothing, so the sums are unchanged).
fn nonzero_bands(filters: &[f32], n_freqs: usize) -> Vec<(usize, Vec<f32>)> {
    filters
        .chunks_exact(n_freqs)
        .map(|row| {
            let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
            let end = row.iter().rposition(|&w| w != 0.0).map_or(first, |i| i + 1);
            (first, row[first..end].to_vec())
        })
        .collect()
}

fn hann_window() -> Vec<f32> {
    (0..N_FFT)
        .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32)
        .collect()
}

/// Reflect index `i` (may be negative or past the end) into `[0, n)` like `np.pad(mode="reflect")`.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut j = i.rem_euclid(period);
    if j >= n as isize {
        j = period - j;
    }
    j as usize
}

/// Log-mel spectrogram of 16 kHz mono `samples` followed by `padding` zeros.
///
/// Matches openai-whisper: `torch.stft(center=True, pad_mode="reflect")` with a periodic Hann
/// window, the last frame dropped, power spectrum through the mel filters, `log10` clamped at
/// `1e-10`, floored at 8 below the maximum, then `(x + 4) / 4`. The result has
/// `(samples.len() + padding) / HOP_LENGTH` frames.
pub fn log_mel_spectrogram(samples: &[f32], n_mels: usize, padding: usize) -> Mel {
    let n = samples.len() + padding;
    let frames = n / HOP_LENGTH;
    let n_freqs = N_FFT / 2 + 1;
    let bands = nonzero_bands(&mel_filters(n_mels), n_freqs);
    let window = hann_window();
    let sample = |i: isize| -> f32 {
        let j = reflect(i, n.max(1));
        samples.get(j).copied().unwrap_or(0.0)
    };

    let fft: Arc<dyn RealToComplex<f32>> = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let mut power = vec![0.0f32; n_freqs];
    let mut data = vec![0.0f32; n_mels * frames];
    let half = (N_FFT / 2) as isize;
    for t in 0..frames {
        let start = (t * HOP_LENGTH) as isize - half;
        let inside = start >= 0 && (start as usize + N_FFT) <= samples.len();
        for (k, x) in input.iter_mut().enumerate() {
            let s = if inside {
                samples[start as usize + k]
            } else {
                sample(start + k as isize)
            };
            *x = s * window[k];
        }
        fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch)
            .expect("buffer sizes come from the planner");
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.re * c.re + c.im * c.im;
        }
        for (m, (first, weights)) in bands.iter().enumerate() {
            let e: f32 = weights
                .iter()
                .zip(&power[*first..])
                .map(|(w, p)| w * p)
                .sum();
            data[m * frames + t] = e.max(1e-10).log10();
        }
    }
    let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in &mut data {
        *x = (x.max(max - 8.0) + 4.0) / 4.0;
    }
    Mel {
        n_mels,
        frames,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_numpy() {
        // np.pad([0,1,2,3], 2, mode="reflect") == [2,1,0,1,2,3,2,1]
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
    }

    #[test]
    fn filters_are_triangles_with_slaney_area() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80 * 201);
        assert!(f.iter().all(|x| *x >= 0.0));
        // Each filter has a single peak and is non-zero somewhere.
        for m in 0..80 {
            assert!(
                f[m * 201..(m + 1) * 201].iter().any(|x| *x > 0.0),
                "filter {m} empty"
            );
        }
    }

    #[test]
    fn frame_count_follows_openai() {
        let mel = log_mel_spectrogram(&vec![0.0; 16_000], 80, 0);
        assert_eq!(mel.frames, 100);
        // Silence: every value sits at the floor, (log10(1e-10) + 4) / 4.
        assert!(mel.data.iter().all(|x| (*x - (-1.5)).abs() < 1e-6));
    }

    #[test]
    fn a_tone_lights_its_mel_band() {
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin())
            .collect();
        let mel = log_mel_spectrogram(&tone, 80, 0);
        let frame = 50;
        let column: Vec<f32> = (0..80).map(|m| mel.data[m * mel.frames + frame]).collect();
        let peak = column
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        // 440 Hz is on the linear part of the Slaney scale: mel = 440 / (200/3) = 6.6, and
        // filter m peaks at mel (m + 1) * hz_to_mel(8000) / 81.
        let expected = (hz_to_mel(440.0) * 81.0 / hz_to_mel(8000.0)).round() as usize - 1;
        assert!(
            peak.abs_diff(expected) <= 1,
            "peak {peak}, expected {expected}"
        );
    }
}
