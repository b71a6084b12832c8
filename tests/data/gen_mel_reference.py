#!/usr/bin/env python3
"""Reference log-mel values for tests/mel.rs, from openai-whisper's own mel filters.

Reproduces openai-whisper's `log_mel_spectrogram` (whisper/audio.py) in numpy: periodic Hann
window, reflect-padded STFT (torch.stft center=True), last frame dropped, power spectrum,
the `mel_filters.npz` shipped in the openai-whisper package, log10 clamped at 1e-10, floored
at max - 8, (x + 4) / 4. Writes every 20th frame of all bins of jfk.flac.

Usage (test-only; needs numpy and soundfile):
    python3 -m pip download --no-deps openai-whisper==20250625 -d /tmp/ow
    python3 tests/data/gen_mel_reference.py /tmp/ow/openai_whisper-20250625.tar.gz \
        ../shared/data/whisper_test_clips/audio16k/jfk.flac > tests/data/jfk_mel_reference.json
"""
import io
import json
import sys
import tarfile
import zipfile

import numpy as np
import soundfile

N_FFT, HOP, STRIDE = 400, 160, 20


def load_filters(package, n_mels):
    if package.endswith(".whl"):
        with zipfile.ZipFile(package) as z:
            data = z.read("whisper/assets/mel_filters.npz")
    else:
        with tarfile.open(package) as t:
            member = next(m for m in t.getmembers() if m.name.endswith("whisper/assets/mel_filters.npz"))
            data = t.extractfile(member).read()
    return np.load(io.BytesIO(data))[f"mel_{n_mels}"]


def log_mel(audio, filters):
    window = np.hanning(N_FFT + 1)[:-1]
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = 1 + (len(padded) - N_FFT) // HOP
    stft = np.stack([np.fft.rfft(padded[i * HOP : i * HOP + N_FFT] * window) for i in range(frames)], axis=1)
    power = np.abs(stft[:, :-1]) ** 2
    mel = filters.astype(np.float64) @ power
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def main():
    package, audio_path = sys.argv[1], sys.argv[2]
    audio, rate = soundfile.read(audio_path, dtype="int16")
    assert rate == 16000 and audio.ndim == 1, "expects 16 kHz mono"
    audio = audio.astype(np.float32) / 32768.0
    filters = load_filters(package, 80)
    spec = log_mel(audio.astype(np.float64), filters)
    picked = list(range(0, spec.shape[1], STRIDE))
    json.dump(
        {
            "source": "openai-whisper log_mel_spectrogram (numpy port), filters from the package",
            "n_mels": 80,
            "frames": int(spec.shape[1]),
            "frame_stride": STRIDE,
            "values": [[round(float(v), 6) for v in spec[:, f]] for f in picked],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
