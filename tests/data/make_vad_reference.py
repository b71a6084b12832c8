#!/usr/bin/env python3
"""Writes tests/data/vad_reference.json: faster-whisper 1.2.1's Silero VAD v6 (through
onnxruntime) on a few inputs, for tests/vad.rs to hold whisk-vad against.

For each input: the speech probability of every 512-sample frame, and the speech timestamps
(in samples) of `get_speech_timestamps` under several option sets. Only faster-whisper's
vad.py and the ONNX file are taken from its wheel (not the rest of faster-whisper).

Run from the repository root, after `cargo xtask fetch-models` (which caches the wheel):
    python3 tests/data/make_vad_reference.py
It makes a venv in target/vad-reference-venv with numpy, onnxruntime and soundfile.
"""

import json
import os
import subprocess
import sys
import types
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, "target", "vad-reference-venv")
WHEEL = os.path.join(ROOT, "target", "models", ".wheels", "faster_whisper-1.2.1-py3-none-any.whl")
DATA = os.path.join(ROOT, "..", "shared", "data")
OUT = os.path.join(ROOT, "tests", "data", "vad_reference.json")

# Joined with 1.5 s of digital silence between them, so that segments end and start again.
LONG_PARTS = [
    "timit_nltk_sample/audio/dr1-fvmh0_sa1.flac",
    "whisper_timestamped_clips/audio16k/laugh1.flac",
    "timit_nltk_sample/audio/dr1-fvmh0_si1466.flac",
    "timit_nltk_sample/audio/dr1-fvmh0_si2096.flac",
    "whisper_test_clips/audio16k/jfk.flac",
    "timit_nltk_sample/audio/dr1-fvmh0_si836.flac",
]
GAP_SECONDS = 1.5

OPTION_SETS = {
    "default": {},
    # What faster-whisper's batched pipeline uses with 30 s chunks.
    "batched": {"max_speech_duration_s": 30, "min_silence_duration_ms": 160},
    "short": {"min_silence_duration_ms": 100, "speech_pad_ms": 30},
    "split": {"max_speech_duration_s": 4, "min_silence_duration_ms": 300,
              "speech_pad_ms": 100, "min_speech_duration_ms": 250},
    "thresholds": {"threshold": 0.35, "neg_threshold": 0.2, "min_silence_duration_ms": 500},
}


def in_venv():
    if sys.prefix == VENV:
        return
    if not os.path.exists(os.path.join(VENV, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "python"), "-m", "pip", "install", "--quiet",
                        "numpy==2.2.6", "onnxruntime==1.22.1", "soundfile==0.13.1"], check=True)
    os.execv(os.path.join(VENV, "bin", "python"), [os.path.join(VENV, "bin", "python"), __file__])


def load_vad_module(workdir):
    """faster-whisper's vad.py alone, its one import from the package stubbed."""
    with zipfile.ZipFile(WHEEL) as wheel:
        wheel.extract("faster_whisper/vad.py", workdir)
        wheel.extract("faster_whisper/assets/silero_vad_v6.onnx", workdir)
    assets = os.path.join(workdir, "faster_whisper", "assets")
    package = types.ModuleType("faster_whisper")
    package.__path__ = [os.path.join(workdir, "faster_whisper")]
    utils = types.ModuleType("faster_whisper.utils")
    utils.get_assets_path = lambda: assets
    sys.modules["faster_whisper"] = package
    sys.modules["faster_whisper.utils"] = utils
    import importlib
    return importlib.import_module("faster_whisper.vad")


def main():
    in_venv()
    import numpy as np
    import soundfile

    def read(rel):
        audio, rate = soundfile.read(os.path.join(DATA, rel), dtype="float32")
        assert rate == 16000 and audio.ndim == 1, rel
        return audio

    vad = load_vad_module(os.path.join(ROOT, "target", "vad-reference"))
    gap = np.zeros(int(GAP_SECONDS * 16000), dtype=np.float32)
    long_parts = []
    for i, rel in enumerate(LONG_PARTS):
        if i:
            long_parts.append(gap)
        long_parts.append(read(rel))
    inputs = {
        "jfk": read("whisper_test_clips/audio16k/jfk.flac"),
        "long": np.concatenate(long_parts),
        "silence": np.zeros(5 * 16000 + 100, dtype=np.float32),
    }
    model = vad.get_vad_model()
    out = {
        "about": "faster-whisper 1.2.1 Silero VAD v6 via onnxruntime; made by make_vad_reference.py",
        "long_parts": LONG_PARTS,
        "gap_seconds": GAP_SECONDS,
        "option_sets": OPTION_SETS,
        "inputs": {},
    }
    for name, audio in inputs.items():
        padded = np.pad(audio, (0, 512 - audio.shape[0] % 512))
        probs = model(padded)
        entry = {"samples": int(audio.shape[0]),
                 "probabilities": [float(p) for p in np.asarray(probs).reshape(-1)],
                 "timestamps": {}}
        for set_name, options in OPTION_SETS.items():
            chunks = vad.get_speech_timestamps(audio, vad.VadOptions(**options))
            entry["timestamps"][set_name] = [[int(c["start"]), int(c["end"])] for c in chunks]
        out["inputs"][name] = entry
        print(name, len(entry["probabilities"]), "frames", entry["timestamps"]["default"])
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
