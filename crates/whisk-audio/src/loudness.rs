//! Loudness per 20 ms, read back from a log-mel window, for placing word onsets after pauses.

/// Loudness in dB of every 20 ms (two mel frames, one encoder frame) of the first
/// `content_frames` mel frames of `window` (`[n_mels][frames]`, normalised as
/// [`crate::log_mel_spectrogram`] writes it): the mel powers undone from `(log10 + 4) / 4`
/// and summed over bins. The floor at 80 dB below the loudest frame stays.
pub fn loudness_db(window: &[f32], n_mels: usize, content_frames: usize) -> Vec<f32> {
    let frames = window.len() / n_mels.max(1);
    let content = content_frames.min(frames);
    let power = |t: usize| -> f64 {
        (0..n_mels)
            .map(|m| 10f64.powf(4.0 * window[m * frames + t] as f64 - 4.0))
            .sum()
    };
    (0..content.div_ceil(2))
        .map(|k| {
            let pair = [2 * k, 2 * k + 1];
            let used: Vec<usize> = pair.into_iter().filter(|&t| t < content).collect();
            let mean = used.iter().map(|&t| power(t)).sum::<f64>() / used.len() as f64;
            (10.0 * mean.max(1e-30).log10()) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loudness_follows_the_mel_power() {
        // Two bins, four frames: log10 powers -2 (twice), then 0 in both bins.
        let log10 = [-2.0f32, -2.0, 0.0, 0.0];
        let normalised: Vec<f32> = log10.iter().map(|x| (x + 4.0) / 4.0).collect();
        let window: Vec<f32> = [normalised.clone(), normalised].concat();
        let db = loudness_db(&window, 2, 4);
        assert_eq!(db.len(), 2);
        // Two bins of power 0.01 → 0.02 → -17 dB; two of 1 → 2 → +3 dB.
        assert!((db[0] - 10.0 * 0.02f32.log10()).abs() < 1e-3, "{db:?}");
        assert!((db[1] - 10.0 * 2f32.log10()).abs() < 1e-3, "{db:?}");
        // Frames past the content are not read; an odd count keeps its last half pair.
        assert_eq!(loudness_db(&window, 2, 3).len(), 2);
        assert!((loudness_db(&window, 2, 3)[1] - db[1]).abs() < 1e-3);
    }
}
